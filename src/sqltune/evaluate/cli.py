"""`sqltune evaluate`: EX/EM of a predictions file against gold questions."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sqltune.artifacts import OVERWRITE_HELP
from sqltune.evaluate.execution import Limits


def evaluate_command(
    gold: Path = typer.Option(..., help="Gold: preprocess records (.jsonl), dev.json, or a `SQL<TAB>db_id` file."),
    predictions: Path = typer.Option(..., help="Predict-step JSONL, or one SQL per line in gold order."),
    out: Path = typer.Option(..., help="Output artifact directory (metrics.json, results.jsonl, report.md/html)."),
    tables: Path | None = typer.Option(None, help="tables.json (needed for EM and hardness)."),
    db_dir: Path | None = typer.Option(None, help="Directory of <db_id>/*.sqlite (needed for EX)."),
    etype: str = typer.Option("all", help="exec, match or all."),
    dataset: str = typer.Option("spider", help="spider, or bird (set-equality EX by difficulty)."),
    keep_distinct: bool = typer.Option(False, help="Keep DISTINCT when comparing execution results."),
    plug_value: bool = typer.Option(False, help="Try gold values in the prediction's literals (lenient)."),
    ves_repeats: int = typer.Option(0, help="Time correct predictions N times for BIRD's R-VES (0: off)."),
    timeout: float = typer.Option(Limits.timeout_s, help="Per-query time limit in seconds (also for comparing)."),
    max_rows: int = typer.Option(Limits.max_rows, help="Results with more rows count as errors."),
    max_result_bytes: int = typer.Option(
        Limits.max_result_bytes, help="Results (or any string or blob) larger than this count as errors."
    ),
    max_heap_bytes: int = typer.Option(
        Limits.max_heap_bytes, help="SQLite's memory per worker process, temporary storage included."
    ),
    workers: int = typer.Option(0, help="Worker processes (0: one per CPU)."),
    overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
) -> None:
    """Score predictions: execution accuracy and exact match per hardness, written as an artifact."""
    from sqltune.evaluate.evaluator import evaluate

    metrics = evaluate(
        gold,
        predictions,
        db_dir,
        tables,
        out,
        etype=etype,
        dataset=dataset,
        keep_distinct=keep_distinct,
        plug_value=plug_value,
        ves_repeats=ves_repeats,
        timeout_s=timeout,
        max_rows=max_rows,
        max_result_bytes=max_result_bytes,
        max_heap_bytes=max_heap_bytes,
        workers=workers or None,
        overwrite=overwrite,
    )
    typer.echo(json.dumps({k: metrics[k] for k in ("ex", "em", "skipped")}, indent=2))
