"""The execution reward of the GRPO stage: a completion is scored by what its SQL returns.

The SQL is pulled out of the completion by predict's own extraction, then run against the question's database
in the evaluate step's sandbox (read-only, allow-listed functions, bounded time, rows, bytes and memory) and
compared with the gold result by the same EX rule the evaluate step reports (`execution_match`, Spider's
official comparison). A correct result earns `correct`, SQL that runs but returns something else earns
`executes` (a small push towards valid SQL), anything else 0: no SQL, a syntax error, a missing table, a
statement the sandbox refuses, a timeout. Each batch is scored in worker processes with the pool evaluate and
predict's candidate check use (`pool.crash_safe_map`), so SQL that crashes SQLite or draws the OOM killer fails
alone. Untrusted SQL can therefore neither change a database nor stop the run; the worst it earns is 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqltune.errors import SqltuneError
from sqltune.log import get_logger
from sqltune.sql.depth import SqlTooDeep, check_depth
from sqltune.sql.execution import Executor, Limits, QueryError, execution_match
from sqltune.sql.extract import NO_SQL, extract_sql
from sqltune.sql.location import Database, Databases
from sqltune.sql.pool import crash_safe_map, worker_count

log = get_logger(__name__)


@dataclass
class ExecutionReward:
    """A TRL reward function: `reward(prompts, completions, db_id=..., sql=..., id=...)` -> one float each.

    It also keeps, per call, the share of prompt groups with at least one correct completion (`group_hits`),
    which the trainer logs beside TRL's mean reward.
    """

    databases: Databases  # where each question's database is: SQLite files, or a database URL
    correct: float = 1.0
    executes: float = 0.1
    executor: Executor = field(default_factory=Executor)
    workers: int | None = None  # scoring processes per batch; default one per CPU
    group_hits: list[float] = field(default_factory=list)

    def score(self, db_id: str, gold_sql: str, completion: str) -> tuple[float, str]:
        """(reward, why) of one completion for a question on database `db_id` with `gold_sql`."""
        sql = extract_sql(completion)
        if sql == NO_SQL:
            return 0.0, "no SQL"
        try:
            check_depth(sql)
        except SqlTooDeep as exc:
            return 0.0, str(exc)
        files = self.database_files(db_id)
        try:
            verdict = execution_match(self.executor, files, gold_sql, sql)
        except QueryError as exc:  # the gold query itself fails: nothing to learn from this question
            return 0.0, f"{exc.category}: {exc}"
        if verdict.correct:
            return self.correct, "correct"
        if verdict.error == "wrong result":
            return self.executes, "wrong result"
        return 0.0, verdict.error or "failed"

    def database_files(self, db_id: str) -> list[Database]:
        files = self.databases.files(db_id)
        if not files:
            where = self.databases.db_dir
            raise SqltuneError(f"no SQLite file for database {db_id!r} under {where} (expected {db_id}/*.sqlite)")
        return files

    def gold_runs(self, record: Mapping[str, Any]) -> str | None:
        """Why `record`'s gold SQL cannot serve as a reference (no database file, or it fails in the sandbox), or
        None when it runs."""
        try:
            for path in self.database_files(record["db_id"]):
                self.executor.gold(path, record["sql"])
        except QueryError as exc:
            return f"{exc.category}: {exc}"
        except SqltuneError as exc:  # Spider ships a few databases without their SQLite file
            return str(exc)
        return None

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], *, db_id: Sequence[str], sql: Sequence[str],
        id: Sequence[str], **_: Any,
    ) -> list[float]:  # fmt: skip
        tasks = [(db, gold, _text(completion)) for db, gold, completion in zip(db_id, sql, completions, strict=True)]
        scores = self.score_all(tasks)
        scored = [scores[task] for task in tasks]
        groups: dict[str, bool] = {}
        for question, (_, why) in zip(id, scored, strict=True):
            groups[question] = groups.get(question, False) or why == "correct"
        self.group_hits.append(sum(groups.values()) / len(groups) if groups else 0.0)
        rewards = [reward for reward, _ in scored]
        return rewards

    def score_all(self, tasks: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str, str], tuple[float, str]]:
        """The (reward, why) of each distinct (db_id, gold SQL, completion), from worker processes; a completion
        whose worker dies on it earns 0 as `SCORER_CRASHED`."""
        todo = sorted(set(tasks))  # one database's completions side by side, each scored once
        if not todo:
            return {}
        scored = crash_safe_map(
            _score_chunk, todo, workers=worker_count(self.workers, len(todo)), initializer=_start_scorer,
            initargs=(self.databases, self.correct, self.executes, self.executor.limits),
            crashed=lambda task: (task, (0.0, SCORER_CRASHED)), what="the GRPO reward",
        )  # fmt: skip
        return dict(scored)

    def close(self) -> None:
        self.executor.close()


SCORER_CRASHED = "scorer crashed: its worker process died on it (a crash in SQLite, or killed: out of memory?)"
_worker: dict[str, ExecutionReward] = {}  # a worker process's own reward


def _start_scorer(databases: Databases, correct: float, executes: float, limits: Limits) -> None:
    _worker["reward"] = ExecutionReward(databases, correct, executes, Executor(limits))


def _score_chunk(chunk: list[tuple[str, str, str]]) -> list[tuple[tuple[str, str, str], tuple[float, str]]]:
    return [(task, _worker["reward"].score(*task)) for task in chunk]


def _text(completion: Any) -> str:
    """A completion's text: TRL gives chat prompts' completions as messages, plain prompts' as strings."""
    if isinstance(completion, str):
        return completion
    return "".join(message.get("content", "") for message in completion if isinstance(message, dict))
