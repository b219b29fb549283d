"""The sandbox on a real PostgreSQL server and a real DuckDB file: hostile SQL ends as that query's error, within its
time limit, and leaves the database (and the server's files and roles) as it was."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import time
from pathlib import Path

import pytest
from conftest import pg_checksum, pg_database

from sqltune.sql import guard
from sqltune.sql.execution import Executor, Limits, QueryError, execution_match
from sqltune.sql.location import Databases, ServerDatabase, hide_password, with_password
from sqltune.sql.server import sqlite_value

TIMEOUT = 2.0
SHOP = (
    "CREATE TABLE item (id integer PRIMARY KEY, name text, price numeric(8, 2), added date)",
    "INSERT INTO item SELECT g, 'item ' || g, g * 1.25, DATE '2024-01-01' + g FROM generate_series(1, 60) g",
    "CREATE TABLE sale (item_id integer REFERENCES item(id), qty integer)",
    "INSERT INTO sale SELECT 1 + g % 60, g % 7 FROM generate_series(1, 200) g",
    "CREATE SEQUENCE counter",
)


def _hostile(target: Path) -> dict[str, str]:
    return {
        "drop": "DROP TABLE sale",
        "delete": "DELETE FROM sale",
        "insert": "INSERT INTO item VALUES (999, 'x', 1, NULL)",
        "update": "UPDATE item SET price = 0",
        "copy to a file": f"COPY item TO '{target}'",
        "read a file": "SELECT pg_read_file('/etc/passwd')",
        "read a file, qualified": "SELECT pg_catalog.pg_read_file('/etc/hostname')",
        "list a directory": "SELECT * FROM pg_ls_dir('.')",
        "set role": "SET ROLE pg_read_server_files",
        "set_config role": "SELECT set_config('role', 'pg_read_server_files', false)",
        "sleep": "SELECT pg_sleep(30)",
        "7-way cross join": "SELECT count(*) FROM sale a, sale b, sale c, sale d, sale e, sale f, sale g",
        "data-modifying CTE": "WITH gone AS (DELETE FROM sale RETURNING *) SELECT count(*) FROM gone",
        "select into": "SELECT * INTO stolen FROM item",
        "query inside a function": "SELECT query_to_xml('DELETE FROM sale', true, true, '')",
        "two statements": "SELECT 1; DROP TABLE sale",
        "large object export": f"SELECT lo_export(1, '{target}')",
        "alter system": "ALTER SYSTEM SET statement_timeout = 0",
        "catalog": "SELECT rolname, rolpassword FROM pg_authid",
        "create role": "CREATE ROLE intruder SUPERUSER",
        "lock rows": "SELECT * FROM item FOR UPDATE",
    }


@pytest.fixture(scope="module")
def shop(postgres) -> ServerDatabase:
    return ServerDatabase(pg_database(postgres, "shop", *SHOP))


def test_hostile_queries_end_as_errors_in_time_and_change_nothing(shop, tmp_path):
    before = pg_checksum(shop.url)
    executor = Executor(Limits(timeout_s=TIMEOUT))
    target = tmp_path / "stolen.csv"
    for name, sql in _hostile(target).items():
        started = time.monotonic()
        with pytest.raises(QueryError) as caught:
            executor.run(shop, sql)
        assert time.monotonic() - started < TIMEOUT + 3, name
        expected = "timeout" if name == "7-way cross join" else "execution error"
        assert caught.value.category == expected, (name, caught.value)
    executor.close()
    assert pg_checksum(shop.url) == before
    assert not target.exists()


def test_the_read_only_transaction_holds_when_the_guard_is_passed(shop, monkeypatch):
    """Defence in depth: with the static check switched off, the cursor takes nothing but a query, the transaction
    refuses to write, and the statement timeout stops a sleeper."""
    before = pg_checksum(shop.url)
    monkeypatch.setattr("sqltune.sql.server.check_query", lambda sql, dialect: None)
    executor = Executor(Limits(timeout_s=TIMEOUT))
    with pytest.raises(QueryError, match="syntax error"):
        executor.run(shop, "DELETE FROM sale")
    with pytest.raises(QueryError, match="data-modifying"):
        executor.run(shop, "WITH gone AS (DELETE FROM sale RETURNING *) SELECT count(*) FROM gone")
    with pytest.raises(QueryError, match="read-only transaction"):
        executor.run(shop, "SELECT nextval('counter')")
    with pytest.raises(QueryError, match="no result within 2 s"):
        executor.run(shop, "SELECT pg_sleep(30)")
    assert executor.run(shop, "SELECT count(*) FROM item")[0] == [(60,)]  # the connection recovers after each
    executor.close()
    assert pg_checksum(shop.url) == before


def test_a_least_privilege_role_from_the_url_options(postgres, monkeypatch):
    """A privileged URL user can drop to a SELECT-only role with `?options=-c role=...`: then even a query past the
    guard cannot read files."""
    url = pg_database(
        postgres,
        "shop_reader",
        *SHOP,
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sqltune_reader') THEN "
        "CREATE ROLE sqltune_reader NOLOGIN; END IF; END $$",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO sqltune_reader",
    )
    reader = ServerDatabase(url + "&options=-c%20role%3Dsqltune_reader")
    executor = Executor(Limits(timeout_s=TIMEOUT))
    assert executor.run(reader, "SELECT current_user, count(*) FROM item")[0] == [("sqltune_reader", 60)]
    monkeypatch.setattr("sqltune.sql.server.check_query", lambda sql, dialect: None)
    with pytest.raises(QueryError, match="permission denied"):
        executor.run(reader, "SELECT pg_read_file('/etc/hostname')")
    executor.close()


def test_results_read_as_sqlite_would_hold_them_and_compare_by_the_official_rule(shop):
    executor = Executor(Limits(timeout_s=TIMEOUT))
    rows, _ = executor.run(shop, "SELECT id, price, added, price > 2, avg(qty) FROM item JOIN sale ON id = item_id "
                                  "WHERE id = 2 GROUP BY id")  # fmt: skip
    assert rows == [(2, 2.5, "2024-01-03", 1, 3.5)]  # qty of sales 1, 61, 121, 181: 1, 5, 2, 6
    gold = "SELECT name FROM item WHERE price > 70 ORDER BY id"
    assert execution_match(executor, [shop], gold, "SELECT name FROM item WHERE price > 70 ORDER BY id").correct
    wrong = execution_match(executor, [shop], gold, "SELECT name FROM item WHERE price > 7 ORDER BY id")
    assert (wrong.correct, wrong.error) == (0, "wrong result")
    with pytest.raises(QueryError, match="more than 1000 rows"):
        Executor(Limits(timeout_s=TIMEOUT, max_rows=1000)).run(shop, "SELECT * FROM sale a, sale b")
    executor.close()
    assert sqlite_value(decimal.Decimal("3")) == 3 and sqlite_value(decimal.Decimal("3.50")) == 3.5
    assert sqlite_value(True) == 1 and sqlite_value(dt.datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02 03:04:05"


def test_an_unreachable_server_is_the_questions_error(postgres):
    broken = ServerDatabase(postgres.replace("{db_id}", "no_such_database"))
    with pytest.raises(QueryError) as caught:
        Executor().run(broken, "SELECT 1")
    assert caught.value.category == "unreadable database"


def test_the_password_never_shows(monkeypatch):
    database = ServerDatabase("postgresql+psycopg://reader:s3cret@db:5432/shop")
    assert "s3cret" not in str(database) + repr(database)
    assert hide_password(database.url) == "postgresql+psycopg://reader:***@db:5432/shop"
    monkeypatch.setenv("SQLTUNE_DATABASE_PASSWORD", "p@ss/word")
    server = Databases(url="postgresql+psycopg://reader@db:5432/{db_id}").server("pets_1")
    assert server.url == "postgresql+psycopg://reader:p%40ss%2Fword@db:5432/pets_1"
    assert "p%40ss" not in str(server)
    assert with_password("postgresql://reader:given@db/x") == "postgresql://reader:given@db/x"


def test_training_workers_get_the_password_by_environment_not_argv(monkeypatch):
    import os

    from sqltune.train.config import TrainConfig
    from sqltune.train.io import TrainInputs

    monkeypatch.setenv("SQLTUNE_DATABASE_PASSWORD", "")  # restored (unset) after the test, whatever argv() sets
    config = TrainConfig(database_url="postgresql+psycopg://reader:s3cret@db/{db_id}")
    argv = TrainInputs("d", "m", "o").argv(config)  # what the launcher's workers and a TrainJob's pods run
    assert "postgresql+psycopg://reader@db/{db_id}" in argv and not any("s3cret" in arg for arg in argv)
    assert os.environ["SQLTUNE_DATABASE_PASSWORD"] == "s3cret"


@pytest.mark.parametrize(
    ("sql", "refused"),
    [
        ("SELECT upper(name), count(*) FROM t GROUP BY 1", None),
        ("SELECT CAST(a AS INT), a::text, EXTRACT(year FROM d), CASE WHEN a THEN 1 END FROM t", None),
        ("SELECT strpos(name, 'x'), string_agg(name, ',') FROM t", None),
        ("SELECT dblink('x', 'y')", "dblink"),
        ("SELECT current_setting('data_directory')", "current_setting"),
        ("SELECT nextval('s')", "nextval"),
        ("SELECT pg_advisory_lock(1)", "pg_advisory_lock"),
        ("SELECT * FROM information_schema.tables", "information_schema.tables"),
    ],
)
def test_the_guard_allows_ordinary_functions_only(sql, refused):
    if refused is None:
        guard.check_query(sql, "postgres")
    else:
        with pytest.raises(QueryError, match=refused.split(".")[-1]):
            guard.check_query(sql, "postgres")


def test_duckdb_reads_a_file_read_only_without_external_access(tmp_path):
    import duckdb

    path = tmp_path / "shop.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE item AS SELECT range AS id, 'item ' || range AS name FROM range(50)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    database = Databases(url=f"duckdb:///{path}").server("shop")
    executor = Executor(Limits(timeout_s=TIMEOUT))
    assert executor.run(database, "SELECT count(*), max(name) FROM item")[0] == [(50, "item 9")]
    leak = tmp_path / "leak.csv"
    for sql in (
        f"COPY item TO '{leak}'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM '/etc/passwd'",
        "INSTALL httpfs",
        f"ATTACH '{tmp_path / 'other.duckdb'}'",
        "DELETE FROM item",
        "SELECT count(*) FROM item a, item b, item c, item d, item e, item f, item g, item h",
    ):
        started = time.monotonic()
        with pytest.raises(QueryError):
            executor.run(database, sql)
        assert time.monotonic() - started < TIMEOUT + 3, sql
    executor.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert not leak.exists() and not (tmp_path / "other.duckdb").exists()
