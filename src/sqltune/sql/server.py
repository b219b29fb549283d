"""The sandbox on a database server (PostgreSQL) or a DuckDB file: the promises SQLite's sandbox makes, kept there.

A query runs only once `guard.check_query` accepted it (one read-only SELECT, allow-listed functions, no system
catalogs), and then:

- PostgreSQL: on a connection opened read-only (`default_transaction_read_only`), inside `BEGIN READ ONLY` with
  `SET LOCAL statement_timeout` (and lock and idle timeouts), through a server-side cursor fetched in chunks so
  that the row and byte caps hold before a result is ever whole in memory; every query ends in ROLLBACK. Each
  chunk's FETCH gets only the time left, so the whole query stays within `timeout_s`. A superuser's connection can
  also cap the temporary files a query writes (`temp_file_limit`). The third wall is the role: connect as a role
  that may only SELECT (the docs show how); a privileged URL user can drop to one with `?options=-c role=NAME`.
- DuckDB: the file is opened `read_only` with external access (files, network, extensions) disabled and the
  configuration locked; a timer interrupts a query at its time limit; `max_heap_bytes` is DuckDB's memory limit.

Values come back as SQLite would give them (`sqlite_value`): int, float, str, bytes or None (booleans as 0/1,
NUMERIC as int or float, dates and times as ISO text), so the official EX comparison reads a server's result as it
reads SQLite's.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqltune.sql.guard import check_query
from sqltune.sql.limits import Limits, QueryError, Rows, row_bytes
from sqltune.sql.location import ServerDatabase, url_database

_CHUNK_ROWS = 1000


def sqlite_value(value: Any) -> Any:
    """A server's value as SQLite would hold it: int, float, str, bytes or None."""
    if isinstance(value, bool):
        return int(value)
    if value is None or isinstance(value, int | float | str | bytes):
        return value
    if isinstance(value, decimal.Decimal):
        if value.is_finite() and value == value.to_integral_value() and value.as_tuple().exponent >= 0:
            return int(value)
        return float(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, dt.timedelta | uuid.UUID):
        return str(value)
    if isinstance(value, list | dict):
        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


class _Fetched:
    """Rows gathered under the row and byte caps."""

    def __init__(self, limits: Limits) -> None:
        self.limits, self.rows, self.size = limits, [], 0

    def add(self, chunk: list[tuple]) -> None:
        limits = self.limits
        for raw in chunk:
            row = tuple(sqlite_value(value) for value in raw)
            self.rows.append(row)
            self.size += row_bytes(row)
            if len(self.rows) > limits.max_rows:
                raise QueryError("too many rows", f"more than {limits.max_rows} rows")
            if self.size > limits.max_result_bytes:
                raise QueryError("result too large", f"result over {limits.max_result_bytes} bytes")


