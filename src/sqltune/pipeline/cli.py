"""The pipeline as a whole: `sqltune compile`, `manifests`, `run`, `demo`, `s3-server`, `submit` and `schedule`."""

from __future__ import annotations

import os
import secrets
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sqltune.pipeline import COMPONENTS_DIR, DEMO_PARAMS, MANIFEST_FILE, PIPELINE_FILE
from sqltune.pipeline.remote import DEFAULT_EXPERIMENT, Connection
from sqltune.settings import config_command

if TYPE_CHECKING:
    from sqltune.pipeline.local import LocalRun


def compile(out: Path = typer.Option(PIPELINE_FILE, help="Output YAML.")) -> None:
    """Compile the pipeline to its checked-in YAML, and write each component's README.md from its code."""
    from sqltune.pipeline.compile import compile_pipeline
    from sqltune.pipeline.readme import write_readmes

    typer.echo(compile_pipeline(out))
    for readme in write_readmes(COMPONENTS_DIR):
        typer.echo(readme)


def manifests(
    out: Path = typer.Option(MANIFEST_FILE, help="Output YAML of the KFP Pipeline/PipelineVersion resources."),
    pipeline_file: Path = typer.Option(PIPELINE_FILE, help="The compiled pipeline YAML (names the version)."),
) -> None:
    """Write the pipeline as KFP Pipeline + PipelineVersion resources, for GitOps (`kubectl apply -k`)."""
    from sqltune.pipeline.compile import write_pipeline_manifests

    typer.echo(write_pipeline_manifests(out, compiled=pipeline_file))


def _verbose(ctx: typer.Context) -> bool:
    """`sqltune -v COMMAND`: the global flag, on the root command."""
    return bool(ctx.find_root().params.get("verbose"))


def run(
    ctx: typer.Context,
    param: list[str] = typer.Option(None, "--param", "-p", help="A pipeline parameter as key=value (repeatable)."),
    config: Path = typer.Option(None, help="A YAML file of pipeline parameters (--param overrides it)."),
    pipeline_file: Path = typer.Option(PIPELINE_FILE, help="The compiled pipeline YAML."),
    pipeline_root: Path = typer.Option(Path("runs"), help="Where kfp.local writes the steps' outputs."),
) -> None:
    """Run the compiled pipeline end to end on this machine with kfp.local (starts a local S3 if needed).

    Shows a line per step; every step's logs go to a file under PIPELINE_ROOT/logs/ (`sqltune -v run` prints them).
    """
    from sqltune.pipeline.local import run_local
    from sqltune.pipeline.params import pipeline_params

    params = pipeline_params(pipeline_file, config, param)
    _print_result(run_local(params, pipeline_file, pipeline_root, quiet=not _verbose(ctx)))


def _print_result(result: LocalRun) -> None:
    from sqltune.pipeline.console import result_lines
    from sqltune.pipeline.local import summary_table

    for line in result_lines(result, summary_table(result)):
        typer.echo(line)


def demo(
    ctx: typer.Context,
    out: Path = typer.Option(Path("demo-out"), help="Where the sample dataset and the run's outputs go."),
    config: Path = typer.Option(DEMO_PARAMS, help="The demo's pipeline parameters."),
    param: list[str] = typer.Option(None, "--param", "-p", help="Override a parameter as key=value."),
) -> None:
    """The main job on this machine: generate the sample dataset, run the whole pipeline, show base vs tuned.

    Shows a line per step; every step's logs go to a file under OUT/runs/logs/ (`sqltune -v demo` prints them).
    """
    from sqltune.pipeline.console import shown
    from sqltune.pipeline.local import own_s3, run_local, usable_pipeline_root
    from sqltune.pipeline.params import pipeline_params
    from sqltune.sample_data import write_sample_dataset

    data = (out / "sample-data").resolve()
    params = pipeline_params(PIPELINE_FILE, config, [f"source_uri={data}", *(param or [])])
    usable_pipeline_root(out / "runs", s3_data=own_s3(params))  # before the sample data is written
    counts = write_sample_dataset(data)
    typer.echo(f"sample dataset: {counts['train']} train / {counts['dev']} dev questions in {shown(data)}")
    _print_result(run_local(params, PIPELINE_FILE, out / "runs", quiet=not _verbose(ctx)))


def _credentials(env_file: Path) -> tuple[str, str]:
    """The standard AWS_* variables if set, else those saved in `env_file`, else new ones saved there (0600)."""
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return key, secret
    if env_file.is_file():
        saved = dict(
            line.removeprefix("export ").split("=", 1) for line in env_file.read_text().splitlines() if "=" in line
        )
        return saved["AWS_ACCESS_KEY_ID"], saved["AWS_SECRET_ACCESS_KEY"]
    key, secret = "sqltune" + secrets.token_hex(6), secrets.token_urlsafe(30)
    env_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"export AWS_ACCESS_KEY_ID={key}\nexport AWS_SECRET_ACCESS_KEY={secret}\n")
    return key, secret


