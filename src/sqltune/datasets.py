"""The datasets sqltune reads: Spider, BIRD and CoSQL/SParC directory layouts, WikiSQL's files and one's own
questions as JSON lines, into one `Example` per question (or turn), and where a split keeps its schemas and
SQLite databases.

Shared by the steps: preprocess builds records from the examples (schemas, prompts and hardness are added there),
the train step's GRPO stage finds the training questions' databases, evaluate scores by the dataset's rules.
"""

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


def read_spider(root: Path, split: str) -> Layout:
    """Spider: train = train_spider.json + train_others.json when present (8659), dev = dev.json (1034)."""
    files = [_first_existing(root, ["train_spider.json" if split == "train" else "dev.json"], f"Spider {split} file")]
    if split == "train" and (root / "train_others.json").is_file():  # optional: the sample dataset has none
        files.append(root / "train_others.json")
    examples = []
    for path in files:
        for index, entry in enumerate(_entries(path)):
            examples.append(
                Example(
                    id=f"spider-{split}-{len(examples):05d}",
                    db_id=_field(entry, ["db_id"], path, index),
                    question=_field(entry, ["question"], path, index),
                    sql=_field(entry, ["query"], path, index),
                )
            )
    return Layout(tuple(files), root / "tables.json", root / "database", examples)


def read_bird(root: Path, split: str) -> Layout:
    """BIRD: `<split>.json` (or mini-dev's `mini_dev_sqlite.json`), `<split>_tables.json`, `<split>_databases/`."""
    names = [f"{split}.json"] + (["mini_dev_sqlite.json"] if split == "dev" else [])
    path = _first_existing(root, names, f"BIRD {split} file")
    examples = []
    for index, entry in enumerate(_entries(path)):
        number = entry.get("question_id", index)
        examples.append(
            Example(
                id=f"bird-{split}-{number:05d}" if isinstance(number, int) else f"bird-{split}-{number}",
                db_id=_field(entry, ["db_id"], path, index),
                question=_field(entry, ["question"], path, index),
                sql=_field(entry, ["SQL", "query"], path, index),
                evidence=_optional_text(entry, "evidence", path, index),
                difficulty=_optional_text(entry, "difficulty", path, index),
            )
        )
    return Layout((path,), root / f"{split}_tables.json", root / f"{split}_databases", examples)


def read_multiturn(root: Path, split: str, dataset: str) -> Layout:
    """CoSQL/SParC interactions: one example per turn, with the earlier questions of the dialogue as history."""
    names = [f"{split}.json"]
    if dataset == "cosql":
        names = [f"sql_state_tracking/cosql_{split}.json", f"cosql_{split}.json", *names]
    path = _first_existing(root, names, f"{dataset} {split} file")
    examples = []
    for index, entry in enumerate(_entries(path)):
        db_id = _field(entry, ["database_id", "db_id"], path, index)
        history: list[str] = []
        for turn, interaction in enumerate(_field(entry, ["interaction"], path, index, list)):
            if not isinstance(interaction, dict):
                raise SqltuneError(f"{path}: entry {index}: turn {turn} of 'interaction' must be an object")
            question = _field(interaction, ["utterance"], path, index)
            examples.append(
                Example(
                    id=f"{dataset}-{split}-{index:05d}-{turn:02d}",
                    db_id=db_id,
                    question=question,
                    sql=_field(interaction, ["query"], path, index),
                    turn=turn,
                    history=tuple(history),
                )
            )
            history.append(question)
    return Layout((path,), root / "tables.json", root / "database", examples)


def read_jsonl_questions(root: Path, split: str) -> Layout:
    """One's own questions: `root` is a JSON-lines file (any split), or a folder with `<split>.jsonl`; a
    `tables.json` and a `database/` folder beside it are used when present. Each line needs `question`, `sql` and
    `db_id` strings; `evidence` (a hint) and `id` are optional. A bad line is an error naming the file and line."""
    path = root if root.is_file() else _first_existing(root, [f"{split}.jsonl"], f"jsonl {split} file")
    folder = path.parent
    examples = []
    with open(path, encoding="utf-8") as handle:
        try:
            lines = list(handle)
        except UnicodeDecodeError as exc:
            raise SqltuneError(f"{path}: not UTF-8 text: {exc}") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SqltuneError(f"{where}: malformed JSON: {exc.msg}") from None
        if not isinstance(entry, dict):
            raise SqltuneError(f"{where}: expected a JSON object with question, sql and db_id")
        for name in ("question", "sql", "db_id"):
            if not isinstance(entry.get(name), str) or not entry[name].strip():
                found = "missing" if name not in entry else f"{type(entry[name]).__name__} {entry[name]!r}"
                raise SqltuneError(f"{where}: {name!r} must be a non-empty string ({found})")
        evidence = entry.get("evidence")
        if evidence is not None and not isinstance(evidence, str):
            raise SqltuneError(f"{where}: 'evidence' must be a string, not {type(evidence).__name__}")
        number = entry.get("id", len(examples))
        examples.append(
            Example(
                id=f"jsonl-{split}-{number:05d}" if isinstance(number, int) else str(number),
                db_id=entry["db_id"],
                question=entry["question"],
                sql=entry["sql"],
                evidence=evidence or None,
            )
        )
    tables = folder / "tables.json"
    databases = folder / "database"
    return Layout((path,), tables if tables.is_file() else None, databases if databases.is_dir() else None, examples)


def read_dataset(dataset: str, root: Path, split: str) -> Layout:
    """The layout and examples of one split; errors name the dataset, split or file that is wrong."""
    if dataset not in {d.value for d in Dataset}:
        raise SqltuneError(f"unknown dataset {dataset!r}; expected one of {', '.join(d.value for d in Dataset)}")
    if split not in {s.value for s in Split}:
        raise SqltuneError(f"unknown split {split!r}; expected one of {', '.join(s.value for s in Split)}")
    if dataset == "spider":
        layout = read_spider(root, split)
    elif dataset == "bird":
        layout = read_bird(root, split)
    elif dataset == "jsonl":
        layout = read_jsonl_questions(root, split)
    elif dataset == "wikisql":
        from sqltune.wikisql import read_wikisql

        layout = read_wikisql(root, split)
    else:
        layout = read_multiturn(root, split, dataset)
    if not layout.examples:
        raise SqltuneError(f"{dataset} {split} split is empty: {', '.join(map(str, layout.question_files))}")
    return layout
