"""`sqltune` command line. Each step's commands live in `sqltune.<step>.cli` and are registered here.

Step CLI modules import their heavy dependencies (torch, kfp, boto3) inside the command functions,
so `sqltune --help` stays fast and an image without torch can still run `sqltune evaluate`.
"""

from __future__ import annotations

import sys

import typer

from sqltune import __version__
from sqltune.errors import SqltuneError
from sqltune.log import setup_logging

app = typer.Typer(
    name="sqltune",
    help="Text2SQL fine-tuning with LoRA/QLoRA as a Kubeflow pipeline: preprocess, train, predict, evaluate, publish.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sqltune {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    setup_logging(verbose)


# --- step commands (one line per command; keep imports light) ---
from sqltune.evaluate import cli as evaluate_cli  # noqa: E402
from sqltune.pipeline import cli as pipeline_cli  # noqa: E402
from sqltune.predict import cli as predict_cli  # noqa: E402
from sqltune.preprocess import cli as preprocess_cli  # noqa: E402
from sqltune.publish import cli as publish_cli  # noqa: E402
from sqltune.serve import cli as serve_cli  # noqa: E402
from sqltune.sql import cli as sql_cli  # noqa: E402
from sqltune.train import cli as train_cli  # noqa: E402

app.command()(preprocess_cli.preprocess)
app.command(name="sample-data")(preprocess_cli.sample_data)
app.command(name="copy-db")(sql_cli.copy_db)
app.command(name="pg-server")(sql_cli.pg_server)
app.command()(predict_cli.predict)
app.command()(train_cli.train)
app.command(name="evaluate")(evaluate_cli.evaluate_command)

app.command()(publish_cli.publish)
app.add_typer(publish_cli.registry_app, name="registry")
# `sqltune models` was the registry's first name (sqltune.models is the base models): kept until 0.3, with a warning.
RENAMED = "Use `sqltune registry`: the same commands (this name goes in 0.3)."
app.add_typer(publish_cli.registry_app, name="models", hidden=True, deprecated=RENAMED)  # type: ignore[arg-type]
app.command()(serve_cli.serve)

app.command(name="compile")(pipeline_cli.compile)
app.command()(pipeline_cli.manifests)
app.command()(pipeline_cli.run)
app.command()(pipeline_cli.demo)
app.command(name="s3-server")(pipeline_cli.s3_server)
app.command()(pipeline_cli.submit)
app.command()(pipeline_cli.schedule)


def main() -> None:
    """Entry point: user errors print one clear line and exit 2, without a traceback."""
    from sqltune.train.launch import record_worker_error

    try:
        app()
    except SqltuneError as exc:
        record_worker_error(exc)
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except Exception as exc:
        record_worker_error(exc)
        raise


if __name__ == "__main__":  # how the training launcher starts each worker: python -m sqltune.cli train ...
    main()