def s3_server(
    data_dir: Path = typer.Option(Path("s3-data"), "--dir", help="Where the server keeps its data."),
    port: int = typer.Option(8333, "--port", help="S3 port on 127.0.0.1 (0: any free port)."),
    bucket: list[str] = typer.Option([], "--bucket", help="Bucket to create (repeatable)."),
) -> None:
    """Run a local S3 server (SeaweedFS) on 127.0.0.1 in the foreground until Ctrl+C.

    Credentials are AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY when set, else generated once and kept in
    DIR/credentials.env (mode 0600; `source` it in another shell). The secret is never printed.
    """
    from sqltune.locals3 import REGION, local_s3

    env_file = data_dir / "credentials.env"
    key, secret = _credentials(env_file)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with local_s3(data_dir, port=port, buckets=bucket, access_key=key, secret_key=secret) as server:
        typer.echo(f"S3 endpoint: {server.endpoint_url} (region {REGION}, pid {server.pid}, data in {data_dir})")
        if key == os.environ.get("AWS_ACCESS_KEY_ID"):
            typer.echo(f"credentials: your AWS_* variables; export AWS_ENDPOINT_URL={server.endpoint_url}")
        else:
            typer.echo(f"credentials: source {env_file} && export AWS_ENDPOINT_URL={server.endpoint_url}")
        typer.echo("Ctrl+C to stop.")
        stop.wait()


# Options both commands take (module-level so the two signatures cannot drift apart); the connection's come
# from `Connection`.
_EXPERIMENT = typer.Option(DEFAULT_EXPERIMENT, "--experiment", help="Experiment for the run (created if missing).")
_PARAM = typer.Option(None, "--param", "-p", help="A pipeline parameter as key=value (repeatable).")
_CONFIG = typer.Option(None, "--config", help="A YAML file of pipeline parameters (--param overrides it).")
_PIPELINE_FILE = typer.Option(PIPELINE_FILE, "--pipeline-file", help="The compiled pipeline YAML.")
_SERVICE_ACCOUNT = typer.Option(
    None, "--service-account", help="Service account for the run's pods (manifests/ creates sqltune-pipeline-runner)."
)


@config_command(Connection, name="connection")
def submit(
    experiment: str = _EXPERIMENT,
    param: list[str] = _PARAM,
    config: Path = _CONFIG,
    pipeline_file: Path = _PIPELINE_FILE,
    run_name: str = typer.Option(None, "--run-name", help="Display name of the run (default: file name + time)."),
    service_account: str = _SERVICE_ACCOUNT,
    *,
    connection: Connection,
) -> None:
    """Start one run of the compiled pipeline on a KFP cluster."""
    from sqltune.pipeline.params import pipeline_params
    from sqltune.pipeline.remote import submit_run

    params = pipeline_params(pipeline_file, config, param)
    run = submit_run(
        connection,
        params,
        pipeline_file=pipeline_file,
        experiment=experiment,
        run_name=run_name,
        service_account=service_account,
    )
    typer.echo(f"run {run.id} started" + (f": {run.url}" if run.url else ""))


@config_command(Connection, name="connection")
def schedule(
    cron: str = typer.Option(
        ..., "--cron", help="Six fields, seconds first: '0 0 2 * * 0' = 02:00:00 every Sunday (or @daily, @every 24h)."
    ),
    name: str = typer.Option("sqltune-retrain", "--name", help="Display name of the recurring run."),
    experiment: str = _EXPERIMENT,
    param: list[str] = _PARAM,
    config: Path = _CONFIG,
    pipeline_file: Path = _PIPELINE_FILE,
    max_concurrency: int = typer.Option(1, "--max-concurrency", help="Runs of this schedule allowed at once."),
    catchup: bool = typer.Option(False, "--catchup/--no-catchup", help="Backfill runs missed while paused."),
    service_account: str = _SERVICE_ACCOUNT,
    *,
    connection: Connection,
) -> None:
    """Create a recurring run of the compiled pipeline (scheduled retraining)."""
    from sqltune.pipeline.cron import validate_cron
    from sqltune.pipeline.params import pipeline_params
    from sqltune.pipeline.remote import schedule_run

    validate_cron(cron)  # before reading parameters or contacting the cluster
    params = pipeline_params(pipeline_file, config, param)
    recurring = schedule_run(
        connection,
        params,
        cron,
        name=name,
        pipeline_file=pipeline_file,
        experiment=experiment,
        max_concurrency=max_concurrency,
        catchup=catchup,
        service_account=service_account,
    )
    typer.echo(f"recurring run {recurring.id} created ({cron})" + (f": {recurring.url}" if recurring.url else ""))
