"""The evaluate step: official verdicts on real predictions, sandboxing, input formats, artifact contents."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from sqltune.errors import SqltuneError
from sqltune.evaluate.config import EvaluateConfig
from sqltune.evaluate.run import evaluate
from sqltune.evaluate.values import plug_gold_values
from sqltune.sql.execution import QueryError, remove_distinct, results_match

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
        config=EvaluateConfig(workers=2),
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
        config=EvaluateConfig(timeout=0.5, max_rows=1000, workers=2),
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
    metrics = evaluate(
        gold, preds, tiny / "database", None, tiny / "out", config=EvaluateConfig(etype="exec", workers=1)
    )
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
    strict = evaluate(
        gold, preds, tiny / "database", tiny / "tables.json", tiny / "strict", config=EvaluateConfig(workers=1)
    )
    lenient = evaluate(
        gold,
        preds,
        tiny / "database",
        tiny / "tables.json",
        tiny / "plug",
        config=EvaluateConfig(workers=1, plug_value=True),
    )
    # The wrong value (8) is forgiven with gold's 7; the second has no gold number to plug: still wrong.
    assert (strict["ex"]["all"], lenient["ex"]["all"]) == (0.0, 0.5)


def test_bird_uses_row_set_equality(tiny):
    gold = tiny / "bird.json"
    gold.write_text(
        json.dumps([{"db_id": "music", "SQL": "SELECT name FROM singer WHERE singer_id < 3", "difficulty": "simple"}])
    )
    preds = tiny / "preds.txt"
    preds.write_text("SELECT name FROM singer WHERE singer_id IN (1, 2, 2) UNION ALL SELECT 's1'\n")
    metrics = evaluate(
        gold,
        preds,
        tiny / "database",
        None,
        tiny / "out",
        config=EvaluateConfig(dataset="bird", ves_repeats=2, workers=1),
    )
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


def _results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _run_python(script: str, timeout: float = 120, **limits: int) -> subprocess.CompletedProcess:
    """Run `script` in a fresh interpreter (a crash there cannot take the test run down), under rlimits."""
    import resource

    def set_limits() -> None:
        for name, value in limits.items():
            resource.setrlimit(getattr(resource, name), (value, value))

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=set_limits,
    )


@pytest.mark.timeout(180)
def test_functions_outside_the_allow_list_are_refused_and_the_process_survives(tiny):
    # fts3_tokenizer plants a function pointer that the next query on a full-text table calls: a segfault.
    with sqlite3.connect(tiny / "database" / "music" / "music.sqlite") as conn:
        conn.execute("CREATE VIRTUAL TABLE docs USING fts4(body)")
    conn.close()
    questions = [
        ("SELECT count(*) FROM singer", "SELECT fts3_tokenizer('simple', x'4141414141414141')"),
        ("SELECT count(*) FROM singer", "SELECT count(*) FROM docs"),
        ("SELECT count(*) FROM singer", "SELECT sqlite_compileoption_get(0)"),
        ("SELECT 'x', 1, 2.0, 4", "SELECT iif(1, 'x', 'y'), strftime('%m', '2020-01-02') + 0, sqrt(4), max(4)"),
        ("SELECT count(*) FROM singer", "SELECT count(*) FROM singer"),
    ]
    gold = _gold(tiny, [g for g, _ in questions])
    preds = tiny / "preds.txt"
    preds.write_text("".join(p + "\n" for _, p in questions))
    result = _run_python(
        f"""
        from sqltune.evaluate.config import EvaluateConfig
        from sqltune.evaluate.run import evaluate
        evaluate({str(gold)!r}, {str(preds)!r}, {str(tiny / "database")!r}, {str(tiny / "tables.json")!r},
                 {str(tiny / "out")!r}, config=EvaluateConfig(etype="exec", workers=1))
        """
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = _results(tiny / "out")
    assert [(r["ex"], r["error"]) for r in rows] == [(0, "execution error")] * 3 + [(1, None)] * 2
    assert "fts3_tokenizer() is not allowed" in rows[0]["detail"]
    assert "sqlite_compileoption_get() is not allowed" in rows[2]["detail"]


def _kill_workers_holding(path: Path, stop: threading.Event, killed: list[int]) -> None:
    """Plays the kernel's OOM killer: SIGKILL to every other process that has `path` open, until `stop`."""
    while not stop.is_set():
        for fd_dir in Path("/proc").glob("[0-9]*/fd"):
            pid = int(fd_dir.parent.name)
            try:
                if pid != os.getpid() and any(os.readlink(fd) == str(path) for fd in fd_dir.iterdir()):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            except OSError:  # gone meanwhile, or not ours to read
                continue
        stop.wait(0.01)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to find the workers")
