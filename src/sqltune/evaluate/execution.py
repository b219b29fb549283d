"""Execution accuracy: run untrusted SQL in a sandbox and compare results the way the official evaluators do.

Sandbox: databases are opened read-only (`mode=ro` URI), an authorizer allows only reads (no writes, ATTACH,
PRAGMA, transactions or `load_extension`), extension loading is off, a progress handler enforces the time limit
inside SQLite, and results beyond a row cap are refused.

Comparison (test-suite-sql-eval): `> =`-style operators are rejoined, DISTINCT is removed from both queries
unless kept, result multisets are compared with row order only when the gold has ORDER BY, and columns may be
permuted. BIRD compares row sets instead, without any rewriting.
"""

from __future__ import annotations

import itertools
import math
import re
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

Rows = list[tuple]

_CUR_YEAR = re.compile(r"YEAR\s*\(\s*CURDATE\s*\(\s*\)\s*\)\s*", re.IGNORECASE)
# quoted strings/identifiers are skipped so that only the DISTINCT keyword is removed
_DISTINCT = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\])|\bdistinct\b""", re.IGNORECASE)
_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_PROGRESS_STEPS = 1000


class QueryError(Exception):
    """A query failed in the sandbox; `category` is one of the report's error categories."""

    def __init__(self, category: str, message: str) -> None:
        super().__init__(message)
        self.category = category


def rejoin_operators(sql: str) -> str:
    return sql.replace("> =", ">=").replace("< =", "<=").replace("! =", "!=")


def remove_distinct(sql: str) -> str:
    """Drop every DISTINCT keyword (also inside COUNT(DISTINCT ...)), as test-suite-sql-eval does."""
    return _DISTINCT.sub(lambda m: m.group(1) or "", sql)


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 30.0
    max_rows: int = 100_000


def _authorize(action: int, arg1: str | None, arg2: str | None, db_name: str | None, source: str | None) -> int:
    if action not in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() == "load_extension":
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection that can only read: see the module docstring."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    conn.text_factory = lambda b: b.decode(errors="ignore")  # as the official evaluator reads text
    if hasattr(conn, "enable_load_extension"):
        conn.enable_load_extension(False)
    conn.set_authorizer(_authorize)
    return conn


@dataclass
class Executor:
    """Runs queries under `limits`; with `cache`, keeps one connection per database file and each gold result."""

    limits: Limits = field(default_factory=Limits)
    cache: bool = True
    _connections: dict[Path, sqlite3.Connection] = field(default_factory=dict)
    _gold: dict[tuple[Path, str], Rows | QueryError] = field(default_factory=dict)

    def _connection(self, path: Path) -> sqlite3.Connection:
        if not self.cache:
            return open_readonly(path)
        if path not in self._connections:
            self._connections[path] = open_readonly(path)
        return self._connections[path]

    def run(self, path: Path, sql: str) -> tuple[Rows, float]:
        """(rows, seconds); raises QueryError (syntax error / execution error / timeout / too many rows)."""
        conn = self._connection(path)
        start = time.monotonic()
        deadline = start + self.limits.timeout_s
        conn.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
        try:
            cursor = conn.execute(_CUR_YEAR.sub("2020", sql))
            rows: Rows = []
            while batch := cursor.fetchmany(1000):
                rows.extend(batch)
                if len(rows) > self.limits.max_rows:
                    raise QueryError("too many rows", f"more than {self.limits.max_rows} rows")
            return rows, time.monotonic() - start
        except sqlite3.Error as exc:
            if time.monotonic() > deadline:
                raise QueryError("timeout", f"no result within {self.limits.timeout_s:g} s") from None
            category = (
                "syntax error" if "syntax error" in str(exc) or "incomplete input" in str(exc) else "execution error"
            )
            raise QueryError(category, f"{type(exc).__name__}: {exc}") from None
        except (ValueError, OverflowError, MemoryError) as exc:  # e.g. several statements, huge integers
            raise QueryError("execution error", f"{type(exc).__name__}: {exc}") from None
        finally:
            if not self.cache:
                conn.close()

    def gold(self, path: Path, sql: str) -> Rows:
        """Gold rows, computed once per (database file, query) when caching."""
        key = (path, sql)
        result = self._gold.get(key)
        if result is None:
            try:
                result = self.run(path, sql)[0]
            except QueryError as exc:
                result = exc
            if self.cache:
                self._gold[key] = result
        if isinstance(result, QueryError):
            raise result
        return result

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()


