"""`sqltune preprocess` and `sqltune sample-data`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sqltune.artifacts import OVERWRITE_HELP
from sqltune.preprocess.config import PreprocessConfig
from sqltune.settings import config_command


@config_command(PreprocessConfig)
def preprocess(
    source: str = typer.Option(..., help="Dataset directory or s3:// prefix (jsonl: also a .jsonl file)."),
    out: Path = typer.Option(..., help="Output artifact directory (records.jsonl + manifest.json)."),
    databases_out: Path = typer.Option(None, help="Also write the SQLite databases the split needs here."),
    overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
    endpoint_url: str = typer.Option(None, help="S3 endpoint for s3:// sources (default: AWS_ENDPOINT_URL)."),
    tables: Path = typer.Option(
        None, help="A tables.json with the schemas (instead of the dataset's own or the live database's)."
    ),
    *,
    config: PreprocessConfig,
) -> None:
    """Turn a Spider/BIRD/CoSQL/SParC/WikiSQL split, or one's own questions (jsonl), into instruction records with
    the schema spelled out."""
    from sqltune.preprocess.run import preprocess as run_preprocess

    summary = run_preprocess(
        source,
        out,
        config=config,
        databases_out=databases_out,
        endpoint_url=endpoint_url,
        overwrite=overwrite,
        tables=tables,
    )
    typer.echo(json.dumps(summary, indent=2))


def sample_data(
    out: Path = typer.Option(..., help="Directory to write the sample dataset to (Spider layout)."),
    overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
) -> None:
    """Generate the small, deterministic sample dataset (Spider layout) used by the demo and tests."""
    from sqltune.sample_data import write_sample_dataset

    typer.echo(json.dumps(write_sample_dataset(out, overwrite=overwrite), indent=2))