@dataclass
class PostgresSandbox:
    """One read-only connection to one PostgreSQL database; `run` executes one checked query under `limits`."""

    database: ServerDatabase
    limits: Limits

    def __post_init__(self) -> None:
        import psycopg

        params = connection_params(self.database.url)
        params.setdefault("application_name", "sqltune-sandbox")
        params.setdefault("connect_timeout", max(1, round(min(self.limits.timeout_s, 30))))
        try:
            self.connection = psycopg.connect(autocommit=True, **params)
        except psycopg.Error as exc:
            raise QueryError("unreadable database", f"{self.database}: cannot connect: {_first_line(exc)}") from None
        self.connection.execute("SET default_transaction_read_only = on")
        row = self.connection.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        self.superuser = bool(row and row[0])

    def run(self, sql: str) -> Rows:
        import psycopg

        limits = self.limits
        check_query(sql, "postgres")
        sql = sql.strip().rstrip(";").rstrip()  # DECLARE takes the query without its end
        conn = self.connection
        deadline = time.monotonic() + limits.timeout_s
        fetched = _Fetched(limits)
        try:
            conn.execute("BEGIN READ ONLY")
            conn.execute(f"SET LOCAL lock_timeout = {_ms(limits.timeout_s)}")
            conn.execute(f"SET LOCAL idle_in_transaction_session_timeout = {_ms(limits.timeout_s) + 5000}")
            if self.superuser:  # only a superuser may set it; else the server's own limit applies
                conn.execute(f"SET LOCAL temp_file_limit = '{limits.max_heap_bytes // 1024}kB'")
            conn.execute(f"SET LOCAL statement_timeout = {_ms(limits.timeout_s)}")
            conn.execute(f"DECLARE sqltune_sandbox NO SCROLL CURSOR FOR {sql}")
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise QueryError("timeout", f"no result within {limits.timeout_s:g} s")
                conn.execute(f"SET LOCAL statement_timeout = {_ms(left)}")
                chunk = conn.execute(f"FETCH FORWARD {_CHUNK_ROWS} FROM sqltune_sandbox").fetchall()
                fetched.add(chunk)
                if len(chunk) < _CHUNK_ROWS:
                    return fetched.rows
        except psycopg.errors.QueryCanceled:
            raise QueryError("timeout", f"no result within {limits.timeout_s:g} s") from None
        except psycopg.errors.SyntaxError as exc:
            raise QueryError("syntax error", f"{type(exc).__name__}: {_first_line(exc)}") from None
        except psycopg.OperationalError as exc:
            if conn.closed:
                lost = f"{self.database}: connection lost: {_first_line(exc)}"
                raise QueryError("unreadable database", lost) from None
            raise QueryError("execution error", f"{type(exc).__name__}: {_first_line(exc)}") from None
        except psycopg.Error as exc:
            raise QueryError("execution error", f"{type(exc).__name__}: {_first_line(exc)}") from None
        finally:
            if not conn.closed:
                conn.execute("ROLLBACK")

    def close(self) -> None:
        self.connection.close()


@dataclass
class DuckDBSandbox:
    """One DuckDB file opened read-only with external access off; `run` executes one checked query."""

    database: ServerDatabase
    limits: Limits

    def __post_init__(self) -> None:
        import duckdb

        path = url_database(self.database.url)
        config = {
            "access_mode": "READ_ONLY",
            "enable_external_access": False,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "memory_limit": f"{self.limits.max_heap_bytes // 2**20}MB",
            "threads": 1,
        }
        try:
            self.connection = duckdb.connect(path, read_only=True, config=config)
            self.connection.execute("SET lock_configuration = true")
        except duckdb.Error as exc:
            raise QueryError("unreadable database", f"{self.database}: cannot open: {_first_line(exc)}") from None

    def run(self, sql: str) -> Rows:
        import duckdb

        limits = self.limits
        check_query(sql, "duckdb")
        fetched = _Fetched(limits)
        timer = threading.Timer(limits.timeout_s, self.connection.interrupt)
        timer.start()
        try:
            cursor = self.connection.execute(sql)
            while chunk := cursor.fetchmany(_CHUNK_ROWS):
                fetched.add(chunk)
            return fetched.rows
        except duckdb.InterruptException:
            raise QueryError("timeout", f"no result within {limits.timeout_s:g} s") from None
        except duckdb.OutOfMemoryException:
            raise QueryError("memory limit", f"out of memory (DuckDB limit: {limits.max_heap_bytes} bytes)") from None
        except duckdb.ParserException as exc:
            raise QueryError("syntax error", f"{type(exc).__name__}: {_first_line(exc)}") from None
        except duckdb.Error as exc:
            raise QueryError("execution error", f"{type(exc).__name__}: {_first_line(exc)}") from None
        finally:
            timer.cancel()

    def close(self) -> None:
        self.connection.close()


def connection_params(url: str) -> dict[str, Any]:
    """libpq's connection parameters from a SQLAlchemy PostgreSQL URL (its query holds libpq options too: `host`
    for a socket directory, `options=-c role=...`, `sslmode`)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    fields = {"host": parsed.host, "port": parsed.port, "user": parsed.username, "password": parsed.password}
    params: dict[str, Any] = {key: value for key, value in fields.items() if value not in (None, "")}
    params["dbname"] = parsed.database
    params.update((key, value) for key, value in parsed.query.items() if isinstance(value, str))
    return params


def open_server_sandbox(database: ServerDatabase, limits: Limits) -> PostgresSandbox | DuckDBSandbox:
    """The sandbox for `database`'s engine."""
    return DuckDBSandbox(database, limits) if database.dialect == "duckdb" else PostgresSandbox(database, limits)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
