"""Gold SQL written for SQLite (Spider, BIRD, WikiSQL), rewritten for another engine with sqlglot.

Three things beyond sqlglot's own transpiling, each what SQLite itself does or what `copy-db` did to the data:

- SQLite reads a double-quoted name that is no column as a string (`WHERE name = "Joe"`, common in Spider's
  gold); such a name becomes the string literal it meant.
- SQLite compares a text column with a number as text (the number takes the column's text affinity:
  `year > 2013` on a text column is `year > '2013'`); such a number becomes the string SQLite compared, where the
  schema says the column is text. PostgreSQL would refuse to compare text with an integer at all.
- SQLite's LIKE ignores the case of ASCII letters; it becomes ILIKE where the target has it (PostgreSQL, DuckDB),
  whose LIKE does not.
- SQLite lets a grouped (or aggregating) query name a column that is neither grouped nor aggregated and takes
  its value from some row of the group; where the target refuses that (PostgreSQL, DuckDB), such a column is
  wrapped in ANY_VALUE(), which says the same, unless the group is keyed by its table's primary key (which
  PostgreSQL, not DuckDB, accepts as it is). SQLite's one refinement, the row of a lone MAX or MIN, has no
  equivalent: such questions come out different.
- Names are folded to lower case, as `copy-db` folds the tables and columns it creates (and PostgreSQL folds
  unquoted names), and quoted only where the target needs it (a reserved word, a space).
- What sqlglot cannot write for the target is an error with the reason (`unsupported_level=RAISE`), not SQL that
  means something else; a query that transpiles but does not run on the target is the caller's to find (preprocess
  runs it there).
"""

from __future__ import annotations

import re
from enum import Enum

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel

from sqltune.sql.depth import SqlTooDeep, bounded, check_depth
from sqltune.sql.schema import DatabaseSchema

_PLAIN = re.compile(r"[a-z_][a-z0-9_]*")
# PostgreSQL's reserved key words (also those allowed as function or type names): such a name must be quoted.
_RESERVED = frozenset(
    """
    all analyse analyze and any array as asc asymmetric both case cast check collate column constraint create
    current_catalog current_date current_role current_time current_timestamp current_user default deferrable desc
    distinct do else end except false fetch for foreign from grant group having in initially intersect into lateral
    leading limit localtime localtimestamp not null offset on only or order placing primary references returning
    select session_user some symmetric system_user table then to trailing true union unique user using variadic when
    where window with authorization binary collation concurrently cross current_schema freeze full ilike inner is
    isnull join left like natural notnull outer overlaps right similar tablesample verbose
    """.split()  # noqa: SIM905
)


# sqlglot's dialect names (the choices of `--dialect`).
SqlDialect = Enum(  # type: ignore[misc]
    "SqlDialect", {d.value: d.value for d in sqlglot.dialects.Dialects if d.value}, type=str
)


class TranspileError(ValueError):
    """The query cannot be written for the target dialect; the message says why."""


def _string_fallbacks(tree: exp.Expression, schema: DatabaseSchema) -> None:
    """SQLite's rule: a double-quoted name that is no column (nor alias) of the query is a string literal."""
    known = {column.name.lower() for column in schema.columns}
    known |= {alias.alias.lower() for alias in tree.find_all(exp.Alias)}
    for column in list(tree.find_all(exp.Column)):
        identifier = column.this
        if (
            isinstance(identifier, exp.Identifier)
            and identifier.quoted
            and not column.table
            and identifier.name.lower() not in known
        ):
            column.replace(exp.Literal.string(identifier.name))


_HAS_ILIKE = ("postgres", "duckdb")
_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)


def _text_affinity(tree: exp.Expression, schema: DatabaseSchema) -> None:
    """SQLite's comparison affinity: a number compared with a text column is compared as text."""
    types: dict[tuple[str, str], str] = {}
    for column in schema.columns:
        if column.table >= 0:
            types[schema.tables[column.table].lower(), column.name.lower()] = column.type.lower()
    stands_for: dict[str, set[str]] = {}
    for table in tree.find_all(exp.Table):
        for name in {table.name.lower(), table.alias.lower()} - {""}:
            stands_for.setdefault(name, set()).add(table.name.lower())
    read = set().union(*stands_for.values()) if stands_for else set()

    def is_text(column: exp.Column) -> bool:
        tables = stands_for.get(column.table.lower(), set()) if column.table else read
        found = [types[t, column.name.lower()] for t in tables if (t, column.name.lower()) in types]
        return bool(found) and all(kind == "text" for kind in found)

    def as_text(node: exp.Expression) -> None:
        number = node.this if isinstance(node, exp.Neg) else node
        if isinstance(number, exp.Literal) and not number.is_string:
            node.replace(exp.Literal.string(("-" if node is not number else "") + number.this))

    for comparison in list(tree.find_all(*_COMPARISONS, exp.In, exp.Between)):
        subject = comparison.this
        if not isinstance(subject, exp.Column):
            subject, others = comparison.expression, [comparison.this]
        elif isinstance(comparison, exp.In):
            others = list(comparison.expressions)
        elif isinstance(comparison, exp.Between):
            others = [comparison.args.get("low"), comparison.args.get("high")]
        else:
            others = [comparison.expression]
        if isinstance(subject, exp.Column) and is_text(subject):
            for other in others:
                if other is not None:
                    as_text(other)