@pytest.mark.timeout(120)
def test_a_worker_killed_mid_question_fails_that_question_and_the_run_goes_on(tiny):
    # Every worker that opens victim.sqlite is killed while its (slow) question runs, as the OOM killer would kill
    # a worker whose query grows too big: the question fails, the others keep their verdicts, in input order.
    victim = tiny / "database" / "victim" / "victim.sqlite"
    _make_db(victim, [(1, "v")])
    slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    questions = [("music", "SELECT count(*) FROM singer", "SELECT count(*) FROM singer")] * 12
    questions[3] = ("music", "SELECT name FROM singer WHERE singer_id = 3", "SELECT name FROM singer")
    questions[7] = ("victim", "SELECT count(*) FROM singer", slow)
    gold = tiny / "gold.jsonl"
    gold.write_text("".join(json.dumps({"db_id": d, "sql": g, "hardness": "easy"}) + "\n" for d, g, _ in questions))
    preds = tiny / "preds.txt"
    preds.write_text("".join(p + "\n" for _, _, p in questions))
    stop, killed = threading.Event(), []
    watchdog = threading.Thread(target=_kill_workers_holding, args=(victim, stop, killed))
    watchdog.start()
    try:
        metrics = evaluate(
            gold,
            preds,
            tiny / "database",
            None,
            tiny / "out",
            config=EvaluateConfig(etype="exec", timeout=60, workers=2),
        )
    finally:
        stop.set()
        watchdog.join()
    rows = _results(tiny / "out")
    assert [r["idx"] for r in rows] == list(range(12))
    assert [(r["ex"], r["error"]) for r in rows] == [(1, None)] * 3 + [(0, "wrong result")] + [(1, None)] * 3 + [
        (0, "worker crashed")
    ] + [(1, None)] * 4
    assert len(killed) >= 2  # once in the parallel pool, once more when run alone to find the culprit
    assert metrics["errors"] == {"worker crashed": 1, "wrong result": 1}


@pytest.mark.timeout(300)
def test_memory_result_size_and_temporary_storage_are_capped(tiny):
    # Default limits, in one process under an address-space and a file-size rlimit: before the caps, the first
    # query held 6 GB and the last wrote 1.5 GB of temporary files.
    hostile = [
        "SELECT randomblob(1e9)",
        "SELECT randomblob(1e8) FROM singer LIMIT 8",  # each value is allowed, the result is not
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 3000000) "
        "SELECT x FROM c ORDER BY printf('%0500d', x)",
        "SELECT name FROM singer",
    ]
    gold = _gold(tiny, ["SELECT name FROM singer"] * len(hostile))
    preds = tiny / "preds.txt"
    preds.write_text("".join(sql + "\n" for sql in hostile))
    argv = ["sqltune", "evaluate", "--gold", str(gold), "--predictions", str(preds), "--etype", "exec"]
    argv += ["--db-dir", str(tiny / "database"), "--tables", str(tiny / "tables.json"), "--out", str(tiny / "out")]
    argv += ["--workers", "1"]
    script = f"""
        import sys
        from sqltune.cli import main
        sys.argv = {argv!r}
        main()
        """
    result = _run_python(script, RLIMIT_AS=3 * 2**30, RLIMIT_FSIZE=64 * 2**20)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = _results(tiny / "out")
    assert [(r["ex"], r["error"]) for r in rows] == [
        (0, "result too large"),
        (0, "result too large"),
        (0, "memory limit"),
        (1, None),
    ]
    assert "134217728 bytes" in rows[0]["detail"] and "536870912 bytes" in rows[2]["detail"]
    # the option lowers the cap: 50 names are a wrong result by default, too large under 2000 bytes
    gold = _gold(tiny, ["SELECT count(*) FROM singer"])
    preds.write_text("SELECT name FROM singer\n")
    for cap, error in ((None, "wrong result"), (2000, "result too large")):
        config = EvaluateConfig(workers=1, **({"max_result_bytes": cap} if cap else {}))
        evaluate(gold, preds, tiny / "database", tiny / "tables.json", tiny / f"cap{cap}", config=config)
        assert _results(tiny / f"cap{cap}")[0]["error"] == error


