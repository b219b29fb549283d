"""The evaluate step: official verdicts on real predictions, sandboxing, input formats, artifact contents."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sqltune.errors import SqltuneError
from sqltune.evaluate.evaluator import evaluate
from sqltune.evaluate.execution import remove_distinct, results_match
from sqltune.evaluate.values import plug_gold_values

PREDICTION_FILES = [
    "codex_few_shot_dinsqlrepo",
    "dbgpt_hub_lora_2023-08",
    "din_sql_gpt4",
    "gpt4_zero_shot_dinsqlrepo",
    "graphix_t5_3b_picard_dailsqlrepo",
]


@pytest.mark.parametrize("name", PREDICTION_FILES)
def test_per_question_verdicts_equal_the_official_evaluators(name, spider_dir, spider_predictions_dir, tmp_path):
    metrics = evaluate(
        spider_dir / "dev_gold.sql",
        spider_predictions_dir / f"{name}.txt",
        spider_dir / "database",
        spider_dir / "tables.json",
        tmp_path / "eval",
        workers=2,
    )
    rows = [json.loads(line) for line in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()]
    labels = [json.loads(line) for line in (spider_predictions_dir / f"{name}.labels.jsonl").read_text().splitlines()]
    assert [(r["idx"], r["hardness"], r["em"]) for r in rows] == [
        (lb["idx"], lb["hardness"], lb["em"]) for lb in labels
    ]
    assert [r["ex"] for r in rows] == [lb["ex"] for lb in labels]  # None for the 62 wta_1 questions
    assert [r["pred_parse_ok"] for r in rows] == [lb["pred_parse_ok"] for lb in labels]
    expected = json.loads((spider_predictions_dir / "expected_results.json").read_text())[name]
    assert {k: round(v, 3) for k, v in metrics["ex"].items()} == expected["ex_testsuite_972"]
    assert {k: round(v, 3) for k, v in metrics["em"].items()} == expected["em_1034"]
    assert metrics["counts"]["ex"]["all"] == 972 and metrics["counts"]["em"]["all"] == 1034
    assert metrics["skipped"] == {"missing_database": 62, "total": 62}
    assert set(metrics["partial"]["all"]) >= {"select", "where", "keywords"}


def test_result_comparison_rules():
    assert results_match([(1, "a"), (2, "b")], [("b", 2), ("a", 1)], order_matters=False)  # columns permuted
    assert not results_match([(1,), (2,)], [(2,), (1,)], order_matters=True)
    assert not results_match([(1,), (1,), (2,)], [(1,), (2,), (2,)], order_matters=False)  # multisets differ
    assert results_match([], [], order_matters=True)
    assert not results_match([(1, 2)], [(1,)], order_matters=False)
    assert remove_distinct("SELECT DISTINCT a, count(distinct b) FROM t WHERE c = 'distinct'") == (
        "SELECT  a, count( b) FROM t WHERE c = 'distinct'"
    )


def _make_db(path: Path, rows: list[tuple[int, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO singer VALUES (?, ?)", rows)
    conn.close()


@pytest.fixture
def tiny(tmp_path):
    """A real Spider-layout dataset: tables.json and database/music/music.sqlite."""
    tables = [
        {
            "db_id": "music",
            "table_names_original": ["singer"],
            "table_names": ["singer"],
            "column_names_original": [[-1, "*"], [0, "singer_id"], [0, "name"]],
            "column_names": [[-1, "*"], [0, "singer id"], [0, "name"]],
            "column_types": ["text", "number", "text"],
            "primary_keys": [1],
            "foreign_keys": [],
        }
    ]
    (tmp_path / "tables.json").write_text(json.dumps(tables))
    _make_db(tmp_path / "database" / "music" / "music.sqlite", [(i, f"s{i}") for i in range(1, 51)])
    return tmp_path


def _gold(root: Path, sqls: list[str]) -> Path:
    path = root / "gold.sql"
    path.write_text("".join(f"{sql}\tmusic\n" for sql in sqls))
    return path


HOSTILE = [
    "DROP TABLE singer",
    "DELETE FROM singer",
    "UPDATE singer SET name = 'x'",
    "INSERT INTO singer VALUES (999, 'x')",
    "ATTACH DATABASE 'evil.sqlite' AS evil",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA writable_schema = 1",
    "SELECT load_extension('evil')",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    "SELECT count(*) FROM singer a, singer b, singer c, singer d, singer e, singer f",
    "SELECT a.name FROM singer a, singer b, singer c, singer d",
    "CREATE TABLE evil (x)",
    "SELECT name FROM singer; DROP TABLE singer",
    "SELECT count(*) FROM singer",
]


@pytest.mark.timeout(120)
def test_hostile_predictions_leave_databases_untouched_and_end_within_limits(tiny):
    db = tiny / "database" / "music" / "music.sqlite"
    before = db.read_bytes()
    preds = tiny / "preds.txt"
    preds.write_text("\n".join(HOSTILE) + "\n")
    metrics = evaluate(
        _gold(tiny, ["SELECT count(*) FROM singer"] * len(HOSTILE)),
        preds,
        tiny / "database",
        tiny / "tables.json",
        tiny / "out",
        timeout_s=0.5,
        max_rows=1000,
        workers=2,
    )
    assert db.read_bytes() == before
    assert sorted(p.name for p in db.parent.iterdir()) == ["music.sqlite"]
    rows = [json.loads(line) for line in (tiny / "out" / "results.jsonl").read_text().splitlines()]
    assert [r["ex"] for r in rows] == [0] * (len(HOSTILE) - 1) + [1]
    errors = {HOSTILE[r["idx"]]: r["error"] for r in rows}
    assert errors[HOSTILE[8]] == "timeout" and errors[HOSTILE[9]] == "timeout"
    assert errors[HOSTILE[10]] == "too many rows"
    assert metrics["errors"]["timeout"] == 2


def test_every_database_file_must_match_and_missing_databases_are_skipped(tiny):
    _make_db(tiny / "database" / "music" / "variant.sqlite", [(1, "s1"), (2, "x2"), (3, "other")])
    gold = tiny / "gold.jsonl"
    records = [
        {"db_id": "music", "sql": "SELECT name FROM singer WHERE singer_id < 3", "hardness": "easy"},
        {"db_id": "music", "sql": "SELECT name FROM singer WHERE singer_id < 3", "hardness": "easy"},
        {"db_id": "music", "sql": "SELECT count(*) FROM singer", "hardness": "easy"},
        {"db_id": "gone", "sql": "SELECT 1", "hardness": "easy"},
    ]
    gold.write_text("".join(json.dumps(r) + "\n" for r in records))
    preds = tiny / "preds.jsonl"
    sqls = [
        "SELECT name FROM singer WHERE singer_id <= 2",  # same on both files
        "SELECT name FROM singer WHERE name IN ('s1', 's2')",  # right on music.sqlite only
        "",  # empty line: wrong, not a shift
        "SELECT 1",
    ]
    preds.write_text(
        "".join(
            json.dumps({"id": i, "db_id": r["db_id"], "sql": s}) + "\n"
            for i, (r, s) in enumerate(zip(records, sqls, strict=True))
        )
    )
    metrics = evaluate(gold, preds, tiny / "database", None, tiny / "out", etype="exec", workers=1)
    rows = [json.loads(line) for line in (tiny / "out" / "results.jsonl").read_text().splitlines()]
    assert [(r["ex"], r["error"]) for r in rows] == [
        (1, None),
        (0, "wrong result"),
        (0, "empty prediction"),
        (None, "missing database"),
    ]
    assert metrics["ex"]["all"] == pytest.approx(1 / 3) and metrics["skipped"]["total"] == 1
    assert {"metrics.json", "results.jsonl", "report.md", "report.html", "manifest.json"} <= {
        p.name for p in (tiny / "out").iterdir()
    }
    assert "wrong result" in (tiny / "out" / "report.md").read_text()


def test_count_mismatch_and_misordered_predictions_are_clear_errors(tiny):
    gold = _gold(tiny, ["SELECT count(*) FROM singer"] * 3)
    preds = tiny / "preds.txt"
    preds.write_text("SELECT 1\nSELECT 2\n")
    with pytest.raises(SqltuneError, match="2 predictions for 3 gold questions"):
        evaluate(gold, preds, tiny / "database", tiny / "tables.json", tiny / "out")
    preds = tiny / "preds.jsonl"
    preds.write_text('{"db_id": "other", "sql": "SELECT 1"}\n' * 3)
    with pytest.raises(SqltuneError, match="record 0 is for database 'other'"):
        evaluate(gold, preds, tiny / "database", tiny / "tables.json", tiny / "out")
    assert not (tiny / "out").exists()


def test_plug_value_fills_prediction_literals_with_gold_values_only_when_asked(tiny):
    assert plug_gold_values("SELECT name FROM singer WHERE singer_id = 7 AND name != 's1'", "SELECT x WHERE a = 3") == [
        "SELECT x WHERE a = 's1'",
        "SELECT x WHERE a = 7",
    ]
    assert plug_gold_values("SELECT T1.name FROM singer AS T1", "SELECT col2 FROM t WHERE a = 1") == []
    assert len(plug_gold_values("SELECT 1, 2, 3", "SELECT 4, 5, 6", limit=10)) == 10
    gold = _gold(tiny, ["SELECT name FROM singer WHERE singer_id = 7", "SELECT name FROM singer WHERE name = 's3'"])
    preds = tiny / "preds.txt"
    preds.write_text("SELECT name FROM singer WHERE singer_id = 8\nSELECT name FROM singer WHERE singer_id = 4\n")
    strict = evaluate(gold, preds, tiny / "database", tiny / "tables.json", tiny / "strict", workers=1)
    lenient = evaluate(gold, preds, tiny / "database", tiny / "tables.json", tiny / "plug", workers=1, plug_value=True)
    # The wrong value (8) is forgiven with gold's 7; the second has no gold number to plug: still wrong.
    assert (strict["ex"]["all"], lenient["ex"]["all"]) == (0.0, 0.5)


def test_bird_uses_row_set_equality(tiny):
    gold = tiny / "bird.json"
    gold.write_text(
        json.dumps([{"db_id": "music", "SQL": "SELECT name FROM singer WHERE singer_id < 3", "difficulty": "simple"}])
    )
    preds = tiny / "preds.txt"
    preds.write_text("SELECT name FROM singer WHERE singer_id IN (1, 2, 2) UNION ALL SELECT 's1'\n")
    metrics = evaluate(gold, preds, tiny / "database", None, tiny / "out", dataset="bird", ves_repeats=2, workers=1)
    assert metrics["ex"] == {"simple": 1.0, "moderate": None, "challenging": None, "all": 1.0}
    assert metrics["ves"]["all"] > 0


def test_evaluate_never_imports_torch(tiny):
    script = textwrap.dedent(
        f"""
        import sys
        from sqltune.cli import main
        sys.argv = ["sqltune", "evaluate", "--gold", {str(_gold(tiny, ["SELECT name FROM singer"]))!r},
                    "--predictions", {str(tiny / "p.txt")!r}, "--db-dir", {str(tiny / "database")!r},
                    "--tables", {str(tiny / "tables.json")!r}, "--out", {str(tiny / "cli")!r}, "--workers", "1"]
        try:
            main()
        except SystemExit as exc:
            assert not exc.code, exc.code
        assert "torch" not in sys.modules
        """
    )
    (tiny / "p.txt").write_text("SELECT name FROM singer\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads((tiny / "cli" / "metrics.json").read_text())["ex"]["all"] == 1.0


@pytest.mark.parametrize(
    ("file_name", "content", "message"),
    [
        ("preds.txt", b"SELECT name FROM singer WHERE name = '\xff'\n", r"preds.txt: not UTF-8 text"),
        ("preds.jsonl", b'{"sql": "SELECT \xe9"}\n', r"preds.jsonl: not UTF-8 text"),
        ("tables.json", b'{"music": {"db_id": "music"}}', r"tables.json: expected a JSON list of database schemas"),
        ("tables.json", b'["music"]', r"tables.json: entry 0 is not a database schema"),
        ("tables.json", b'[{"db_id": "caf\xe9"}]', r"tables.json: not UTF-8 text"),
    ],
)
def test_unreadable_inputs_are_errors_naming_the_file(tiny, file_name, content, message):
    gold = _gold(tiny, ["SELECT name FROM singer"])
    preds = tiny / "preds.txt"
    preds.write_text("SELECT name FROM singer\n")
    (tiny / file_name).write_bytes(content)
    preds = tiny / file_name if file_name.startswith("preds") else preds
    with pytest.raises(SqltuneError, match=message):
        evaluate(gold, preds, tiny / "database", tiny / "tables.json", tiny / "out", workers=1)
    assert not (tiny / "out").exists()
