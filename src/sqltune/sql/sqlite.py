"""Opening a user's SQLite database for reading without ever writing beside it.

SQLite's `mode=ro` still writes next to a database in WAL mode: it creates `-shm` and `-wal` files and leaves
them behind, and on a read-only mount it cannot open the database at all. Every reader here (the sandbox of
evaluate, the candidate check and the GRPO reward, the schema check, preprocess's sample values) opens with
`immutable=1` instead: SQLite reads the file as it is on disk, takes no locks and creates nothing. That is only
right for a database nobody is changing, so a file with changes still in its write-ahead log or an unfinished
transaction in its rollback journal is refused with what to do, rather than read without them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqltune.errors import SqltuneError

_MAGIC = b"SQLite format 3\x00"
_WAL_MODE = 2  # header byte 18 (file format write version): 1 rollback journal, 2 WAL


class UnreadableDatabase(SqltuneError):
    """The path cannot be read as a SQLite database; the message names it and says why."""


def database_problem(path: Path) -> str | None:
    """Why `path` cannot be opened read-only as a SQLite database, or None when it can."""
    if not path.exists():
        return f"{path} does not exist"
    if not path.is_file():
        return f"{path} is a directory, not a SQLite file" if path.is_dir() else f"{path} is not a regular file"
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror})"
    if not header.startswith(_MAGIC):
        return f"{path} is not a SQLite database" + (" (it is empty)" if not header else "")
    pending = {
        "-wal": ("changes in its write-ahead log", f"`sqlite3 {path} 'PRAGMA wal_checkpoint(TRUNCATE)'`"),
        "-journal": ("an unfinished transaction in its rollback journal", f"`sqlite3 {path} 'SELECT 1'` once"),
    }
    for suffix, (what, fix) in pending.items():
        leftover = path.with_name(path.name + suffix)
        if (suffix != "-wal" or header[18] == _WAL_MODE) and leftover.is_file() and leftover.stat().st_size > 0:
            return (
                f"{path} has {what} ({leftover.name}), which a reader that writes nothing beside it would miss: "
                f"close the program that writes it, or run {fix}"
            )
    return None


def open_read_only(path: Path, **connect: object) -> sqlite3.Connection:
    """A connection that reads `path` as it is on disk and writes nothing beside it (see the module docstring);
    `connect` goes to `sqlite3.connect`. Raises UnreadableDatabase naming the path and the reason."""
    if problem := database_problem(path):
        raise UnreadableDatabase(problem)
    uri = f"{path.resolve().as_uri()}?mode=ro&immutable=1"
    try:
        return sqlite3.connect(uri, uri=True, **connect)  # type: ignore[arg-type]
    except sqlite3.Error as exc:
        raise UnreadableDatabase(f"{path} cannot be opened: {exc}") from None
