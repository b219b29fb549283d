"""`sqltune predict`: the options are generated from PredictConfig."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sqltune.artifacts import OVERWRITE_HELP
from sqltune.predict.config import PredictConfig
from sqltune.settings import config_command


@config_command(PredictConfig)
def predict(
    data: str = typer.Option(..., help="Eval records: records.jsonl, its artifact directory, or an s3:// URI."),
    base_model: str = typer.Option(..., help="Local dir, hf://org/name, s3:// prefix, or a built-in name."),
    adapter: str = typer.Option(None, help="LoRA adapter directory or s3:// prefix (default: the base model alone)."),
    out: Path = typer.Option(..., help="Output artifact directory (predictions.jsonl, predictions.txt, metrics)."),
    overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
    endpoint_url: str = typer.Option(None, help="S3 endpoint for s3:// inputs (default: AWS_ENDPOINT_URL)."),
    db_dir: Path = typer.Option(
        None, help="Databases the candidates run on: <db_id>/*.sqlite (the databases artifact's database/ folder)."
    ),
    *,
    config: PredictConfig,
) -> None:
    """Generate one SQL query per eval record in batches (greedy, or voted among --candidates by their results
    on --db-dir) and write the predictions artifact."""
    from sqltune.predict import predict as run_predict

    metrics = run_predict(
        data, base_model, adapter, out, config=config, endpoint_url=endpoint_url, overwrite=overwrite, db_dir=db_dir
    )
    typer.echo(json.dumps(metrics, indent=2))
