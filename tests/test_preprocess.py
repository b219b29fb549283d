"""The preprocess step on the real Spider and BIRD mini-dev data, and on small multi-turn layouts built here."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from sqltune.artifacts import read_jsonl, read_manifest, verify_artifact
from sqltune.preprocess import PreprocessConfig, preprocess
from sqltune.preprocess.schema_text import serialize_schema
from sqltune.prompt import build_prompt
from sqltune.sql.schema import load_tables

CONCERT_SINGER_DBGPT = (
    "concert_singer contains tables such as stadium, singer, concert, singer_in_concert. "
    "Table stadium has columns such as stadium_id, location, name, capacity, highest, lowest, average. "
    "stadium_id is the primary key.\n"
    "Table singer has columns such as singer_id, name, country, song_name, song_release_year, age, is_male. "
    "singer_id is the primary key.\n"
    "Table concert has columns such as concert_id, concert_name, theme, stadium_id, year. "
    "concert_id is the primary key.\n"
    "Table singer_in_concert has columns such as concert_id, singer_id. concert_id is the primary key.\n"
    "The stadium_id of concert is the foreign key of stadium_id of stadium.\n"
    "The singer_id of singer_in_concert is the foreign key of singer_id of singer.\n"
    "The concert_id of singer_in_concert is the foreign key of concert_id of concert."
)
# The issue's quote of the same text, with its elisions ("...") as the only gaps.
ISSUE_QUOTE = [
    "concert_singer contains tables such as stadium, singer, concert, singer_in_concert. Table stadium has columns "
    "such as stadium_id, location, name, capacity, highest, lowest, average. stadium_id is the primary key. "
    "Table singer has columns such as ",
    "The stadium_id of concert is the foreign key of stadium_id of stadium. ",
]


@pytest.fixture(scope="module")
def spider_dev(spider_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The whole Spider dev split, dbgpt style, with its databases artifact (built once for this module)."""
    root = tmp_path_factory.mktemp("spider-dev")
    preprocess(
        spider_dir,
        root / "records",
        config=PreprocessConfig(dataset="spider", split="dev", schema_style="dbgpt"),
        databases_out=root / "databases",
    )
    return root / "records", root / "databases"


@pytest.fixture(scope="module")
def spider_schemas(spider_dir: Path):
    return load_tables(spider_dir / "tables.json")


def test_spider_dev_gives_every_question_with_official_hardness(spider_dev, spider_dir):
    records = read_jsonl(spider_dev[0] / "records.jsonl")
    source = json.loads((spider_dir / "dev.json").read_text())
    assert len(records) == 1034
    assert [(r["db_id"], r["question"], r["sql"]) for r in records] == [
        (e["db_id"], e["question"], e["query"]) for e in source
    ]
    assert len({r["id"] for r in records}) == 1034
    assert Counter(r["hardness"] for r in records) == {"easy": 248, "medium": 446, "hard": 174, "extra": 166}
    first = records[0]
    assert first["prompt"] == build_prompt(first).text
    assert first["schema"] in first["prompt"] and first["question"] in first["prompt"]
    manifest = verify_artifact(spider_dev[0])
    assert manifest["parameters"]["schema_style"] == "dbgpt"
    assert manifest["missing_databases"] == ["wta_1"]
    assert manifest["hardness"] == {"easy": 248, "extra": 166, "hard": 174, "medium": 446}


def test_databases_artifact_holds_only_what_the_split_needs(spider_dev, spider_dir):
    databases = spider_dev[1]
    manifest = verify_artifact(databases)
    dev_dbs = sorted({e["db_id"] for e in json.loads((spider_dir / "dev.json").read_text())})
    assert len(dev_dbs) == 20
    assert [e["db_id"] for e in json.loads((databases / "tables.json").read_text())] == [
        e["db_id"] for e in json.loads((spider_dir / "tables.json").read_text()) if e["db_id"] in dev_dbs
    ]
    copied = sorted(p.parent.name for p in (databases / "database").glob("*/*.sqlite"))
    assert copied == [db for db in dev_dbs if db != "wta_1"]
    assert manifest["missing_databases"] == ["wta_1"]
    with sqlite3.connect(databases / "database/concert_singer/concert_singer.sqlite") as connection:
        assert connection.execute("SELECT count(*) FROM singer").fetchone() == (6,)


def test_concert_singer_dbgpt_text_is_db_gpt_hubs(spider_schemas):
    text = serialize_schema(spider_schemas["concert_singer"], "dbgpt")
    assert text == CONCERT_SINGER_DBGPT
    flat = " ".join(text.split()) + " "
    assert all(part in flat for part in ISSUE_QUOTE)


def test_composite_primary_key_is_stated_once_under_its_own_table(bird_minidev_dir):
    schema = load_tables(bird_minidev_dir / "dev_tables.json")["debit_card_specializing"]
    lines = serialize_schema(schema, "dbgpt").split("\n")
    composite = [line for line in lines if "combination" in line]
    assert composite == [
        "Table yearmonth has columns such as customerid, date, consumption. "
        "The combination of (customerid, date) are the primary key."
    ]


