"""Reading gold questions and predictions in the formats the evaluate step accepts.

Gold: preprocess records (JSONL with `db_id`, `sql`, `hardness`|`difficulty`), the official dev.json / BIRD json
(`query`|`SQL`, `db_id`), or a gold SQL file (`SQL<TAB>db_id` per line). Predictions: the predict step's JSONL
(`sql` per record) or the official text format (one SQL per line in gold order; an empty line is an empty,
hence wrong, prediction, never a shift).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqltune.artifacts import read_jsonl
from sqltune.errors import SqltuneError


@dataclass(frozen=True)
class GoldQuestion:
    db_id: str
    sql: str
    level: str | None  # Spider hardness or BIRD difficulty, when the source gives it
    id: Any = None
    dialect: str = "sqlite"  # the SQL dialect of the gold (preprocess --dialect writes it into the records)


def _gold_from_record(record: Any, where: str) -> GoldQuestion:
    if not isinstance(record, dict):
        raise SqltuneError(f"{where}: expected a JSON object, got {type(record).__name__}")
    sql = next((record[key] for key in ("sql", "query", "SQL") if isinstance(record.get(key), str)), None)
    if sql is None or not isinstance(record.get("db_id"), str):
        raise SqltuneError(f"{where}: a gold record needs `db_id` and `sql` (or `query`/`SQL`) strings")
    level = record.get("hardness") or record.get("difficulty")
    dialect = record.get("dialect") or "sqlite"
    if not isinstance(dialect, str):
        raise SqltuneError(f"{where}: `dialect` must be a string (sqlglot's dialect name)")
    return GoldQuestion(record["db_id"], sql, level, record.get("id", record.get("question_id")), dialect)


@contextmanager
def _utf8_text(path: Path) -> Iterator[None]:
    """Reading `path` within this block: a file that is not UTF-8 is an error naming it, not a traceback."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise SqltuneError(f"{path}: not UTF-8 text ({exc})") from None


def load_gold(path: str | Path) -> list[GoldQuestion]:
    """Gold questions in file order; errors name the file and the record or line."""
    path = Path(path)
    if not path.is_file():
        raise SqltuneError(f"gold file not found: {path}")
    with _utf8_text(path):
        return _read_gold(path)


def _read_gold(path: Path) -> list[GoldQuestion]:
    if path.suffix == ".jsonl":
        return [_gold_from_record(r, f"{path}: record {i}") for i, r in enumerate(read_jsonl(path))]
    if path.suffix == ".json":
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SqltuneError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
        if not isinstance(records, list):
            raise SqltuneError(f"{path}: expected a JSON list of questions")
        return [_gold_from_record(r, f"{path}: question {i}") for i, r in enumerate(records)]
    gold = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        sql, tab, db_id = line.strip().rpartition("\t")
        if not tab or not db_id:
            raise SqltuneError(f"{path}:{lineno}: expected `SQL<TAB>db_id`")
        gold.append(GoldQuestion(db_id.strip(), sql, None))
    return gold


def load_predictions(path: str | Path, gold: list[GoldQuestion]) -> list[str]:
    """One predicted SQL per gold question, in gold order; a count or db_id mismatch is an error."""
    path = Path(path)
    if not path.is_file():
        raise SqltuneError(f"predictions file not found: {path}")
    with _utf8_text(path):
        preds, count = _read_predictions(path, gold)
    if count != len(gold):
        raise SqltuneError(f"{path}: {count} predictions for {len(gold)} gold questions; they must correspond 1:1")
    return preds


def _read_predictions(path: Path, gold: list[GoldQuestion]) -> tuple[list[str], int]:
    """(one SQL per record or line, zipped with gold: no more than it; how many the file holds)."""
    if path.suffix == ".jsonl":
        records = read_jsonl(path)
        preds = []
        for i, (record, question) in enumerate(zip(records, gold, strict=False)):
            if not isinstance(record, dict) or not isinstance(record.get("sql", ""), str | None):
                raise SqltuneError(f"{path}: record {i} needs a string `sql`")
            if record.get("db_id") not in (None, question.db_id):
                raise SqltuneError(
                    f"{path}: record {i} is for database {record['db_id']!r} but gold question {i} is for "
                    f"{question.db_id!r}: predictions must be in gold order"
                )
            preds.append(record.get("sql") or "")
        count = len(records)
    else:
        lines = path.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the final newline ends the last line; it is not an extra empty prediction
        preds = [line.strip().split("\t")[0] for line in lines]  # official: text before a tab
        count = len(preds)
    return preds, count
