"""`sqltune evaluate`: the options are generated from EvaluateConfig."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sqltune.artifacts import OVERWRITE_HELP
from sqltune.evaluate.config import EvaluateConfig
from sqltune.settings import config_command


@config_command(EvaluateConfig)
def evaluate_command(
    gold: Path = typer.Option(..., help="Gold: preprocess records (.jsonl), dev.json, or a `SQL<TAB>db_id` file."),
    predictions: Path = typer.Option(..., help="Predict-step JSONL, or one SQL per line in gold order."),
    out: Path = typer.Option(..., help="Output artifact directory (metrics.json, results.jsonl, report.md/html)."),
    tables: Path | None = typer.Option(None, help="tables.json (needed for EM and hardness)."),
    db_dir: Path | None = typer.Option(None, help="Directory of <db_id>/*.sqlite (needed for EX)."),
    overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
    *,
    config: EvaluateConfig,
) -> None:
    """Score predictions: execution accuracy and exact match per hardness, written as an artifact."""
    from sqltune.evaluate.run import evaluate

    metrics = evaluate(gold, predictions, db_dir, tables, out, config=config, overwrite=overwrite)
    typer.echo(json.dumps({k: metrics[k] for k in ("ex", "em", "skipped")}, indent=2))
