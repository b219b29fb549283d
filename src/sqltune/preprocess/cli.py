"""`sqltune preprocess` and `sqltune sample-data`."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from sqltune.artifacts import OVERWRITE_HELP
from sqltune.preprocess.schema_text import DEFAULT_STYLE, SchemaStyle
from sqltune.prompt import PromptTemplate


class Dataset(str, Enum):
    spider = "spider"
    bird = "bird"
    cosql = "cosql"
    sparc = "sparc"


class Split(str, Enum):
    train = "train"
    dev = "dev"


def preprocess(
    dataset: Dataset = typer.Option(..., help="Dataset layout of the source."),
    source: str = typer.Option(..., help="Dataset directory or s3:// prefix."),
    split: Split = typer.Option(..., help="Which split to preprocess."),
    schema_style: SchemaStyle = typer.Option(DEFAULT_STYLE, help="How the schema is written into the prompt."),
    out: Path = typer.Option(..., help="Output artifact directory (records.jsonl + manifest.json)."),
    databases_out: Path = typer.Option(None, help="Also write the SQLite databases the split needs here."),
    template: PromptTemplate = typer.Option(PromptTemplate.alpaca, help="Prompt template."),
    limit: int = typer.Option(None, min=1, help="Only the first N questions."),
    endpoint_url: str = typer.Option(None, help="S3 endpoint for s3:// sources (default: AWS_ENDPOINT_URL)."),
    overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
) -> None:
    """Turn a Spider/BIRD/CoSQL/SParC split into instruction records with the schema spelled out."""
    from sqltune.preprocess.run import run_preprocess

    summary = run_preprocess(
        dataset.value,
        source,
        split.value,
        schema_style.value,
        out,
        template=template.value,
        databases_out=databases_out,
        limit=limit,
        endpoint_url=endpoint_url,
        overwrite=overwrite,
    )
    typer.echo(json.dumps(summary, indent=2))


def sample_data(
    out: Path = typer.Option(..., help="Directory to write the sample dataset to (Spider layout)."),
    overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
) -> None:
    """Generate the small, deterministic sample dataset (Spider layout) used by the demo and tests."""
    from sqltune.sample_data import write_sample_dataset

    typer.echo(json.dumps(write_sample_dataset(out, overwrite=overwrite), indent=2))
