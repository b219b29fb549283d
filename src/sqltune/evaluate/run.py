"""The evaluate step: EX and EM per question across worker processes, metrics, results and a report.

Each worker keeps its own database connections and gold results (`Executor`) and its parsed gold queries;
questions are dealt out in contiguous chunks (questions of one database sit together), and results come back
in input order, so a run is deterministic whatever the number of workers. A worker that dies (a crash in SQLite,
the OOM killer) fails only the question it was running, as "worker crashed" (`pool.crash_safe_map`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from sqltune.artifacts import artifact_dir, atomic_write_json, check_output, write_jsonl
from sqltune.errors import SqltuneError
from sqltune.evaluate.config import EvaluateConfig
from sqltune.evaluate.exact_match import PARTIAL_TYPES, aggregate_partial, exact_match, parse_normalized
from sqltune.evaluate.inputs import GoldQuestion, load_gold, load_predictions
from sqltune.evaluate.values import plug_gold_values
from sqltune.log import get_logger, progress
from sqltune.sql.execution import Executor, QueryError, execution_match, time_query
from sqltune.sql.hardness import HARDNESS_LEVELS, hardness_of
from sqltune.sql.location import Databases
from sqltune.sql.parser import SqlParseError, parse_sql
from sqltune.sql.pool import crash_safe_map, worker_count
from sqltune.sql.schema import DatabaseSchema, load_tables
from sqltune.sql.sqlite import database_problem
from sqltune.sql.transpile import TranspileError, transpile

log = get_logger(__name__)

BIRD_LEVELS = ("simple", "moderate", "challenging")


@dataclass(frozen=True)
class _Task:
    idx: int
    question: GoldQuestion
    pred: str


_state: dict[str, Any] = {}


def _init_worker(
    schemas: dict[str, DatabaseSchema], databases: Databases | None, config: EvaluateConfig, cache: bool
) -> None:
    _state.update(schemas=schemas, databases=databases, config=config, executor=Executor(config.limits, cache))
    _state["gold_parses"] = {}


def _as_sqlite(sql: str, dialect: str) -> str | None:
    """SQL of another dialect written as SQLite, which Spider's parser reads: EM does not depend on the dialect.
    None when it cannot be (the query then does not parse, as any unparsable query)."""
    if dialect == "sqlite":
        return sql
    try:
        return transpile(sql, "sqlite", source=dialect)
    except TranspileError:
        return None


def _parse(sql: str, dialect: str, schema: DatabaseSchema) -> tuple[dict, bool]:
    written = _as_sqlite(sql, dialect)
    return parse_normalized(written, schema) if written is not None else parse_normalized("", schema)


def _gold_parse(question: GoldQuestion, schema: DatabaseSchema) -> tuple[dict, bool]:
    key = (question.db_id, question.sql)
    cache = _state["gold_parses"]
    if key not in cache:
        cache[key] = _parse(question.sql, question.dialect, schema)
    return cache[key]


def _blank_row(task: _Task) -> dict[str, Any]:
    question = task.question
    row: dict[str, Any] = {"idx": task.idx, "id": question.id, "db_id": question.db_id, "hardness": question.level}
    row.update(ex=None, em=None, error=None, pred_parse_ok=None, sql=task.pred, gold=question.sql)
    return row


def _evaluate_one(task: _Task) -> dict[str, Any]:
    config: EvaluateConfig = _state["config"]
    question, pred = task.question, task.pred
    # as the official Spider evaluator, a lower-case "value" placeholder in a prediction reads as 1
    pred = pred if config.bird else pred.replace("value", "1")
    row = _blank_row(task)
    if config.etype in ("all", "match"):
        schema = _state["schemas"][question.db_id]
        gold_norm, gold_ok = _gold_parse(question, schema)
        pred_norm, row["pred_parse_ok"] = _parse(pred, question.dialect, schema)
        if gold_ok:
            row["em"], row["partial"] = exact_match(pred_norm, gold_norm)
    if config.etype in ("all", "exec"):
        _execute(row, question, pred, config)
    return row


def _execute(row: dict[str, Any], question: GoldQuestion, pred: str, config: EvaluateConfig) -> None:
    files = _state["databases"].files(question.db_id)
    if not files:
        row["error"] = "missing database"
        return
    local = [path for path in files if isinstance(path, Path)]
    if problems := [problem for path in local if (problem := database_problem(path))]:
        row.update(error="unreadable database", detail="; ".join(problems))
        return
    executor: Executor = _state["executor"]
    alternatives = plug_gold_values(question.sql, pred) if config.plug_value else None
    if not pred.strip():
        row.update(ex=0, error="empty prediction")
        return
    try:
        verdict = execution_match(
            executor,
            files,
            question.sql,
            pred,
            bird=config.bird,
            keep_distinct=config.keep_distinct,
            alternatives=alternatives,
        )
    except QueryError as exc:
        row.update(ex=None, error=exc.category, detail=str(exc))
        return
    row.update(ex=verdict.correct, error=verdict.error)
    if verdict.detail:
        row["detail"] = verdict.detail
    if config.ves_repeats:
        row["time_ratio"] = 0.0
        if row["ex"]:
            gold_time = time_query(executor, files[0], question.sql, config.ves_repeats)
            pred_time = time_query(executor, files[0], pred, config.ves_repeats)
            row["time_ratio"] = gold_time / max(pred_time, 1e-9)


def _run(tasks: list[_Task], init_args: tuple, workers: int) -> list[dict[str, Any]]:
    if workers <= 1:
        _init_worker(*init_args)
        try:
            return [_evaluate_one(t) for t in progress(tasks, desc="evaluate", total=len(tasks))]
        finally:
            _state["executor"].close()
    config: EvaluateConfig = init_args[2]
    pooled = crash_safe_map(
        _evaluate_chunk, tasks, workers=workers, initializer=_init_worker, initargs=init_args,
        crashed=partial(_crashed_row, config=config), what="evaluate",
    )  # fmt: skip
    rows = list(progress(pooled, desc="evaluate", total=len(tasks)))
    return sorted(rows, key=lambda row: row["idx"])


def _evaluate_chunk(chunk: list[_Task]) -> list[dict[str, Any]]:
    return [_evaluate_one(task) for task in chunk]


def _crashed_row(task: _Task, config: EvaluateConfig) -> dict[str, Any]:
    row = _blank_row(task)
    row.update(error="worker crashed", detail="its worker process died on it (a crash, or killed: out of memory?)")
    if config.etype in ("all", "exec"):
        row["ex"] = 0
    if config.etype in ("all", "match"):
        row["em"] = 0
    return row


def _level_of(question: GoldQuestion, schemas: dict[str, DatabaseSchema], bird: bool) -> str:
    if question.level or bird:
        return question.level or "unknown"
    try:
        written = _as_sqlite(question.sql, question.dialect)
        return hardness_of(parse_sql(written, schemas[question.db_id])) if written is not None else "unknown"
    except SqlParseError:
        return "unknown"


def summarize(rows: list[dict[str, Any]], config: EvaluateConfig) -> dict[str, Any]:
    """metrics.json: EX/EM per level and overall, counts, skipped questions, error categories, component F1s."""
    known = BIRD_LEVELS if config.bird else HARDNESS_LEVELS
    # Every known level is reported (None when it has no questions), so consumers see a fixed shape.
    levels = [*known, *sorted({r["hardness"] for r in rows} - set(known))]
    groups = {lv: [r for r in rows if r["hardness"] == lv] for lv in levels} | {"all": rows}
    metrics: dict[str, Any] = {"levels": [*levels, "all"], "counts": {}, "n": len(rows)}
    for metric in ("ex", "em"):
        scored = {lv: [r[metric] for r in group if r[metric] is not None] for lv, group in groups.items()}
        metrics["counts"][metric] = {lv: len(v) for lv, v in scored.items()}
        metrics[metric] = {lv: (sum(v) / len(v) if v else None) for lv, v in scored.items()}
    skipped = Counter(r["error"] for r in rows if r["ex"] is None and r["error"])
    metrics["skipped"] = {**{k.replace(" ", "_"): v for k, v in skipped.items()}, "total": sum(skipped.values())}
    metrics["errors"] = dict(sorted(Counter(r["error"] for r in rows if r["error"]).items()))
    with_partial = {lv: [r["partial"] for r in group if "partial" in r] for lv, group in groups.items()}
    if any(with_partial.values()):
        metrics["partial"] = {lv: aggregate_partial(p) for lv, p in with_partial.items() if p}
    if config.ves_repeats:
        from sqltune.sql.execution import ves_reward, ves_score

        metrics["ves"] = {
            lv: ves_score([ves_reward(r["time_ratio"]) for r in group if "time_ratio" in r])
            for lv, group in groups.items()
        }
    return metrics


def evaluate(
    gold: str | Path,
    predictions: str | Path,
    db_dir: str | Path | None,
    tables: str | Path | None,
    out: str | Path,
    *,
    config: EvaluateConfig | None = None,
    overwrite: bool = False,
    cache: bool = True,
) -> dict[str, Any]:
    """Evaluate `predictions` against `gold`; writes an `evaluation` artifact to `out` and returns its metrics.

    `db_dir` holds `<db_id>/*.sqlite` (Spider layout: pass the `database/` folder; all files of a db_id must
    match), or `config.database_url` names the database server SQL runs on instead; `tables` is the tables.json EM
    and hardness need. `cache=False` (fresh connection per query, gold
    re-run) exists as the benchmark's naive baseline.
    """
    config = config or EvaluateConfig()
    etype, bird = config.etype, config.bird
    if config.database_url:
        db_dir = None  # the URL names where SQL runs
    inputs = {"gold": gold, "predictions": predictions, "db_dir": db_dir, "tables": tables}
    inputs = {name: path for name, path in inputs.items() if path is not None}
    check_output(out, inputs=inputs.values(), overwrite=overwrite)
    questions = load_gold(gold)
    preds = load_predictions(predictions, questions)
    databases = None
    if etype != "match":
        local = None if config.database_url else _existing_dir(db_dir, "database directory")
        databases = Databases.of(local, config.database_url)
        _check_dialects(questions, databases, gold)
    schemas: dict[str, DatabaseSchema] = {}
    if etype != "exec" or not (bird or all(q.level for q in questions)):
        if tables is None:
            raise SqltuneError("--tables (tables.json) is required for exact match and for hardness levels")
        all_schemas = load_tables(tables)
        missing = sorted({q.db_id for q in questions} - set(all_schemas))
        if missing:
            raise SqltuneError(f"{tables}: no schema for database(s) {', '.join(missing[:5])} used by {gold}")
        schemas = {db: all_schemas[db] for db in {q.db_id for q in questions}}
    questions = [
        GoldQuestion(q.db_id, q.sql, _level_of(q, schemas, bird), q.id if q.id is not None else i, q.dialect)
        for i, q in enumerate(questions)
    ]
    tasks = [_Task(i, q, p) for i, (q, p) in enumerate(zip(questions, preds, strict=True))]
    workers = worker_count(config.workers, len(tasks))
    log.info("evaluating %d predictions (%s) with %d worker(s)", len(tasks), etype, workers)
    rows = _run(tasks, (schemas, databases, config, cache), workers)
    metrics = summarize(rows, config)
    parameters = config.to_dict()
    with artifact_dir(
        out, "evaluation", parameters=parameters, inputs=inputs, extra={"metrics": metrics}, overwrite=overwrite
    ) as tmp:
        atomic_write_json(tmp / "metrics.json", metrics)
        write_jsonl(tmp / "results.jsonl", ({k: v for k, v in r.items() if k != "partial"} for r in rows))
        from sqltune.evaluate.report import write_reports

        write_reports(tmp, metrics, rows)
    return metrics


def _check_dialects(questions: list[GoldQuestion], databases: Databases, gold: str | Path) -> None:
    """The gold's dialect is the engine's: PostgreSQL gold is not scored on SQLite files, nor the other way."""
    dialects = {q.dialect for q in questions}
    if dialects != {databases.dialect}:
        found = ", ".join(sorted(dialects))
        fix = "--database-url (the engine it was written for)" if databases.dialect == "sqlite" else "--db-dir"
        raise SqltuneError(
            f"{gold}: the gold SQL is {found} but the databases ({databases}) run {databases.dialect}: pass {fix}"
        )


def _existing_dir(path: str | Path | None, what: str) -> Path:
    if path is None or not Path(path).is_dir():
        raise SqltuneError(f"{what} not found: {path}")
    return Path(path)


__all__ = ["PARTIAL_TYPES", "evaluate", "summarize"]
