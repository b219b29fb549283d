"""Your own questions on your own database, end to end on a real PostgreSQL: copy-db, preprocess --dialect postgres
with a live schema, evaluate on the server, hostile predictions, jsonl and WikiSQL datasets, and the transpiler."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest
from conftest import pg_checksum, pg_database
from typer.testing import CliRunner

from sqltune.cli import app
from sqltune.datasets import read_dataset
from sqltune.errors import SqltuneError
from sqltune.evaluate.config import EvaluateConfig
from sqltune.evaluate.run import evaluate
from sqltune.preprocess import PreprocessConfig, preprocess
from sqltune.sql.copy import copy_databases
from sqltune.sql.location import Databases
from sqltune.sql.schema import load_tables
from sqltune.sql.transpile import TranspileError, transpile

SPIDER_DBS = ["concert_singer", "pets_1", "car_1"]  # the first 179 Spider dev questions are on these three


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def spider_on_postgres(postgres, spider_dir) -> str:
    reports = copy_databases(spider_dir / "database", postgres, SPIDER_DBS, overwrite=True)
    assert [r["db_id"] for r in reports] == SPIDER_DBS
    return postgres


def test_copy_db_copies_tables_keys_and_rows(spider_on_postgres, spider_dir):
    reports = {r["db_id"]: r for r in copy_databases(spider_dir / "database", spider_on_postgres, ["pets_1"],
                                                     overwrite=True)}  # fmt: skip
    pets = reports["pets_1"]
    with closing(sqlite3.connect(spider_dir / "database" / "pets_1" / "pets_1.sqlite")) as conn:
        for table, copied in pets["tables"].items():
            assert copied["rows"] == conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
    assert pets["tables"]["student"]["primary_key"] == ["stuid"] and pets["foreign_keys"] == 2
    with pytest.raises(SqltuneError, match="already has table"):
        copy_databases(spider_dir / "database", spider_on_postgres, ["pets_1"])


def test_copy_db_keeps_what_dirty_data_allows_and_says_why_not(postgres, tmp_path):
    """SQLite keeps any value anywhere: duplicate and NULL keys, dangling references, numbers as text, NUL bytes,
    Latin-1. The copy keeps every row and says which keys it left out and which columns it changed."""
    source = tmp_path / "dirty" / "dirty.sqlite"
    source.parent.mkdir()
    with closing(sqlite3.connect(source)) as conn:
        conn.executescript("""
            CREATE TABLE team (id INTEGER PRIMARY KEY, Name TEXT);
            CREATE TABLE player (pid int PRIMARY KEY, team_id text REFERENCES team(id), coach text REFERENCES x(y),
                                 score number, note text);
            CREATE TABLE dup (k int PRIMARY KEY, v);
            INSERT INTO team VALUES (1, 'Red'), (2, 'Blue');
            INSERT INTO player VALUES (10, '1', 'a', 3, 'plain'), (11, '2', 'b', 4.5, 'nul' || char(0) || 'byte');
            INSERT INTO player VALUES (12, '1', NULL, 'n/a', CAST(X'E9' AS TEXT));
            INSERT INTO dup VALUES (1, 'a'), (NULL, 2), (NULL, X'00');
        """)
        conn.commit()
    report = copy_databases(tmp_path, postgres, ["dirty"])[0]
    assert {t: c["rows"] for t, c in report["tables"].items()} == {"team": 2, "player": 3, "dup": 3}
    notes = "\n".join(report["notes"])
    assert "player.team_id: text holding integers" in notes and report["foreign_keys"] == 1
    assert "foreign key player(coach) -> x: no table x" in notes
    assert "primary key dup(k): it holds NULL" in notes
    url = Databases(url=postgres).server("dirty")
    from sqltune.sql.execution import Executor

    rows = Executor().run(
        url, "SELECT p.note, t.name, p.score FROM player p JOIN team t ON p.team_id = t.id ORDER BY pid"
    )
    assert rows[0] == [("plain", "Red", "3"), ("nulbyte", "Blue", "4.5"), ("é", "Red", "n/a")]


def test_first_179_spider_dev_questions_on_postgres_score_ex_1(spider_on_postgres, spider_dir, tmp_path):
    """The issue's "done when": preprocess --dialect postgres --database-url on the first 179 dev questions, the
    transpiled gold against itself on PostgreSQL: EX 1.0; what did not transpile or run is listed with reasons."""
    config = PreprocessConfig(dataset="spider", split="dev", limit=179, dialect="postgres",
                              database_url=spider_on_postgres)  # fmt: skip
    summary = preprocess(spider_dir, tmp_path / "dev", config=config, databases_out=tmp_path / "db")
    records, dropped = _records(tmp_path / "dev" / "records.jsonl"), _records(tmp_path / "dev" / "dropped.jsonl")
    assert len(records) + len(dropped) == 179 and summary["dropped"]["total"] == len(dropped)
    assert len(records) >= 160, summary
    assert all(d["category"] == "does not run on postgres" and d["reason"] for d in dropped)
    assert all(r["dialect"] == "postgres" and "PostgreSQL query" in r["prompt"] for r in records)
    assert "CREATE TABLE singer (singer_id bigint" in records[0]["schema"]  # the live database's schema
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps({"db_id": r["db_id"], "sql": r["sql"]}) + "\n" for r in records))
    metrics = evaluate(
        tmp_path / "dev" / "records.jsonl", predictions, None, tmp_path / "db" / "tables.json", tmp_path / "eval",
        config=EvaluateConfig(database_url=spider_on_postgres, workers=2),
    )  # fmt: skip
    assert metrics["ex"]["all"] == 1.0 and metrics["em"]["all"] == 1.0 and metrics["skipped"]["total"] == 0
    with pytest.raises(SqltuneError, match=r"the gold SQL is postgres but the databases .* run sqlite"):
        evaluate(tmp_path / "dev" / "records.jsonl", predictions, spider_dir / "database", None, tmp_path / "e2",
                 config=EvaluateConfig(etype="exec"))  # fmt: skip


def test_hostile_predictions_change_nothing_and_finish_in_time(postgres, tmp_path):
    url = pg_database(
        postgres, "league",
        "CREATE TABLE team (id integer PRIMARY KEY, name text)",
        "INSERT INTO team SELECT g, 'team ' || g FROM generate_series(1, 40) g",
    )  # fmt: skip
    before = pg_checksum(url)
    hostile = [
        "DROP TABLE team", "DELETE FROM team", "INSERT INTO team VALUES (99, 'x')",
        f"COPY team TO '{tmp_path / 'leak.csv'}'", "SELECT pg_read_file('/etc/passwd')",
        "SET ROLE pg_read_server_files",
        "SELECT pg_sleep(60)", "SELECT count(*) FROM team a, team b, team c, team d, team e, team f, team g",
    ]  # fmt: skip
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"db_id": "league", "sql": "SELECT count(*) FROM team", "dialect": "postgres",
                                        "hardness": "easy"}) + "\n" for _ in hostile))  # fmt: skip
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps({"sql": sql}) + "\n" for sql in hostile))
    started = time.monotonic()
    metrics = evaluate(gold, predictions, None, None, tmp_path / "eval",
                       config=EvaluateConfig(etype="exec", database_url=postgres, timeout=2.0, workers=2))  # fmt: skip
    assert time.monotonic() - started < 30
    rows = _records(tmp_path / "eval" / "results.jsonl")
    assert metrics["ex"]["all"] == 0.0 and all(row["ex"] == 0 for row in rows)
    assert [row["error"] for row in rows][-1] == "timeout" and all(row["error"] for row in rows)
    assert pg_checksum(url) == before and not (tmp_path / "leak.csv").exists()


def test_a_two_line_jsonl_dataset_gets_its_schema_from_the_live_database(postgres, tmp_path, monkeypatch):
    pg_database(
        postgres, "crm",
        "CREATE TABLE customer (id integer PRIMARY KEY, name text, city text)",
        "CREATE TABLE purchase (id integer PRIMARY KEY, customer_id integer REFERENCES customer(id), total numeric)",
        "INSERT INTO customer VALUES (1, 'Ada', 'Paris'), (2, 'Alan', 'London')",
        "INSERT INTO purchase VALUES (1, 1, 9.5), (2, 1, 20), (3, 2, 7)",
    )  # fmt: skip
    questions = tmp_path / "mine.jsonl"
    questions.write_text(
        json.dumps({"question": "How many customers live in Paris?", "db_id": "crm",
                    "sql": "SELECT count(*) FROM customer WHERE city = 'Paris'"}) + "\n"
        + json.dumps({"question": "Total spent by Ada?", "db_id": "crm", "evidence": "spent: the sum of totals",
                      "sql": "SELECT sum(p.total) FROM purchase p JOIN customer c ON c.id = p.customer_id "
                             "WHERE c.name = 'Ada'"}) + "\n"
    )  # fmt: skip
    with_password = postgres.replace("postgres@", "postgres:hunter2@")  # the test server trusts any password
    result = CliRunner().invoke(app, [
        "preprocess", "--dataset", "jsonl", "--source", str(questions), "--split", "dev", "--dialect", "postgres",
        "--database-url", with_password, "--schema-style", "rich", "--out", str(tmp_path / "out"),
        "--databases-out", str(tmp_path / "db"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    records = _records(tmp_path / "out" / "records.jsonl")
    assert [r["question"] for r in records] == ["How many customers live in Paris?", "Total spent by Ada?"]
    assert "customer (id integer primary key [1, 2]; name text ['Ada', 'Alan']" in records[0]["schema"]
    assert "foreign key: purchase.customer_id = customer.id" in records[0]["schema"]
    assert records[1]["evidence"] == "spent: the sum of totals" and "Hint: spent" in records[1]["prompt"]
    assert load_tables(tmp_path / "db" / "tables.json")["crm"].tables == ("customer", "purchase")
    written = "".join(p.read_text() for p in (tmp_path / "out").iterdir()) + result.output
    assert "hunter2" not in written and "postgres:***@" in (tmp_path / "out" / "manifest.json").read_text()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"question": "q", "db_id": "crm"}', r"mine\.jsonl:2: 'sql' must be a non-empty string \(missing\)"),
        ('{"question": "q", "sql": 3, "db_id": "crm"}', r"mine\.jsonl:2: 'sql' must be a non-empty string \(int 3\)"),
        ("not json", r"mine\.jsonl:2: malformed JSON"),
    ],
)
def test_a_bad_jsonl_line_is_an_error_naming_it(tmp_path, line, message):
    questions = tmp_path / "mine.jsonl"
    questions.write_text('{"question": "q", "sql": "SELECT 1", "db_id": "crm"}\n' + line + "\n")
    result = CliRunner().invoke(app, ["preprocess", "--dataset", "jsonl", "--source", str(questions), "--split",
                                      "dev", "--out", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 1 and isinstance(result.exception, SqltuneError)
    assert __import__("re").search(message, str(result.exception)), result.exception
    with pytest.raises(SqltuneError, match="no schema for these questions: pass --tables"):
        questions.write_text('{"question": "q", "sql": "SELECT 1", "db_id": "crm"}\n')
        preprocess(questions, tmp_path / "out2", config=PreprocessConfig(dataset="jsonl", split="dev"))


def _wikisql(root: Path) -> None:
    """A small WikiSQL split in WikiSQL's own format."""
    tables = [
        {"id": "1-10015132-11", "name": "table_10015132_11", "page_title": "Toronto Raptors all-time roster",
         "header": ["Player", "No.", "Nationality", "Position", "Years in Toronto"],
         "types": ["text", "real", "text", "text", "text"],
         "rows": [["Aleksandar Radojević", 25, "Serbia", "Center", "1999-2000"],
                  ["Shawn Respert", 31, "United States", "Guard", "1997-98"],
                  ["Quentin Richardson", "N/A", "United States", "Forward", "2013-present"]]},
    ]  # fmt: skip
    questions = [
        {"phase": 1, "table_id": "1-10015132-11", "question": "What position does the player who played for butler cc "
         "(ks) play?", "sql": {"sel": 3, "conds": [[2, 0, "Serbia"]], "agg": 0}},
        {"phase": 1, "table_id": "1-10015132-11", "question": "How many players wore number 31?",
         "sql": {"sel": 0, "conds": [[1, 0, 31]], "agg": 3}},
    ]  # fmt: skip
    (root / "dev.tables.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tables))
    (root / "dev.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))


def test_wikisql_questions_become_sql_and_runnable_databases(tmp_path):
    source = tmp_path / "wikisql"
    source.mkdir()
    _wikisql(source)
    layout = read_dataset("wikisql", source, "dev")
    assert [e.sql for e in layout.examples] == [
        "SELECT Position FROM table_10015132_11 WHERE Nationality = 'Serbia'",
        'SELECT COUNT(Player) FROM table_10015132_11 WHERE "No." = 31',
    ]
    summary = preprocess(source, tmp_path / "out", config=PreprocessConfig(dataset="wikisql", split="dev"),
                         databases_out=tmp_path / "db")  # fmt: skip
    assert summary["records"] == 2
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps({"sql": e.sql}) + "\n" for e in layout.examples))
    databases = tmp_path / "db"
    metrics = evaluate(tmp_path / "out" / "records.jsonl", predictions, databases / "database",
                       databases / "tables.json", tmp_path / "eval", config=EvaluateConfig(etype="exec"))  # fmt: skip
    assert metrics["ex"]["all"] == 1.0
    gold = _records(tmp_path / "eval" / "results.jsonl")
    assert all(row["error"] is None for row in gold)
    (source / "dev.jsonl").write_text('{"table_id": "1-10015132-11", "question": "q", "sql": {"sel": 9, "agg": 0}}\n')
    with pytest.raises(SqltuneError, match=r"dev\.jsonl:1: 'sql' is not a WikiSQL query"):
        read_dataset("wikisql", source, "dev")


