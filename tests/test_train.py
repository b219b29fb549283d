"""The train step on CPU with tiny random models: loss goes down, adapters reload, resume and DDP agree."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sqltune.artifacts import read_jsonl, verify_artifact, write_jsonl
from sqltune.errors import SqltuneError
from sqltune.models import load_model, load_tokenizer, resolve_base_model
from sqltune.prompt import encode_prompt, prompt_functions

pytestmark = pytest.mark.slow
VENV_BIN = Path(sys.executable).parent
TABLES = ["singer", "concert", "stadium", "student", "course", "teacher"]


def make_records(n: int = 24) -> list[dict]:
    """Spider-like records whose SQL follows one pattern, so a few steps visibly lower the loss."""
    records = []
    for i in range(n):
        table = TABLES[i % len(TABLES)]
        schema = "\n".join(f"{t}: {t}_id (number, primary key), name (text), age (number)" for t in TABLES[: 1 + i % 3])
        records.append(
            {
                "id": f"q{i}",
                "db_id": "concert_singer",
                "question": f"How many {table}s are older than {20 + i}?",
                "schema": schema,
                "sql": f"SELECT count(*) FROM {table} WHERE age > {20 + i}",
                "hardness": "easy",
            }
        )
    return records


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private model cache, one thread per process (2 shared cores), the records file, the tiny model."""
    import torch

    root = tmp_path_factory.mktemp("train")
    saved = {k: os.environ.get(k) for k in ("SQLTUNE_CACHE", "OMP_NUM_THREADS")}
    os.environ.update(SQLTUNE_CACHE=str(root / "cache"), OMP_NUM_THREADS="1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data = root / "records.jsonl"
    write_jsonl(data, make_records())
    resolve_base_model("tiny-random-llama")
    yield root, data
    torch.set_num_threads(threads)
    for key, value in saved.items():
        os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


def config(**overrides):
    from sqltune.train import TrainConfig

    base = dict(
        max_steps=8, batch_size=4, learning_rate=1e-2, warmup_ratio=0.0, max_seq_len=160, prompt_template="chat",
        gradient_checkpointing=False, lora_rank=8, lora_dropout=0.0, lr_scheduler="constant",
    )  # fmt: skip
    return TrainConfig(**{**base, **overrides})


def train_checkpointed(data: Path, out: Path, checkpoints: str | Path) -> dict:
    """Six steps of the tiny model, a checkpoint every two."""
    from sqltune.train import train

    settings = config(max_steps=6, checkpoint_every=2)
    return train(data, "tiny-random-llama", out, config=settings, checkpoint_dir=str(checkpoints))


def cli_args(data: Path, out: Path, *extra: str) -> list[str]:
    """The `sqltune train` arguments matching config(gradient_accumulation_steps=2)."""
    return [
        "train", "--data", str(data), "--base-model", "tiny-random-llama", "--out", str(out), "--max-steps", "8",
        "--batch-size", "4", "--lr", "1e-2", "--warmup-ratio", "0", "--max-seq-len", "160", "--template", "chat",
        "--no-gradient-checkpointing", "--lora-rank", "8", "--lora-dropout", "0", "--lr-scheduler", "constant", *extra,
    ]  # fmt: skip


def loss_on(model, tokenizer, data: Path) -> float:
    """Mean loss on the training examples (response tokens only)."""
    import torch

    from sqltune.train.data import build_examples, collate

    examples, _ = build_examples(read_jsonl(data), tokenizer, "chat", 160)
    with torch.no_grad():
        return model(**collate(examples, tokenizer.pad_token_id, packing=False)).loss.item()


@pytest.fixture(scope="module")
def lora_run(env):
    from sqltune.train import train

    root, data = env
    out = root / "lora"
    return out, train(data, "tiny-random-llama", out, config=config(gradient_accumulation_steps=2))


def test_lora_lowers_the_loss_and_writes_a_complete_adapter(env, lora_run):
    out, metrics = lora_run
    assert metrics["steps"] == 8 and metrics["final_loss"] < metrics["first_loss"] - 0.5
    manifest = verify_artifact(out)
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "train_metrics.json",
                 "train_log.jsonl", "loss_curve.png", "loss_curve.html"):  # fmt: skip
        assert name in manifest["files"], name
    assert manifest["parameters"]["prompt_template"] == "chat" and manifest["parameters"]["max_seq_len"] == 160
    saved = json.loads((out / "train_metrics.json").read_text())
    assert saved["prompt_template"] == "chat" and saved["trainable_params"] == metrics["trainable_params"] > 0
    assert [row["step"] for row in read_jsonl(out / "train_log.jsonl")] == list(range(1, 9))
    assert "data:image/png;base64," in (out / "loss_curve.html").read_text()
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-random-llama"


