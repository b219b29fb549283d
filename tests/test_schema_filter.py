"""The schema filter and values on the real Spider data: what the gold SQL reads, value retrieval, the ranking, the
units a record carries and how `build_prompt` drops them, and preprocess's recall and left-out reports."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sqltune.artifacts import read_jsonl, verify_artifact
from sqltune.errors import SqltuneError
from sqltune.preprocess import PreprocessConfig, preprocess
from sqltune.preprocess.ranking import rank_schema, stem
from sqltune.preprocess.schema_text import ddl_table, ddl_text, serialize_schema
from sqltune.preprocess.schema_units import question_schema, shown_names
from sqltune.preprocess.values import ValueIndex
from sqltune.prompt import build_prompt, prompt_messages
from sqltune.sql.depth import MAX_DEPTH
from sqltune.sql.schema import load_tables
from sqltune.sql.usage import UnreadableQuery, used_names


@pytest.fixture(scope="module")
def schemas(spider_dir: Path):
    return load_tables(spider_dir / "tables.json")


@pytest.fixture(scope="module")
def concert(spider_dir: Path, schemas):
    """concert_singer's schema and its real database's value index."""
    schema = schemas["concert_singer"]
    return schema, ValueIndex.read(schema, spider_dir / "database/concert_singer/concert_singer.sqlite")


def _names(schema, usage) -> tuple[set[str], set[str]]:
    tables = {schema.tables[t] for t in usage.tables}
    return tables, {f"{schema.tables[schema.columns[c].table]}.{schema.columns[c].name}" for c in usage.columns}


def test_used_names_resolve_aliases_scopes_and_leave_out_strings(schemas):
    schema = schemas["concert_singer"]
    sql = (
        'SELECT T2.name, count(*) FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id '
        'WHERE T1.year > (SELECT max(year) FROM concert WHERE theme = "Free choice") GROUP BY T1.stadium_id '
        "HAVING avg(capacity) > 10"
    )  # fmt: skip
    tables, columns = _names(schema, used_names(sql, schema))
    assert tables == {"concert", "stadium"}
    # "Free choice" is a double-quoted string to SQLite (no column has that name), `capacity` is only in HAVING.
    assert columns == {"stadium.Name", "concert.Stadium_ID", "stadium.Stadium_ID", "concert.Year", "concert.Theme",
                       "stadium.Capacity"}  # fmt: skip
    assert used_names("SELECT count(*) FROM singer", schema).columns == frozenset()
    with pytest.raises(UnreadableQuery):
        used_names("SELEC name FROM", schema)
    with pytest.raises(UnreadableQuery, match="too deeply nested"):
        used_names("SELECT " + "(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1), schema)


def test_every_spider_gold_query_parses_and_reads_a_table(spider_dir, schemas):
    questions = [q for name in ("dev.json", "train_spider.json") for q in json.loads((spider_dir / name).read_text())]
    for question in questions:
        assert used_names(question["query"], schemas[question["db_id"]]).tables, question["query"]


def test_values_the_question_mentions_are_found_in_the_database(concert):
    schema, index = concert
    column = {f"{schema.tables[c.table]}.{c.name}": i for i, c in enumerate(schema.columns) if c.table >= 0}
    assert index.complete
    found = index.matches("Which singers are from france, and what concerts had the theme 'Free choice'?")
    assert found[column["singer.Country"]] == ["France"]
    assert found[column["concert.Theme"]] == ["Free choice"]  # the longest mention, not just "free"
    assert index.matches("What is the stadium with the highest capacity?") == {}  # no value named
    assert column["stadium.Name"] in index.matches("How many people fit in stark's park?")  # punctuation aside
    assert index.samples[column["singer.Country"]][:2] == ["Netherlands", "United States"]


def test_value_reading_is_bounded_and_says_when_it_stopped(spider_dir, schemas, caplog):
    schema = schemas["formula_1"]  # Spider's largest: 4.3 million SQLite steps to read every value
    path = spider_dir / "database/formula_1/formula_1.sqlite"
    with caplog.at_level(logging.WARNING, logger="sqltune.preprocess.values"):
        cut = ValueIndex.read(schema, path, max_steps=200_000)
    assert not cut.complete and "ran out" in caplog.text
    assert len(cut.by_words) < len(ValueIndex.read(schema, path).by_words)
    assert ValueIndex.read(schema, None).by_words == {}
    assert ValueIndex.read(schema, spider_dir / "database/nowhere/nowhere.sqlite").by_words == {}


def test_stems_and_the_ranking_keep_what_the_question_needs_and_its_join(concert):
    schema, index = concert
    assert [stem(w) for w in ("singers", "cities", "classes", "taught", "located", "is")] == [
        "singer", "city", "class", "teach", "locat", "is",
    ]  # fmt: skip
    question = "What are the names of the singers who performed in a concert in 2014?"
    ranking = rank_schema(schema, question, index.matches(question))
    kept = [schema.tables[t] for t in ranking.tables]
    assert set(kept) == {"singer", "concert", "singer_in_concert"}  # the bridge keeps singer and concert joinable
    assert kept.index("singer_in_concert") == 2  # as relevant as the lesser table it joins, not more
    everything = rank_schema(schema, question, keep_all=True)
    assert sorted(everything.tables) == [0, 1, 2, 3] and everything.tables[-1] == schema.tables.index("stadium")
    forced = used_names("SELECT name FROM stadium", schema)
    assert schema.tables.index("stadium") in rank_schema(schema, question, must_keep=forced).tables


def _filtered(schema, index, question, **settings):
    settings = {"schema_filter": "lexical", "values": 0, **settings}
    return question_schema(schema, "ddl", question, index=index, **settings)


def test_units_are_whole_tables_with_their_values_and_a_drop_order(concert):
    schema, index = concert
    question = "How many singers from France sang in concerts with the theme Free choice?"
    filtered = _filtered(schema, index, question, values=2)
    units = filtered.units
    assert sorted(u["drop"] for u in units) == list(range(len(units)))
    tables = [u for u in units if u["kind"] == "table"]
    kept = {schema.tables.index(u["table"]) for u in tables}
    for unit in tables:  # each a whole CREATE TABLE line of the ddl style, its foreign keys to kept tables only
        shown = frozenset(i for i, c in enumerate(schema.columns) if c.table in kept)
        assert unit["text"] == ddl_table(schema, schema.tables.index(unit["table"]), shown)
    assert "REFERENCES stadium" not in filtered.text
    values = {u["table"]: u["text"] for u in units if u["kind"] == "values"}
    assert values["singer"] == "-- values in singer: Country = 'France'"
    assert values["concert"] == "-- values in concert: Theme = 'Free choice'"
    by_table = {u["table"]: i for i, u in enumerate(units) if u["kind"] == "table"}
    for unit in units:
        if unit["kind"] in ("values", "examples"):
            assert unit["needs"] == [by_table[unit["table"]]]
    kinds = [u["kind"] for u in sorted(units, key=lambda u: u["drop"])]
    assert kinds.index("values") > max(i for i, k in enumerate(kinds) if k == "examples")  # examples go first
    assert kinds[-1] == "table" and kinds.count("table") == len(tables)
    assert filtered.text == "\n".join(u["text"] for u in units)
    sqlite3.connect(":memory:").executescript(filtered.text)  # still runnable DDL: values are comments
    assert filtered.left_out == {"tables": ["stadium"], "columns": []}
    assert filtered.recall is None  # no gold SQL given


def test_no_filter_with_values_keeps_every_table_in_the_styles_own_text(concert, spider_dir):
    schema, index = concert
    question = "List the singers from France."
    for style in ("ddl", "dbgpt", "rich"):
        db = spider_dir / "database/concert_singer/concert_singer.sqlite"
        samples = __import__("sqltune.preprocess.schema_text", fromlist=["x"]).sample_values(schema, db)
        filtered = question_schema(
            schema, style, question, schema_filter="none", values=1, index=index, samples=samples
        )
        tables = [u["table"] for u in filtered.units if u["kind"] == "table"]
        assert tables == list(schema.tables)
        assert any(u["kind"] == "values" and "'France'" in u["text"] for u in filtered.units)
        assert filtered.left_out == {"tables": [], "columns": []}
    ddl = question_schema(schema, "ddl", question, schema_filter="none", values=0, index=index)
    assert [u["text"] for u in ddl.units] == ddl_text(schema).split("\n")  # nothing else without values


def test_build_prompt_drops_whole_units_in_order_and_never_the_question(concert):
    schema, index = concert
    question = "How many singers from France sang in concerts with the theme Free choice?"
    filtered = _filtered(schema, index, question, values=2)
    record = {"id": "r1", "question": question, "schema": filtered.text, "schema_units": filtered.units}

    def words(text: str) -> int:
        return len(text.split())

    full = build_prompt(record, "chat")  # without a renderer: the user message, as prompt_messages gives it
    assert full.text == build_prompt({"question": question, "schema": filtered.text}, "chat").text
    seen_left_out: list[tuple[str, ...]] = []
    for budget in range(words(full.text), 0, -7):
        prompt = build_prompt(record, "chat", max_tokens=budget, count_tokens=words)
        assert question in prompt.text
        shown = [u for u in filtered.units if u["text"] in prompt.text]
        assert len(shown) + len(prompt.left_out) == len(filtered.units)
        for unit in filtered.units:  # a unit is in whole or not at all
            head = unit["text"][:30]
            assert (head in prompt.text) == (unit["text"] in prompt.text)
        assert prompt.fits == (words(prompt.text) <= budget)
        assert prompt_messages(record, prompt.schema_lines_dropped)[1]["content"] == prompt.text
        seen_left_out.append(prompt.left_out)
    assert seen_left_out[0] == ()
    final = seen_left_out[-1]
    order = [" ".join((u["kind"], u["table"])) for u in sorted(filtered.units, key=lambda u: u["drop"])]
    assert list(final) == order  # at the smallest budget everything went, in the drop order
    tables_last = [entry for entry in final if entry.startswith("table")]
    assert final[-len(tables_last) :] == tuple(tables_last)


def test_malformed_units_name_the_record():
    record = {"id": "r9", "question": "q?", "schema": "x", "schema_units": [{"text": "x", "drop": 3}]}
    with pytest.raises(SqltuneError, match=r"record r9: schema_units: the drop ranks must be 0\.\.0"):
        build_prompt(record)
    record["schema_units"] = [{"drop": 0}]
    with pytest.raises(SqltuneError, match="record r9: schema_units: every unit needs a text"):
        build_prompt(record)


def test_shown_names_follow_the_budget(concert, schemas):
    schema, index = concert
    question = "How many singers from France sang in concerts with the theme Free choice?"
    filtered = _filtered(schema, index, question)
    record = {"question": question, "schema": filtered.text, "schema_units": filtered.units}
    tables, columns = shown_names(record, 0, schema)
    assert {schema.tables[t] for t in tables} == {"singer", "concert", "singer_in_concert"}
    assert schema.columns.index(next(c for c in schema.columns if c.name == "Country")) in columns
    least = min(filtered.units, key=lambda u: u["drop"] if u["kind"] == "table" else 99)
    steps = least["drop"] + 1
    assert schema.tables.index(least["table"]) not in shown_names(record, steps, schema)[0]
    plain = {"question": question, "schema": ddl_text(schema)}
    assert shown_names(plain, 1, schema)[0] == {0, 1, 2}  # ddl lines: the last table went first
    assert shown_names({"question": question, "schema": serialize_schema(schema, "dbgpt")}, 0, schema) is None


@pytest.fixture(scope="module")
def filtered_dev(spider_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lexical") / "dev"
    config = PreprocessConfig(dataset="spider", split="dev", schema_filter="lexical", schema_values=2)
    preprocess(spider_dir, out, config=config)
    return out


def test_preprocess_reports_recall_and_what_was_left_out(filtered_dev):
    manifest = verify_artifact(filtered_dev)
    report = manifest["schema_filter"]
    assert report["questions_measured"] == 1034
    assert report["recall_tables"] >= 0.95 and report["recall_columns"] >= 0.95, report  # the goal
    assert report["tables_left_out"] > 1000  # it does filter: Spider dev databases have 4.1 tables on average
    records = read_jsonl(filtered_dev / "records.jsonl")
    left = sum(len(r["schema_left_out"]["tables"]) for r in records)
    assert left == report["tables_left_out"]
    kept = sum(r["schema_recall"]["tables"][0] for r in records) / sum(r["schema_recall"]["tables"][1] for r in records)
    assert round(kept, 4) == report["recall_tables"]
    first = records[0]
    assert first["prompt"] == build_prompt(first).text and first["schema"] in first["prompt"]
    assert manifest["parameters"]["schema_filter"] == "lexical" and manifest["parameters"]["schema_values"] == 2


def test_recall_after_the_benchmarks_budget_reaches_95_percent(filtered_dev, spider_dir, schemas):
    """The issue's goal, measured as the accuracy benchmark measures it: SmolLM2's tokenizer, the chat template,
    max_seq_len 384 - max_new_tokens 96 = 288 prompt tokens, over every Spider dev question."""
    from sqltune.models import load_tokenizer, resolve_base_model
    from sqltune.prompt import prompt_functions

    count, chat = prompt_functions(load_tokenizer(resolve_base_model("smollm2-135m")), "chat")
    used = kept = complete = 0
    records = read_jsonl(filtered_dev / "records.jsonl")
    for record in records:
        schema = schemas[record["db_id"]]
        prompt = build_prompt(record, "chat", max_tokens=288, count_tokens=count, chat_render=chat)
        assert prompt.fits
        tables, columns = shown_names(record, prompt.schema_lines_dropped, schema)
        usage = used_names(record["sql"], schema)
        used += len(usage.tables) + len(usage.columns)
        kept += len(usage.tables & tables) + len(usage.columns & columns)
        complete += usage.tables <= tables and usage.columns <= columns
    assert kept / used >= 0.95, kept / used
    assert complete / len(records) >= 0.9


def test_training_records_keep_what_their_gold_sql_reads(spider_dir, tmp_path):
    config = PreprocessConfig(dataset="spider", split="train", schema_filter="lexical", limit=300)
    summary = preprocess(spider_dir, tmp_path / "train", config=config)
    assert summary["schema_filter"]["recall_tables"] == 1.0 and summary["schema_filter"]["recall_columns"] == 1.0
    assert summary["schema_filter"]["tables_left_out"] > 0


def test_the_default_records_are_as_before(spider_dir, tmp_path):
    summary = preprocess(spider_dir, tmp_path / "dev", config=PreprocessConfig(dataset="spider", split="dev", limit=5))
    assert "schema_filter" not in summary
    record = read_jsonl(tmp_path / "dev/records.jsonl")[0]
    assert set(record) == {"id", "db_id", "question", "schema", "prompt", "sql", "hardness"}


def test_cli_flags_and_bad_values(spider_dir, tmp_path):
    sqltune = str(Path(sys.executable).parent / "sqltune")
    args = [sqltune, "preprocess", "--dataset", "spider", "--source", str(spider_dir), "--split", "dev"]
    out = tmp_path / "out"
    done = subprocess.run([*args, "--limit", "20", "--schema-filter", "lexical", "--schema-values", "3",
                           "--out", str(out)], capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["schema_filter"]["questions_measured"] == 20
    assert all("schema_units" in r for r in read_jsonl(out / "records.jsonl"))
    bad = subprocess.run([*args, "--schema-values", "11", "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert bad.returncode == 2 and "schema_values=11 is invalid: expected 0 to 10" in bad.stderr
    with pytest.raises(SqltuneError, match="schema_filter='embedding' is invalid: expected one of none, lexical"):
        PreprocessConfig(dataset="spider", split="dev", schema_filter="embedding")


def test_the_pipeline_sets_both_splits_and_refuses_a_bad_value_before_a_run():
    from sqltune.preprocess.config import split_configs

    params = {"dataset": "spider", "schema_style": "ddl", "prompt_template": "chat", "schema_filter": "lexical",
              "schema_values": 2, "train_limit": 0, "eval_limit": 10, "dialect": "postgres",
              "database_url": ""}  # fmt: skip
    configs = split_configs(params)
    assert {(c.schema_filter, c.schema_values, c.dialect) for c in configs.values()} == {("lexical", 2, "postgres")}
    with pytest.raises(SqltuneError, match="preprocess parameter schema_values=-1 is invalid"):
        split_configs({**params, "schema_values": -1})


def test_dbgpt_and_rich_units_state_foreign_keys_between_kept_tables_only(concert):
    schema, index = concert
    question = "What are the names of the singers who performed in a concert in 2014?"
    for style in ("dbgpt", "rich"):
        filtered = question_schema(schema, style, question, schema_filter="lexical", values=0, index=index)
        units = filtered.units
        tables = {u["table"]: i for i, u in enumerate(units) if u["kind"] == "table"}
        keys = [u for u in units if u["kind"] == "foreign_key"]
        assert len(keys) == 2 and all(len(u["needs"]) == 2 and set(u["needs"]) <= set(tables.values()) for u in keys)
        assert "of stadium." not in filtered.text and "= stadium." not in filtered.text  # concert -> stadium went
        if style == "dbgpt":
            header = "concert_singer contains tables such as singer, concert, singer_in_concert."
            assert units[0] == {"kind": "header", "text": header, "drop": len(units) - 1}


def test_filtered_records_do_not_depend_on_the_hash_seed(spider_dir, tmp_path):
    """Sets of names are iterated in the hash seed's order: the records must come out byte-identical anyway."""
    args = ["preprocess", "--dataset", "spider", "--source", str(spider_dir), "--split", "dev", "--limit", "300",
            "--schema-filter", "lexical", "--schema-values", "2"]  # fmt: skip
    sqltune = str(Path(sys.executable).parent / "sqltune")
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sqltune, *args, "--out", str(tmp_path / seed)], env=env, capture_output=True,
                              text=True, timeout=300, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "1/records.jsonl").read_bytes() == (tmp_path / "2/records.jsonl").read_bytes()


