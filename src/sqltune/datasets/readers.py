"""Readers of the directory layouts: Spider, BIRD and CoSQL/SParC, and one's own questions as JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

from sqltune.datasets.base import Example, Layout, _entries, _field, _first_existing, _optional_text
from sqltune.errors import SqltuneError


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
