"""`sqltune submit` and `sqltune schedule`: run the checked-in pipeline YAML on a KFP cluster."""

from __future__ import annotations

from pathlib import Path

import typer

from sqltune.deploy.kfp_api import DEFAULT_EXPERIMENT
from sqltune.pipeline.spec import DEFAULT_PIPELINE_FILE, pipeline_params

# Options both commands take (module-level so the two signatures cannot drift apart).
_HOST = typer.Option(
    None,
    "--host",
    envvar="KF_PIPELINES_ENDPOINT",
    help="KFP API URL, e.g. http://localhost:8080 after `kubectl port-forward svc/ml-pipeline-ui`. "
    "Without it, kfp.Client finds the cluster from the kube config.",
)
_NAMESPACE = typer.Option(None, "--namespace", "-n", help="Profile namespace (multi-user KFP).")
_TOKEN = typer.Option(None, "--token", envvar="KF_PIPELINES_TOKEN", help="Bearer token for the KFP API.")
_EXPERIMENT = typer.Option(DEFAULT_EXPERIMENT, "--experiment", help="Experiment for the run (created if missing).")
_PARAM = typer.Option(None, "--param", "-p", help="A pipeline parameter as key=value (repeatable).")
_CONFIG = typer.Option(None, "--config", help="A YAML file of pipeline parameters (--param overrides it).")
_PIPELINE_FILE = typer.Option(DEFAULT_PIPELINE_FILE, "--pipeline-file", help="The compiled pipeline YAML.")
_SERVICE_ACCOUNT = typer.Option(
    None, "--service-account", help="Service account for the run's pods (manifests/ creates sqltune-pipeline-runner)."
)


def submit(
    host: str = _HOST,
    namespace: str = _NAMESPACE,
    token: str = _TOKEN,
    experiment: str = _EXPERIMENT,
    param: list[str] = _PARAM,
    config: Path = _CONFIG,
    pipeline_file: Path = _PIPELINE_FILE,
    run_name: str = typer.Option(None, "--run-name", help="Display name of the run (default: file name + time)."),
    service_account: str = _SERVICE_ACCOUNT,
) -> None:
    """Start one run of the compiled pipeline on a KFP cluster."""
    from sqltune.deploy.kfp_api import Connection, submit_run

    params = pipeline_params(pipeline_file, config, param)
    run = submit_run(
        Connection(host, namespace, token),
        params,
        pipeline_file=pipeline_file,
        experiment=experiment,
        run_name=run_name,
        service_account=service_account,
    )
    typer.echo(f"run {run.id} started" + (f": {run.url}" if run.url else ""))


def schedule(
    cron: str = typer.Option(
        ..., "--cron", help="Six fields, seconds first: '0 0 2 * * 0' = 02:00:00 every Sunday (or @daily, @every 24h)."
    ),
    name: str = typer.Option("sqltune-retrain", "--name", help="Display name of the recurring run."),
    host: str = _HOST,
    namespace: str = _NAMESPACE,
    token: str = _TOKEN,
    experiment: str = _EXPERIMENT,
    param: list[str] = _PARAM,
    config: Path = _CONFIG,
    pipeline_file: Path = _PIPELINE_FILE,
    max_concurrency: int = typer.Option(1, "--max-concurrency", help="Runs of this schedule allowed at once."),
    catchup: bool = typer.Option(False, "--catchup/--no-catchup", help="Backfill runs missed while paused."),
    service_account: str = _SERVICE_ACCOUNT,
) -> None:
    """Create a recurring run of the compiled pipeline (scheduled retraining)."""
    from sqltune.deploy.cron import validate_cron
    from sqltune.deploy.kfp_api import Connection, schedule_run

    validate_cron(cron)  # before reading parameters or contacting the cluster
    params = pipeline_params(pipeline_file, config, param)
    recurring = schedule_run(
        Connection(host, namespace, token),
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