def test_a_filter_on_postgres_records_reads_the_transpiled_gold_and_names_the_dialect(spider_dir, tmp_path):
    """--dialect postgres with the filter: the records' gold is PostgreSQL's, their recall is measured on it (parsed
    in that dialect) as on SQLite's, and the prompt names the dialect."""
    settings = {"dataset": "spider", "split": "dev", "limit": 60, "schema_filter": "lexical"}
    preprocess(spider_dir, tmp_path / "sqlite", config=PreprocessConfig(**settings))
    preprocess(spider_dir, tmp_path / "pg", config=PreprocessConfig(**settings, dialect="postgres"))
    on_sqlite = {r["id"]: r for r in read_jsonl(tmp_path / "sqlite" / "records.jsonl")}
    on_pg = read_jsonl(tmp_path / "pg" / "records.jsonl")
    assert on_pg and all(r["dialect"] == "postgres" and "PostgreSQL" in r["prompt"] for r in on_pg)
    assert any(r["sql"] != on_sqlite[r["id"]]["sql"] for r in on_pg)  # transpiled
    assert all(r["schema_recall"] == on_sqlite[r["id"]]["schema_recall"] for r in on_pg)
    assert all(r["schema_units"] == on_sqlite[r["id"]]["schema_units"] for r in on_pg)