def test_ddl_style_is_runnable_sql_with_keys(spider_schemas):
    ddl = serialize_schema(spider_schemas["concert_singer"], "ddl")
    lines = ddl.split("\n")
    assert len(lines) == 4 and all(line.startswith("CREATE TABLE ") for line in lines)
    assert "PRIMARY KEY (Stadium_ID)" in lines[0]
    assert "FOREIGN KEY (Stadium_ID) REFERENCES stadium(Stadium_ID)" in lines[2]
    connection = sqlite3.connect(":memory:")
    connection.executescript(ddl)
    tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert tables == ["stadium", "singer", "concert", "singer_in_concert"]
    assert connection.execute("PRAGMA foreign_key_list(concert)").fetchone()[2:5] == (
        "stadium",
        "Stadium_ID",
        "Stadium_ID",
    )


def test_rich_style_shows_real_sample_values_and_trims_foreign_keys_first(spider_dir, spider_schemas):
    db = spider_dir / "database/concert_singer/concert_singer.sqlite"
    text = serialize_schema(spider_schemas["concert_singer"], "rich", db)
    lines = text.split("\n")
    assert lines[1].startswith("singer (Singer_ID number primary key [")
    with sqlite3.connect(db) as connection:
        country = connection.execute("SELECT Country FROM singer LIMIT 1").fetchone()[0]
    assert f"Country text ['{country}'" in lines[1]
    assert lines[4:] == [
        "foreign key: concert.Stadium_ID = stadium.Stadium_ID",
        "foreign key: singer_in_concert.Singer_ID = singer.Singer_ID",
        "foreign key: singer_in_concert.concert_ID = concert.concert_ID",
    ]
    record = {"question": "How many singers are there?", "schema": text}
    words = len(build_prompt(record).text.split())
    trimmed = build_prompt(record, max_tokens=words - 1, count_tokens=lambda t: len(t.split()))
    assert trimmed.schema_lines_dropped == 1 and "concert_ID = concert.concert_ID" not in trimmed.text


def test_rich_style_on_the_whole_dev_set(spider_dir, tmp_path):
    preprocess(
        spider_dir,
        tmp_path / "rich",
        config=PreprocessConfig(dataset="spider", split="dev", schema_style="rich", prompt_template="chat"),
    )
    records = read_jsonl(tmp_path / "rich/records.jsonl")
    assert len(records) == 1034
    by_db = {r["db_id"]: r for r in records}
    assert "[" in by_db["concert_singer"]["schema"]  # sample values read from the database
    assert "[" not in by_db["wta_1"]["schema"]  # no SQLite file: types only
    assert records[0]["prompt"].endswith(f"Question: {records[0]['question']}")


def test_spider_train_split_has_all_training_questions(spider_dir, tmp_path):
    summary = preprocess(
        spider_dir, tmp_path / "train", config=PreprocessConfig(dataset="spider", split="train", schema_style="ddl")
    )
    assert summary["records"] == 8659
    records = read_jsonl(tmp_path / "train/records.jsonl")
    source = [
        e for name in ("train_spider", "train_others") for e in json.loads((spider_dir / f"{name}.json").read_text())
    ]
    assert [(r["db_id"], r["question"], r["sql"]) for r in records] == [
        (e["db_id"], e["question"], e["query"]) for e in source
    ]
    gold = (spider_dir / "train_gold.sql").read_text().splitlines()  # the official 8659 lines (another order)
    assert Counter(r["db_id"] for r in records) == Counter(line.rsplit("\t", 1)[1] for line in gold)
    assert sum(r["hardness"] is None for r in records) == summary["hardness"].get("unknown", 0) <= 1


def test_bird_minidev_puts_evidence_in_the_prompt(bird_minidev_dir, tmp_path):
    summary = preprocess(
        bird_minidev_dir, tmp_path / "bird", config=PreprocessConfig(dataset="bird", split="dev", schema_style="dbgpt")
    )
    records = read_jsonl(tmp_path / "bird/records.jsonl")
    source = json.loads((bird_minidev_dir / "mini_dev_sqlite.json").read_text())
    assert len(records) == 500
    assert summary["difficulty"] == dict(sorted(Counter(e["difficulty"] for e in source).items()))
    record = records[0]
    assert record["evidence"] == source[0]["evidence"] and record["sql"] == source[0]["SQL"]
    assert f"Hint: {record['evidence']}" in record["prompt"]
    assert "hardness" not in record
    assert sorted(read_manifest(tmp_path / "bird")["missing_databases"]) == sorted({e["db_id"] for e in source})


def test_ddl_of_every_spider_and_bird_schema_is_valid_sqlite(spider_schemas, bird_minidev_dir):
    """Identifiers with spaces or that are keywords (BIRD's `order`, Spider's `From`) are quoted."""
    schemas = [*spider_schemas.values(), *load_tables(bird_minidev_dir / "dev_tables.json").values()]
    for schema in schemas:
        connection = sqlite3.connect(":memory:")
        for statement in serialize_schema(schema, "ddl").split("\n"):
            if not statement.startswith("CREATE TABLE sqlite_"):  # SQLite's own table, listed in 3 Spider schemas
                connection.execute(statement)
        created = connection.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        assert created == sum(not t.startswith("sqlite_") for t in schema.tables), schema.db_id
