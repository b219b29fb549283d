"""Which tables and columns of a database a SQL query reads: what a prompt's schema must keep for that query.

Preprocess measures a schema filter's recall with it (the gold query's tables and columns that the prompt keeps),
and the accuracy benchmark measures the same after the token budget. The query is parsed with sqlglot (SQLite unless
told another dialect); aliases (`FROM singer AS T1 ... T1.name`) resolve through sqlglot's scopes, an unqualified
column to the table of its scope that has it. What resolves to no table of the schema (a double-quoted string, which
SQLite reads as a string when no column has that name; an output alias in ORDER BY; a CTE's own columns) is not a
use. Gold SQL is trusted, but it is bounded like any other before parsing (`sqltune.sql.depth`).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.scope import traverse_scope

from sqltune.sql.depth import SqlTooDeep, bounded, check_depth
from sqltune.sql.schema import DatabaseSchema


@dataclass(frozen=True)
class Usage:
    """Table indices and column indices (into `DatabaseSchema.tables` / `.columns`) a query reads."""

    tables: frozenset[int]
    columns: frozenset[int]


class UnreadableQuery(ValueError):
    """The query does not parse (or nests too deeply) to say what it reads."""


def used_names(sql: str, schema: DatabaseSchema, dialect: str = "sqlite") -> Usage:
    """The tables and columns of `schema` that `sql` (in sqlglot's `dialect`) reads; raises UnreadableQuery when it
    cannot be parsed."""
    try:
        check_depth(sql)
        with bounded():
            tree = sqlglot.parse_one(sql, read=dialect)
            scopes = traverse_scope(tree)
    except (sqlglot.errors.SqlglotError, SqlTooDeep) as exc:
        raise UnreadableQuery(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    table_index = {name.lower(): i for i, name in enumerate(schema.tables)}
    columns_of: dict[int, dict[str, int]] = {}
    for index, column in enumerate(schema.columns):
        if column.table >= 0:
            columns_of.setdefault(column.table, {}).setdefault(column.name.lower(), index)
    tables: set[int] = set()
    columns: set[int] = set()
    for scope in scopes:
        sources: dict[str, int] = {}  # alias or name -> table index, for the tables this scope reads
        for alias, source in scope.sources.items():
            if isinstance(source, exp.Table) and source.name.lower() in table_index:
                sources[alias.lower()] = table_index[source.name.lower()]
                tables.add(table_index[source.name.lower()])
        for column in (node for node in scope.walk() if isinstance(node, exp.Column)):  # this scope's own
            name = column.name.lower()
            if not name or isinstance(column.this, exp.Star):
                continue
            if column.table:
                candidates = [sources[column.table.lower()]] if column.table.lower() in sources else []
            else:
                candidates = list(dict.fromkeys(sources.values()))
            found = next((columns_of.get(t, {}).get(name) for t in candidates if name in columns_of.get(t, {})), None)
            if found is not None:
                columns.add(found)
    return Usage(frozenset(tables), frozenset(columns))
