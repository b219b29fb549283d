"""`sqltune compile`, `sqltune run` and `sqltune demo`: the pipeline as a whole."""

from __future__ import annotations

from pathlib import Path

import typer


def compile(
    repo: Path = typer.Option(Path("."), help="The sqltune repository root (holds pipelines/text2sql.py)."),
    out: Path = typer.Option(None, help="Output YAML (default: pipelines/text2sql.yaml)."),
) -> None:
    """Compile the pipeline to its checked-in YAML."""
    from sqltune.pipeline.compile import compile_pipeline

    typer.echo(compile_pipeline(repo, out))
