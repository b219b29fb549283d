"""Where a question's database is: SQLite files under a directory, or a database named by a SQLAlchemy URL.

One notion for every step that runs SQL (evaluate, predict's candidate check, the GRPO reward) and for preprocess
reading a live schema: `Databases(db_dir=...)` finds `<db_dir>/<db_id>/*.sqlite` as Spider lays them out;
`Databases(url=...)` takes a SQLAlchemy URL in which `{db_id}` is replaced by each question's db_id
(`postgresql+psycopg://reader@db:5432/{db_id}`, `duckdb:////data/{db_id}.duckdb`). A URL without `{db_id}` serves
every question from one database.

The URL's password never appears in a log line, an error, a manifest or a compiled pipeline: `ServerDatabase`
prints it hidden, and a URL without a password takes it from `SQLTUNE_DATABASE_PASSWORD` (what the pipeline fills
from a Kubernetes Secret).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from sqltune.errors import SqltuneError

PASSWORD_ENV = "SQLTUNE_DATABASE_PASSWORD"
URL_ENV = "SQLTUNE_DATABASE_URL"
URL_HELP = (
    "SQLAlchemy URL of the database the SQL runs on instead of SQLite files (PostgreSQL, DuckDB); {db_id} in it "
    f"selects one database per question's db_id. Without a password in it, ${PASSWORD_ENV} gives it."
)
DB_ID = "{db_id}"
# The engines the sandbox runs SQL on, by the sqlglot dialect their SQL is parsed in.
SERVER_DIALECTS = {"postgresql": "postgres", "postgres": "postgres", "duckdb": "duckdb"}


def url_dialect(url: str) -> str:
    """The sqlglot dialect of a SQLAlchemy URL's backend (`postgresql+psycopg://...` -> postgres)."""
    scheme = url.partition("://")[0].lower()
    backend = scheme.partition("+")[0]
    if not scheme or "://" not in url:
        raise SqltuneError(f"database URL {hide_password(url)!r} is not a SQLAlchemy URL (backend://...)")
    if backend == "sqlite":
        raise SqltuneError("a SQLite database is given as files (--db-dir), not as a database URL")
    if backend not in SERVER_DIALECTS:
        known = ", ".join(sorted(set(SERVER_DIALECTS) - {"postgres"}))
        raise SqltuneError(f"database URL {hide_password(url)!r}: backend {backend!r} cannot run SQL here ({known})")
    return SERVER_DIALECTS[backend]


def check_url(url: str | None) -> str | None:
    """A config's database URL: None when unset or empty (the pipeline's ''), else checked to be one sqltune runs
    SQL on."""
    if not url:
        return None
    url_dialect(url)
    return url


def hide_password(url: str) -> str:
    """The URL with its password (if any) as `***`: what logs, errors and manifests show."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def split_password(url: str) -> tuple[str, str | None]:
    """(the URL without its password, the password or None)."""
    parts = urlsplit(url)
    if not parts.password:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}@{host}")), unquote(parts.password)


def with_password(url: str, password: str | None = None) -> str:
    """The URL with `password` (default: `$SQLTUNE_DATABASE_PASSWORD`) when it has a user and no password."""
    password = os.environ.get(PASSWORD_ENV) if password is None else password
    parts = urlsplit(url)
    if not password or parts.password or not parts.username:
        return url
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def url_database(url: str) -> str:
    """The database name (or DuckDB file path) a URL names."""
    return unquote(urlsplit(url).path.removeprefix("/"))


@dataclass(frozen=True)
class ServerDatabase:
    """One database on a server (or one DuckDB file), by its SQLAlchemy URL. Printed with the password hidden."""

    url: str = field(repr=False)

    @property
    def dialect(self) -> str:
        return url_dialect(self.url)

    def __str__(self) -> str:
        return hide_password(self.url)

    def __repr__(self) -> str:
        return f"ServerDatabase({hide_password(self.url)!r})"


Database = Path | ServerDatabase


@dataclass(frozen=True)
class Databases:
    """Where the questions' databases are: `db_dir` (SQLite files) or `url` (a template with `{db_id}`)."""

    db_dir: Path | None = None
    url: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.db_dir is None) == (self.url is None):
            raise SqltuneError("give the databases either as a directory of SQLite files or as a database URL")
        if self.url is not None:
            url_dialect(self.url)  # a URL sqltune cannot run SQL on is refused now, not at the first question

    @classmethod
    def of(cls, db_dir: str | os.PathLike[str] | None, url: str | None) -> Databases | None:
        """From a step's inputs: the URL when one is given (it names where SQL runs), else the directory, else
        None."""
        if url:
            return cls(url=url)
        return cls(db_dir=Path(db_dir)) if db_dir is not None else None

    @property
    def dialect(self) -> str:
        """The sqlglot dialect SQL runs in here: sqlite for files, the URL's backend otherwise."""
        return "sqlite" if self.url is None else url_dialect(self.url)

    def server(self, db_id: str) -> ServerDatabase:
        assert self.url is not None
        return ServerDatabase(with_password(self.url.replace(DB_ID, quote(db_id, safe=""))))

    def files(self, db_id: str) -> list[Database]:
        """The databases a question on `db_id` runs on: its SQLite files (test-suite layout: several, sorted;
        [] when missing), or its one server database."""
        if self.url is not None:
            return [self.server(db_id)]
        assert self.db_dir is not None
        return sorted((self.db_dir / db_id).glob("*.sqlite"))

    def __str__(self) -> str:
        return str(self.db_dir) if self.url is None else hide_password(self.url)
