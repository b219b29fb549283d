"""The engine preprocess writes records for, when it is not SQLite files: a dialect, a live database, or both.

- The gold SQL of Spider, BIRD, CoSQL, SParC and WikiSQL (SQLite's) is transpiled to `--dialect`
  (`sqltune.sql.transpile`); one's own jsonl questions are taken as written in it.
- With `--database-url`, the schemas are read from the live database (unless `--tables` gives them) and every gold
  query runs there in the sandbox, in the crash-safe pool's worker processes as evaluate runs SQL.
- A question whose database cannot be read, whose gold does not transpile or does not run is dropped with its
  category and reason (the records artifact's `dropped.jsonl`, counted in its manifest); the rest keep their
  original SQL for Spider's hardness classifier, which reads SQLite's SQL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from sqltune.datasets import Example
from sqltune.errors import SqltuneError
from sqltune.log import get_logger, progress
from sqltune.preprocess.config import PreprocessConfig
from sqltune.preprocess.schema_text import SAMPLE_VALUES
from sqltune.sql.execution import Executor, QueryError
from sqltune.sql.live import read_live_schema
from sqltune.sql.location import Databases, ServerDatabase
from sqltune.sql.pool import crash_safe_map, worker_count
from sqltune.sql.schema import DatabaseSchema
from sqltune.sql.transpile import TranspileError, transpile

log = get_logger(__name__)


class Target:
    """The dialect and live database of one preprocess run (see the module docstring)."""

    def __init__(
        self,
        config: PreprocessConfig,
        own: dict[str, DatabaseSchema] | None,
        schemas: dict[str, DatabaseSchema],
        samples: bool,
    ) -> None:
        self.dialect = config.dialect
        self.source_dialect = config.dialect if config.dataset == "jsonl" else "sqlite"
        self.databases = Databases(url=config.database_url) if config.database_url else None
        if self.databases is not None and self.databases.dialect != self.dialect:
            raise SqltuneError(
                f"--database-url is a {self.databases.dialect} database but --dialect is {self.dialect}: "
                f"pass --dialect {self.databases.dialect}"
            )
        self.own, self.schemas, self.want_samples = own, schemas, samples
        self.samples: dict[str, dict[int, list[Any]]] | None = None
        self.unreadable: dict[str, str] = {}
        self.original: dict[str, str] = {}

    def read_schemas(self, db_ids: Sequence[str]) -> dict[str, DatabaseSchema]:
        """The schemas the prompts describe: given ones, else each database's read from the live database (one
        that cannot be read is remembered: its questions are dropped)."""
        if self.databases is None or self.schemas:
            return self.schemas
        live, samples = {}, {}
        for db_id in progress(db_ids, desc="live schemas", unit="db"):
            try:
                live[db_id], samples[db_id] = read_live_schema(
                    self.databases.server(db_id), db_id, SAMPLE_VALUES if self.want_samples else 0
                )
            except SqltuneError as exc:
                self.unreadable[db_id] = str(exc)
        if self.unreadable:
            log.warning("%d database(s) cannot be read: %s", len(self.unreadable), ", ".join(self.unreadable))
        self.schemas = live
        self.samples = samples if self.want_samples else None
        return live

    def convert(self, examples: Sequence[Example]) -> tuple[list[Example], list[dict[str, Any]]]:
        """(the examples with their SQL in the dialect, the dropped questions with category and reason)."""
        dropped: list[dict[str, Any]] = []
        todo: list[tuple[Example, str]] = []

        def drop(example: Example, category: str, reason: str) -> None:
            row = {"id": example.id, "db_id": example.db_id, "question": example.question, "sql": example.sql}
            dropped.append({**row, "category": category, "reason": reason})

        for example in examples:
            if example.db_id in self.unreadable:
                drop(example, "database unreadable", self.unreadable[example.db_id])
                continue
            schema = (self.own or {}).get(example.db_id)
            try:
                sql = transpile(example.sql, self.dialect, source=self.source_dialect, schema=schema)
            except TranspileError as exc:
                drop(example, "does not transpile", str(exc))
                continue
            todo.append((example, sql))
        failures = self._run_gold([(example.db_id, sql) for example, sql in todo]) if self.databases else {}
        kept = []
        for example, sql in todo:
            if failure := failures.get((example.db_id, sql)):
                drop(example, f"does not run on {self.dialect}", failure)
                continue
            self.original[example.id] = example.sql
            kept.append(dataclasses.replace(example, sql=sql))
        return kept, dropped

    def _run_gold(self, queries: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Why each gold query fails on the live database (only the failing ones), from worker processes."""
        assert self.databases is not None
        tasks = sorted({(self.databases.server(db_id), db_id, sql) for db_id, sql in queries}, key=lambda t: t[1:])
        if not tasks:
            return {}
        results = crash_safe_map(
            _run_chunk, tasks, workers=worker_count(None, len(tasks)), initializer=_start, initargs=(),
            crashed=lambda task: (task, "its worker process died on it"), what="preprocess's gold check",
        )  # fmt: skip
        return {(db_id, sql): why for (_, db_id, sql), why in progress(results, desc="gold", total=len(tasks)) if why}

    def hardness_input(self, example: Example) -> tuple[str | None, DatabaseSchema]:
        """What Spider's classifier reads for `example`: its original SQLite SQL against the source's schema, or its
        SQL written back as SQLite against the prompt's schema (None when it cannot be)."""
        original = self.original.get(example.id, example.sql)
        if self.source_dialect == "sqlite" and self.own and example.db_id in self.own:
            return original, self.own[example.db_id]
        schema = self.schemas[example.db_id]
        try:
            return transpile(original, "sqlite", source=self.source_dialect), schema
        except TranspileError:
            return None, schema


_worker: dict[str, Executor] = {}


def _start() -> None:
    _worker["executor"] = Executor()


def _run_chunk(chunk: list[tuple[ServerDatabase, str, str]]) -> list[tuple[tuple, str | None]]:
    results = []
    for task in chunk:
        database, _, sql = task
        try:
            _worker["executor"].gold(database, sql)
            results.append((task, None))
        except QueryError as exc:
            results.append((task, f"{exc.category}: {exc}"))
    return results
