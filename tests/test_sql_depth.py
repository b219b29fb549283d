"""Deeply nested SQL from a model or a user is one failed item wherever it is parsed or walked, never a failed run:
the candidate check (and its schema check), the GRPO reward, exact match and hardness."""

from __future__ import annotations

import json

import pytest
from test_candidates import make_database

from sqltune.predict.candidates import check_candidates
from sqltune.sql.depth import MAX_DEPTH, SqlTooDeep, check_depth, nesting_depth
from sqltune.sql.hardness import classify_hardness
from sqltune.sql.location import Databases
from sqltune.sql.parser import SqlParseError, parse_sql
from sqltune.sql.schema import load_tables
from sqltune.train.reward import ExecutionReward


def parens(levels: int) -> str:
    return "SELECT " + "(" * levels + "1" + ")" * levels + " FROM singer"


def case_chain(levels: int) -> str:
    return "SELECT " + " ".join(f"CASE WHEN age = {i} THEN {i} ELSE" for i in range(levels)) + " 0" + " END" * levels


def subqueries(levels: int) -> str:
    return "SELECT name FROM singer WHERE singer_id IN (" * levels + "SELECT singer_id FROM singer" + ")" * levels


DEEP = {
    "parentheses": parens(3000),
    "CASE chain": case_chain(3000) + " FROM singer",
    "subqueries": subqueries(250),  # the Spider parser reads it; its normalizing walk used to overflow
    "NOT chain": "SELECT name FROM singer WHERE " + "NOT " * 3000 + "age > 1",  # flat text, deep parse tree
}


def test_depth_counts_parentheses_and_case_outside_quotes_and_comments():
    assert nesting_depth("SELECT a FROM t") == 0
    assert nesting_depth("SELECT (1 + (2)), (3) FROM t WHERE x IN (SELECT CASE WHEN a THEN (b) END FROM u)") == 3
    assert nesting_depth("SELECT '((((', \"((\", [((], `(` FROM t -- ((((\n/* ((( */ WHERE x = ')'") == 0
    assert nesting_depth("SELECT casement, endpoint FROM t") == 0  # words that only start with CASE or END
    check_depth(parens(MAX_DEPTH))
    with pytest.raises(SqlTooDeep, match=f"{MAX_DEPTH + 1} levels"):
        check_depth(parens(MAX_DEPTH + 1))


def test_no_gold_query_of_spider_or_bird_comes_near_the_bound(spider_dir, bird_minidev_dir):
    queries = [q["query"] for name in ("dev", "train_spider", "train_others")
               for q in json.loads((spider_dir / f"{name}.json").read_text())]  # fmt: skip
    queries += [q["SQL"] for q in json.loads((bird_minidev_dir / "mini_dev_sqlite.json").read_text())]
    assert max(map(nesting_depth, queries)) * 4 <= MAX_DEPTH


def test_deep_candidates_fail_alone_in_the_candidate_check(tmp_path):
    make_database(tmp_path, "concerts")
    fine = ("concerts", "SELECT name FROM singer WHERE age > 40")
    todo = [fine, *(("concerts", sql) for sql in DEEP.values())]
    outcomes = check_candidates(
        Databases(db_dir=tmp_path), todo, workers=2
    )  # through the crash-safe pool, as predict runs it
    assert outcomes[fine].ran and outcomes[fine].rows == 2
    for name, sql in DEEP.items():
        outcome = outcomes[("concerts", sql)]
        assert not outcome.ran and "too deeply nested" in outcome.error, name


def test_a_query_at_the_bound_is_still_checked_and_run(tmp_path):
    make_database(tmp_path, "concerts")
    at_bound = ("concerts", parens(MAX_DEPTH))
    outcome = check_candidates(Databases(db_dir=tmp_path), [at_bound], workers=1)[at_bound]
    assert outcome.ran and outcome.rows == 3


@pytest.mark.parametrize("name", DEEP)
def test_deep_completions_earn_nothing_with_the_reason(tmp_path, name):
    make_database(tmp_path, "concerts")
    reward = ExecutionReward(Databases(db_dir=tmp_path))
    try:
        score, why = reward.score("concerts", "SELECT name FROM singer", DEEP[name])
        # The reward parses nothing itself: a flat NOT chain goes to SQLite, whose parser refuses it.
        assert score == 0.0 and why == ("execution error" if name == "NOT chain" else why)
        assert name == "NOT chain" or "too deeply nested" in why
        batch = reward.score_all([("concerts", "SELECT name FROM singer", DEEP[name])] * 2)  # the worker pool
        assert [score for score, _ in batch.values()] == [0.0]
    finally:
        reward.close()


@pytest.fixture(scope="module")
def concert_singer(spider_dir):
    return load_tables(spider_dir / "tables.json")["concert_singer"]


@pytest.mark.parametrize("name", DEEP)
def test_exact_match_and_hardness_refuse_deep_queries_as_unparseable(concert_singer, name):
    with pytest.raises(SqlParseError, match=None if name == "NOT chain" else "too deeply nested"):
        parse_sql(DEEP[name], concert_singer)
    assert classify_hardness(subqueries(3), concert_singer) == "hard"
    with pytest.raises(SqlParseError):
        classify_hardness(DEEP[name], concert_singer)
