"""The compiled pipeline end to end through kfp.local: a tiny model, the sample dataset, a real S3 server."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sqltune.artifacts import read_jsonl, sha256_file, verify_artifact
from sqltune.pipeline import DEMO_PARAMS
from sqltune.pipeline.local import run_local, summary_table
from sqltune.publish.registry import Registry
from sqltune.sample_data import write_sample_dataset

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

SMALL_RUN = {
    "dataset": "spider",
    "base_model": "tiny-random-llama",
    "method": "lora",
    "train_limit": 24,
    "eval_limit": 6,
    "max_steps": 2,
    "batch_size": 4,
    "max_seq_len": 384,
    "max_new_tokens": 16,
    "predict_batch_size": 8,
    "bucket": "e2e",
    "prefix": "adapters",
    "model_name": "tiny-text2sql",
}


@pytest.fixture(scope="module")
def sample_source(tmp_path_factory):
    source = tmp_path_factory.mktemp("data") / "sample"
    write_sample_dataset(source)
    return source


@pytest.fixture
def e2e_bucket(s3_env):
    """The run's bucket; the steps run as subprocesses and find the server in the environment (`s3_env`)."""
    s3_env.create_bucket(SMALL_RUN["bucket"])
    return s3_env


# Two GRPO steps after SFT: the published adapter is the GRPO stage's.
GRPO_STAGE = {"rl_steps": 2, "train_options": {"num_generations": 2, "max_completion_length": 16}}


def test_whole_pipeline_publishes_a_verified_adapter(tmp_path, sample_source, e2e_bucket):
    run = run_local(
        {**SMALL_RUN, **GRPO_STAGE, "source_uri": str(sample_source), "min_ex": 0.0},
        pipeline_root=tmp_path / "runs",
    )
    expected_tasks = {"placement", "preprocess", "train", "predict-finetuned", "evaluate-finetuned", "predict-base"}
    assert expected_tasks | {"evaluate-base", "publish"} <= set(run.tasks)

    train_records = read_jsonl(run.artifact("preprocess", "train_data") / "records.jsonl")
    eval_records = read_jsonl(run.artifact("preprocess", "eval_data") / "records.jsonl")
    assert len(train_records) == 24 and len(eval_records) == 6
    assert {"id", "db_id", "question", "schema", "prompt", "sql", "hardness"} <= set(eval_records[0])
    databases = run.artifact("preprocess", "databases")
    verify_artifact(databases)
    assert all((databases / "database" / r["db_id"] / f"{r['db_id']}.sqlite").is_file() for r in eval_records)

    adapter = run.artifact("train", "adapter")
    adapter_manifest = verify_artifact(adapter)
    assert {"adapter_config.json", "adapter_model.safetensors", "train_metrics.json"} <= set(adapter_manifest["files"])
    assert adapter_manifest["parameters"]["method"] == "grpo" and adapter_manifest["parameters"]["max_steps"] == 2
    assert verify_artifact(run.artifact("train", "sft_adapter"))["parameters"]["method"] == "lora"
    assert [r["step"] for r in read_jsonl(adapter / "train_log.jsonl")] == [1, 2]
    assert {"reward", "correct_groups"} <= set(read_jsonl(adapter / "train_log.jsonl")[0])
    assert run.artifact("train", "loss_curve").read_text().count("<img") == 2  # SFT's curve, GRPO's beside it

    predictions = read_jsonl(run.artifact("predict-finetuned", "predictions") / "predictions.jsonl")
    assert [p["id"] for p in predictions] == [r["id"] for r in eval_records]
    assert all(p["sql"].strip() for p in predictions)

    for task, predicted in (("evaluate-finetuned", "predict-finetuned"), ("evaluate-base", "predict-base")):
        metrics = json.loads((run.artifact(task, "evaluation") / "metrics.json").read_text())
        assert set(metrics["ex"]) >= {"easy", "medium", "hard", "extra", "all"}
        rows = read_jsonl(run.artifact(task, "evaluation") / "results.jsonl")
        sqls = [p["sql"] for p in read_jsonl(run.artifact(predicted, "predictions") / "predictions.jsonl")]
        assert [r["sql"] for r in rows] == sqls, "each step scored the predictions wired into it"
        scored = [r["ex"] for r in rows if r["ex"] is not None]
        assert len(scored) == 6 and metrics["ex"]["all"] == sum(scored) / 6
    assert run.base is not None and "| base | EX |" in summary_table(run)
    assert "## " in run.artifact("evaluate-finetuned", "report").read_text()

    assert run.published_uri and run.published_uri.startswith("s3://e2e/adapters/tiny-text2sql/")
    registry = Registry("e2e", "adapters", "tiny-text2sql", e2e_bucket.endpoint_url)
    version = run.published_uri.rstrip("/").rsplit("/", 1)[1]
    published = registry.manifest(version)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert published["files"][name]["sha256"] == adapter_manifest["files"][name]["sha256"]
    pulled = registry.pull(version, tmp_path / "pulled")
    assert (pulled / "README.md").is_file()
    _follow_lineage_to_the_dataset(published, run.run_dir, sample_source)


