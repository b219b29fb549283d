"""The generated sample dataset: deterministic, executable, all four hardness levels, dev learnable from train."""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from sqltune.artifacts import read_jsonl, read_manifest
from sqltune.errors import SqltuneError
from sqltune.preprocess import PreprocessConfig, preprocess
from sqltune.sample_data import write_sample_dataset
from sqltune.sql.hardness import classify_hardness
from sqltune.sql.schema import load_tables


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "data"
    assert write_sample_dataset(out) == {"train": 162, "dev": 48}
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _split(root: Path, name: str) -> list[dict[str, str]]:
    return json.loads((root / f"{name}.json").read_text())


def test_output_is_byte_identical_on_every_run(sample, tmp_path):
    """Every data file is identical run to run; the manifest (which has a timestamp) lists the same checksums."""
    write_sample_dataset(tmp_path / "again")
    files, again = _files(sample), _files(tmp_path / "again")
    assert read_manifest(sample)["files"] == read_manifest(tmp_path / "again")["files"]
    del files["manifest.json"], again["manifest.json"]
    assert files == again
    assert sorted(files) == [
        "database/library/library.sqlite",
        "database/school/school.sqlite",
        "database/shop/shop.sqlite",
        "dev.json",
        "dev_gold.sql",
        "tables.json",
        "train_gold.sql",
        "train_spider.json",
    ]


def test_rewriting_replaces_the_previous_dataset_whole(sample, tmp_path):
    out = tmp_path / "data"
    write_sample_dataset(out)
    (out / "stale.json").write_text("[]")
    write_sample_dataset(out)
    assert not (out / "stale.json").exists()
    assert read_manifest(out)["files"] == read_manifest(sample)["files"]


def test_a_directory_sqltune_did_not_write_is_kept_unless_overwrite(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(SqltuneError, match=r"--out .*mine is not empty and is not an sqltune artifact.*--overwrite"):
        write_sample_dataset(mine)
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    write_sample_dataset(mine, overwrite=True)
    assert not (mine / "thesis.tex").exists() and (mine / "dev.json").is_file()


def test_every_gold_query_runs_and_returns_rows(sample):
    for name in ("train_spider", "dev"):
        for entry in _split(sample, name):
            db = sample / "database" / entry["db_id"] / f"{entry['db_id']}.sqlite"
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
                rows = connection.execute(entry["query"]).fetchall()
            assert rows and rows not in ([(0,)], [(None,)]), entry


def test_both_splits_cover_all_four_hardness_levels_by_the_official_classifier(sample):
    schemas = load_tables(sample / "tables.json")
    for name in ("train_spider", "dev"):
        counts = Counter(classify_hardness(e["query"], schemas[e["db_id"]]) for e in _split(sample, name))
        assert set(counts) == {"easy", "medium", "hard", "extra"}, (name, counts)
        assert min(counts.values()) >= 5, (name, counts)


def _pattern(sql: str) -> str:
    """The query with its literals and table/column names abstracted: what a model must learn to write."""
    sql = re.sub(r"'[^']*'|\b\d+\b", "V", sql)
    return re.sub(
        r"\b(?!(?:SELECT|FROM|WHERE|AND|JOIN|ON|AS|GROUP|BY|ORDER|DESC|LIMIT|NOT|IN|T\d)\b)[a-z_]+\b", "N", sql
    )


def test_dev_is_answerable_from_patterns_seen_in_train_with_unseen_questions(sample):
    train, dev = _split(sample, "train_spider"), _split(sample, "dev")
    assert not {e["question"] for e in dev} & {e["question"] for e in train}
    assert {_pattern(e["query"]) for e in dev} <= {_pattern(e["query"]) for e in train}
    assert (sample / "dev_gold.sql").read_text().splitlines() == [f"{e['query']}\t{e['db_id']}" for e in dev]


def test_preprocesses_as_a_spider_dataset_with_short_prompts(sample, tmp_path):
    summary = preprocess(
        sample,
        tmp_path / "train",
        config=PreprocessConfig(dataset="spider", split="train", schema_style="dbgpt"),
        databases_out=tmp_path / "dbs",
    )
    assert summary["records"] == 162 and summary["missing_databases"] == []
    records = read_jsonl(tmp_path / "train/records.jsonl")
    assert max(len(r["prompt"]) for r in records) < 1200  # SmolLM2-135M trains on these in minutes on CPU
    assert sorted(p.name for p in (tmp_path / "dbs/database").glob("*/*.sqlite")) == [
        "library.sqlite",
        "school.sqlite",
        "shop.sqlite",
    ]
