"""The Spider SQL parser and hardness classifier: official acceptance rules, structure and dev-set counts."""

from __future__ import annotations

import collections
import json

import pytest

from sqltune.sql.hardness import classify_hardness
from sqltune.sql.parser import SqlParseError, parse_sql, tokenize
from sqltune.sql.schema import DatabaseSchema

SCHEMA = DatabaseSchema.from_json(
    {
        "db_id": "music",
        "table_names_original": ["Singer", "Concert"],
        "column_names_original": [[-1, "*"], [0, "Singer_ID"], [0, "Name"], [0, "Age"], [1, "Singer_ID"], [1, "Year"]],
        "foreign_keys": [[4, 1]],
        "primary_keys": [1],
    }
)


def test_tokenize_keeps_values_and_merges_comparison_operators():
    assert tokenize("SELECT Name FROM singer WHERE name = 'Joe Sharp' AND age >= 20;") == [
        *("select", "name", "from", "singer", "where", "name", "=", '"Joe Sharp"', "and", "age", ">=", "20", ";")
    ]
    assert tokenize("select count(*),name from t where a != 1") == [
        *("select", "count", "(", "*", ")", ",", "name", "from", "t", "where", "a", "!=", "1")
    ]


def test_parse_resolves_names_through_aliases_and_keeps_values():
    sql = parse_sql(
        "SELECT T1.name, count(*) FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id "
        "WHERE T2.year > 2014 GROUP BY T1.name ORDER BY count(*) DESC LIMIT 3",
        SCHEMA,
    )
    assert sql["select"] == (
        False,
        [(0, (0, (0, "__singer.name__", False), None)), (3, (0, (0, "__all__", False), None))],
    )
    assert sql["from"]["table_units"] == [("table_unit", "__singer__"), ("table_unit", "__concert__")]
    assert sql["from"]["conds"] == [
        (False, 2, (0, (0, "__singer.singer_id__", False), None), (0, "__concert.singer_id__", False), None)
    ]
    assert sql["where"] == [(False, 3, (0, (0, "__concert.year__", False), None), 2014.0, None)]
    assert sql["groupBy"] == [(0, "__singer.name__", False)]
    assert sql["orderBy"] == ("desc", [(0, (3, "__all__", False), None)])
    assert sql["limit"] == 1


def test_parse_nested_and_set_operations():
    sql = parse_sql(
        "SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer) EXCEPT SELECT name FROM singer", SCHEMA
    )
    assert sql["where"][0][3]["select"][1] == [(5, (0, (0, "__singer.age__", False), None))]
    assert sql["except"]["select"][1] == [(0, (0, (0, "__singer.name__", False), None))]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT name AS n FROM singer",  # column alias in SELECT
        "SELECT T1.name FROM singer T1",  # table alias without AS
        "SELECT name FROM singer LEFT JOIN concert ON singer.singer_id = concert.singer_id",
        "SELECT name FROM singer, concert",
        "SELECT name FROM singer WHERE age IS NOT NULL",
        "SELECT name FROM singer WHERE age=3",  # no spaces around '='
        "SELECT nickname FROM singer",  # unknown column
        "SELECT name FROM singers",  # unknown table
        "SELECT name FROM singer WHERE name = 'it''s",  # odd quote count
        "SELECT name FROM singer LIMIT",
        "DROP TABLE singer",
        "",
    ],
)
def test_parse_rejects_what_the_official_parser_rejects(sql):
    with pytest.raises(SqlParseError):
        parse_sql(sql, SCHEMA)


@pytest.mark.parametrize(
    ("sql", "hardness"),
    [
        ("SELECT count(*) FROM singer", "easy"),
        ("SELECT name FROM singer WHERE age > 20 ORDER BY age", "medium"),
        ("SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer)", "hard"),
        ("SELECT name FROM singer WHERE age > 1 OR age < 3 EXCEPT SELECT name FROM singer", "extra"),
    ],
)
def test_hardness_levels(sql, hardness):
    assert classify_hardness(sql, SCHEMA) == hardness


def test_dev_set_hardness_counts_match_the_official_classifier(spider_dir):
    from sqltune.sql.schema import load_tables

    tables = load_tables(spider_dir / "tables.json")
    dev = json.loads((spider_dir / "dev.json").read_text())
    counts = collections.Counter(classify_hardness(d["query"], tables[d["db_id"]]) for d in dev)
    assert counts == {"easy": 248, "medium": 446, "hard": 174, "extra": 166}
