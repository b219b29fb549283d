"""WikiSQL: questions over single Wikipedia tables, with their SQL as a structure rather than text.

A split is `<split>.jsonl` (one question per line: `table_id`, `question`, and `sql` with `sel` (the selected
column's index), `agg` (an index into AGG_OPS) and `conds` (`[column index, index into COND_OPS, value]`)) and
`<split>.tables.jsonl` (one table per line: `id`, `header`, `types` ("text" or "real"), `rows`, optionally `name`
and `page_title`). Each table is a database of its own (db_id = the table's id) holding one table of that name
whose columns are the header's names; the SQL is written out for SQLite, and `write_database` builds the table's
SQLite file from its rows so that the questions can be executed and scored like Spider's.
"""

from __future__ import annotations

import json
import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from sqlglot import exp

from sqltune.datasets.base import Example, Layout
from sqltune.errors import SqltuneError
from sqltune.sql.schema import Column, DatabaseSchema

AGG_OPS = ("", "MAX", "MIN", "COUNT", "SUM", "AVG")
COND_OPS = ("=", ">", "<", "OP")
_TYPES = {"text": "text", "real": "real"}


def _lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise SqltuneError(f"WikiSQL file not found: {path}")
    entries = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SqltuneError(f"{path}:{lineno}: malformed JSON: {exc.msg}") from None
            if not isinstance(entry, dict):
                raise SqltuneError(f"{path}:{lineno}: expected a JSON object")
            entries.append((lineno, entry))
    return entries


def _column_names(header: list[str]) -> list[str]:
    """The header as column names: blank ones named by position, repeated ones numbered."""
    names: list[str] = []
    for index, raw in enumerate(header):
        name = re.sub(r"\s+", " ", str(raw)).strip() or f"col{index}"
        base, n = name, 2
        while name.lower() in (x.lower() for x in names):
            name, n = f"{base}_{n}", n + 1
        names.append(name)
    return names


class _Table:
    def __init__(self, entry: dict[str, Any], where: str) -> None:
        try:
            self.id = str(entry["id"])
            self.columns = _column_names(list(entry["header"]))
            self.types = [_TYPES.get(str(t), "text") for t in entry.get("types", ["text"] * len(self.columns))]
            self.rows = [list(row) for row in entry.get("rows", [])]
        except (KeyError, TypeError) as exc:
            raise SqltuneError(f"{where}: not a WikiSQL table (needs id and header): {exc}") from None
        if len(self.types) != len(self.columns) or any(len(row) != len(self.columns) for row in self.rows):
            raise SqltuneError(f"{where}: table {self.id}: header, types and rows differ in length")
        self.name = str(entry.get("name") or "table_" + re.sub(r"\W", "_", self.id))
        self.title = str(entry.get("page_title") or entry.get("caption") or self.name)

    def schema(self) -> DatabaseSchema:
        columns = [Column(-1, "*", "*", "text")]
        columns += [Column(0, n, n.lower(), t) for n, t in zip(self.columns, self.types, strict=True)]
        return DatabaseSchema(self.id, (self.name,), (self.title.lower(),), tuple(columns), (), ())


def _name(name: str) -> str:
    return exp.to_identifier(name, quoted=not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)).sql(dialect="sqlite")


def _value(value: Any, column_type: str) -> str:
    if column_type == "real" and isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value) if isinstance(value, float) and not value.is_integer() else str(int(value))
    if column_type == "real":
        try:
            number = float(str(value))
        except ValueError:
            pass
        else:
            return str(int(number)) if number.is_integer() else repr(number)
    return "'" + str(value).replace("'", "''") + "'"


def to_sql(query: dict[str, Any], table: _Table) -> str:
    """WikiSQL's structured query written out as SQLite SQL; raises ValueError for an index out of range."""
    select = _name(table.columns[int(query["sel"])])
    agg = AGG_OPS[int(query["agg"])]
    sql = f"SELECT {agg}({select})" if agg else f"SELECT {select}"
    sql += f" FROM {_name(table.name)}"
    conditions = []
    for column, op, value in query.get("conds", []):
        if COND_OPS[int(op)] == "OP":
            raise ValueError("condition operator OP (unused in WikiSQL's data)")
        index = int(column)
        conditions.append(f"{_name(table.columns[index])} {COND_OPS[int(op)]} {_value(value, table.types[index])}")
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    return sql


def read_wikisql(root: Path, split: str) -> Layout:
    """The split's questions with their SQL, each table's schema, and a writer of each table's SQLite file."""
    questions, tables_file = root / f"{split}.jsonl", root / f"{split}.tables.jsonl"
    tables = {}
    for lineno, entry in _lines(tables_file):
        table = _Table(entry, f"{tables_file}:{lineno}")
        tables[table.id] = table
    examples = []
    for lineno, entry in _lines(questions):
        where = f"{questions}:{lineno}"
        table = tables.get(str(entry.get("table_id")))
        if table is None:
            raise SqltuneError(f"{where}: table_id {entry.get('table_id')!r} is not in {tables_file}")
        if not isinstance(entry.get("question"), str) or not isinstance(entry.get("sql"), dict):
            raise SqltuneError(f"{where}: a WikiSQL question needs 'question' (a string) and 'sql' (an object)")
        try:
            sql = to_sql(entry["sql"], table)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise SqltuneError(f"{where}: 'sql' is not a WikiSQL query over table {table.id}: {exc}") from None
        examples.append(Example(f"wikisql-{split}-{len(examples):05d}", table.id, entry["question"], sql))

    def write_database(db_id: str, path: Path) -> None:
        table = tables[db_id]
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(path)) as conn:
            columns = ", ".join(f"{_name(c)} {t.upper()}" for c, t in zip(table.columns, table.types, strict=True))
            conn.execute(f"CREATE TABLE {_name(table.name)} ({columns})")
            marks = ", ".join("?" * len(table.columns))
            conn.executemany(f"INSERT INTO {_name(table.name)} VALUES ({marks})", table.rows)
            conn.commit()

    schemas = {table.id: table.schema() for table in tables.values()}
    return Layout((questions,), None, None, examples, schemas=schemas, write_database=write_database)