@pytest.mark.parametrize(
    ("sqlite", "postgres"),
    [
        ('SELECT Name FROM singer WHERE Country = "France"', "SELECT name FROM singer WHERE country = 'France'"),
        ("SELECT count(*) FROM concert WHERE Year > 2013", "SELECT COUNT(*) FROM concert WHERE year > '2013'"),
        ("SELECT Name FROM singer WHERE Age > 30", "SELECT name FROM singer WHERE age > 30"),
        (
            "SELECT T1.Name FROM singer AS T1 WHERE T1.name LIKE '%a%'",
            "SELECT t1.name FROM singer AS t1 WHERE t1.name ILIKE '%a%'",
        ),
        ('SELECT "Song_Name" FROM singer', "SELECT song_name FROM singer"),
        (
            "SELECT T2.Name, count(*) FROM concert AS T1 JOIN stadium AS T2 ON T1.Stadium_ID = T2.Stadium_ID GROUP BY "
            "T1.Stadium_ID",
            "SELECT ANY_VALUE(t2.name), COUNT(*) FROM concert AS t1 JOIN stadium AS t2 ON t1.stadium_id "
            "= t2.stadium_id GROUP BY t1.stadium_id",
        ),
        (
            "SELECT Name, count(*) FROM singer GROUP BY Singer_ID",
            "SELECT name, COUNT(*) FROM singer GROUP BY singer_id",
        ),
        (
            "SELECT Country, count(*) FROM singer GROUP BY Country",
            "SELECT country, COUNT(*) FROM singer GROUP BY country",
        ),
    ],
)
def test_transpiling_keeps_what_sqlite_meant(spider_dir, sqlite, postgres):
    schema = load_tables(spider_dir / "tables.json")["concert_singer"]
    assert transpile(sqlite, "postgres", schema=schema) == postgres