def test_adapter_reloads_with_peft_and_generates(env, lora_run):
    import torch
    from peft import PeftModel

    _, data = env
    out, _ = lora_run
    path = resolve_base_model("tiny-random-llama")
    tokenizer = load_tokenizer(out)
    base_loss = loss_on(load_model(path), tokenizer, data)
    model = PeftModel.from_pretrained(load_model(path), out)
    assert loss_on(model, tokenizer, data) < base_loss - 0.5  # the trained weights came back
    _, chat_render = prompt_functions(tokenizer, "chat")
    prompt = chat_render([{"role": "user", "content": "How many singers?"}])
    ids = torch.tensor([encode_prompt(tokenizer, prompt, "chat")])
    generated = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] > ids.shape[1]


def test_qlora_trains_a_4bit_base_and_lowers_the_loss(env):
    from sqltune.train import train

    root, data = env
    metrics = train(
        data, "tiny-random-llama", root / "qlora", config=config(method="qlora", gradient_checkpointing=True)
    )
    assert metrics["method"] == "qlora" and metrics["final_loss"] < metrics["first_loss"] - 0.5
    assert verify_artifact(root / "qlora")["parameters"]["method"] == "qlora"


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_gradient_checkpointing_recomputes_each_decoder_layer_in_backward(env, tmp_path, monkeypatch, method):
    """Asked for, checkpointing keeps no layer activations and runs each decoder layer again in backward: twice
    the layer forwards of a run without it (transformers checkpoints only a model in training mode). Counted on
    entry to the MLP: the recompute stops inside it once backward has what it needs."""
    from sqltune.train import train
    from sqltune.train.sft import SFTRecipe

    _, data = env
    forwards: list[int] = []
    build = SFTRecipe._load_model

    def counted(recipe):
        model = build(recipe)
        model.get_base_model().model.layers[0].mlp.register_forward_pre_hook(lambda *_: forwards.append(1))
        return model

    monkeypatch.setattr(SFTRecipe, "_load_model", counted)
    counts = {}
    for checkpointing in (False, True):
        forwards.clear()
        settings = config(method=method, max_steps=1, gradient_checkpointing=checkpointing)
        train(data, "tiny-random-llama", tmp_path / f"{method}-{checkpointing}", config=settings)
        counts[checkpointing] = len(forwards)
    assert counts[False] > 0 and counts[True] == 2 * counts[False]


def test_packing_keeps_examples_from_attending_to_each_other(env):
    import torch

    from sqltune.train.data import build_examples, collate

    _, data = env
    path = resolve_base_model("tiny-random-llama")
    tokenizer = load_tokenizer(path)
    examples, _ = build_examples(read_jsonl(data)[:3], tokenizer, "chat", 160)
    for attn in ("sdpa", "eager"):
        model = load_model(path, attn_implementation=attn)
        with torch.no_grad():
            # use_cache=False as in training: with a KV cache transformers does not look for packed sequences.
            inputs = {k: v for k, v in collate(examples, 0, packing=True).items() if k != "labels"}
            packed = model(**inputs, use_cache=False).logits[0]
            alone = [model(input_ids=torch.tensor([ex.input_ids])).logits[0] for ex in examples]
        torch.testing.assert_close(packed, torch.cat(alone), atol=1e-4, rtol=1e-4)