def _unordered(row: tuple) -> tuple:
    return tuple(sorted(row, key=lambda x: str(x) + str(type(x))))


def results_match(gold: Rows, pred: Rows, order_matters: bool) -> bool:
    """Test-suite denotation equality: same bag (or list) of rows under some permutation of the columns."""
    if not gold and not pred:
        return True
    if len(gold) != len(pred) or len(gold[0]) != len(pred[0]):
        return False
    gold_unordered, pred_unordered = [_unordered(r) for r in gold], [_unordered(r) for r in pred]
    if (gold_unordered != pred_unordered) if order_matters else (set(gold_unordered) != set(pred_unordered)):
        return False
    width = len(gold[0])
    gold_columns = [{row[i] for row in gold} for i in range(width)]
    pred_columns = [{row[i] for row in pred} for i in range(width)]
    # pred column j can stand for gold column i only if all its values occur there (prunes only impossible ones)
    candidates = [[j for j in range(width) if pred_columns[j] <= gold_columns[i]] for i in range(width)]
    gold_bag = None if order_matters else Counter(gold)
    for perm in itertools.product(*candidates):
        if len(set(perm)) != width:
            continue
        permuted = [tuple(row[j] for j in perm) for row in pred]
        if permuted == gold if order_matters else Counter(permuted) == gold_bag:
            return True
    return False


def bird_results_match(gold: Rows, pred: Rows) -> bool:
    """BIRD's EX: the two results hold the same set of rows."""
    return set(gold) == set(pred)


def ves_reward(time_ratio: float) -> float:
    """BIRD's reward-based VES (R-VES) bucket for gold_time / pred_time of a correct prediction."""
    for bound, reward in ((2, 1.25), (1, 1.0), (0.5, 0.75), (0.25, 0.5)):
        if time_ratio >= bound:
            return reward
    return 0.25 if time_ratio > 0 else 0.0


def ves_score(rewards: list[float]) -> float:
    """R-VES over questions: mean of sqrt(reward), as a fraction (BIRD prints it times 100)."""
    return sum(math.sqrt(r) for r in rewards) / len(rewards) if rewards else 0.0


def prepare(sql: str, keep_distinct: bool) -> str:
    sql = rejoin_operators(sql)
    return sql if keep_distinct else remove_distinct(sql)


def execution_match(
    executor: Executor,
    db_files: list[Path],
    gold_sql: str,
    pred_sql: str,
    *,
    bird: bool = False,
    keep_distinct: bool = False,
    alternatives: list[str] | None = None,
) -> tuple[int, str | None, float]:
    """(1/0, error category or None, pred seconds on the last file) over every database file of the question.

    `alternatives` are extra candidate predictions (value plugging): the question counts as correct if any
    candidate matches on every file. Gold failures raise QueryError with category "gold error".
    """
    if not bird:
        gold_sql = prepare(gold_sql, keep_distinct)
    order_matters = "order by" in gold_sql.lower()
    error: str | None = None
    for candidate in [pred_sql, *(alternatives or [])]:
        if not bird:
            candidate = prepare(candidate, keep_distinct)
        elapsed = 0.0
        for path in db_files:
            try:
                gold = executor.gold(path, gold_sql)
            except QueryError as exc:
                raise QueryError("gold error", str(exc)) from None
            try:
                pred, elapsed = executor.run(path, candidate)
            except QueryError as exc:
                error = error or exc.category
                break
            if not (bird_results_match(gold, pred) if bird else results_match(gold, pred, order_matters)):
                error = error or "wrong result"
                break
        else:
            return 1, None, elapsed
    return 0, error, 0.0


def db_files_for(db_dir: Path, db_id: str) -> list[Path]:
    """All `*.sqlite` files of one database (test-suite layout: several per db_id), sorted; [] when missing."""
    return sorted((db_dir / db_id).glob("*.sqlite"))


def time_query(executor: Executor, path: Path, sql: str, repeats: int) -> float:
    """Mean seconds of `repeats` runs (VES timing)."""
    return sum(executor.run(path, sql)[1] for _ in range(repeats)) / max(repeats, 1)