def test_what_cannot_be_transpiled_says_why():
    with pytest.raises(TranspileError, match="statements, not one"):
        transpile("SELECT 1; SELECT 2", "postgres")
    with pytest.raises(TranspileError, match="cannot read it as sqlite"):
        transpile("SELECT FROM WHERE (", "postgres")
    assert transpile("SELECT a FROM t", "sqlite") == "SELECT a FROM t"  # the same dialect: untouched


def test_predict_candidates_and_the_grpo_reward_run_on_postgres(spider_on_postgres):
    """The candidate check and the GRPO reward take the same Databases and run through the same sandbox."""
    from sqltune.predict.candidates import check_candidates
    from sqltune.train.reward import ExecutionReward

    databases = Databases(url=spider_on_postgres)
    good, wrong = "SELECT count(*) FROM singer", "SELECT count(*) FROM stadium"
    outcomes = check_candidates(databases, [("concert_singer", sql) for sql in (
        good, "SELECT count(*) FROM singers", "SELECT pg_read_file('/etc/passwd')", "DROP TABLE singer",
    )], workers=2)  # fmt: skip
    assert outcomes[("concert_singer", good)].ran and outcomes[("concert_singer", good)].rows == 1
    assert "schema check: no table 'singers'" in outcomes[("concert_singer", "SELECT count(*) FROM singers")].error
    assert "pg_read_file() is not allowed" in outcomes[("concert_singer", "SELECT pg_read_file('/etc/passwd')")].error
    assert outcomes[("concert_singer", "DROP TABLE singer")].ran is False
    reward = ExecutionReward(databases, workers=2)
    scores = reward.score_all([("concert_singer", good, f"```sql\n{sql}\n```") for sql in (good, wrong, "DROP x")])
    assert [scores[("concert_singer", good, f"```sql\n{sql}\n```")][0] for sql in (good, wrong, "DROP x")] == [
        1.0, 0.1, 0.0,
    ]  # fmt: skip
    assert reward.gold_runs({"db_id": "concert_singer", "sql": good}) is None


def test_spider_on_duckdb_end_to_end(spider_dir, tmp_path):
    url = f"duckdb:///{tmp_path}/{{db_id}}.duckdb"
    copy_databases(spider_dir / "database", url, ["concert_singer"])
    config = PreprocessConfig(dataset="spider", split="dev", limit=45, dialect="duckdb", database_url=url)
    preprocess(spider_dir, tmp_path / "dev", config=config)
    records = _records(tmp_path / "dev" / "records.jsonl")
    assert len(records) >= 40 and all("DuckDB query" in r["prompt"] for r in records)
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps({"sql": r["sql"]}) + "\n" for r in records))
    metrics = evaluate(tmp_path / "dev" / "records.jsonl", predictions, None, None, tmp_path / "eval",
                       config=EvaluateConfig(etype="exec", database_url=url, workers=1))  # fmt: skip
    assert metrics["ex"]["all"] == 1.0