def test_values_need_the_sqlite_files_and_say_so(spider_dir, tmp_path):
    source = tmp_path / "spider"
    source.mkdir()
    for name in ("tables.json", "dev.json"):
        (source / name).symlink_to(spider_dir / name)
    with pytest.raises(SqltuneError, match="schema_values reads cell values from the SQLite files"):
        preprocess(source, tmp_path / "out", config=PreprocessConfig(dataset="spider", split="dev", schema_values=2))
    assert not (tmp_path / "out").exists()


def test_the_adapter_records_what_shaped_its_prompts(spider_dir, tmp_path):
    """Train on filtered records: the adapter's manifest names the records' schema style, filter and values, which
    predict and the server read to ask it the way it learned; a bare JSONL file adds nothing."""
    from sqltune.train.io import data_prompt_settings

    config = PreprocessConfig(dataset="spider", split="dev", limit=5, schema_filter="lexical", schema_values=1)
    preprocess(spider_dir, tmp_path / "records", config=config)
    found = data_prompt_settings(tmp_path / "records", None)
    assert found == {"schema_style": "ddl", "schema_filter": "lexical", "schema_values": 1, "dialect": "sqlite"}
    assert data_prompt_settings(tmp_path / "records" / "records.jsonl", None) == found
    bare = tmp_path / "bare.jsonl"
    bare.write_text((tmp_path / "records" / "records.jsonl").read_text())
    assert data_prompt_settings(bare, None) == {}


def test_bird_evidence_is_ranked_with_the_question(bird_minidev_dir, tmp_path):
    """BIRD's evidence names the columns and values a question means ("refers to", formulas): the filter ranks on it
    too, as the server does for /v1/sql's `evidence`. On the first 200 mini-dev questions (names only: the set ships
    without databases) recall was 91.1% / 90.4% (tables / columns) on the question alone, 94.9% / 95.2% with it."""
    config = PreprocessConfig(dataset="bird", split="dev", limit=200, schema_filter="lexical")
    report = preprocess(bird_minidev_dir, tmp_path / "bird", config=config)["schema_filter"]
    assert report["recall_tables"] > 0.94 and report["recall_columns"] > 0.94, report