def _follow_lineage_to_the_dataset(published: dict, run_dir, source) -> None:
    """From the published version, every input is found by the sha256 of its manifest, down to the raw files."""
    by_sha = {"sha256:" + sha256_file(m): json.loads(m.read_text()) for m in run_dir.rglob("manifest.json")}
    reached, todo, adapters = [], [published], set()
    while todo:
        manifest = todo.pop()
        reached.append(manifest["kind"])
        if manifest["kind"] == "adapter":
            adapters.add(json.dumps(manifest, sort_keys=True))
        for name, fingerprint in manifest["inputs"].items():
            assert fingerprint.startswith("sha256:"), (manifest["kind"], name, fingerprint)
            if fingerprint in by_sha:
                todo.append(by_sha[fingerprint])
            else:  # a raw dataset file: named by its own bytes
                assert fingerprint in {"sha256:" + sha256_file(f) for f in source.glob("*.json")}, (name, fingerprint)
    assert {"adapter", "evaluation", "predictions", "records", "databases"} <= set(reached)
    assert len(adapters) == 2  # the GRPO adapter, and the SFT adapter it continued
    assert reached.count("records") >= 3  # train data (via the adapter), eval data (via predictions and evaluation)


def test_publish_gate_skips_publishing_below_min_ex(tmp_path, sample_source, e2e_bucket):
    registry = Registry("e2e", "adapters", "tiny-text2sql", e2e_bucket.endpoint_url)
    versions_before = registry.list_versions()
    run = run_local(
        {**SMALL_RUN, "source_uri": str(sample_source), "min_ex": 1.01},
        pipeline_root=tmp_path / "runs",
    )
    assert "evaluate-finetuned" in run.tasks
    assert "publish" not in run.tasks
    # Without the GRPO stage (rl_steps 0) the adapter predict scored is the SFT adapter itself.
    sft, adapter = run.artifact("train", "sft_adapter"), run.artifact("train", "adapter")
    assert verify_artifact(adapter)["files"] == verify_artifact(sft)["files"]
    assert run.published_uri is None
    assert registry.list_versions() == versions_before


# --- the terminal of `sqltune demo` / `sqltune run`: the real CLI in a subprocess, as a user runs it ---

# The demo's parameters, shrunk to the tiny model and a few questions (`sqltune demo --param` overrides them).
TINY_DEMO = [
    "base_model=tiny-random-llama",
    "train_limit=24",
    "eval_limit=6",
    "max_steps=2",
    "batch_size=4",
    "max_seq_len=384",
    "max_new_tokens=16",
    "predict_batch_size=2",
    "min_ex=0.0",
]
STEPS = ("placement", "preprocess", "predict-base", "evaluate-base", "train", "predict-finetuned",
         "evaluate-finetuned", "publish")  # fmt: skip
NOISE = ("executor_input", "KFP Executor", "Warning", "WARNING", " INFO ", "Traceback")


