"""The GRPO stage: the execution reward on real SQLite files, and TRL's GRPOTrainer from an SFT adapter of the
tiny model (an adapter and reward metrics come out; a killed run resumes)."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_candidates import make_database

from sqltune.artifacts import read_jsonl, read_manifest, verify_artifact, write_jsonl
from sqltune.errors import SqltuneError
from sqltune.sql.execution import Executor, Limits
from sqltune.sql.location import Databases
from sqltune.train.lock import LOCK_FILE
from sqltune.train.reward import ExecutionReward

VENV_BIN = Path(sys.executable).parent
SCHEMA = (
    "singer: singer_id (number, primary key), name (text), age (number), country (text)\n"
    "concert: concert_id (number, primary key), singer_id (number), year (number)"
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def reward(tmp_path) -> ExecutionReward:
    make_database(tmp_path, "concerts")
    return ExecutionReward(
        Databases(db_dir=tmp_path), correct=1.0, executes=0.1, executor=Executor(Limits(timeout_s=1.0))
    )


@pytest.mark.parametrize(
    ("completion", "expected", "why"),
    [
        ("SELECT count(*) FROM singer WHERE age > 40", 1.0, "correct"),
        ("```sql\nselect COUNT(*) from Singer where age > 40;\n```\nThis counts them.", 1.0, "correct"),
        ("SELECT count(*) FROM singer WHERE age > 20", 0.1, "wrong result"),  # runs, another answer
        ("SELECT count(*) FROM singers WHERE age > 40", 0.0, "execution error"),  # no such table
        ("SELECT count(* FROM singer", 0.0, "syntax error"),
        ("I do not know.", 0.0, "no SQL"),
    ],
)
def test_the_reward_follows_the_official_ex_rule(reward, completion, expected, why):
    assert reward.score("concerts", "SELECT count(*) FROM singer WHERE age > 40", completion) == (expected, why)


def test_hostile_sql_earns_nothing_and_leaves_the_database_as_it_was(reward, tmp_path):
    path = tmp_path / "concerts" / "concerts.sqlite"
    before = _sha256(path)
    hostile = [
        "SELECT load_extension('/tmp/x.so')",
        "SELECT randomblob(2000000000)",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n",
        "DELETE FROM singer",
        "DROP TABLE concert",
        f"ATTACH DATABASE '{tmp_path / 'planted.db'}' AS planted",
    ]
    for sql in hostile:
        assert reward.score("concerts", "SELECT count(*) FROM singer", sql)[0] == 0.0, sql
    # A second statement is never run: only the first one is taken from the completion.
    assert reward.score("concerts", "SELECT name FROM singer", "SELECT name FROM singer; DELETE FROM singer") == (
        1.0,
        "correct",
    )
    reward.close()
    assert _sha256(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["concerts"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["concerts.sqlite"]


def test_a_batch_is_rewarded_per_completion_and_counts_groups_with_a_correct_one(reward):
    gold = "SELECT count(*) FROM singer"
    rewards = reward(
        prompts=["p"] * 4,
        completions=[[{"role": "assistant", "content": "SELECT count(*) FROM singer"}], "SELECT 1", "x", "SELECT 2"],
        db_id=["concerts"] * 4,
        sql=[gold] * 4,
        id=["a", "a", "b", "b"],
    )
    assert rewards == [1.0, 0.1, 0.0, 0.1]
    assert reward.group_hits == [0.5]  # group a has a correct completion, group b none


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to find the workers")
@pytest.mark.timeout(120)
def test_a_completion_whose_scorer_dies_earns_nothing_and_training_goes_on(reward, tmp_path):
    # Every scoring worker that opens victim.sqlite is killed while its runaway query runs, as the OOM killer
    # would: that completion earns 0 as SCORER_CRASHED, the others their rewards, and the caller lives on.
    from test_evaluate import _kill_workers_holding

    from sqltune.train.reward import SCORER_CRASHED

    victim = make_database(tmp_path, "victim")
    runaway = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    reward.executor = Executor(Limits(timeout_s=60.0))  # the kill, not the timeout, ends the runaway query
    stop, killed = threading.Event(), []
    watchdog = threading.Thread(target=_kill_workers_holding, args=(victim, stop, killed))
    watchdog.start()
    tasks = [("concerts", "SELECT name FROM singer", "SELECT name FROM singer"), ("victim", "SELECT 1", runaway),
             ("concerts", "SELECT 2", "SELECT 1")]  # fmt: skip
    try:
        rewards = reward(prompts=["p"] * 3, completions=[t[2] for t in tasks], db_id=[t[0] for t in tasks],
                         sql=[t[1] for t in tasks], id=["a", "b", "c"])  # fmt: skip
        scores = reward.score_all(tasks)
    finally:
        stop.set()
        watchdog.join()
    assert rewards == [1.0, 0.0, 0.1] and len(killed) >= 2
    assert scores == {tasks[0]: (1.0, "correct"), tasks[1]: (0.0, SCORER_CRASHED), tasks[2]: (0.1, "wrong result")}


def test_a_missing_database_is_an_error_naming_it_and_its_questions_are_left_out(reward):
    with pytest.raises(SqltuneError, match="no SQLite file for database 'nowhere'"):
        reward.score("nowhere", "SELECT 1", "SELECT 1")
    assert "no SQLite file for database 'nowhere'" in reward.gold_runs({"db_id": "nowhere", "sql": "SELECT 1"})
    assert "no such table" in reward.gold_runs({"db_id": "concerts", "sql": "SELECT * FROM ghosts"})
    assert reward.gold_runs({"db_id": "concerts", "sql": "SELECT name FROM singer"}) is None


def test_a_database_path_that_is_a_directory_leaves_its_questions_out(reward):
    (reward.databases.db_dir / "dir_db" / "dir_db.sqlite").mkdir(parents=True)
    assert "dir_db.sqlite is a directory" in reward.gold_runs({"db_id": "dir_db", "sql": "SELECT 1"})
    score, why = reward.score("dir_db", "SELECT 1", "SELECT 1")  # scored anyway: 0, with the reason
    assert score == 0.0 and "is a directory" in why


# --- GRPO from an SFT adapter of the tiny model ---------------------------------------------------------------


def records(n: int = 8) -> list[dict]:
    """Questions with one answer, so a briefly fine-tuned tiny model samples it sometimes (rewards vary)."""
    return [
        {"id": f"q{i}", "db_id": "concerts", "question": f"How many singers are there? ({i})", "schema": SCHEMA,
         "sql": "SELECT count(*) FROM singer"}
        for i in range(n)
    ]  # fmt: skip


COMMON = ["--base-model", "tiny-random-llama", "--batch-size", "2", "--lr", "1e-2", "--warmup-ratio", "0",
          "--max-seq-len", "192", "--template", "chat", "--no-gradient-checkpointing", "--lora-rank", "8",
          "--lora-dropout", "0", "--lr-scheduler", "constant"]  # fmt: skip


def grpo_args(env: Path, out: Path, *extra: str) -> list[str]:
    return [str(VENV_BIN / "sqltune"), "train", "--data", str(env / "records.jsonl"), "--out", str(out), *COMMON,
            "--method", "grpo", "--init-adapter", str(env / "sft"), "--db-dir", str(env / "db"),
            "--num-generations", "4", "--prompts-per-step", "2", "--max-completion-length", "16",
            "--temperature", "0.15", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """An SFT adapter of the tiny model that has seen the one answer 40 times, and the database."""
    root = tmp_path_factory.mktemp("grpo")
    make_database(root / "db", "concerts")
    write_jsonl(root / "records.jsonl", records())
    sft = [str(VENV_BIN / "sqltune"), "train", "--data", str(root / "records.jsonl"), "--out", str(root / "sft"),
           *COMMON, "--max-steps", "40"]  # fmt: skip
    done = subprocess.run(sft, capture_output=True, text=True, timeout=600, env=_env(root))
    assert done.returncode == 0, done.stderr[-2000:]
    return root


def _env(root: Path) -> dict[str, str]:
    import os

    return {**os.environ, "SQLTUNE_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_grpo_continues_the_sft_adapter_and_records_the_reward(env, tmp_path):
    out = tmp_path / "rl"
    done = subprocess.run(grpo_args(env, out, "--max-steps", "4"), capture_output=True, text=True, timeout=600,
                          env=_env(env))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    verify_artifact(out)
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["method"] == "grpo" and metrics["steps"] == 4
    rows = read_jsonl(out / "train_log.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(0.0 <= r["reward"] <= 1.0 and 0.0 <= r["correct_groups"] <= 1.0 for r in rows)
    assert any(r["reward"] > 0 for r in rows), rows  # the SFT adapter writes SQL that runs, often the right one
    png = (out / "loss_curve.png").read_bytes()
    assert int.from_bytes(png[16:20], "big") == 1200  # the reward panel beside the loss panel (SFT's is 700 wide)
    # A PEFT adapter like SFT's, without TRL's frozen reference copy; both the SFT adapter and the data in lineage.
    assert not (out / "ref").exists()
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny-random-llama"
    manifest = read_manifest(out)
    assert set(manifest["inputs"]) == {"data", "init_adapter", "db_dir"}
    from safetensors.torch import load_file

    before, after = load_file(env / "sft" / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    assert before.keys() == after.keys()
    assert any(not before[k].equal(after[k]) for k in before), "GRPO did not change the adapter"


@pytest.mark.slow
def test_a_killed_grpo_run_resumes_from_its_checkpoint(env, tmp_path):
    out, ckpt = tmp_path / "rl", tmp_path / "ckpt"
    command = grpo_args(env, out, "--max-steps", "8", "--checkpoint-dir", str(ckpt), "--checkpoint-every", "2")
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(env))
    deadline = time.monotonic() + 300
    while not list(ckpt.glob("step-*/state.json")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL, first.stderr.read().decode()[-2000:]
    assert not out.exists()
    assert (ckpt / ".grpo-scratch").is_dir()  # TRL's own checkpoint files, left where the rerun clears them
    assert json.loads((ckpt / LOCK_FILE).read_text())["pid"] == first.pid  # unlocked by its death: the rerun takes it

    second = subprocess.run(command, capture_output=True, text=True, timeout=600, env=_env(env))
    assert second.returncode == 0, second.stderr[-3000:]
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert 2 <= metrics["resumed_from_step"] < 8 and metrics["steps"] == 8
    assert [r["step"] for r in read_jsonl(out / "train_log.jsonl")] == list(range(1, 9))
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-00000006", "step-00000008"]  # keep_checkpoints=2


def test_grpo_needs_its_inputs_and_lora_refuses_them(tmp_path):
    from sqltune.train import TrainConfig, train

    write_jsonl(tmp_path / "records.jsonl", records(2))
    with pytest.raises(SqltuneError, match="--method grpo needs --init-adapter and --db-dir"):
        train(tmp_path / "records.jsonl", "tiny-random-llama", tmp_path / "out", config=TrainConfig(method="grpo"))
    with pytest.raises(SqltuneError, match="--init-adapter and --db-dir are inputs of --method grpo"):
        train(tmp_path / "records.jsonl", "tiny-random-llama", tmp_path / "out", db_dir=str(tmp_path))
    with pytest.raises(SqltuneError, match="train parameter num_generations=1 is invalid"):
        TrainConfig(method="grpo", num_generations=1)
    with pytest.raises(SqltuneError, match=r"prompts_per_step=3 is invalid: .* completions a multiple of batch_size"):
        TrainConfig(method="grpo", prompts_per_step=3, num_generations=2, batch_size=4)


def test_trl_builds_exactly_the_prompt_sft_and_predict_build(tmp_path, monkeypatch):
    """TRL applies the chat template to the messages itself: its token ids must be `build_prompt`'s, trimmed too."""
    from sqltune.models import load_tokenizer, resolve_base_model
    from sqltune.prompt import build_prompt, encode_prompt, prompt_functions, prompt_messages

    monkeypatch.setenv("SQLTUNE_CACHE", str(tmp_path / "cache"))
    tokenizer = load_tokenizer(resolve_base_model("tiny-random-llama"))
    count_tokens, chat_render = prompt_functions(tokenizer, "chat")
    plain = records(1)[0]
    tables = SCHEMA.split("\n")  # the same schema as units (a schema filter's record): values, then tables go
    units = [
        {"kind": "table", "table": "singer", "text": tables[0], "drop": 2},
        {"kind": "values", "table": "singer", "text": "-- values in singer: country = 'France'", "needs": [0],
         "drop": 0},
        {"kind": "table", "table": "concert", "text": tables[1], "drop": 1},
    ]  # fmt: skip
    for record in (plain, {**plain, "schema_units": units}):
        for budget in (None, count_tokens(build_prompt(record, "chat", chat_render=chat_render).text) - 5):
            prompt = build_prompt(record, "chat", max_tokens=budget, count_tokens=count_tokens, chat_render=chat_render)
            messages = prompt_messages(record, prompt.schema_lines_dropped)
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
            assert ids["input_ids"] == encode_prompt(tokenizer, prompt.text, "chat")
        assert prompt.schema_lines_dropped > 0
    assert prompt.left_out == ("values singer",)
