"""What every dataset reader gives and the checks they share: `Example` (one question), `Layout` (a split's files,
schemas and databases), the Dataset and Split choices, and reading JSON entries with errors that name the file."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from sqltune.errors import SqltuneError
from sqltune.sql.schema import DatabaseSchema


class Dataset(str, Enum):
    spider = "spider"
    bird = "bird"
    cosql = "cosql"
    sparc = "sparc"
    jsonl = "jsonl"  # one's own questions: {"question", "sql", "db_id", "evidence"?} per line
    wikisql = "wikisql"


class Split(str, Enum):
    train = "train"
    dev = "dev"


@dataclass(frozen=True)
class Example:
    """One question as the record contract names it (before the schema and prompt are added)."""

    id: str
    db_id: str
    question: str
    sql: str
    evidence: str | None = None
    difficulty: str | None = None
    turn: int | None = None
    history: tuple[str, ...] = ()


@dataclass(frozen=True)
class Layout:
    """A dataset split: its question files, schema file, SQLite directory, and the examples read from it.

    A dataset that carries its schemas in its own format (WikiSQL) gives them as `schemas`, and `write_database`
    builds a db_id's SQLite file from its own data; one's own questions may have no schema file or databases
    (None): their schemas then come from `--tables` or the live database.
    """

    question_files: tuple[Path, ...]
    tables_file: Path | None
    database_dir: Path | None
    examples: list[Example]
    schemas: dict[str, DatabaseSchema] | None = None
    write_database: Callable[[str, Path], None] | None = None


def read_json(path: Path) -> Any:
    """Parse a JSON file; malformed JSON is an error naming the file and line."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SqltuneError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise SqltuneError(f"{path}: not UTF-8 text: {exc}") from None


def _first_existing(root: Path, candidates: Sequence[str], what: str) -> Path:
    for name in candidates:
        if (root / name).exists():
            return root / name
    raise SqltuneError(f"{what} not found in {root}: looked for {', '.join(candidates)}")


def _entries(path: Path) -> list[dict[str, Any]]:
    data = read_json(path)
    if not isinstance(data, list) or not all(isinstance(entry, dict) for entry in data):
        raise SqltuneError(f"{path}: expected a JSON list of objects")
    return data


_JSON_TYPE = {str: "a string", list: "a list", int: "an integer"}


def _check_type(value: Any, expected: type, name: str, path: Path, index: int) -> Any:
    if not isinstance(value, expected) or isinstance(value, bool):
        found = "null" if value is None else type(value).__name__
        raise SqltuneError(f"{path}: entry {index}: {name!r} must be {_JSON_TYPE[expected]}, not {found}")
    return value


def _field(entry: dict[str, Any], names: Sequence[str], path: Path, index: int, expected: type = str) -> Any:
    """A required field under one of `names`, of the `expected` JSON type (a null SQL is an error, not "None")."""
    for name in names:
        if name in entry:
            return _check_type(entry[name], expected, name, path, index)
    raise SqltuneError(f"{path}: entry {index} has no {' or '.join(repr(n) for n in names)} field")


def _optional_text(entry: dict[str, Any], name: str, path: Path, index: int) -> str | None:
    """An optional string field: missing, null or empty is None; any other type is an error."""
    value = entry.get(name)
    return _check_type(value, str, name, path, index) or None if value is not None else None