@pytest.mark.timeout(60)
def test_column_matching_of_wide_results_ends_within_the_timeout(tiny):
    # 12 equal columns: 12^12 candidate permutations for the exhaustive search, one for the pruned one
    gold = _gold(tiny, ["SELECT " + ", ".join(["name"] * 12) + " FROM singer"])
    preds = tiny / "preds.txt"
    preds.write_text("SELECT " + ", ".join(["name"] * 12) + " FROM singer ORDER BY name DESC\n")
    metrics = evaluate(
        gold, preds, tiny / "database", tiny / "tables.json", tiny / "out", config=EvaluateConfig(timeout=5, workers=1)
    )
    assert metrics["ex"]["all"] == 1.0  # a search past the 5 s deadline would have scored it a timeout
    # past the deadline the search gives up as a timeout rather than run on
    with pytest.raises(QueryError) as raised:
        results_match([(1, 2), (3, 4)], [(2, 1), (4, 3)], order_matters=False, deadline=time.monotonic())
    assert raised.value.category == "timeout"


def _brute_force_match(gold: list[tuple], pred: list[tuple], order_matters: bool) -> bool:
    """The definition: some permutation of pred's columns gives gold's rows (as a list, or as a bag)."""
    if not gold or not pred:
        return not gold and not pred
    if len(gold) != len(pred) or len(gold[0]) != len(pred[0]):
        return False
    for perm in itertools.permutations(range(len(gold[0]))):
        permuted = [tuple(row[j] for j in perm) for row in pred]
        if permuted == gold if order_matters else Counter(permuted) == Counter(gold):
            return True
    return False


def test_column_matching_gives_the_verdicts_of_the_exhaustive_search():
    rng = random.Random(13)
    checked = Counter()
    for _ in range(3000):
        width, height = rng.randint(1, 5), rng.randint(1, 6)
        values = [1, 2, "a", None][: rng.randint(1, 4)]
        gold = [tuple(rng.choice(values) for _ in range(width)) for _ in range(height)]
        perm = rng.sample(range(width), width)
        pred = [tuple(row[j] for j in perm) for row in gold]
        if rng.random() < 0.5:
            rng.shuffle(pred)
        if rng.random() < 0.5:  # often a near miss: one value changed
            i, j = rng.randrange(height), rng.randrange(width)
            pred[i] = (*pred[i][:j], rng.choice(values), *pred[i][j + 1 :])
        for order_matters in (False, True):
            expected = _brute_force_match(gold, pred, order_matters)
            assert results_match(gold, pred, order_matters) == expected, (gold, pred, order_matters)
            checked[expected] += 1
    assert min(checked.values()) > 500  # both verdicts are well represented


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
        evaluate(gold, preds, tiny / "database", tiny / "tables.json", tiny / "out", config=EvaluateConfig(workers=1))
    assert not (tiny / "out").exists()


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("timeout", -1.0),
        ("timeout", 0.0),
        ("max_rows", -1),
        ("max_rows", 0),
        ("max_result_bytes", 0),
        ("max_heap_bytes", -5),
        ("workers", -1),
        ("ves_repeats", -2),
    ],
)
def test_meaningless_limits_are_errors_naming_the_parameter(tiny, parameter, value):
    gold = _gold(tiny, ["SELECT name FROM singer"])
    preds = tiny / "preds.txt"
    preds.write_text("SELECT name FROM singer\n")
    with pytest.raises(SqltuneError, match=rf"evaluate parameter {parameter}={value} is invalid: expected "):
        evaluate(
            gold,
            preds,
            tiny / "database",
            tiny / "tables.json",
            tiny / "out",
            config=EvaluateConfig(**{parameter: value}),
        )
    assert not (tiny / "out").exists()