def _sqltune(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`sqltune ARGS` through its real entry point, from the repo root; no S3 endpoint, progress bars on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["SQLTUNE_PROGRESS"] = "1"
    command = [sys.executable, "-m", "sqltune.cli", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _demo_args(out: Path) -> list[str]:
    return ["demo", "--out", str(out), *(a for p in TINY_DEMO for a in ("--param", p))]


def test_demo_console_shows_the_steps_the_table_and_what_next_and_logs_the_rest(tmp_path):
    done = _sqltune(*_demo_args(tmp_path / "demo-out"))
    assert done.returncode == 0, done.stdout + done.stderr
    console = done.stdout + done.stderr
    for noise in NOISE:
        assert noise not in console, (noise, console)

    lines = done.stdout.splitlines()
    for step in STEPS:
        started = [i for i, line in enumerate(lines) if re.search(rf" {step} +started$", line)]
        finished = [i for i, line in enumerate(lines) if re.search(rf" {step} +done in \d", line)]
        assert len(started) == 1 and len(finished) == 1 and started[0] < finished[0], (step, done.stdout)
    assert re.search(r" preprocess +done in .*: 24 train / 6 dev questions", done.stdout)
    assert re.search(r" train +done in .*: 2 steps, final loss \d+\.\d{3}$", done.stdout, re.M)
    assert re.search(r" predict-base +done in .*: 6 questions", done.stdout)
    assert re.search(r" evaluate-finetuned +done in .*: EX \d\.\d{3}, EM \d\.\d{3}", done.stdout)
    assert "| fine-tuned | EX |" in done.stdout and "| base | EX |" in done.stdout
    published = re.search(
        r"^adapter published to (s3://sqltune/adapters/smollm2-135m-text2sql-demo/run-\w+/)", done.stdout, re.M
    )
    assert published, done.stdout
    s3_data = tmp_path / "demo-out" / "runs" / "s3-data"
    assert f"sqltune s3-server --dir {s3_data} --port 8333" in done.stdout
    assert (
        "sqltune registry list --bucket sqltune --prefix adapters --model-name smollm2-135m-text2sql-demo "
        "--endpoint-url http://127.0.0.1:8333" in done.stdout
    )
    serve = re.search(r"^ +sqltune serve --adapter (\S+) --endpoint-url http://127.0.0.1:8333 --tables (\S+) "
                      r"--db-dir (\S+)$", done.stdout, re.M)  # fmt: skip
    assert serve and serve[1] == published[1], done.stdout  # how to serve what it published
    assert Path(serve[2]).is_file() and (Path(serve[3]) / "shop").is_dir()
    # The progress of the long steps, read from the steps' own bars: 2 training steps, 3 batches of 2 questions.
    assert re.search(r"train.*\| 2/2 \[", done.stderr) and re.search(r"predict-finetuned.*\| 3/3 \[", done.stderr)

    log_file = Path(re.search(r"^full logs: (\S+)$", done.stdout, re.M)[1])
    assert log_file.is_file() and log_file.parent == tmp_path / "demo-out" / "runs" / "logs"
    logged = log_file.read_text()
    assert logged.count("Got executor_input") == len(STEPS)  # kfp's executor, once per step
    assert "wrote 24 spider train records" in logged and "adapter written to" in logged  # the steps' own logs
    assert "S3 server" in logged  # this process's own logs
    assert published[1] in logged


def test_verbose_run_streams_every_step_log_as_before(tmp_path):
    """`sqltune -v` streams what the quiet console keeps in its log file (here up to a step that fails fast: the
    quiet test above runs the whole pipeline)."""
    missing = tmp_path / "no-such-dataset"
    done = _sqltune(
        "-v", "run", "--config", str(DEMO_PARAMS), "--pipeline-root", str(tmp_path / "runs"),
        "--param", f"source_uri={missing}", "--param", "base_model=tiny-random-llama",
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    console = done.stdout + done.stderr
    assert console.count("Got executor_input") == 2 and "Executing task" in console  # placement, preprocess
    assert f"spider source not found: {missing}" in console
    assert "full logs:" not in console and not (tmp_path / "runs" / "logs").exists()


def test_a_failing_step_shows_its_error_and_the_log_file(tmp_path):
    missing = tmp_path / "no-such-dataset"
    done = _sqltune(
        "run", "--config", str(DEMO_PARAMS), "--pipeline-root", str(tmp_path / "runs"),
        "--param", f"source_uri={missing}", "--param", "base_model=tiny-random-llama",
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert re.search(r" preprocess +FAILED after ", done.stdout), done.stdout
    assert f"spider source not found: {missing}" in done.stdout  # the step's own error, from its last lines
    log_file = Path(re.search(r"^full logs: (\S+)$", done.stdout, re.M)[1])
    assert log_file.is_file() and "Got executor_input" in log_file.read_text()
    error = done.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ") and "preprocess" in error[0], done.stderr
    assert str(log_file) in error[0]


# --- a pipeline root that cannot hold a run: one line, exit 2, before anything starts ---


def _unusable_roots(tmp_path: Path, s3_data_dir: Path) -> dict[str, tuple[Path, str]]:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    (tmp_path / "bad-s3").mkdir()
    (tmp_path / "bad-s3" / "s3-data").write_text("not a directory")
    return {
        "a file": (a_file, "is a file, not a directory"),
        "under a file": (a_file / "runs", f"{a_file} is a file, not a directory"),
        "not writable": (Path("/sys"), "is not writable"),
        "in a read-only place": (Path("/sys/sqltune-runs"), "cannot be created"),
        "inside an S3 data dir": (s3_data_dir / "runs", f"inside the S3 server's data directory {s3_data_dir}"),
        "its s3-data is a file": (tmp_path / "bad-s3", "s3-data is a file, not a directory"),
    }


@pytest.mark.parametrize(
    "case", ["a file", "under a file", "not writable", "in a read-only place", "inside an S3 data dir",
             "its s3-data is a file"]
)  # fmt: skip
def test_run_refuses_an_unusable_pipeline_root_in_one_line(tmp_path, sample_source, s3_server, case):
    root, problem = _unusable_roots(tmp_path, s3_server.data_dir)[case]
    done = _sqltune("run", "--pipeline-root", str(root), "--param", f"source_uri={sample_source}", timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr  # no step started, no traceback
    assert done.stderr.startswith(f"error: pipeline root {root} ") and problem in done.stderr, done.stderr


def test_demo_refuses_an_unusable_pipeline_root_before_writing_anything(tmp_path):
    out = tmp_path / "demo-out"
    out.mkdir()
    (out / "runs").write_text("not a directory")  # the demo's pipeline root is OUT/runs
    done = _sqltune("demo", "--out", str(out), timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: pipeline root {out / 'runs'} is a file, not a directory"), done.stderr
    assert not (out / "sample-data").exists()
