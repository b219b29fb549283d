"""`sqltune compile`, `sqltune run` and `sqltune demo`: the pipeline as a whole."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from sqltune.pipeline.local import LocalRun


def compile(
    repo: Path = typer.Option(Path("."), help="The sqltune repository root (holds pipelines/text2sql.py)."),
    out: Path = typer.Option(None, help="Output YAML (default: pipelines/text2sql.yaml)."),
) -> None:
    """Compile the pipeline to its checked-in YAML."""
    from sqltune.pipeline.compile import compile_pipeline

    typer.echo(compile_pipeline(repo, out))


def run(
    param: list[str] = typer.Option(None, "--param", "-p", help="A pipeline parameter as key=value (repeatable)."),
    config: Path = typer.Option(None, help="A YAML file of pipeline parameters (--param overrides it)."),
    pipeline_file: Path = typer.Option(Path("pipelines/text2sql.yaml"), help="The compiled pipeline YAML."),
    pipeline_root: Path = typer.Option(Path("runs"), help="Where kfp.local writes the steps' outputs."),
) -> None:
    """Run the compiled pipeline end to end on this machine with kfp.local (starts a local S3 if needed)."""
    from sqltune.pipeline.local import run_local, summary_table
    from sqltune.pipeline.spec import pipeline_params

    params = pipeline_params(pipeline_file, config, param)
    result = run_local(params, pipeline_file, pipeline_root)
    _print_result(result, summary_table(result))


def _print_result(result: LocalRun, table: str) -> None:
    typer.echo(f"\nrun outputs: {result.run_dir}")
    typer.echo(table)
    if result.published_uri and result.s3_data_dir:
        typer.echo(f"adapter published to {result.published_uri} on the run's own S3 server, now stopped;")
        typer.echo(f"serve it again with: sqltune s3-server --dir {result.s3_data_dir} --port 8333")
    elif result.published_uri:
        typer.echo(f"adapter published to {result.published_uri} (S3 endpoint {result.s3_endpoint_url})")
    else:
        ex = result.finetuned.get("ex", {}).get("all")
        typer.echo(f"adapter not published: EX {ex} is below min_ex {result.parameters.get('min_ex')}")


def demo(
    out: Path = typer.Option(Path("demo-out"), help="Where the sample dataset and the run's outputs go."),
    config: Path = typer.Option(Path("pipelines/params/demo.yaml"), help="The demo's pipeline parameters."),
    param: list[str] = typer.Option(None, "--param", "-p", help="Override a parameter as key=value."),
) -> None:
    """The main job on this machine: generate the sample dataset, run the whole pipeline, show base vs tuned."""
    from sqltune.pipeline.local import run_local, summary_table
    from sqltune.pipeline.spec import DEFAULT_PIPELINE_FILE, pipeline_params
    from sqltune.sample_data import write_sample_dataset

    data = (out / "sample-data").resolve()
    counts = write_sample_dataset(data)
    typer.echo(f"sample dataset: {counts['train']} train / {counts['dev']} dev questions in {data}")
    params = pipeline_params(DEFAULT_PIPELINE_FILE, config, [f"source_uri={data}", *(param or [])])
    result = run_local(params, DEFAULT_PIPELINE_FILE, out / "runs")
    _print_result(result, summary_table(result))
