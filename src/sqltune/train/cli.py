"""`sqltune train`: the options are generated from TrainConfig, so the CLI and the library cannot disagree."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sqltune.artifacts import OVERWRITE_HELP
from sqltune.settings import config_command
from sqltune.train.config import TrainConfig


@config_command(TrainConfig)
def train(
    data: str = typer.Option(..., help="Train records: a records.jsonl file or preprocess artifact dir (or s3://)."),
    base_model: str = typer.Option(
        ..., help="Local dir, hf://org/name[@rev], s3:// prefix, smollm2-135m, tiny-random-llama, tiny-random-qwen2."
    ),
    out: Path = typer.Option(..., help="Output adapter artifact directory."),
    overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
    checkpoint_dir: str = typer.Option(None, help="Local dir or s3:// prefix for checkpoints; reruns resume."),
    endpoint_url: str = typer.Option(None, help="S3 endpoint (default: AWS_ENDPOINT_URL)."),
    *,
    config: TrainConfig,
) -> None:
    """Fine-tune a base model with LoRA/QLoRA on preprocess records; writes a PEFT adapter artifact."""
    from sqltune.train.run import train as run_train

    metrics = run_train(
        data, base_model, out, config=config, checkpoint_dir=checkpoint_dir, endpoint_url=endpoint_url,
        overwrite=overwrite,
    )  # fmt: skip
    typer.echo(json.dumps({k: v for k, v in metrics.items() if k != "dropped_ids"}, indent=2))
