"""Execution accuracy: run untrusted SQL in a sandbox and compare results the way the official evaluators do.

Sandbox (`Executor.run`): databases are opened read-only, writing nothing beside them (`sqltune.sql.sqlite`); an
authorizer allows only reads (no writes, ATTACH, PRAGMA or transactions) and only the built-in functions a SELECT
uses (`ALLOWED_FUNCTIONS`: not `load_extension`, nor `fts3_tokenizer`, which plants a function pointer that crashes
the process); a progress handler enforces the time limit inside SQLite; and `Limits` caps rows, result bytes and
SQLite's heap. Temporary storage (sorts, temporary b-trees) lives in that heap (`temp_store=MEMORY`), so no query
writes to disk.

Comparison (test-suite-sql-eval): `> =`-style operators are rejoined, DISTINCT is removed from both queries
unless kept, result multisets are compared with row order only when the gold has ORDER BY, and columns may be
permuted. BIRD compares row sets instead, without any rewriting.
"""

from __future__ import annotations

import math
import re
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from sqltune.sql.limits import ALLOWED_FUNCTIONS, Limits, QueryError, Rows, row_bytes
from sqltune.sql.location import Database, ServerDatabase
from sqltune.sql.sqlite import UnreadableDatabase, open_read_only

_CUR_YEAR = re.compile(r"YEAR\s*\(\s*CURDATE\s*\(\s*\)\s*\)\s*", re.IGNORECASE)
# quoted strings/identifiers are skipped so that only the DISTINCT keyword is removed
_DISTINCT = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\])|\bdistinct\b""", re.IGNORECASE)
_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE}
_PROGRESS_STEPS = 1000


def rejoin_operators(sql: str) -> str:
    return sql.replace("> =", ">=").replace("< =", "<=").replace("! =", "!=")


def remove_distinct(sql: str) -> str:
    """Drop every DISTINCT keyword (also inside COUNT(DISTINCT ...)), as test-suite-sql-eval does."""
    return _DISTINCT.sub(lambda m: m.group(1) or "", sql)


class _Authorizer:
    """Allows what a read-only SELECT needs; remembers a denied function so the error can name it."""

    def __init__(self) -> None:
        self.denied_function: str | None = None

    def __call__(self, action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None) -> int:
        if action == sqlite3.SQLITE_FUNCTION:
            if (arg2 or "").lower() in ALLOWED_FUNCTIONS:
                return sqlite3.SQLITE_OK
            self.denied_function = arg2
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


class _Sandbox(NamedTuple):
    connection: sqlite3.Connection
    authorizer: _Authorizer


def _open_sandbox(path: Path, limits: Limits) -> _Sandbox:
    """A read-only connection under `limits`: see the module docstring."""
    conn = open_read_only(path, isolation_level=None)
    conn.text_factory = lambda b: b.decode(errors="ignore")  # as the official evaluator reads text
    if hasattr(conn, "enable_load_extension"):
        conn.enable_load_extension(False)
    if hasattr(conn, "setlimit"):  # Python >= 3.11; before, the heap limit alone bounds a value
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limits.max_result_bytes)
    # The authorizer denies PRAGMA, so these come first. Sorts and temporary tables stay in the heap, off the disk;
    # past the soft limit (half) page caches stop growing, which leaves the rest of the heap to queries.
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute(f"PRAGMA hard_heap_limit = {limits.max_heap_bytes}")
    conn.execute(f"PRAGMA soft_heap_limit = {limits.max_heap_bytes // 2}")
    authorizer = _Authorizer()
    conn.set_authorizer(authorizer)
    return _Sandbox(conn, authorizer)


@dataclass
class Executor:
    """Runs queries under `limits`; with `cache`, keeps one connection per database and each gold result.

    A database is a SQLite file (`Path`) or a server database (`ServerDatabase`: PostgreSQL, DuckDB), whose
    sandbox is `sqltune.sql.server`'s; both raise the same QueryError categories.
    """

    limits: Limits = field(default_factory=Limits)
    cache: bool = True
    _sandboxes: dict[Path, _Sandbox] = field(default_factory=dict)
    _servers: dict[ServerDatabase, Any] = field(default_factory=dict)
    _gold: dict[tuple[Database, str], Rows | QueryError] = field(default_factory=dict)

    def _sandbox(self, path: Path) -> _Sandbox:
        if not self.cache:
            return _open_sandbox(path, self.limits)
        if path not in self._sandboxes:
            self._sandboxes[path] = _open_sandbox(path, self.limits)
        return self._sandboxes[path]

    def run(self, path: Database, sql: str) -> tuple[Rows, float]:
        """(rows, seconds); raises QueryError: syntax error, execution error (also a denied statement or
        function), timeout, too many rows, result too large or memory limit."""
        if isinstance(path, ServerDatabase):
            return self._run_on_server(path, sql)
        try:
            conn, authorizer = self._sandbox(path)
        except UnreadableDatabase as exc:
            raise QueryError("unreadable database", str(exc)) from None
        limits = self.limits
        authorizer.denied_function = None
        start = time.monotonic()
        deadline = start + limits.timeout_s
        conn.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
        try:
            rows: Rows = []
            size = 0
            for row in conn.execute(_CUR_YEAR.sub("2020", sql)):
                rows.append(row)
                size += row_bytes(row)
                if len(rows) > limits.max_rows:
                    raise QueryError("too many rows", f"more than {limits.max_rows} rows")
                if size > limits.max_result_bytes:
                    raise QueryError("result too large", f"result over {limits.max_result_bytes} bytes")
            return rows, time.monotonic() - start
        except sqlite3.DataError as exc:  # SQLITE_TOOBIG: a string or blob over the length limit
            raise QueryError("result too large", f"{exc} (limit: {limits.max_result_bytes} bytes)") from None
        except MemoryError:  # SQLITE_NOMEM: the heap limit was reached
            raise QueryError(
                "memory limit", f"out of memory (SQLite heap limit: {limits.max_heap_bytes} bytes)"
            ) from None
        except sqlite3.Error as exc:
            if time.monotonic() > deadline:
                raise QueryError("timeout", f"no result within {limits.timeout_s:g} s") from None
            if authorizer.denied_function:
                raise QueryError(
                    "execution error", f"function {authorizer.denied_function}() is not allowed in the sandbox"
                ) from None
            category = (
                "syntax error" if "syntax error" in str(exc) or "incomplete input" in str(exc) else "execution error"
            )
            raise QueryError(category, f"{type(exc).__name__}: {exc}") from None
        except (ValueError, OverflowError) as exc:  # e.g. several statements, huge integers
            raise QueryError("execution error", f"{type(exc).__name__}: {exc}") from None
        finally:
            if not self.cache:
                conn.close()

    def _run_on_server(self, database: ServerDatabase, sql: str) -> tuple[Rows, float]:
        from sqltune.sql.server import open_server_sandbox

        sandbox = self._servers.get(database) if self.cache else None
        if sandbox is None:
            sandbox = open_server_sandbox(database, self.limits)
            if self.cache:
                self._servers[database] = sandbox
        start = time.monotonic()
        try:
            return sandbox.run(sql), time.monotonic() - start
        except QueryError as exc:
            if exc.category == "unreadable database":  # the connection is gone: the next query reconnects
                self._servers.pop(database, None)
            raise
        finally:
            if not self.cache:
                sandbox.close()

    def gold(self, path: Database, sql: str) -> Rows:
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
        for sandbox in self._sandboxes.values():
            sandbox.connection.close()
        self._sandboxes.clear()
        for server in self._servers.values():
            server.close()
        self._servers.clear()


def _unordered(row: tuple) -> tuple:
    return tuple(sorted(row, key=lambda x: str(x) + str(type(x))))


def results_match(gold: Rows, pred: Rows, order_matters: bool, deadline: float = math.inf) -> bool:
    """Test-suite denotation equality: same bag (or list) of rows under some permutation of the columns.

    Raises QueryError("timeout") when the column search passes `deadline` (a `time.monotonic()` value).
    """
    if not gold and not pred:
        return True
    if len(gold) != len(pred) or len(gold[0]) != len(pred[0]):
        return False
    gold_unordered, pred_unordered = [_unordered(r) for r in gold], [_unordered(r) for r in pred]
    if (gold_unordered != pred_unordered) if order_matters else (set(gold_unordered) != set(pred_unordered)):
        return False
    gold_columns, pred_columns = list(zip(*gold, strict=True)), list(zip(*pred, strict=True))
    if order_matters:  # the permuted rows equal gold's, in order, iff every gold column is some pred column
        return Counter(gold_columns) == Counter(pred_columns)
    return _column_bijection_exists(gold_columns, pred_columns, deadline)


def _column_bijection_exists(gold_columns: list[tuple], pred_columns: list[tuple], deadline: float) -> bool:
    """Is there a one-to-one map of gold columns to pred columns under which the two bags of rows are equal?

    Depth-first over gold columns, most constrained first. A pred column can stand for a gold column only if both
    hold the same multiset of values; identical pred columns are interchangeable, so each is tried once; and a
    partial map survives only while the rows projected on the columns mapped so far form equal bags. Each
    projected row is interned as an id (prefix id, value), so a projection costs one pass over the rows.
    """
    remaining = Counter(pred_columns)  # each distinct pred column, with how many times it may still be used
    by_values: defaultdict[frozenset, list[tuple]] = defaultdict(list)
    for column in remaining:
        by_values[frozenset(Counter(column).items())].append(column)
    candidates = [by_values.get(frozenset(Counter(column).items()), []) for column in gold_columns]
    order = sorted(range(len(gold_columns)), key=lambda i: len(candidates[i]))
    ids: dict[tuple[int, Any], int] = {}

    def extend(prefix: list[int], column: tuple) -> list[int]:
        return [ids.setdefault((p, value), len(ids)) for p, value in zip(prefix, column, strict=True)]

    gold_bags, gold_prefix = [], [-1] * len(gold_columns[0])
    for i in order:
        gold_prefix = extend(gold_prefix, gold_columns[i])
        gold_bags.append(Counter(gold_prefix))
    pred_prefixes = [[-1] * len(pred_columns[0])]  # pred_prefixes[d]: pred rows projected on the first d choices
    choices: list[tuple] = []
    alternatives = [iter(candidates[order[0]])]  # alternatives[d]: the untried pred columns for gold column order[d]
    while alternatives:
        if time.monotonic() > deadline:
            raise QueryError("timeout", f"no column permutation decided among {len(order)} columns in time")
        depth = len(alternatives) - 1
        column = next((c for c in alternatives[-1] if remaining[c]), None)
        if column is None:  # backtrack
            alternatives.pop()
            pred_prefixes.pop()
            if choices:
                remaining[choices.pop()] += 1
            continue
        prefix = extend(pred_prefixes[-1], column)
        if Counter(prefix) != gold_bags[depth]:
            continue
        if depth + 1 == len(order):
            return True
        remaining[column] -= 1
        choices.append(column)
        pred_prefixes.append(prefix)
        alternatives.append(iter(candidates[order[depth + 1]]))
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


class Verdict(NamedTuple):
    """One question's EX: `correct` 1/0; for a failure its category and, for a failed query, what went wrong."""

    correct: int
    error: str | None = None
    detail: str | None = None
    seconds: float = 0.0  # the correct prediction's time on the last database file