def test_examples_mask_the_prompt_and_trim_only_the_schema(env):
    from sqltune.train.data import IGNORE, build_examples

    tokenizer = load_tokenizer(resolve_base_model("tiny-random-llama"))
    records = make_records(3)
    records[1]["schema"] = "\n".join(f"table_{i}: id (number), name (text)" for i in range(50))
    records[2]["question"] = "why " * 400
    examples, stats = build_examples(records, tokenizer, "chat", 200)
    assert (stats.total, stats.trimmed, stats.dropped, stats.left_out) == (3, 1, ["q2"], {})
    # A record with schema units (a schema filter's) loses whole tables, counted by kind.
    lines = records[1]["schema"].split("\n")
    records[1]["schema_units"] = [{"kind": "table", "table": f"table_{i}", "text": line, "drop": 49 - i}
                                  for i, line in enumerate(lines)]  # fmt: skip
    _, stats = build_examples(records, tokenizer, "chat", 200)
    assert stats.trimmed == 1 and 0 < stats.left_out["table"] < 50
    for example, record in zip(examples, records, strict=False):
        assert len(example.input_ids) <= 200
        answer = [t for t, label in zip(example.input_ids, example.labels, strict=True) if label != IGNORE]
        assert tokenizer.decode(answer) == record["sql"] + tokenizer.eos_token
        assert example.labels[-1] == tokenizer.eos_token_id and example.labels[0] == IGNORE
        assert record["question"] in tokenizer.decode(example.input_ids)


