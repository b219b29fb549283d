"""Database schemas as the Spider/BIRD `tables.json` files describe them.

One reader for every step: preprocess serializes schemas into prompts, evaluate needs them to parse SQL
(exact match resolves column names against the schema) and to classify hardness.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqltune.errors import SqltuneError


@dataclass(frozen=True)
class Column:
    table: int  # index into DatabaseSchema.tables; -1 for Spider's "*" column
    name: str  # original name as stored in the database
    natural_name: str  # Spider's "column_names" (human-readable) form
    type: str


@dataclass(frozen=True)
class DatabaseSchema:
    db_id: str
    tables: tuple[str, ...]  # original table names
    natural_tables: tuple[str, ...]
    columns: tuple[Column, ...]  # index 0 is "*", as in tables.json
    primary_keys: tuple[tuple[int, ...], ...]  # each a tuple of column indices (composite keys have several)
    foreign_keys: tuple[tuple[int, int], ...]  # (column index, referenced column index)

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> DatabaseSchema:
        names = entry["column_names_original"]
        natural = entry.get("column_names", names)
        types = entry.get("column_types", ["text"] * len(names))
        columns = tuple(
            Column(table=t, name=n, natural_name=natural[i][1], type=types[i]) for i, (t, n) in enumerate(names)
        )
        primary_keys = tuple(tuple(key) if isinstance(key, list) else (key,) for key in entry.get("primary_keys", []))
        return cls(
            db_id=entry["db_id"],
            tables=tuple(entry["table_names_original"]),
            natural_tables=tuple(entry.get("table_names", entry["table_names_original"])),
            columns=columns,
            primary_keys=primary_keys,
            foreign_keys=tuple((a, b) for a, b in entry.get("foreign_keys", [])),
        )

    def to_json(self) -> dict[str, Any]:
        """The tables.json entry this schema reads from (`from_json(to_json())` gives it back)."""
        return {
            "db_id": self.db_id,
            "table_names_original": list(self.tables),
            "table_names": list(self.natural_tables),
            "column_names_original": [[c.table, c.name] for c in self.columns],
            "column_names": [[c.table, c.natural_name] for c in self.columns],
            "column_types": [c.type for c in self.columns],
            "primary_keys": [key[0] if len(key) == 1 else list(key) for key in self.primary_keys],
            "foreign_keys": [list(pair) for pair in self.foreign_keys],
        }

    def table_columns(self, table: int) -> list[int]:
        """Column indices of one table, in declaration order."""
        return [i for i, column in enumerate(self.columns) if column.table == table]


def load_tables(path: str | Path) -> dict[str, DatabaseSchema]:
    """Read a tables.json into {db_id: DatabaseSchema}; errors name the file and the offending entry."""
    path = Path(path)
    if not path.is_file():
        raise SqltuneError(f"schema file not found: {path}")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SqltuneError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise SqltuneError(f"{path}: not UTF-8 text ({exc})") from None
    if not isinstance(entries, list):
        raise SqltuneError(f"{path}: expected a JSON list of database schemas (one object per database)")
    schemas = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise SqltuneError(f"{path}: entry {index} is not a database schema (a JSON object)")
        try:
            schema = DatabaseSchema.from_json(entry)
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise SqltuneError(
                f"{path}: entry {index} ({entry.get('db_id', '?')}) is not a valid schema: {exc}"
            ) from None
        schemas[schema.db_id] = schema
    return schemas
