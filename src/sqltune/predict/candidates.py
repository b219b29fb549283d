"""Execution-checked prediction: which of a question's SQL candidates to answer with.

Each candidate is first parsed with sqlglot (in the dialect of the engine it runs on: SQLite, or the database URL's)
and its table and column names are looked up in the database's own schema, read from its SQLite file or the live
database; one that names what does not exist is rejected with the reason and never reaches the database. The rest
run in the evaluate step's sandbox (`Executor`: read-only, allow-listed functions, bounded time, rows, bytes and
memory) and their results are reduced to a digest. The answer is the candidate whose result the most runnable
candidates share; ties go to the higher log-likelihood, and when none runs the greedy candidate (index 0) stays the
answer. Candidates are checked in worker processes, as evaluate runs predictions: one that crashes SQLite or draws
the OOM killer fails alone (`check_candidates`).

The name check works on names, not scopes: a qualified column must exist in some table its qualifier stands for
anywhere in the query (Spider reuses `T1` for different tables across INTERSECT parts), an unqualified one in some
table the query reads, or be an alias the query defines. Columns of subqueries and CTEs, and quoted names SQLite may
read as string literals (`WHERE name = "Joe"`), are left to SQLite. It catches invented tables and columns, not
every error: what it lets through, the sandbox runs and reports.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import sqlglot
from sqlglot import exp

from sqltune.errors import SqltuneError
from sqltune.log import progress
from sqltune.sql.depth import SqlTooDeep, bounded, check_depth
from sqltune.sql.execution import Executor, QueryError, Rows
from sqltune.sql.extract import NO_SQL
from sqltune.sql.location import Database, Databases, ServerDatabase
from sqltune.sql.pool import crash_safe_map, worker_count
from sqltune.sql.sqlite import open_read_only

# Columns every SQLite table has without declaring them.
_IMPLICIT_COLUMNS = frozenset({"rowid", "oid", "_rowid_"})
Schema = dict[str, frozenset[str]]  # table or view name -> its column names, all lower-case


@dataclass(frozen=True)
class Outcome:
    """What checking and running one candidate gave: it ran (with a digest of its result) or the error."""

    ran: bool
    error: str | None = None
    digest: str | None = None
    rows: int | None = None


def read_schema(path: Path) -> Schema:
    """Tables and views of a SQLite file with their columns, from the file itself (opened read-only)."""
    try:
        with closing(open_read_only(path)) as conn:
            names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")]
            return {
                name.lower(): frozenset(row[1].lower() for row in conn.execute(f"PRAGMA table_info({_quote(name)})"))
                for name in names
            }
    except sqlite3.Error as exc:
        raise SqltuneError(f"{path}: cannot read the database schema: {exc}") from None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def unknown_names(tree: exp.Expression, schema: Schema) -> str | None:
    """Why the parsed query names something `schema` lacks, or None when every table and column checked exists."""
    derived = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    derived |= {query.alias.lower() for query in tree.find_all(exp.Subquery) if query.alias}
    stands_for: defaultdict[str, set[str]] = defaultdict(set)  # qualifier -> the tables it may name
    for table in tree.find_all(exp.Table):
        name = table.name.lower()
        if not name or name in derived:
            continue
        if name not in schema:
            return f"no table {table.name!r} in the database"
        stands_for[name].add(name)
        if table.alias:
            stands_for[table.alias.lower()].add(name)
    aliases = {alias.alias.lower() for alias in tree.find_all(exp.Alias)}
    aliases |= {column.name.lower() for table_alias in tree.find_all(exp.TableAlias) for column in table_alias.columns}
    read = set().union(*stands_for.values())
    for column in tree.find_all(exp.Column):
        name, qualifier = column.name.lower(), column.table.lower()
        if qualifier in derived:
            continue
        if qualifier and qualifier not in stands_for:
            return f"no table or alias {column.table!r} for column {column.sql(dialect='sqlite')}"
        tables = stands_for[qualifier] if qualifier else read
        if isinstance(column.this, exp.Star) or name in _IMPLICIT_COLUMNS:
            continue
        if any(name in schema[table] for table in tables) or (
            not qualifier and (name in aliases or column.this.quoted)
        ):
            continue
        return f"no column {column.name!r} in {', '.join(sorted(tables)) or 'the tables read'}"
    return None


def result_digest(rows: Rows, ordered: bool) -> str:
    """sha256 of the result rows: in their order when the query orders them, else as a sorted multiset."""
    lines = [repr(row) for row in rows]
    return hashlib.sha256("\n".join(lines if ordered else sorted(lines)).encode()).hexdigest()


def read_server_schema(database: ServerDatabase, db_id: str) -> Schema:
    """Tables of a live database with their columns (SQLAlchemy's inspector)."""
    from sqltune.sql.live import read_live_schema

    schema, _ = read_live_schema(database, db_id)
    names: dict[str, set[str]] = {table.lower(): set() for table in schema.tables}
    for column in schema.columns[1:]:
        names[schema.tables[column.table].lower()].add(column.name.lower())
    return {table: frozenset(columns) for table, columns in names.items()}


@dataclass
class CandidateChecker:
    """Checks and runs candidates against each question's database (`Databases`: the first SQLite file of a db_id
    under a directory, or the URL's database), reading each schema once."""

    databases: Databases
    executor: Executor = field(default_factory=Executor)
    _schemas: dict[str, Schema] = field(default_factory=dict)

    def database(self, db_id: str) -> Database:
        files = self.databases.files(db_id)
        if not files:
            where = self.databases.db_dir
            raise SqltuneError(f"no SQLite file for database {db_id!r} under {where} (expected {db_id}/*.sqlite)")
        return files[0]

    def schema(self, db_id: str) -> Schema:
        if db_id not in self._schemas:
            database = self.database(db_id)
            if isinstance(database, ServerDatabase):
                self._schemas[db_id] = read_server_schema(database, db_id)
            else:
                self._schemas[db_id] = read_schema(database)
        return self._schemas[db_id]

    def check(self, db_id: str, sql: str) -> Outcome:
        """Parse, check the names, then run: the first failure is the outcome."""
        if sql == NO_SQL:
            return Outcome(False, "no SQL in the model's output")
        try:
            check_depth(sql)
            with bounded():
                tree = self._named_query(db_id, sql)
        except SqlTooDeep as exc:
            return Outcome(False, str(exc))
        except SqltuneError as exc:  # the question's database is missing or unreadable: its candidates fail
            return Outcome(False, f"database: {exc}")
        if isinstance(tree, Outcome):
            return tree
        try:
            rows, _ = self.executor.run(self.database(db_id), sql)
        except QueryError as exc:
            return Outcome(False, f"{exc.category}: {exc}")
        return Outcome(True, digest=result_digest(rows, ordered=tree.args.get("order") is not None), rows=len(rows))

    def _named_query(self, db_id: str, sql: str) -> exp.Query | Outcome:
        """The query's tree once it is one SELECT naming only what the database has; else the failed outcome."""
        try:
            statements = sqlglot.parse(sql, read=self.databases.dialect)
        except sqlglot.errors.SqlglotError as exc:
            return Outcome(False, f"parse error: {str(exc).splitlines()[0]}")
        if len(statements) != 1 or not isinstance(statements[0], exp.Query):
            kind = ", ".join(type(s).__name__ for s in statements if s is not None) or "nothing"
            return Outcome(False, f"not one SELECT query: {kind}")
        if reason := unknown_names(statements[0], self.schema(db_id)):
            return Outcome(False, f"schema check: {reason}")
        return statements[0]

    def close(self) -> None:
        self.executor.close()


def choose(outcomes: Sequence[Outcome], log_probs: Sequence[float]) -> int:
    """The index of the answer: a candidate of the result most runnable candidates share, the most likely of
    them (also between results with as many votes); the greedy candidate 0 when none ran."""
    votes = Counter(outcome.digest for outcome in outcomes if outcome.ran)
    runnable = [index for index, outcome in enumerate(outcomes) if outcome.ran]
    if not runnable:
        return 0
    return max(runnable, key=lambda i: (votes[outcomes[i].digest], log_probs[i], -i))


CHECKER_CRASHED = "checker crashed: its worker process died on it (a crash in SQLite, or killed: out of memory?)"
_worker: dict[str, CandidateChecker] = {}  # a worker process's own checker


def _start_checker(databases: Databases) -> None:
    _worker["checker"] = CandidateChecker(databases)


def _check_chunk(chunk: list[tuple[str, str]]) -> list[tuple[tuple[str, str], Outcome]]:
    return [((db_id, sql), _worker["checker"].check(db_id, sql)) for db_id, sql in chunk]


def check_candidates(
    databases: Databases, candidates: Sequence[tuple[str, str]], workers: int | None = None
) -> dict[tuple[str, str], Outcome]:
    """The outcome of each distinct (db_id, sql) candidate, from worker processes as evaluate runs predictions
    (`pool.crash_safe_map`): a candidate that kills its worker fails alone, as `CHECKER_CRASHED`."""
    todo = sorted(set(candidates))  # one database's candidates side by side, each checked once
    if not todo:
        return {}
    checked = crash_safe_map(
        _check_chunk, todo, workers=worker_count(workers, len(todo)), initializer=_start_checker, initargs=(databases,),
        crashed=lambda candidate: (candidate, Outcome(False, CHECKER_CRASHED)), what="predict's candidate check",
    )  # fmt: skip
    return dict(progress(checked, desc="candidates", total=len(todo), unit="candidate"))