def test_a_killed_run_resumes_from_its_checkpoint(env, lora_run, tmp_path):
    """Kill the CLI after its first checkpoint, rerun it: same step count and the loss of an unbroken run."""
    _, data = env
    _, reference = lora_run
    out, ckpt = tmp_path / "adapter", tmp_path / "ckpt"
    command = [str(VENV_BIN / "sqltune"), *cli_args(data, out, "--grad-accum", "2"), "--checkpoint-dir", str(ckpt),
               "--checkpoint-every", "2"]  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(ckpt.glob("step-*/state.json")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL, first.stderr.read().decode()[-2000:]
    assert not out.exists()  # the killed run left no adapter
    assert _lock_holder(str(ckpt))["pid"] == first.pid  # and its lock file, no longer locked: the rerun takes it

    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert 2 <= metrics["resumed_from_step"] < 8 and metrics["steps"] == 8
    assert metrics["final_loss"] == pytest.approx(reference["final_loss"], rel=1e-3)
    assert [r["step"] for r in read_jsonl(out / "train_log.jsonl")] == list(range(1, 9))
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-00000006", "step-00000008"]  # keep_checkpoints=2


def test_two_process_data_parallel_matches_gradient_accumulation(env, lora_run, tmp_path):
    """torchrun, 2 CPU processes (gloo), batch 4 each == 1 process, batch 4, 2 micro-batches per step."""
    _, data = env
    _, reference = lora_run
    torchrun = [str(VENV_BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", str(VENV_BIN / "sqltune")]
    result = subprocess.run([*torchrun, *cli_args(data, tmp_path / "ddp")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "train_metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 8
    assert metrics["final_loss"] == pytest.approx(reference["final_loss"], rel=1e-3)


def test_bad_inputs_fail_clearly(env, tmp_path):
    from sqltune.train import train

    _, data = env
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(SqltuneError, match="is empty"):
        train(empty, "tiny-random-llama", tmp_path / "a", config=config())
    with pytest.raises(SqltuneError, match="train data not found"):
        train(tmp_path / "nope.jsonl", "tiny-random-llama", tmp_path / "a", config=config())
    write_jsonl(tmp_path / "nosql.jsonl", [{"id": "x7", "question": "q?", "schema": "t: a"}])
    with pytest.raises(SqltuneError, match="record x7: missing or empty field"):
        train(tmp_path / "nosql.jsonl", "tiny-random-llama", tmp_path / "a", config=config())
    with pytest.raises(SqltuneError, match="base model not found"):
        train(data, str(tmp_path / "no-model"), tmp_path / "a", config=config())
    with pytest.raises(SqltuneError, match=r"target module\(s\) qkv_proj match no module.*q_proj"):
        train(data, "tiny-random-llama", tmp_path / "a", config=config(target_modules="q_proj,qkv_proj"))
    (tmp_path / "array.jsonl").write_text(json.dumps(make_records(1)[0]) + "\n\n[1, 2]\n")
    with pytest.raises(SqltuneError, match=r"array.jsonl:3: a record must be a JSON object, not list \[1, 2\]"):
        train(tmp_path / "array.jsonl", "tiny-random-llama", tmp_path / "a", config=config())
    for name, value in [("lora_rank", 0), ("lora_alpha", 0), ("lora_alpha", -16), ("learning_rate", float("inf")),
                        ("num_epochs", float("nan")), ("weight_decay", -0.1), ("max_grad_norm", -1.0)]:  # fmt: skip
        with pytest.raises(SqltuneError, match=rf"train parameter {name}={value!r} is invalid"):
            config(**{name: value, "max_steps": -1})
    with pytest.raises(SqltuneError, match="lr_scheduler='sideways'"):
        train(data, "tiny-random-llama", tmp_path / "a", config=config(lr_scheduler="sideways"))
    with pytest.raises(SqltuneError, match=f"checkpoint directory {empty} exists and is not a directory"):
        train(data, "tiny-random-llama", tmp_path / "a", config=config(), checkpoint_dir=str(empty))
    assert not (tmp_path / "a").exists()


def test_a_non_finite_loss_stops_the_run(env, tmp_path):
    """A base model with a NaN weight: the first step's loss is NaN and the run stops, writing nothing."""
    from safetensors.torch import load_file, save_file

    from sqltune.train import train

    _, data = env
    broken = tmp_path / "broken"
    shutil.copytree(resolve_base_model("tiny-random-llama"), broken)
    weights = load_file(broken / "model.safetensors")
    weights["model.norm.weight"][0] = float("nan")
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(SqltuneError, match="training loss became nan at step 1"):
        train(data, str(broken), tmp_path / "out", config=config())
    assert not (tmp_path / "out").exists()


def test_cli_rejects_a_nonsensical_setting_by_name(env, tmp_path):
    from typer.testing import CliRunner

    from sqltune.cli import app

    _, data = env
    result = CliRunner().invoke(app, cli_args(data, tmp_path / "a", "--lora-alpha", "0"))
    assert isinstance(result.exception, SqltuneError), result.output
    assert "train parameter lora_alpha=0 is invalid: expected > 0" in str(result.exception)
    assert not (tmp_path / "a").exists()


def damage(path: Path, how: str) -> None:
    """Truncate a file to half its size, or flip one byte in its middle (same size, other sha256)."""
    size = path.stat().st_size
    if how == "truncate":
        os.truncate(path, size // 2)
    else:
        raw = bytearray(path.read_bytes())
        raw[size // 2] ^= 0xFF
        path.write_bytes(raw)


def test_a_damaged_checkpoint_falls_back_to_the_one_before(env, tmp_path, caplog):
    """A truncated adapter in the newest checkpoint: the rerun warns and resumes from the previous one."""
    from sqltune.train import train

    _, data = env
    ckpt = tmp_path / "ckpt"
    umask = os.umask(0o022)
    try:
        first = train_checkpointed(
            data,
            tmp_path / "a",
            str(ckpt),
        )
    finally:
        os.umask(umask)
    for path in [ckpt, *ckpt.rglob("*")]:  # other users of the group (the next pipeline step) can resume
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path
    damage(ckpt / "step-00000006" / "adapter.safetensors", "truncate")
    with caplog.at_level(logging.WARNING):
        # Asking for a fresh start if all are damaged is no change of settings: the run still resumes.
        settings = config(max_steps=6, checkpoint_every=2, fresh_if_corrupt_checkpoint=True)
        again = train(data, "tiny-random-llama", tmp_path / "b", config=settings, checkpoint_dir=str(ckpt))
    assert again["resumed_from_step"] == 4 and again["steps"] == 6
    assert again["final_loss"] == first["final_loss"]
    assert re.search(r"step-00000006 is unusable: adapter.safetensors has \d+ bytes, \d+ expected", caplog.text)
    assert f"resuming from {ckpt / 'step-00000004'}" in caplog.text
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-00000004", "step-00000006"]  # step 6 written anew


def test_with_no_usable_checkpoint_a_run_fails_unless_told_to_start_fresh(env, tmp_path):
    """Every checkpoint damaged: an error naming the directory, the files and the flag; with the flag, step 0."""
    from typer.testing import CliRunner

    from sqltune.cli import app
    from sqltune.train.checkpoint import complete_steps

    _, data = env
    ckpt = tmp_path / "ckpt"
    first = train_checkpointed(
        data,
        tmp_path / "a",
        str(ckpt),
    )
    damage(ckpt / "step-00000006" / "optimizer.pt", "flip")
    damage(ckpt / "step-00000004" / "state.json", "truncate")
    with pytest.raises(SqltuneError) as error:
        train_checkpointed(
            data,
            tmp_path / "b",
            str(ckpt),
        )
    message = str(error.value)
    assert f"no usable checkpoint under {ckpt}" in message and "--fresh-if-corrupt-checkpoint" in message
    assert "step-00000006: optimizer.pt does not match its sha256" in message
    assert "step-00000004: state.json cannot be read" in message
    assert not (tmp_path / "b").exists()

    args = cli_args(data, tmp_path / "c", "--max-steps", "6", "--checkpoint-dir", str(ckpt),
                    "--checkpoint-every", "2", "--fresh-if-corrupt-checkpoint")  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "c" / "train_metrics.json").read_text())
    assert metrics["resumed_from_step"] is None and metrics["final_loss"] == first["final_loss"]
    assert complete_steps(str(ckpt)) == [4, 6]


def test_a_restarted_run_prunes_the_checkpoints_it_skipped(tmp_path):
    """Saving step 2 over unusable steps 4 and 6 removes those, not the new step 2 (keep=2 counts back from it)."""
    from sqltune.train import checkpoint
    from sqltune.train.checkpoint import CheckpointState

    root = str(tmp_path / "ckpt")
    writers = {"weights.bin": lambda path: path.write_bytes(b"w" * 10)}
    for step in (2, 4, 6):
        checkpoint.save(root, CheckpointState(step), writers, keep=3)
    checkpoint.save(root, CheckpointState(2, rows=[{"restarted": True}]), writers, keep=2)
    assert checkpoint.complete_steps(root) == [2]
    for step in (4, 6):
        checkpoint.save(root, CheckpointState(step), writers, keep=2)
    assert checkpoint.complete_steps(root) == [4, 6]
    state, loaded = checkpoint.load_latest(root, {"weights.bin": Path.read_bytes})
    assert state.step == 6 and loaded == {"weights.bin": b"w" * 10}


def test_checkpoints_on_s3_are_pruned_and_resumed(env, s3_env):
    """Checkpoints under an s3:// prefix (real SeaweedFS): the latest two kept, a rerun resumes from the last."""
    from sqltune.train import train
    from sqltune.train.checkpoint import complete_steps

    root, data = env
    s3_env.create_bucket("train-ckpt")
    prefix = "s3://train-ckpt/runs/r1"
    first = train_checkpointed(data, root / "s3-a", prefix)
    assert complete_steps(prefix) == [4, 6]
    again = train_checkpointed(data, root / "s3-b", prefix)
    assert again["resumed_from_step"] == 6 and again["steps"] == 6
    assert again["final_loss"] == first["final_loss"]
    with pytest.raises(SqltuneError, match=r"different settings.*learning_rate"):
        train(
            data,
            "tiny-random-llama",
            root / "s3-c",
            config=config(max_steps=6, learning_rate=1e-3),
            checkpoint_dir=prefix,
        )


def _lock_holder(ckpt: str, s3=None) -> dict | None:
    """Who holds checkpoint directory `ckpt` by what its lock file or lease object says (None: nobody says)."""
    from sqltune.train.lock import LOCK_FILE

    if s3 is None:
        path = Path(ckpt) / LOCK_FILE
        text = path.read_text() if path.is_file() else ""
    else:
        found = _lease(s3, ckpt)
        text = json.dumps(found[0]) if found else ""
    try:
        return json.loads(text)
    except ValueError:  # not there, or not written yet
        return None


def _lease(s3, ckpt: str) -> tuple[dict, object, object] | None:
    """The lease object under s3:// prefix `ckpt`, its Last-Modified and the server's time now."""
    from email.utils import parsedate_to_datetime

    from sqltune.train.lock import LEASE

    bucket, _, prefix = ckpt.removeprefix("s3://").partition("/")
    client = s3.client()
    try:
        reply = client.get_object(Bucket=bucket, Key=f"{prefix}/{LEASE}")
    except client.exceptions.NoSuchKey:
        return None
    now = parsedate_to_datetime(reply["ResponseMetadata"]["HTTPHeaders"]["date"])
    return json.loads(reply["Body"].read()), reply["LastModified"], now


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_second_run_on_a_checkpoint_directory_in_use_is_refused_while_the_first_completes(
    env, tmp_path, request, where
):
    """The first run is frozen (SIGSTOP) after its first checkpoint, so the two surely overlap; the second exits 2
    naming the directory and the holder, writes nothing, and the first, continued, completes and lets go."""
    import socket

    from sqltune.train.checkpoint import complete_steps

    _, data = env
    s3 = request.getfixturevalue("s3_env") if where == "s3" else None
    if s3:
        s3.create_bucket("train-lock")
    ckpt = "s3://train-lock/run" if s3 else str(tmp_path / "ckpt")

    def command(out: Path) -> list[str]:
        return [str(VENV_BIN / "sqltune"), *cli_args(data, out), "--checkpoint-dir", ckpt, "--checkpoint-every", "2"]

    first = subprocess.Popen(command(tmp_path / "first"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not complete_steps(ckpt) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None and complete_steps(ckpt), first.stderr.read()[-2000:]
    os.kill(first.pid, signal.SIGSTOP)  # 6 of its 8 steps to go
    try:
        second = subprocess.run(command(tmp_path / "second"), capture_output=True, text=True, timeout=300)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == 2, second.stderr[-2000:]
    error = second.stderr.strip().splitlines()[-1]
    assert error.startswith(
        f"error: checkpoint directory {ckpt} is in use by another training run (pid {first.pid} on "
        f"{socket.gethostname()}, since "
    ), error
    assert "wait for it to finish" in error and "another checkpoint directory (--checkpoint-dir)" in error, error
    if s3:
        assert re.search(r"whose lease s3://\S+ expires at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", error), error
    assert not (tmp_path / "second").exists()

    assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    metrics = json.loads((tmp_path / "first" / "train_metrics.json").read_text())
    assert metrics["steps"] == 8 and metrics["resumed_from_step"] is None
    assert _lock_holder(ckpt, s3) is None  # let go at the end (locally, the kernel's lock went with the process)


# What a launcher holding an S3 checkpoint directory does, with a lease term of argv[2] seconds.
HOLD_LEASE = """
import sys
from sqltune.train.lock import checkpoint_lock
with checkpoint_lock(sys.argv[1], ttl_s=float(sys.argv[2])):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_an_s3_lease_is_renewed_while_its_run_lives_and_taken_over_once_it_died(env, s3_env, tmp_path, caplog):
    """A holder of a 4 s lease: past its first term the lease is still held (its heartbeat renewed it); SIGKILLed,
    it renews no more, and once its lease expired (by the server's clock) a training run takes the directory over."""
    from datetime import timedelta

    _, data = env
    s3_env.create_bucket("train-lease")
    ckpt, ttl = "s3://train-lease/run", 4
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LEASE, ckpt, str(ttl)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout.readline() == "held\n"
    lease, taken, _ = _lease(s3_env, ckpt)
    assert lease["pid"] == holder.pid and lease["ttl_s"] == ttl

    def wait_until_past(moment: object) -> tuple[dict, object, object]:
        """Poll until the server's clock is past `moment` (a callable of the current lease) or the lease is gone."""
        deadline = time.monotonic() + 60
        while (found := _lease(s3_env, ckpt)) and found[2] < moment(found):
            assert time.monotonic() < deadline
            time.sleep(0.25)
        return found

    lease, renewed, _ = wait_until_past(lambda _: taken + timedelta(seconds=ttl + 2))
    assert lease["owner"] and renewed > taken and holder.poll() is None
    with pytest.raises(SqltuneError, match=rf"{ckpt} is in use by another training run \(pid {holder.pid} on .*"
                                           r"expires at .* UTC unless that run renews it"):  # fmt: skip
        train_checkpointed(data, tmp_path / "refused", ckpt)

    holder.kill()
    holder.wait()
    wait_until_past(lambda found: found[1] + timedelta(seconds=ttl))  # not renewed for a whole term
    with caplog.at_level(logging.WARNING):
        metrics = train_checkpointed(data, tmp_path / "after", ckpt)
    assert f"taking over the lease of a run that stopped renewing it (pid {holder.pid} on " in caplog.text
    assert metrics["steps"] == 6 and metrics["resumed_from_step"] is None
    assert _lease(s3_env, ckpt) is None  # released at the end


def test_a_damaged_checkpoint_on_s3_falls_back_and_leaves_no_download(env, s3_env, monkeypatch, tmp_path, caplog):
    """On S3 too: the truncated newest is skipped; the local copies resume reads are removed, also on failure."""
    import tempfile

    _, data = env
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    client = s3_env.client()
    s3_env.create_bucket("train-damaged")
    prefix = "s3://train-damaged/runs/r1"

    def run(name: str) -> dict:
        return train_checkpointed(data, tmp_path / name, prefix)

    def truncate(step: int, name: str) -> None:
        key = f"runs/r1/step-{step:08d}/{name}"
        body = client.get_object(Bucket="train-damaged", Key=key)["Body"].read()
        client.put_object(Bucket="train-damaged", Key=key, Body=body[: len(body) // 2])

    first = run("a")
    truncate(6, "adapter.safetensors")
    with caplog.at_level(logging.WARNING):
        again = run("b")
    assert again["resumed_from_step"] == 4 and again["final_loss"] == first["final_loss"]
    assert f"checkpoint {prefix}/step-00000006 is unusable: adapter.safetensors has" in caplog.text
    assert list(scratch.iterdir()) == []
    truncate(4, "rng.pt")
    truncate(6, "scheduler.pt")
    with pytest.raises(SqltuneError, match=r"step-00000006: scheduler.pt has .*step-00000004: rng.pt has"):
        run("c")
    assert list(scratch.iterdir()) == []


def test_bench_train_runs_one_configuration_through_the_library(env):
    """benchmarks/bench_train.py's per-configuration mode builds TrainConfig and calls train() as they are now."""
    _, data = env
    one = json.dumps({"method": "lora", "packing": True, "gradient_checkpointing": True})
    command = [sys.executable, str(Path(__file__).parents[1] / "benchmarks" / "bench_train.py"), "--one", one,
               "--data", str(data), "--model", "tiny-random-llama", "--steps", "1", "--batch-size", "2",
               "--seq-len", "160"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    assert metrics["steps"] == 1 and metrics["tokens_per_s"] > 0 and metrics["peak_memory_gb"] > 0
