"""Training throughput (real tokens/s) and peak memory: naive vs optimized batching, LoRA vs QLoRA.

CPU mode (default): SmolLM2-135M-Instruct on real Spider train questions (synthetic ones when ../shared/data
is absent). Baseline in the same run: every batch padded to max_seq_len, random order, no packing; gradient
checkpointing is measured against packing without it. Each configuration runs in its own process, so peak RSS
is its own.

GPU mode (--gpu): a Qwen2.5-7B architecture with random weights (no download) at --seq-len, LoRA and QLoRA;
prints tokens/s, peak GiB (torch max allocated) and model FLOP utilization, counting 4·params FLOPs per
trained token for LoRA (forward 2N + activation gradients 2N, no weight gradients for the frozen base).

Workers mode (--workers, CPU): one process vs `sqltune train --nproc-per-node 2` with ddp and with fsdp, the
same global batch (the single process accumulates 2 micro-batches): tokens/s, rank 0's peak RSS, and the
weights + optimizer state one worker holds (fsdp's target: <= 0.6x the single process at 2 workers).

    .venv/bin/python benchmarks/bench_train.py [--steps 4] [--seq-len 512]
    .venv/bin/python benchmarks/bench_train.py --workers [--steps 3] [--seq-len 256]
    python benchmarks/bench_train.py --gpu [--seq-len 2048] [--steps 10] [--peak-tflops 989]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("SQLTUNE_PROGRESS", "0")

from sqltune.artifacts import write_jsonl
from sqltune.train import TrainConfig, train

SPIDER = Path(__file__).resolve().parents[2] / "shared/data/spider"
NAIVE = {"pad_to_max_length": True, "group_by_length": False, "packing": False}
CPU_RUNS = {
    "naive (pad to max, random order)": {"method": "lora", **NAIVE},
    "dynamic padding + length grouping": {"method": "lora", "group_by_length": True},
    "packing (flattened, no padding)": {"method": "lora", "packing": True},
    "qlora + packing": {"method": "qlora", "packing": True},
    "packing + gradient checkpointing": {"method": "lora", "packing": True, "gradient_checkpointing": True},
}
# Dense bf16 tensor-core peak, TFLOP/s (SXM parts).
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}


def records(out: Path, count: int) -> Path:
    """Train records from the real Spider train split via the preprocess step, or synthetic ones."""
    if (SPIDER / "train_spider.json").is_file():
        from sqltune.preprocess import PreprocessConfig, preprocess

        preprocess(
            SPIDER,
            out / "spider",
            config=PreprocessConfig(dataset="spider", split="train", schema_style="dbgpt", limit=count),
        )
        return out / "spider" / "records.jsonl"
    rows = [
        {"id": f"s{i}", "question": f"How many rows of t{i % 7} have x > {i}?" + " please" * (i % 13),
         "schema": "\n".join(f"t{j}: id (number), x (number)" for j in range(1 + i % 9)),
         "sql": f"SELECT count(*) FROM t{i % 7} WHERE x > {i}"}
        for i in range(count)
    ]  # fmt: skip
    write_jsonl(out / "records.jsonl", rows)
    return out / "records.jsonl"


def run_one(args: argparse.Namespace) -> None:
    """One configuration in this process; prints its metrics as JSON on the last line."""
    settings = dict(
        max_steps=args.steps, batch_size=args.batch_size, max_seq_len=args.seq_len, prompt_template="chat",
        gradient_checkpointing=args.gpu, checkpoint_every=0, warmup_ratio=0.0,
    )  # fmt: skip
    config = TrainConfig(**{**settings, **json.loads(args.one)})
    with tempfile.TemporaryDirectory() as tmp:
        metrics = train(args.data, args.model, Path(tmp) / "adapter", config=config)
    print(json.dumps(metrics))


def spawn(args: argparse.Namespace, overrides: dict) -> dict:
    command = [sys.executable, __file__, "--one", json.dumps(overrides), "--data", str(args.data)]
    for flag in ("model", "steps", "batch_size", "seq_len"):
        command += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
    if args.gpu:
        command.append("--gpu")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{overrides} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def gpu_model(root: Path) -> str:
    """A Qwen2.5-7B architecture with random bf16 weights, saved once, with the tiny test tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from sqltune.models import resolve_base_model

    path = root / "qwen2.5-7b-random"
    if (path / "config.json").is_file():
        return str(path)
    config = AutoConfig.for_model(
        "qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1e6,
        tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(path)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(resolve_base_model("tiny-random-qwen2")).save_pretrained(path)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--workers", action="store_true", help="1 process vs 2 workers (ddp, fsdp) on the CPU")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--examples", type=int, default=128)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps = args.steps or (10 if args.gpu else 3 if args.workers else 4)
    args.batch_size = args.batch_size or (4 if args.gpu or args.workers else 8)
    args.seq_len = args.seq_len or (2048 if args.gpu else 256 if args.workers else 512)
    if args.one:
        run_one(args)
        return

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    args.data = records(work, args.examples)
    if args.gpu:
        gpu_main(args, work)
        return
    if args.workers:
        workers_main(args, work)
        return
    args.model = "smollm2-135m"
    print(f"SmolLM2-135M on CPU, {args.steps} steps x batch {args.batch_size}, max_seq_len {args.seq_len}; {args.data}")
    results = {name: spawn(args, overrides) for name, overrides in CPU_RUNS.items()}
    base = results["naive (pad to max, random order)"]
    print(f"{'configuration':36} {'tokens/s':>9} {'x naive':>8} {'pad %':>6} {'peak GiB':>9} {'loss':>7}")
    for name, m in results.items():
        print(f"{name:36} {m['tokens_per_s']:9.1f} {m['tokens_per_s'] / base['tokens_per_s']:8.2f} "
              f"{100 * m['padding_fraction']:6.1f} {m['peak_memory_gb']:9.2f} {m['final_loss']:7.3f}")  # fmt: skip
    lora, qlora = results["packing (flattened, no padding)"], results["qlora + packing"]
    print(
        f"QLoRA / LoRA (both packed): step time x{lora['tokens_per_s'] / qlora['tokens_per_s']:.2f}, "
        f"peak memory x{qlora['peak_memory_gb'] / lora['peak_memory_gb']:.2f} (process RSS on CPU)"
    )
    recomputed = results["packing + gradient checkpointing"]
    slower = lora["tokens_per_s"] / recomputed["tokens_per_s"]
    print(
        f"gradient checkpointing / none (both packed): step time x{slower:.2f}, "
        f"peak memory x{recomputed['peak_memory_gb'] / lora['peak_memory_gb']:.2f} (process RSS on CPU)"
    )