def test_evaluate_scores_deep_predictions_as_wrong_and_goes_on(tiny):
    """The Spider parser reads a 250-level subquery chain; its normalizing walk overflowed the stack and ended the
    run. Now such a prediction (and a deep gold query) is one unparseable question."""
    from test_sql_depth import DEEP, subqueries

    deep = list(DEEP.values())
    gold = ["SELECT name FROM singer"] * len(deep) + [subqueries(250), "SELECT name FROM singer"]
    predictions = [*deep, "SELECT name FROM singer", "SELECT name FROM singer"]
    (tiny / "gold.sql").write_text("".join(f"{sql}\tmusic\n" for sql in gold))
    (tiny / "preds.txt").write_text("\n".join(predictions) + "\n")
    evaluate(
        tiny / "gold.sql",
        tiny / "preds.txt",
        tiny / "database",
        tiny / "tables.json",
        tiny / "out",
        config=EvaluateConfig(workers=2, timeout=2.0),
    )
    rows = [json.loads(line) for line in (tiny / "out" / "results.jsonl").read_text().splitlines()]
    assert [(r["em"], r["pred_parse_ok"]) for r in rows[: len(deep)]] == [(0, False)] * len(deep)
    assert rows[len(deep)]["em"] is None and rows[len(deep)]["hardness"] == "unknown"  # deep gold: no EM
    assert rows[-1]["em"] == 1 and rows[-1]["ex"] == 1


def _wal_database(path: Path, pending: bool) -> sqlite3.Connection | None:
    """`path` in WAL mode; with `pending`, a connection kept open with a change still in the -wal file."""
    path.unlink()
    _make_db(path, [(i, f"s{i}") for i in range(1, 51)])
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    if not pending:
        return None
    writer = sqlite3.connect(path)
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("INSERT INTO singer VALUES (51, 's51')")
    writer.commit()
    return writer


def test_reading_a_wal_database_writes_nothing_beside_it(tiny):
    """mode=ro on a WAL database creates -shm and -wal files and leaves them (and fails on a read-only mount)."""
    db = tiny / "database" / "music" / "music.sqlite"
    _wal_database(db, pending=False)
    before = db.read_bytes()
    preds = tiny / "preds.txt"
    preds.write_text("SELECT count(*) FROM singer\nSELECT name FROM singer WHERE singer_id = 3\n")
    gold = _gold(tiny, ["SELECT count(*) FROM singer", "SELECT name FROM singer WHERE singer_id = 3"])
    metrics = evaluate(gold, preds, tiny / "database", tiny / "tables.json", tiny / "out")
    assert metrics["ex"]["all"] == 1.0
    assert sorted(p.name for p in db.parent.iterdir()) == ["music.sqlite"] and db.read_bytes() == before


def test_a_database_that_cannot_be_read_fails_its_questions_with_the_reason(tiny):
    """A directory where the SQLite file should be, a file that is no database, a WAL database with changes a
    read-only reader would miss: each question on it is skipped with the reason; the others are scored."""
    _make_db(tiny / "database" / "dir_db" / "dir_db.sqlite" / "inside.sqlite", [(1, "a")])
    (tiny / "database" / "junk").mkdir()
    (tiny / "database" / "junk" / "junk.sqlite").write_text("not a database")
    writer = _wal_database(tiny / "database" / "music" / "music.sqlite", pending=True)
    tables = json.loads((tiny / "tables.json").read_text())
    tables += [{**tables[0], "db_id": "dir_db"}, {**tables[0], "db_id": "junk"}, {**tables[0], "db_id": "other"}]
    (tiny / "tables.json").write_text(json.dumps(tables))
    _make_db(tiny / "database" / "other" / "other.sqlite", [(1, "a"), (2, "b")])
    gold = tiny / "gold.sql"
    gold.write_text("".join(f"SELECT count(*) FROM singer\t{db}\n" for db in ("dir_db", "junk", "music", "other")))
    preds = tiny / "preds.txt"
    preds.write_text("SELECT count(*) FROM singer\n" * 4)
    try:
        evaluate(gold, preds, tiny / "database", tiny / "tables.json", tiny / "out", config=EvaluateConfig(workers=2))
    finally:
        writer.close()
    rows = [json.loads(line) for line in (tiny / "out" / "results.jsonl").read_text().splitlines()]
    assert [(r["ex"], r["error"]) for r in rows] == [(None, "unreadable database")] * 3 + [(1, None)]
    assert "dir_db.sqlite is a directory, not a SQLite file" in rows[0]["detail"]
    assert "junk.sqlite is not a SQLite database" in rows[1]["detail"]
    assert "changes in its write-ahead log (music.sqlite-wal)" in rows[2]["detail"]