def execution_match(
    executor: Executor,
    db_files: Sequence[Database],
    gold_sql: str,
    pred_sql: str,
    *,
    bird: bool = False,
    keep_distinct: bool = False,
    alternatives: list[str] | None = None,
) -> Verdict:
    """The verdict over every database file of the question; the first candidate's failure is the one reported.

    `alternatives` are extra candidate predictions (value plugging): the question counts as correct if any
    candidate matches on every file. Gold failures raise QueryError with category "gold error". Comparing the
    columns gets the same time limit as a query.
    """
    if not bird:
        gold_sql = prepare(gold_sql, keep_distinct)
    order_matters = "order by" in gold_sql.lower()
    failure: Verdict | None = None
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
                deadline = time.monotonic() + executor.limits.timeout_s
                if not (bird_results_match(gold, pred) if bird else results_match(gold, pred, order_matters, deadline)):
                    failure = failure or Verdict(0, "wrong result")
                    break
            except QueryError as exc:
                failure = failure or Verdict(0, exc.category, str(exc))
                break
        else:
            return Verdict(1, seconds=elapsed)
    return failure or Verdict(0)


def db_files_for(db_dir: Path, db_id: str) -> list[Path]:
    """All `*.sqlite` files of one database (test-suite layout: several per db_id), sorted; [] when missing."""
    return sorted((db_dir / db_id).glob("*.sqlite"))


def time_query(executor: Executor, path: Database, sql: str, repeats: int) -> float:
    """Mean seconds of `repeats` runs (VES timing)."""
    return sum(executor.run(path, sql)[1] for _ in range(repeats)) / max(repeats, 1)