WORKER_RUNS = {
    "1 process, 2 micro-batches": ["--grad-accum", "2"],
    "2 workers, ddp": ["--nproc-per-node", "2", "--parallelism", "ddp"],
    "2 workers, fsdp": ["--nproc-per-node", "2", "--parallelism", "fsdp"],
}


def workers_main(args: argparse.Namespace, work: Path) -> None:
    """Each run is one `sqltune train` command, as a user starts it; its JSON summary is rank 0's metrics."""
    sqltune = str(Path(sys.executable).parent / "sqltune")
    print(f"SmolLM2-135M on CPU, LoRA, {args.steps} steps x global batch {2 * args.batch_size}, "
          f"max_seq_len {args.seq_len}; {args.data}")  # fmt: skip
    results = {}
    for name, extra in WORKER_RUNS.items():
        command = [sqltune, "train", "--data", str(args.data), "--base-model", "smollm2-135m",
                   "--out", str(work / name.replace(" ", "-").replace(",", "")), "--max-steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--max-seq-len", str(args.seq_len), "--template", "chat",
                   "--no-gradient-checkpointing", "--checkpoint-every", "0", "--warmup-ratio", "0", *extra]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
        results[name] = json.loads(done.stdout)
    base = results["1 process, 2 micro-batches"]
    print(f"{'run':28} {'tokens/s':>9} {'x 1 proc':>8} {'peak RSS GiB':>13} {'weights+optim GiB':>18} {'x 1 proc':>8} "
          f"{'loss':>7}")  # fmt: skip
    for name, m in results.items():
        held = m["weights_and_optimizer_gb"]
        print(f"{name:28} {m['tokens_per_s']:9.1f} {m['tokens_per_s'] / base['tokens_per_s']:8.2f} "
              f"{m['peak_memory_gb']:13.2f} {held:18.3f} {held / base['weights_and_optimizer_gb']:8.2f} "
              f"{m['final_loss']:7.3f}")  # fmt: skip
    fsdp = results["2 workers, fsdp"]["weights_and_optimizer_gb"] / base["weights_and_optimizer_gb"]
    print(f"fsdp weights + optimizer state per worker: x{fsdp:.2f} of one process (target <= 0.6)")


def gpu_main(args: argparse.Namespace, work: Path) -> None:
    import torch

    name = torch.cuda.get_device_name()
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    args.model = gpu_model(work)
    print(f"Qwen2.5-7B architecture, random weights, on {name}; seq {args.seq_len}, batch {args.batch_size}")
    results = {method: spawn(args, {"method": method, "packing": True}) for method in ("lora", "qlora")}
    for method, m in results.items():
        params = m["total_params"] - m["trainable_params"]
        mfu = m["tokens_per_s"] * 4 * params / (peak * 1e12) if peak else float("nan")
        print(
            f"{method:6} {m['tokens_per_s']:9.0f} tokens/s  peak {m['peak_memory_gb']:6.1f} GiB  MFU {100 * mfu:5.1f}%"
        )
    lora, qlora = results["lora"], results["qlora"]
    print(
        f"QLoRA / LoRA: step time x{lora['tokens_per_s'] / qlora['tokens_per_s']:.2f} (target <= 1.3), "
        f"memory x{qlora['peak_memory_gb'] / lora['peak_memory_gb']:.2f} (target <= 0.55)"
    )


if __name__ == "__main__":
    main()
