"""`sqltune publish` and `sqltune registry list|show|promote|rollback|pull|history` (the published adapter versions)."""

from __future__ import annotations

import json
import signal
import sys
from dataclasses import asdict
from pathlib import Path

import typer

from sqltune.artifacts import OVERWRITE_HELP
from sqltune.publish.config import ModelLocation, PublishConfig
from sqltune.settings import config_command

registry_app = typer.Typer(
    help="Published adapter versions on S3: list, show, pull, promote, roll back.", no_args_is_help=True
)

_ENDPOINT = typer.Option(None, "--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL, else AWS).")


@config_command(PublishConfig)
def publish(
    adapter: Path = typer.Option(..., "--adapter", help="The train step's adapter artifact directory."),
    eval_dir: Path = typer.Option(..., "--eval", help="The evaluate step's artifact directory."),
    endpoint_url: str = _ENDPOINT,
    run_id: str = typer.Option(None, "--run-id", envvar="SQLTUNE_RUN_ID", help="Pipeline run id (lineage, version)."),
    *,
    config: PublishConfig,
) -> None:
    """Publish an adapter version to s3://BUCKET/PREFIX/MODEL/VERSION/ (verified, never overwritten); prints its URI."""
    from sqltune.publish import publish as run_publish

    # SIGTERM (`kill`, a cancelled pipeline pod) unwinds like Ctrl+C: the local staging copy of the adapter is
    # removed and a multipart upload in flight aborted, instead of both being left behind.
    previous = signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    try:
        result = run_publish(adapter, eval_dir, config=config, endpoint_url=endpoint_url, run_id=run_id)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if result.promotion:
        status = "promoted to" if result.promoted else "not promoted to"
        typer.echo(f"{status} {result.promotion.channel}: {result.promotion.reason}", err=True)
    typer.echo(result.uri)


@registry_app.command("list")
@config_command(ModelLocation, name="location")
def list_versions(endpoint_url: str = _ENDPOINT, *, location: ModelLocation) -> None:
    """Versions of a model, oldest first, with EX (all) and channels; incomplete and corrupt ones are marked."""
    registry = location.registry(endpoint_url)
    for info in registry.list_versions():
        ex = f"{info.ex_all:.4f}" if info.ex_all is not None else "-"
        state = "complete" if info.complete else "INCOMPLETE (no manifest; rerun its publish)"
        if info.corrupt:
            state = f"CORRUPT ({info.corrupt})"
        channels = ",".join(info.channels) or "-"
        typer.echo(f"{info.version}\t{state}\tEX={ex}\tchannels={channels}\t{info.created_at or '-'}")
    for channel, reason in registry.corrupt_channels().items():
        fix = "`registry promote --force` or `registry rollback --to` replaces it"
        typer.echo(f"warning: channel {channel}: {reason}; {fix}", err=True)


@registry_app.command()
@config_command(ModelLocation, name="location")
def show(
    version: str = typer.Option(None, "--version", help="Version to show."),
    channel: str = typer.Option(None, "--channel", help="Or: the version this channel points at."),
    endpoint_url: str = _ENDPOINT,
    *,
    location: ModelLocation,
) -> None:
    """Print a complete version's manifest (files, metrics, lineage) as JSON."""
    registry = location.registry(endpoint_url)
    typer.echo(json.dumps(registry.manifest(registry.resolve(version, channel)), indent=2, sort_keys=True))


@registry_app.command()
@config_command(ModelLocation, name="location")
def pull(
    dest: Path = typer.Option(..., "--dest", help="Local directory to create (an earlier pull there is replaced)."),
    version: str = typer.Option(None, "--version", help="Version to pull."),
    channel: str = typer.Option(None, "--channel", help="Or: the version this channel points at."),
    endpoint_url: str = _ENDPOINT,
    *,
    location: ModelLocation,
    overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
) -> None:
    """Download a version and verify every file's sha256 against its manifest."""
    registry = location.registry(endpoint_url)
    typer.echo(registry.pull(registry.resolve(version, channel), dest, overwrite=overwrite))


@registry_app.command()
@config_command(ModelLocation, name="location")
def promote(
    version: str = typer.Option(..., "--version", help="Version to promote."),
    channel: str = typer.Option(..., "--channel", help="Channel, e.g. production or staging."),
    margin: float = typer.Option(0.0, "--margin", min=0.0, help="EX (all) improvement needed to promote."),
    force: bool = typer.Option(False, "--force", help="Promote even if it does not beat the current version."),
    endpoint_url: str = _ENDPOINT,
    *,
    location: ModelLocation,
) -> None:
    """Move a channel to a version if its EX beats the current one's by the margin; exit 1 when refused."""
    result = location.registry(endpoint_url).promote(version, channel, margin, force)
    typer.echo(json.dumps(asdict(result), indent=2))
    if not result.promoted:
        raise typer.Exit(1)


@registry_app.command()
@config_command(ModelLocation, name="location")
def rollback(
    channel: str = typer.Option(..., "--channel", help="Channel to move back."),
    to: str = typer.Option(None, "--to", help="Version to go back to (default: the one before the current)."),
    endpoint_url: str = _ENDPOINT,
    *,
    location: ModelLocation,
) -> None:
    """Point a channel back at the previous (or a given) version."""
    result = location.registry(endpoint_url).rollback(channel, to)
    typer.echo(json.dumps(asdict(result), indent=2))


@registry_app.command()
@config_command(ModelLocation, name="location")
def history(
    channel: str = typer.Option(..., "--channel", help="Channel whose moves to print."),
    endpoint_url: str = _ENDPOINT,
    *,
    location: ModelLocation,
) -> None:
    """Every promotion and rollback of a channel, oldest first, one JSON object per line."""
    for event in location.registry(endpoint_url).history(channel):
        typer.echo(json.dumps(event, sort_keys=True))
