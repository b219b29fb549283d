"""Execution-checked prediction: the schema check, the sandboxed runs and the choice, on real SQLite files."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import pytest

from sqltune.predict.candidates import CandidateChecker, Outcome, choose, read_schema
from sqltune.sql.execution import Executor, Limits
from sqltune.sql.extract import NO_SQL
from sqltune.sql.location import Databases


def make_database(db_dir: Path, db_id: str) -> Path:
    """`<db_dir>/<db_id>/<db_id>.sqlite`: singers (one view) and their concerts."""
    path = db_dir / db_id / f"{db_id}.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE Singer (singer_id INTEGER PRIMARY KEY, Name TEXT, age INTEGER, country TEXT);
            CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, singer_id INTEGER REFERENCES Singer, year INTEGER);
            CREATE VIEW old_singer AS SELECT Name, age FROM Singer WHERE age > 40;
            INSERT INTO Singer VALUES (1, 'Joe', 52, 'France'), (2, 'Ann', 29, 'France'), (3, 'Li', 41, 'China');
            INSERT INTO concert VALUES (1, 1, 2014), (2, 1, 2015), (3, 3, 2015);
            """
        )
    return path


@pytest.fixture
def checker(tmp_path) -> CandidateChecker:
    make_database(tmp_path, "concerts")
    return CandidateChecker(Databases(db_dir=tmp_path))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_schema_is_read_from_the_sqlite_file(tmp_path):
    schema = read_schema(make_database(tmp_path, "concerts"))
    assert schema == {
        "singer": {"singer_id", "name", "age", "country"},
        "concert": {"concert_id", "singer_id", "year"},
        "old_singer": {"name", "age"},
    }


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT name FROM singer",
        'SELECT "NAME" FROM "SINGER" WHERE Country = "France"',  # case-insensitive names; "France" is a string
        "SELECT T1.name FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id WHERE T2.year = 2015",
        "SELECT T1.name FROM singer AS T1 INTERSECT SELECT T1.singer_id FROM concert AS T1",  # one alias, two tables
        "SELECT country, count(*) AS n FROM singer GROUP BY country ORDER BY n DESC",
        "WITH busy AS (SELECT singer_id, count(*) AS shows FROM concert GROUP BY singer_id) "
        "SELECT s.name, busy.shows FROM singer s JOIN busy ON busy.singer_id = s.singer_id",
        "SELECT sub.name FROM (SELECT name FROM singer WHERE age > 30) AS sub",
        "SELECT name FROM singer WHERE singer_id IN (SELECT singer_id FROM concert WHERE year > 2014)",
        "SELECT singer.*, rowid FROM singer",
        "SELECT name FROM old_singer",
    ],
)
def test_candidates_naming_what_exists_pass_the_check_and_run(checker, sql):
    outcome = checker.check("concerts", sql)
    assert outcome.ran, outcome.error
    assert len(outcome.digest) == 64 and outcome.rows is not None


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT name FROM singers", "schema check: no table 'singers' in the database"),
        ("SELECT title FROM singer", "schema check: no column 'title' in singer"),
        ("SELECT year FROM singer", "schema check: no column 'year' in singer"),  # a column of a table not read
        ("SELECT T3.name FROM singer AS T1", "schema check: no table or alias 'T3' for column T3.name"),
        ("SELECT T2.name FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id", "no column 'name'"),
        ("SELECT name FROM singer WHERE", "parse error"),
        ("DELETE FROM singer", "not one SELECT query: Delete"),
        ("SELECT 1; SELECT 2", "not one SELECT query: Select, Select"),
        (NO_SQL, "no SQL in the model's output"),
    ],
)
def test_candidates_naming_what_does_not_exist_are_rejected_without_touching_the_database(
    tmp_path, sql, reason, monkeypatch
):
    checker = CandidateChecker(Databases(db_dir=tmp_path))
    make_database(tmp_path, "concerts")
    ran = []
    monkeypatch.setattr(checker.executor, "run", lambda *args: ran.append(args))  # a spy: it must not be called
    outcome = checker.check("concerts", sql)
    assert (outcome.ran, outcome.digest) == (False, None)
    assert reason in outcome.error
    assert ran == []


def test_digest_ignores_row_order_unless_the_query_orders(checker):
    def digest(sql):
        return checker.check("concerts", sql).digest

    assert digest("SELECT name FROM singer ORDER BY age") != digest("SELECT name FROM singer ORDER BY age DESC")
    assert digest("SELECT name FROM singer ORDER BY age") == digest("SELECT name FROM singer ORDER BY age, country")
    assert digest("SELECT name FROM singer WHERE age > 30") == digest("SELECT name FROM singer WHERE age >= 31")
    # Without an ORDER BY of its own, a query's rows are a multiset, in whatever order SQLite returns them.
    assert digest("SELECT name FROM singer") == digest("SELECT name FROM (SELECT name FROM singer ORDER BY name DESC)")
    assert digest("SELECT name FROM singer") != digest("SELECT DISTINCT country FROM singer")


