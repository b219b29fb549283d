"""Preprocess inputs other than the real data: multi-turn layouts, s3:// sources, the CLI, and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sqltune.artifacts import read_jsonl, read_manifest, verify_artifact
from sqltune.errors import SqltuneError
from sqltune.preprocess import PreprocessConfig, preprocess
from sqltune.sample_data import write_sample_dataset
from sqltune.uri import upload_dir

DIALOGUES = [
    {
        "database_id": "shop",
        "interaction": [
            {"utterance": "Show all customers.", "query": "SELECT name FROM customers"},
            {"utterance": "Only those from Paris.", "query": "SELECT name FROM customers WHERE city = 'Paris'"},
            {
                "utterance": "And their ages?",
                "query": "SELECT name, age FROM customers WHERE city = 'Paris'",
            },
        ],
    },
    {
        "database_id": "library",
        "interaction": [
            {"utterance": "How many books are there?", "query": "SELECT count(*) FROM books"},
            {"utterance": "How many are Poetry?", "query": "SELECT count(*) FROM books WHERE genre = 'Poetry'"},
        ],
    },
]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "data"
    write_sample_dataset(out)
    return out


@pytest.fixture
def source(sample: Path, tmp_path: Path) -> Path:
    """A private copy of the sample dataset that a test may break."""
    return Path(shutil.copytree(sample, tmp_path / "source"))


def _multiturn_layout(sample: Path, root: Path, questions_file: str) -> Path:
    (root / questions_file).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(sample / "tables.json", root / "tables.json")
    shutil.copytree(sample / "database", root / "database")
    (root / questions_file).write_text(json.dumps(DIALOGUES))
    return root


@pytest.mark.parametrize(
    ("dataset", "questions_file"), [("sparc", "dev.json"), ("cosql", "sql_state_tracking/cosql_dev.json")]
)
def test_multiturn_gives_one_record_per_turn_with_earlier_questions(sample, tmp_path, dataset, questions_file):
    root = _multiturn_layout(sample, tmp_path / dataset, questions_file)
    summary = preprocess(
        root, tmp_path / "out", config=PreprocessConfig(dataset=dataset, split="dev", schema_style="ddl")
    )
    records = read_jsonl(tmp_path / "out/records.jsonl")
    assert summary["records"] == 5
    assert [(r["id"], r["turn"], r["history"]) for r in records] == [
        (f"{dataset}-dev-00000-00", 0, []),
        (f"{dataset}-dev-00000-01", 1, ["Show all customers."]),
        (f"{dataset}-dev-00000-02", 2, ["Show all customers.", "Only those from Paris."]),
        (f"{dataset}-dev-00001-00", 0, []),
        (f"{dataset}-dev-00001-01", 1, ["How many books are there?"]),
    ]
    third = records[2]
    assert third["sql"] == "SELECT name, age FROM customers WHERE city = 'Paris'"
    assert third["hardness"] == "medium"
    assert "- Show all customers.\n- Only those from Paris." in third["prompt"]
    assert third["prompt"].index("Only those from Paris.") < third["prompt"].index("And their ages?")
    assert [r["hardness"] for r in records[3:]] == ["easy", "easy"]


def test_s3_source_is_read_like_a_local_one(sample, tmp_path, s3_env, monkeypatch):
    monkeypatch.setenv("SQLTUNE_CACHE", str(tmp_path / "cache"))
    s3_env.create_bucket("datasets")
    upload_dir(sample, "s3://datasets/sample")
    preprocess(
        "s3://datasets/sample",
        tmp_path / "s3",
        config=PreprocessConfig(dataset="spider", split="dev", schema_style="rich"),
        databases_out=tmp_path / "dbs",
    )
    preprocess(sample, tmp_path / "local", config=PreprocessConfig(dataset="spider", split="dev", schema_style="rich"))
    assert read_jsonl(tmp_path / "s3/records.jsonl") == read_jsonl(tmp_path / "local/records.jsonl")
    assert read_manifest(tmp_path / "s3")["parameters"]["source"] == "s3://datasets/sample"
    assert verify_artifact(tmp_path / "dbs")["databases"] == ["library", "school", "shop"]


def _sqltune(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed `sqltune` entry point, as a user runs it (errors exit 2 through `main`)."""
    command = [str(Path(sys.executable).parent / "sqltune"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_cli_generates_and_preprocesses_and_reports_bad_input_with_exit_2(sample, tmp_path):
    generated = _sqltune("sample-data", "--out", str(tmp_path / "sample"))
    assert generated.returncode == 0, generated.stderr
    assert json.loads(generated.stdout) == {"train": 162, "dev": 48}
    args = ["preprocess", "--dataset", "spider", "--source", str(tmp_path / "sample"), "--split", "dev"]
    done = _sqltune(*args, "--out", str(tmp_path / "out"), "--template", "chat", "--limit", "5")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["records"] == 5
    assert len(read_jsonl(tmp_path / "out/records.jsonl")) == 5
    assert read_manifest(tmp_path / "out")["parameters"]["prompt_template"] == "chat"

    (tmp_path / "sample/dev.json").write_text("[]")
    empty = _sqltune(*args, "--out", str(tmp_path / "empty"))
    assert empty.returncode == 2 and "error: spider dev split is empty" in empty.stderr
    assert "Traceback" not in empty.stderr and not (tmp_path / "empty").exists()


def _fails(match: str, dataset, source, split, style, *, out, databases_out=None, **settings) -> None:
    """The call raises a SqltuneError matching `match`, and leaves neither output nor temp directories."""
    with pytest.raises(SqltuneError, match=match):
        config = PreprocessConfig(dataset=dataset, split=split, schema_style=style, **settings)
        preprocess(source, out, config=config, databases_out=databases_out)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_missing_tables_json(source, tmp_path):
    (source / "tables.json").unlink()
    _fails(r"schema file not found: .*tables\.json", "spider", source, "dev", "dbgpt", out=tmp_path / "out")


def test_db_id_not_in_the_schemas_names_the_record(source, tmp_path):
    entries = json.loads((source / "dev.json").read_text())
    entries[3]["db_id"] = "airport"
    (source / "dev.json").write_text(json.dumps(entries))
    _fails(r"record spider-dev-00003: db_id 'airport' is not in", "spider", source, "dev", "dbgpt", out=tmp_path / "o")


def test_malformed_json_names_file_and_line(sample, source, tmp_path):
    lines = (source / "dev.json").read_text().splitlines()
    lines[8] = lines[8].replace('"question":', '"question"')
    (source / "dev.json").write_text("\n".join(lines))
    _fails(r"dev\.json:9: malformed JSON", "spider", source, "dev", "dbgpt", out=tmp_path / "out")
    shutil.copy(sample / "dev.json", source / "dev.json")
    (source / "tables.json").write_text('[\n  {"db_id": "shop",\n  oops}\n]')
    _fails(r"tables\.json:3: malformed JSON", "spider", source, "dev", "dbgpt", out=tmp_path / "out")


def test_empty_split_and_missing_split_file(source, tmp_path):
    (source / "dev.json").write_text("[]")
    _fails(r"spider dev split is empty", "spider", source, "dev", "dbgpt", out=tmp_path / "out")
    _fails(
        r"BIRD train file not found in .*: looked for train\.json", "bird", source, "train", "ddl", out=tmp_path / "o"
    )


def test_bad_parameters_are_rejected(source, tmp_path):
    expected = "preprocess parameter {}={!r} is invalid: expected one of {}"
    _fails(expected.format("dataset", "atis", "spider, bird"), "atis", source, "dev", "dbgpt", out=tmp_path / "out")
    _fails(expected.format("schema_style", "xml", "dbgpt, ddl"), "spider", source, "dev", "xml", out=tmp_path / "out")
    _fails(
        expected.format("prompt_template", "llama", "alpaca, chat"),
        "spider", source, "dev", "ddl", prompt_template="llama", out=tmp_path / "o",
    )  # fmt: skip
    _fails(expected.format("split", "test", "train, dev"), "spider", source, "test", "ddl", out=tmp_path / "out")
    _fails(
        r"must be different directories",
        "spider",
        source,
        "dev",
        "ddl",
        databases_out=tmp_path / "out",
        out=tmp_path / "out",
    )
    _fails(
        r"parameter limit=0 is invalid: expected >= 1", "spider", source, "dev", "ddl", limit=0, out=tmp_path / "out"
    )


def test_missing_databases(source, tmp_path):
    shutil.rmtree(source / "database/library")
    summary = preprocess(
        source,
        tmp_path / "out",
        config=PreprocessConfig(dataset="spider", split="dev", schema_style="rich"),
        databases_out=tmp_path / "dbs",
    )
    assert summary["missing_databases"] == ["library"]
    assert verify_artifact(tmp_path / "dbs")["missing_databases"] == ["library"]
    assert not (tmp_path / "dbs/database/library").exists()
    library = next(r for r in read_jsonl(tmp_path / "out/records.jsonl") if r["db_id"] == "library")
    assert library["schema"].startswith("members (member_id number primary key; name text;")  # no samples

    out, dbs = tmp_path / "again", tmp_path / "dbs-again"
    for db in ("shop", "school"):
        shutil.rmtree(source / "database" / db)
    _fails(r"none of the 3 databases the split needs is in", "spider", source, "dev", "ddl", databases_out=dbs, out=out)
    shutil.rmtree(source / "database")
    _fails(r"database directory not found", "spider", source, "dev", "rich", out=out)
    _fails(r"database directory not found", "spider", source, "dev", "ddl", databases_out=dbs, out=out)
    assert not dbs.exists()
    preprocess(
        source, out, config=PreprocessConfig(dataset="spider", split="dev", schema_style="ddl")
    )  # records alone need only tables.json


def test_failure_keeps_the_previous_artifact(sample, source, tmp_path):
    out = tmp_path / "out"
    preprocess(sample, out, config=PreprocessConfig(dataset="spider", split="dev", schema_style="dbgpt"))
    before = (out / "records.jsonl").read_bytes()
    (source / "dev.json").write_text("[")
    with pytest.raises(SqltuneError):
        preprocess(source, out, config=PreprocessConfig(dataset="spider", split="dev", schema_style="dbgpt"))
    assert (out / "records.jsonl").read_bytes() == before
    verify_artifact(out)


def test_an_output_inside_the_source_is_refused_and_the_source_kept(source, tmp_path):
    """`--databases-out <source>/database` used to delete the source databases."""
    before = sorted(p.relative_to(source) for p in source.rglob("*"))
    for kwargs in ({"databases_out": source / "database"}, {"out": source / "records"}):
        arguments = {"out": tmp_path / "out", **kwargs}
        with pytest.raises(SqltuneError, match=r"overlaps the input .*source"):
            preprocess(source, config=PreprocessConfig(dataset="spider", split="dev"), **arguments)
        assert sorted(p.relative_to(source) for p in source.rglob("*")) == before
    with pytest.raises(SqltuneError, match=r"--out .* overlaps the input"):
        preprocess(
            source, tmp_path, config=PreprocessConfig(dataset="spider", split="dev", schema_style="ddl"), overwrite=True
        )  # the source is inside
    assert sorted(p.relative_to(source) for p in source.rglob("*")) == before


def test_an_existing_user_directory_is_replaced_only_with_overwrite(source, tmp_path):
    out, dbs = tmp_path / "results", tmp_path / "dbs"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    done = _sqltune("preprocess", "--dataset", "spider", "--source", str(source), "--split", "dev", "--out", str(out))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "is not an sqltune artifact" in done.stderr and "--overwrite" in done.stderr
    assert (out / "notes.txt").read_text() == "mine"
    preprocess(
        source,
        out,
        config=PreprocessConfig(dataset="spider", split="dev", schema_style="ddl"),
        databases_out=dbs,
        overwrite=True,
    )
    assert not (out / "notes.txt").exists()
    preprocess(
        source, out, config=PreprocessConfig(dataset="spider", split="dev", schema_style="dbgpt"), databases_out=dbs
    )  # sqltune's own artifacts: replaced
    assert read_manifest(out)["parameters"]["schema_style"] == "dbgpt"


def test_an_output_under_a_file_or_a_read_only_place_is_a_clear_error(source, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SqltuneError, match=r"cannot create directory .*file"):
        preprocess(
            source,
            tmp_path / "file" / "out",
            config=PreprocessConfig(dataset="spider", split="dev", schema_style="ddl"),
        )
    with pytest.raises(SqltuneError, match=r"--out .*file exists and is not a directory"):
        preprocess(
            source, tmp_path / "file", config=PreprocessConfig(dataset="spider", split="dev", schema_style="ddl")
        )
    with pytest.raises(SqltuneError, match=r"cannot create directory /sys/sqltune-test"):
        preprocess(
            source,
            Path("/sys/sqltune-test/out"),
            config=PreprocessConfig(dataset="spider", split="dev", schema_style="ddl"),
        )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("SQL", None, r"entry 1: 'SQL' must be a string, not null"),
        ("evidence", {"hint": "x"}, r"entry 1: 'evidence' must be a string, not dict"),
        ("question", 42, r"entry 1: 'question' must be a string, not int"),
    ],
)
def test_bird_fields_of_the_wrong_type_name_the_entry(source, tmp_path, field, value, message):
    entries = [
        {
            "question_id": i,
            "db_id": "shop",
            "question": "How many?",
            "SQL": "SELECT 1",
            "evidence": "",
            "difficulty": "x",
        }
        for i in range(3)
    ]
    entries[1][field] = value
    (source / "dev.json").write_text(json.dumps(entries))
    shutil.copy(source / "tables.json", source / "dev_tables.json")
    _fails(message, "bird", source, "dev", "ddl", out=tmp_path / "out")