def _scope_columns(select: exp.Select, node: exp.Expression) -> list[exp.Column]:
    """Columns of `node` that belong to `select` itself: not inside a subquery, nor an aggregate's argument."""
    found = []
    for column in node.find_all(exp.Column):
        inner = column.find_ancestor(exp.AggFunc, exp.Select, exp.Window)
        if inner is select or (inner is None and select is node):
            found.append(column)
    return found


def _bare_columns(tree: exp.Expression, schema: DatabaseSchema, target: str) -> None:
    """SQLite's bare columns in grouped queries, as ANY_VALUE() (see the module docstring)."""
    keys: dict[str, list[set[str]]] = {}
    for key in schema.primary_keys if target == "postgres" else ():  # DuckDB does not look at primary keys
        table = schema.tables[schema.columns[key[0]].table].lower()
        keys.setdefault(table, []).append({schema.columns[i].name.lower() for i in key})
    for select in list(tree.find_all(exp.Select)):
        group = select.args.get("group")
        own = [a for e in select.expressions for a in e.find_all(exp.AggFunc) if a.find_ancestor(exp.Select) is select]
        if not group and not own:
            continue
        tables = {t.alias_or_name.lower(): t.name.lower() for t in select.find_all(exp.Table)
                  if t.find_ancestor(exp.Select) is select}  # fmt: skip
        only = next(iter(tables)) if len(tables) == 1 else None
        grouped = set()  # (qualifier, column) of every grouped column; a bare one is its only table's
        for column in (c for e in (group.expressions if group else []) for c in e.find_all(exp.Column)):
            grouped.add((column.table.lower() or only or "", column.name.lower()))
        aliases = {e.alias.lower() for e in select.expressions if isinstance(e, exp.Alias)}
        places = [*select.expressions, *(select.args[c] for c in ("having", "order") if select.args.get(c))]
        for column in (c for place in places for c in _scope_columns(select, place)):
            name, qualifier = column.name.lower(), column.table.lower() or only or ""
            if isinstance(column.this, exp.Star) or name in aliases or (qualifier, name) in grouped:
                continue
            if not qualifier and any(n == name for _, n in grouped):
                continue
            grouped_here = {n for q, n in grouped if q == qualifier}
            if any(key <= grouped_here for key in keys.get(tables.get(qualifier, ""), [])):
                continue  # grouped by its table's primary key: PostgreSQL accepts the column as it is
            column.replace(exp.AnyValue(this=column.copy()))


def _fold_names(tree: exp.Expression) -> None:
    for identifier in tree.find_all(exp.Identifier):
        name = identifier.name.lower()
        identifier.set("this", name)
        identifier.set("quoted", name in _RESERVED or not _PLAIN.fullmatch(name))


def transpile(sql: str, target: str, *, source: str = "sqlite", schema: DatabaseSchema | None = None) -> str:
    """`sql` (in `source`) written for `target`; raises TranspileError naming why it cannot be."""
    if target == source:
        return sql
    try:
        check_depth(sql)
        with bounded():
            statements = [s for s in sqlglot.parse(sql, read=source) if s is not None]
            if len(statements) != 1:
                raise TranspileError(f"{len(statements)} statements, not one")
            tree = statements[0]
            if source == "sqlite" and schema is not None:
                _string_fallbacks(tree, schema)
                _text_affinity(tree, schema)
                if target in _HAS_ILIKE:
                    _bare_columns(tree, schema, target)
            _fold_names(tree)
            if source == "sqlite" and target in _HAS_ILIKE:
                for like in list(tree.find_all(exp.Like)):
                    like.replace(exp.ILike(**like.args))
            return tree.sql(dialect=target, unsupported_level=ErrorLevel.RAISE)
    except SqlTooDeep as exc:
        raise TranspileError(str(exc)) from None
    except sqlglot.errors.UnsupportedError as exc:
        raise TranspileError(f"sqlglot cannot write it for {target}: {str(exc).splitlines()[0]}") from None
    except sqlglot.errors.SqlglotError as exc:
        raise TranspileError(f"sqlglot cannot read it as {source}: {str(exc).splitlines()[0]}") from None