def test_the_result_most_runnable_candidates_share_is_chosen(checker):
    candidates = [
        ("SELECT name FROM singers WHERE age > 30", -1.0),  # greedy: invents a table, rejected
        ("SELECT name FROM singer WHERE country = 'France'", -2.0),  # runs, alone with its result
        ("SELECT name FROM singer WHERE age > 30", -6.0),  # these two agree (Joe, Li)
        ("SELECT T1.name FROM singer AS T1 WHERE T1.age >= 31", -5.0),
        ("SELECT nme FROM singer", -0.5),  # rejected
    ]
    outcomes = [checker.check("concerts", sql) for sql, _ in candidates]
    assert [o.ran for o in outcomes] == [False, True, True, True, False]
    assert choose(outcomes, [lp for _, lp in candidates]) == 3  # the majority's result; its more likely member
    # Between results with as many votes, the more likely candidate wins; when nothing runs, greedy stays.
    assert choose(outcomes[:3], [-1.0, -2.0, -6.0]) == 1
    assert choose(outcomes[:3], [-1.0, -7.0, -6.0]) == 2
    assert choose([outcomes[0], outcomes[4]], [-9.0, -0.1]) == 0


def test_hostile_candidates_cannot_touch_the_database_and_fail(tmp_path):
    path = make_database(tmp_path, "concerts")
    before = _sha256(path)
    checker = CandidateChecker(Databases(db_dir=tmp_path), Executor(Limits(timeout_s=1.0, max_result_bytes=2**20)))
    hostile = {
        "DELETE FROM singer": "not one SELECT query",
        "UPDATE singer SET age = 0": "not one SELECT query",
        "DROP TABLE concert": "not one SELECT query",
        f"ATTACH DATABASE '{tmp_path / 'planted.db'}' AS planted": "not one SELECT query",
        "PRAGMA writable_schema = 1": "not one SELECT query",
        "SELECT name FROM singer; DELETE FROM singer": "not one SELECT query",
        # These pass the name check (they name nothing) and are stopped by the evaluate step's sandbox.
        "SELECT fts3_tokenizer('simple')": "function fts3_tokenizer() is not allowed",
        "SELECT load_extension('/tmp/x.so')": "function load_extension() is not allowed",
        "SELECT randomblob(2000000000)": "result too large",
        "SELECT length(randomblob(2000000)) FROM singer": "result too large",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n": "timeout",
    }
    for sql, reason in hostile.items():
        outcome = checker.check("concerts", sql)
        assert not outcome.ran and reason in outcome.error, (sql, outcome)
    checker.close()
    assert _sha256(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["concerts"]  # nothing planted beside it
    assert sorted(p.name for p in path.parent.iterdir()) == ["concerts.sqlite"]  # no journal or WAL either


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to find the workers")
@pytest.mark.timeout(120)
def test_a_candidate_whose_worker_dies_fails_alone_and_the_check_goes_on(tmp_path):
    # Every checker worker that opens victim.sqlite is killed while its runaway candidate runs, as the OOM killer
    # would: that candidate fails as CHECKER_CRASHED, the others get their outcomes, and predict lives on.
    from test_evaluate import _kill_workers_holding

    from sqltune.predict.candidates import CHECKER_CRASHED, check_candidates

    make_database(tmp_path, "concerts")
    victim = make_database(tmp_path, "victim")
    runaway = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    fine = [("concerts", "SELECT name FROM singer"), ("concerts", "SELECT count(*) FROM concert")]
    stop, killed = threading.Event(), []
    watchdog = threading.Thread(target=_kill_workers_holding, args=(victim, stop, killed))
    watchdog.start()
    try:
        outcomes = check_candidates(
            Databases(db_dir=tmp_path), [fine[0], ("victim", runaway), fine[1], fine[0]], workers=2
        )
    finally:
        stop.set()
        watchdog.join()
    assert outcomes[("victim", runaway)] == Outcome(False, CHECKER_CRASHED)
    assert [outcomes[candidate].rows for candidate in fine] == [3, 1]
    assert len(outcomes) == 3 and killed  # the repeated candidate checked once


def test_a_question_whose_database_cannot_be_read_fails_its_candidates_alone(tmp_path):
    """A directory where the SQLite file should be: its candidates fail with the reason, the others run."""
    from sqltune.predict.candidates import check_candidates

    make_database(tmp_path, "concerts")
    (tmp_path / "broken" / "broken.sqlite").mkdir(parents=True)
    outcomes = check_candidates(
        Databases(db_dir=tmp_path), [("broken", "SELECT 1"), ("concerts", "SELECT name FROM singer")], workers=1
    )
    assert outcomes[("concerts", "SELECT name FROM singer")].rows == 3
    broken = outcomes[("broken", "SELECT 1")]
    assert not broken.ran and broken.error.startswith("database: ") and "is a directory" in broken.error


def test_the_schema_check_writes_nothing_beside_a_wal_database(tmp_path):
    path = make_database(tmp_path, "concerts")
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode = WAL")
    db.close()
    checker = CandidateChecker(Databases(db_dir=tmp_path))
    assert checker.check("concerts", "SELECT name FROM singer WHERE age > 40").rows == 2
    checker.close()
    assert sorted(p.name for p in path.parent.iterdir()) == ["concerts.sqlite"]
