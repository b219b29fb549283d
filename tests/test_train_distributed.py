"""Training on several workers on the CPU (gloo): `sqltune train --nproc-per-node 2` with ddp and fsdp, a worker
killed mid-run, a sharded checkpoint resumed, two "nodes" meeting over 127.0.0.1 as Kubeflow Trainer's pods do, and
twelve workers on one node (more than torchrun's --redirects syntax can name)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import test_train
from test_train import VENV_BIN, _lease, cli_args, config, loss_on

from sqltune.artifacts import read_jsonl, verify_artifact
from sqltune.errors import SqltuneError
from sqltune.models import load_model, load_tokenizer, resolve_base_model

pytestmark = pytest.mark.slow
env = test_train.env  # the fixture: tiny model, its records, a private model cache, one thread per process
STEPS = 4
# Two workers with a micro-batch each compute the same sums as one process accumulating two micro-batches;
# only the order of the floating-point additions differs (gloo's all-reduce vs autograd's accumulation).
LOSS_TOLERANCE = 1e-4


def sqltune(*args: str) -> list[str]:
    return [str(VENV_BIN / "sqltune"), *args]


def short(data: Path, out: Path, *extra: str) -> list[str]:
    """`sqltune train` with the settings of config(), STEPS steps."""
    args = cli_args(data, out, *extra)
    args[args.index("--max-steps") + 1] = str(STEPS)
    return sqltune(*args)


@pytest.fixture(scope="module")
def one_process(env):
    """The 1-process runs the workers must match: batch 4 and 2 micro-batches per step = 2 workers x batch 4."""
    from sqltune.train import train

    root, data = env
    return {
        method: train(
            data,
            "tiny-random-llama",
            root / f"one-{method}",
            config=config(method=method, max_steps=STEPS, gradient_accumulation_steps=2),
        )
        for method in ("lora", "qlora")
    }


@pytest.mark.parametrize(
    ("method", "parallelism"),
    [
        pytest.param("lora", "ddp", id="ddp"),
        pytest.param("lora", "fsdp", id="fsdp"),
        pytest.param("qlora", "fsdp", id="qlora-fsdp"),
    ],
)
def test_two_workers_match_one_process_and_write_the_same_adapter(env, one_process, tmp_path, method, parallelism):
    _, data = env
    out, ckpt = tmp_path / "adapter", tmp_path / "ckpt"
    command = short(data, out, "--method", method, "--nproc-per-node", "2", "--parallelism", parallelism,
                    "--checkpoint-dir", str(ckpt), "--checkpoint-every", "2")  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout)  # rank 0's summary, unprefixed: the other worker's output is not mixed in
    assert printed["world_size"] == 2 and printed["parallelism"] == parallelism
    reference = one_process[method]
    assert printed["final_loss"] == pytest.approx(reference["final_loss"], rel=LOSS_TOLERANCE)
    assert [r["loss"] for r in read_jsonl(out / "train_log.jsonl")] == pytest.approx(
        [r["loss"] for r in read_jsonl(env[0] / f"one-{method}" / "train_log.jsonl")], rel=LOSS_TOLERANCE
    )
    verify_artifact(out)
    if parallelism == "fsdp":  # every worker wrote its shard of the checkpoint, each checksummed
        state = json.loads((ckpt / "step-00000004" / "state.json").read_text())
        assert {"shards/.metadata", "shards/__0_0.distcp", "shards/__1_0.distcp"} <= set(state["files"])
        assert state["world_size"] == 2 and not list(ckpt.glob(".*staging"))

    # The adapter is the usual PEFT one: the same tensors as the 1-process run's, and it loads and predicts.
    from peft import PeftModel
    from safetensors.torch import load_file

    ours = load_file(out / "adapter_model.safetensors")
    theirs = load_file(env[0] / f"one-{method}" / "adapter_model.safetensors")
    assert sorted(ours) == sorted(theirs)
    for name, tensor in ours.items():
        assert tensor.shape == theirs[name].shape and (tensor - theirs[name]).abs().max() < 1e-4, name
    path = resolve_base_model("tiny-random-llama")
    tokenizer = load_tokenizer(out)
    model = PeftModel.from_pretrained(load_model(path), out)
    assert loss_on(model, tokenizer, data) < loss_on(load_model(path), tokenizer, data) - 0.2


def _worker(launcher: subprocess.Popen, rank: int) -> psutil.Process | None:
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "sqltune.cli" in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def test_a_killed_worker_fails_the_run_and_the_rerun_resumes_the_sharded_checkpoint(env, s3_env, tmp_path):
    """fsdp with checkpoints on S3: SIGKILL rank 1 after the first checkpoint; the command fails naming it, the
    rerun resumes from the shards and ends where an unbroken run ends; a run of another size is refused."""
    from sqltune.train import train
    from sqltune.train.checkpoint import complete_steps

    _, data = env
    s3_env.create_bucket("fsdp-resume")
    ckpt, out = "s3://fsdp-resume/run", tmp_path / "adapter"
    command = short(data, out, "--nproc-per-node", "2", "--parallelism", "fsdp", "--checkpoint-dir", ckpt,
                    "--checkpoint-every", "1", "--max-steps", "6")  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not complete_steps(ckpt) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    victim, survivor = _worker(first, rank=1), _worker(first, rank=0)
    assert victim and survivor, first.stderr.read()[-2000:] if first.poll() is not None else "workers not found"
    assert _lease(s3_env, ckpt)[0]["pid"] == first.pid  # the launcher holds the directory for its workers
    victim.send_signal(signal.SIGKILL)
    stderr = first.communicate(timeout=120)[1]
    assert first.returncode == 2, stderr[-2000:]
    assert "error: training worker rank 1 of 2 failed" in stderr and "Signal 9 (SIGKILL)" in stderr
    assert "the other workers were stopped" in stderr and not out.exists()
    assert not survivor.is_running()  # the launcher stopped rank 0 too

    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    metrics = json.loads(second.stdout)
    assert 1 <= metrics["resumed_from_step"] < 6 and metrics["steps"] == 6
    assert _lease(s3_env, ckpt) is None  # both launchers let go of it
    unbroken = train(
        data, "tiny-random-llama", tmp_path / "unbroken", config=config(max_steps=6, gradient_accumulation_steps=2)
    )
    assert metrics["final_loss"] == pytest.approx(unbroken["final_loss"], rel=LOSS_TOLERANCE)

    with pytest.raises(SqltuneError, match=r"holds a run of 2 workers, this run has 1: resume it with"):
        train(data, "tiny-random-llama", tmp_path / "c", config=config(max_steps=6, parallelism="fsdp"),
              checkpoint_dir=ckpt)  # fmt: skip


def test_the_failure_reported_is_the_one_that_caused_the_others(tmp_path):
    """As the launcher saw it in CI: rank 1 SIGKILLed, rank 0 lost it mid-all-gather, wrote its gloo error and was
    then stopped by the launcher, all in the same second. The report names rank 1, whatever the ranks' order."""
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    from sqltune.train.launch import root_failure

    def failure(rank: int, exitcode: int, message: str | None = None) -> ProcessFailure:
        error_file = tmp_path / f"error-{rank}.json"
        if message is not None:
            error_file.write_text(json.dumps({"message": message, "timestamp": int(time.time()) - 1}))
        return ProcessFailure(local_rank=rank, pid=100 + rank, exitcode=exitcode, error_file=str(error_file))

    lost_peer = "RuntimeError: Connection closed by peer. This is typically caused by a remote worker crashing."
    for killed, lost in ((1, 0), (0, 1)):
        failures = {lost: failure(lost, -signal.SIGTERM, lost_peer), killed: failure(killed, -signal.SIGKILL)}
        assert root_failure(failures)[0] == killed
    # Two workers that raised on their own: the earlier error, then the lower rank.
    raised = {0: failure(0, 1, "ValueError: late"), 1: failure(1, 1, "ValueError: early")}
    raised[1].timestamp -= 5
    assert root_failure(raised) == (1, raised[1])
    raised[1].timestamp = raised[0].timestamp
    assert root_failure(raised)[0] == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_nodes_meet_over_localhost_with_the_environment_kubeflow_trainer_sets(env, one_process, tmp_path):
    """Two `sqltune train --num-nodes 2` launchers, one worker each, as two TrainJob pods: PET_* tell each its
    rank and where node 0 is. Node 0 writes the adapter; together they train as one 2-worker run."""
    _, data = env
    port = str(_free_port())
    nodes = []
    for rank in (0, 1):
        trainer_env = {"PET_NNODES": "2", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": str(rank),
                       "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": port}  # fmt: skip
        command = short(data, tmp_path / f"node{rank}", "--num-nodes", "2")
        nodes.append(subprocess.Popen(command, env={**os.environ, **trainer_env}, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    results = [node.communicate(timeout=600) for node in nodes]
    for node, (_, stderr) in zip(nodes, results, strict=True):
        assert node.returncode == 0, stderr[-3000:]
    assert "starting 1 training workers on node 1 of 2 (2 in all)" in results[1][1]
    metrics = json.loads((tmp_path / "node0" / "train_metrics.json").read_text())
    assert metrics["world_size"] == 2 and not (tmp_path / "node1").exists()
    assert metrics["final_loss"] == pytest.approx(one_process["lora"]["final_loss"], rel=LOSS_TOLERANCE)


def _launcher_leftovers(tmp: Path) -> list[str]:
    """What the launcher left in TMPDIR: torchrun's `torchelastic_*` log directories, or any worker log tree."""
    return sorted(str(p.relative_to(tmp)) for p in [*tmp.glob("torchelastic_*"), *tmp.rglob("attempt_*")])


def _private_tmp(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    return scratch, {**os.environ, "TMPDIR": str(scratch)}


def test_twelve_workers_train_as_one_run_and_leave_no_launcher_directory(env, tmp_path):
    """More than ten workers on one node (a 16-core CPU node, 16 small GPUs): one step of batch 1 each."""
    _, data = env
    scratch, run_env = _private_tmp(tmp_path)
    out = tmp_path / "adapter"
    command = short(data, out, "--nproc-per-node", "12", "--batch-size", "1", "--max-steps", "1")
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=run_env)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout)  # rank 0's summary alone: the eleven others write to the launcher's files
    assert printed["world_size"] == 12 and printed["steps"] == 1
    assert json.loads((out / "train_metrics.json").read_text())["world_size"] == 12
    assert "starting 12 training workers on node 0 of 1 (12 in all)" in done.stderr
    assert _launcher_leftovers(scratch) == []


def test_a_failed_worker_is_reported_with_its_last_output_and_leaves_no_launcher_directory(env, tmp_path):
    """The last of three workers dies by a signal, leaving no error of its own: the error names it and ends with the
    last line it wrote (its output went to the launcher's log directory, which is removed). Twelve workers, past
    torchrun's single-digit redirects, are the test above."""
    _, data = env
    scratch, run_env = _private_tmp(tmp_path)
    out = tmp_path / "adapter"
    command = short(data, out, "--nproc-per-node", "3", "--batch-size", "1", "--max-steps", "1")
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=run_env)
    deadline, logs, written = time.monotonic() + 300, [], ""
    while "schema trimmed" not in written and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        logs = list(scratch.glob("*/*/attempt_*/2/stderr.log"))
        written = logs[0].read_text(errors="replace") if logs else ""
    victim = _worker(run, rank=2) if run.poll() is None else None
    assert victim and "schema trimmed" in written, run.stderr.read()[-2000:] if run.poll() is not None else written
    victim.suspend()  # nothing more reaches its log once we have read it
    last_line = [line.strip() for line in Path(logs[0]).read_text(errors="replace").splitlines() if line.strip()][-1]
    victim.kill()
    stderr = run.communicate(timeout=300)[1]
    assert run.returncode == 2, stderr[-3000:]
    error = next(line for line in stderr.splitlines() if line.startswith("error: "))
    assert error.startswith("error: training worker rank 2 of 3 failed (exit code -9): Signal 9 (SIGKILL)"), error
    assert "the other workers were stopped" in error and last_line in error, (error, last_line)
    assert not out.exists()
    assert _launcher_leftovers(scratch) == []
