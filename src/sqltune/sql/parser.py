"""Spider's SQL parser: the official `process_sql` semantics, written for sqltune.

Exact-set-match accuracy and the hardness classifier are defined on the structure the official Spider parser
produces, and on the set of SQL it accepts: a prediction the official parser cannot read scores 0 exact match
even if it runs. So this parser deliberately reproduces that parser's behaviour, including its limits:

- tokens: single quotes become double quotes, each quoted value is one token (original case kept), the rest is
  split with NLTK's word-tokenizer rules and lower-cased; `!`/`>`/`<` followed by `=` are merged.
- accepted: SELECT [DISTINCT] with max/min/count/sum/avg and one arithmetic operator per item, FROM tables joined
  with `JOIN ... ON` (aliases only with `AS`) or a parenthesized subquery, WHERE/HAVING conditions chained with
  AND/OR (`NOT`, BETWEEN, =, >, <, >=, <=, !=, IN, LIKE, IS, EXISTS; values are numbers, strings, columns or
  subqueries), GROUP BY, ORDER BY (one direction for the whole clause), LIMIT, one INTERSECT/UNION/EXCEPT chain.
- rejected, as the official parser rejects them: unknown tables or columns, column aliases in SELECT, `LEFT`/
  `INNER JOIN`, comma joins, aliases without `AS`, `IS NULL`/`IS NOT NULL`, odd quote counts, `a=b` without spaces.

The result is the Spider SQL dict (the format of the dataset's `sql` field), with column ids such as
`__singer.name__`, table ids such as `__singer__` and values kept (numbers as float, strings with their quotes):

    {"select": (distinct, [(agg_id, val_unit), ...]), "from": {"table_units": [...], "conds": [...]},
     "where": [cond_unit, "and"|"or", ...], "groupBy": [col_unit, ...], "having": [...],
     "orderBy": ("asc"|"desc", [val_unit, ...]) or [], "limit": None|1, "intersect"/"union"/"except": None|dict}

    col_unit = (agg_id, column_id, distinct); val_unit = (unit_op, col_unit, col_unit|None)
    cond_unit = (not_op, op_id, val_unit, value1, value2)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqltune.sql.depth import check_depth
from sqltune.sql.schema import DatabaseSchema

CLAUSE_KEYWORDS = ("select", "from", "where", "group", "order", "limit", "intersect", "union", "except")
JOIN_KEYWORDS = ("join", "on", "as")
WHERE_OPS = ("not", "between", "=", ">", "<", ">=", "<=", "!=", "in", "like", "is", "exists")
UNIT_OPS = ("none", "-", "+", "*", "/")
AGG_OPS = ("none", "max", "min", "count", "sum", "avg")
COND_OPS = ("and", "or")
SQL_OPS = ("intersect", "union", "except")
ORDER_OPS = ("desc", "asc")

SqlDict = dict[str, Any]


class SqlParseError(ValueError):
    """The SQL is outside what the official Spider parser accepts (it scores 0 exact match)."""


# NLTK's word tokenizer (Treebank rules, as `nltk.word_tokenize` applies them), restricted to the rules that can
# fire once quoted values have been replaced by placeholders. Order matters, as in NLTK.
_WORD_RULES = [
    (re.compile(r"([«“‘„]|[`]+)"), r" \1 "),  # opening quotes, backticks
    (re.compile(r'([^\.])(\.)([\]\)}>"\']*)\s*$'), r"\1 \2 \3 "),  # a final period
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),  # comma/colon not followed by a digit
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.{2,}"), r" \g<0> "),
    (re.compile(r"[;@#$%&]"), r" \g<0> "),
    (re.compile(r"[?!]"), r" \g<0> "),
    (re.compile(r"[*]"), r" \g<0> "),
    (re.compile(r"[\]\[\(\)\{\}\<\>]"), r" \g<0> "),  # brackets, and so `<`/`>`
    (re.compile(r"--"), r" -- "),
    (re.compile(r"([»”’])"), r" \1 "),  # closing quotes
    (re.compile(r"(?i)\b(can)(not)\b|\b(gim|lem)(me)\b|\b(gon|wan)(na)\b|\b(got)(ta)\b"), None),  # contractions
]


def _split_contraction(match: re.Match[str]) -> str:
    return " " + " ".join(part for part in match.groups() if part) + " "


def _word_tokenize(text: str) -> list[str]:
    for pattern, replacement in _WORD_RULES:
        text = pattern.sub(replacement or _split_contraction, text)
    return text.split()


def tokenize(sql: str) -> list[str]:
    """Spider tokens: quoted values as single tokens (original case), everything else lower-cased."""
    text = str(sql).replace("'", '"')
    quotes = [i for i, char in enumerate(text) if char == '"']
    if len(quotes) % 2:
        raise SqlParseError("unbalanced quotes")
    values = {}
    for i in range(len(quotes) - 1, 0, -2):  # from the end, so earlier offsets stay valid
        start, end = quotes[i - 1], quotes[i]
        key = f"__val_{start}_{end}__"
        values[key] = text[start : end + 1]
        text = text[:start] + key + text[end + 1 :]
    tokens = [values.get(token, token) for token in (t.lower() for t in _word_tokenize(text))]
    merged: list[str] = []
    for token in tokens:
        if token == "=" and merged and merged[-1] in ("!", ">", "<"):
            merged[-1] += "="
        else:
            merged.append(token)
    return merged


@dataclass(frozen=True)
class SpiderNames:
    """Lower-cased table -> columns, and the Spider ids of every table and column."""

    columns: dict[str, list[str]]
    ids: dict[str, str]


@lru_cache(maxsize=512)
def spider_names(schema: DatabaseSchema) -> SpiderNames:
    tables = [name.lower() for name in schema.tables]
    columns: dict[str, list[str]] = {table: [] for table in tables}
    ids = {"*": "__all__"}
    for column in schema.columns:
        if column.table >= 0:
            table, name = tables[column.table], column.name.lower()
            columns[table].append(name)
            ids[f"{table}.{name}"] = f"__{table}.{name}__"
    ids.update({table: f"__{table}__" for table in tables})
    return SpiderNames(columns, ids)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise SqlParseError(message)


class _Parser:
    """Recursive descent over one token list; every method takes a position and returns the next one."""

    def __init__(self, toks: list[str], aliases: dict[str, str], names: SpiderNames) -> None:
        self.toks, self.aliases, self.names = toks, aliases, names

    def at(self, idx: int, *choices: str) -> bool:
        return idx < len(self.toks) and self.toks[idx] in choices

    def ends_clause(self, idx: int) -> bool:
        return self.at(idx, *CLAUSE_KEYWORDS, ")", ";")

    def column(self, idx: int, default_tables: list[str] | None) -> tuple[int, str]:
        tok = self.toks[idx]
        if tok == "*":
            return idx + 1, self.names.ids[tok]
        if "." in tok:
            alias, column = tok.split(".")
            return idx + 1, self.names.ids[self.aliases[alias] + "." + column]
        _require(bool(default_tables), f"column {tok!r} without a table in scope")
        for alias in default_tables or ():
            table = self.aliases[alias]
            if tok in self.names.columns[table]:
                return idx + 1, self.names.ids[f"{table}.{tok}"]
        raise SqlParseError(f"unknown column {tok!r}")

    def col_unit(self, idx: int, default_tables: list[str] | None) -> tuple[int, tuple]:
        block = self.at(idx, "(")
        idx += block
        distinct = False
        if self.toks[idx] in AGG_OPS:
            agg = AGG_OPS.index(self.toks[idx])
            _require(self.at(idx + 1, "("), "aggregate without '('")
            idx += 2
            if self.toks[idx] == "distinct":
                idx, distinct = idx + 1, True
            idx, column = self.column(idx, default_tables)
            _require(self.at(idx, ")"), "aggregate without ')'")
            return idx + 1, (agg, column, distinct)  # the official parser leaves an enclosing '(' open here
        if self.toks[idx] == "distinct":
            idx, distinct = idx + 1, True
        idx, column = self.column(idx, default_tables)
        if block:
            _require(self.toks[idx] == ")", "missing ')'")
            idx += 1
        return idx, (0, column, distinct)

    def val_unit(self, idx: int, default_tables: list[str] | None) -> tuple[int, tuple]:
        block = self.at(idx, "(")
        idx += block
        idx, left = self.col_unit(idx, default_tables)
        op, right = 0, None
        if self.at(idx, *UNIT_OPS):
            op = UNIT_OPS.index(self.toks[idx])
            idx, right = self.col_unit(idx + 1, default_tables)
        if block:
            _require(self.toks[idx] == ")", "missing ')'")
            idx += 1
        return idx, (op, left, right)

    def table_unit(self, idx: int) -> tuple[int, str, str]:
        table = self.aliases[self.toks[idx]]
        idx += 3 if self.at(idx + 1, "as") else 1
        return idx, self.names.ids[table], table

    def value(self, idx: int, default_tables: list[str] | None) -> tuple[int, Any]:
        start = idx
        block = self.at(idx, "(")
        idx += block
        tok = self.toks[idx]
        if tok == "select":
            idx, val = self.sql(idx)
        elif '"' in tok:
            val, idx = tok, idx + 1
        else:
            try:
                val, idx = float(tok), idx + 1
            except ValueError:
                end = idx
                while end < len(self.toks) and not (
                    self.toks[end] in (",", ")", "and") or self.toks[end] in CLAUSE_KEYWORDS + JOIN_KEYWORDS
                ):
                    end += 1
                # as the official parser: a column value is read from the slice starting at `start`
                _, val = _Parser(self.toks[start:end], self.aliases, self.names).col_unit(0, default_tables)
                idx = end
        if block:
            _require(self.toks[idx] == ")", "missing ')'")
            idx += 1
        return idx, val

    def condition(self, idx: int, default_tables: list[str] | None) -> tuple[int, list]:
        conds: list = []
        while idx < len(self.toks):
            idx, val_unit = self.val_unit(idx, default_tables)
            negated = self.toks[idx] == "not"
            idx += negated
            _require(self.at(idx, *WHERE_OPS), f"bad condition at {self.toks[idx] if idx < len(self.toks) else 'end'}")
            op = WHERE_OPS.index(self.toks[idx])
            idx, val1 = self.value(idx + 1, default_tables)
            val2 = None
            if op == WHERE_OPS.index("between"):
                _require(self.toks[idx] == "and", "BETWEEN without AND")
                idx, val2 = self.value(idx + 1, default_tables)
            conds.append((negated, op, val_unit, val1, val2))
            if self.ends_clause(idx) or self.at(idx, *JOIN_KEYWORDS):
                break
            if self.at(idx, *COND_OPS):
                conds.append(self.toks[idx])
                idx += 1
        return idx, conds

    def select(self, idx: int, default_tables: list[str]) -> tuple[bool, list]:
        _require(self.at(idx, "select"), "'select' not found")
        idx += 1
        distinct = self.at(idx, "distinct")
        idx += distinct
        units = []
        while idx < len(self.toks) and self.toks[idx] not in CLAUSE_KEYWORDS:
            agg = 0
            if self.toks[idx] in AGG_OPS:
                agg, idx = AGG_OPS.index(self.toks[idx]), idx + 1
            idx, val_unit = self.val_unit(idx, default_tables)
            units.append((agg, val_unit))
            idx += self.at(idx, ",")
        return distinct, units

    def from_(self, idx: int) -> tuple[int, list, list, list[str]]:
        _require("from" in self.toks[idx:], "'from' not found")
        idx = self.toks.index("from", idx) + 1
        default_tables: list[str] = []
        table_units: list = []
        conds: list = []
        while idx < len(self.toks):
            block = self.at(idx, "(")
            idx += block
            if self.toks[idx] == "select":
                idx, sub = self.sql(idx)
                table_units.append(("sql", sub))
            else:
                idx += self.at(idx, "join")
                idx, table_id, table = self.table_unit(idx)
                table_units.append(("table_unit", table_id))
                default_tables.append(table)
            if self.at(idx, "on"):
                idx, on_conds = self.condition(idx + 1, default_tables)
                conds.extend(["and", *on_conds] if conds else on_conds)
            if block:
                _require(self.toks[idx] == ")", "missing ')'")
                idx += 1
            if self.ends_clause(idx):
                break
        return idx, table_units, conds, default_tables

    def by(self, idx: int) -> int:
        _require(self.at(idx + 1, "by"), f"{self.toks[idx].upper()} without BY")
        return idx + 2

    def group_by(self, idx: int, default_tables: list[str]) -> tuple[int, list]:
        if not self.at(idx, "group"):
            return idx, []
        idx, units = self.by(idx), []
        while idx < len(self.toks) and not self.ends_clause(idx):
            idx, unit = self.col_unit(idx, default_tables)
            units.append(unit)
            if not self.at(idx, ","):
                break
            idx += 1
        return idx, units

    def order_by(self, idx: int, default_tables: list[str]) -> tuple[int, tuple | list]:
        """One direction for the whole clause: the last ASC/DESC seen (official behaviour)."""
        if not self.at(idx, "order"):
            return idx, []
        idx, direction, units = self.by(idx), "asc", []
        while idx < len(self.toks) and not self.ends_clause(idx):
            idx, unit = self.val_unit(idx, default_tables)
            units.append(unit)
            if self.at(idx, *ORDER_OPS):
                direction, idx = self.toks[idx], idx + 1
            if not self.at(idx, ","):
                break
            idx += 1
        return idx, (direction, units)

    def sql(self, start: int) -> tuple[int, SqlDict]:
        block = self.at(start, "(")
        idx = start + block
        from_end, table_units, from_conds, default_tables = self.from_(start)
        sql: SqlDict = {"select": self.select(idx, default_tables)}
        sql["from"] = {"table_units": table_units, "conds": from_conds}
        idx = from_end
        idx, sql["where"] = self.condition(idx + 1, default_tables) if self.at(idx, "where") else (idx, [])
        idx, sql["groupBy"] = self.group_by(idx, default_tables)
        idx, sql["having"] = self.condition(idx + 1, default_tables) if self.at(idx, "having") else (idx, [])
        idx, sql["orderBy"] = self.order_by(idx, default_tables)
        sql["limit"] = None
        if self.at(idx, "limit"):
            _require(idx + 1 < len(self.toks), "LIMIT without a value")
            idx, sql["limit"] = idx + 2, 1  # as test-suite-sql-eval: the value is not kept
        idx = self.skip_semicolons(idx)
        if block:
            _require(self.toks[idx] == ")", "missing ')'")
            idx = self.skip_semicolons(idx + 1)
        for op in SQL_OPS:
            sql[op] = None
        if self.at(idx, *SQL_OPS):
            op = self.toks[idx]
            idx, sql[op] = self.sql(idx + 1)
        return idx, sql

    def skip_semicolons(self, idx: int) -> int:
        while self.at(idx, ";"):
            idx += 1
        return idx


def _aliases(toks: list[str], names: SpiderNames) -> dict[str, str]:
    """Every `x AS y` anywhere maps y -> x (as the official parser scans them); table names map to themselves."""
    aliases = {toks[i + 1]: toks[i - 1] for i, tok in enumerate(toks) if tok == "as"}
    for table in names.columns:
        _require(table not in aliases, f"alias {table!r} shadows a table")
        aliases[table] = table
    return aliases


def parse_sql(sql: str, schema: DatabaseSchema) -> SqlDict:
    """Parse `sql` against `schema` into the Spider SQL dict; raises SqlParseError where the official parser fails."""
    names = spider_names(schema)
    try:
        check_depth(sql)
        toks = tokenize(sql)
        _, parsed = _Parser(toks, _aliases(toks, names), names).sql(0)
    except (IndexError, KeyError, ValueError, RecursionError) as exc:
        if isinstance(exc, SqlParseError):
            raise
        raise SqlParseError(f"{type(exc).__name__}: {exc}") from None
    return parsed
