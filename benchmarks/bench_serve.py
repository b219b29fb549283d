"""Serving throughput: 8 concurrent clients against one client at a time, on the same `sqltune serve`, in one run.

The server is the real command (`sqltune serve --adapter ...`, HF backend on the CPU) with SmolLM2-135M-Instruct
and a LoRA adapter on it: `--adapter DIR` (a trained one, e.g. from `make demo`), else one made here with PEFT's
default initialisation (its B matrices are zero: it answers as the base model does, at an adapter's cost). The
questions are Spider dev's first `--n` (in file order, so grouped by database as the real set is), or the sample
dataset's dev questions when Spider is absent, asked through `/v1/sql` (predict's prompt, `chat` template). The
baseline is the same server answering the same questions one at a time; then `--clients` clients share them. The
two alternate in `--rounds` rounds over slices of the questions, so a machine whose load drifts (a shared one)
weighs on both alike. It prints both throughputs and their ratio (goal >= 3x), p50/p95 latency of each, how many
answers are the same SQL as the one-at-a-time answers, and the mean batch the server formed (from its /metrics).

    .venv/bin/python benchmarks/bench_serve.py [--n 32] [--clients 8] [--rounds 4] [--max-new-tokens 60]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("SQLTUNE_PROGRESS", "0")

import requests

from sqltune.artifacts import artifact_dir
from sqltune.locals3 import free_ports
from sqltune.sample_data import write_sample_dataset
from sqltune.sql.extract import NO_SQL


def make_adapter(base_model: str, out: Path) -> Path:
    """A LoRA adapter artifact on `base_model` with PEFT's default (identity) initialisation, chat template."""
    from peft import LoraConfig, get_peft_model

    from sqltune.models import load_model, resolve_base_model

    model = get_peft_model(load_model(resolve_base_model(base_model)), LoraConfig(r=16, target_modules="all-linear"))
    parameters = {"base_model": base_model, "prompt_template": "chat", "max_seq_len": 2048}
    with artifact_dir(out, "adapter", parameters=parameters) as tmp:
        model.save_pretrained(tmp)
    return out


def questions(spider: Path, sample: Path, n: int) -> tuple[list[dict[str, str]], Path, Path]:
    """The first `n` dev questions and the tables.json and database folder they are asked about."""
    root = spider if (spider / "dev.json").is_file() and (spider / "database").is_dir() else sample
    if root == sample:
        print(f"Spider not found at {spider}: the sample dataset's dev questions")
        write_sample_dataset(sample)
    dev = json.loads((root / "dev.json").read_text(encoding="utf-8"))[:n]
    return [{"question": e["question"], "db_id": e["db_id"]} for e in dev], root / "tables.json", root / "database"


def ask(url: str, question: dict[str, str]) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    answer = requests.post(f"{url}/v1/sql", json=question, timeout=600)
    answer.raise_for_status()
    return answer.json(), time.perf_counter() - started


def run(todo: list[dict[str, str]], url: str, clients: int) -> tuple[list[tuple[dict[str, Any], float]], float]:
    """Every question's answer and latency, and the wall time, with `clients` clients sharing the questions."""
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda q: ask(url, q), todo))
    return results, time.perf_counter() - started


def report(label: str, results: list[tuple[dict[str, Any], float]], seconds: float) -> None:
    latencies = sorted(latency for _, latency in results)
    p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
    tokens = sum(answer["completion_tokens"] for answer, _ in results)
    print(
        f"{label:<24} {len(results)} questions in {seconds:7.1f} s: {len(results) / seconds:6.3f} questions/s, "
        f"{tokens / seconds:6.1f} new tokens/s, latency p50 {statistics.median(latencies):6.2f} s, p95 {p95:6.2f} s",
        flush=True,
    )


def batches(url: str) -> tuple[float, float]:
    text = requests.get(f"{url}/metrics", timeout=30).text
    found = dict(re.findall(r"^sqltune_serve_batch_sequences_(sum|count) (\S+)$", text, re.MULTILINE))
    return float(found.get("sum", 0)), float(found.get("count", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spider", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/spider")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--adapter", type=Path, help="a trained adapter (default: an identity LoRA made here)")
    parser.add_argument("--n", type=int, default=32, help="questions asked in each mode")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the two modes over question slices")
    parser.add_argument("--max-new-tokens", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, help="the server's batching window (default: its own)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))  # stop the server on the way out

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        adapter = args.adapter or make_adapter(args.model, work / "adapter")
        todo, tables, databases = questions(args.spider, work / "sample", args.n)
        port = free_ports(1)[0]
        url = f"http://127.0.0.1:{port}"
        command = [
            sys.executable, "-m", "sqltune.cli", "serve", "--adapter", str(adapter), "--base-model", args.model,
            "--port", str(port), "--tables", str(tables), "--db-dir", str(databases),
            "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.batch_size),
        ]  # fmt: skip
        command += ["--batch-wait-ms", str(args.batch_wait_ms)] if args.batch_wait_ms is not None else []
        with (work / "server.log").open("w") as log:
            server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 600
                while True:
                    if server.poll() is not None or time.monotonic() > deadline:
                        sys.exit("the server did not start:\n" + (work / "server.log").read_text()[-3000:])
                    try:
                        if requests.get(f"{url}/ready", timeout=5).status_code == 200:
                            break
                    except requests.ConnectionError:
                        pass
                    time.sleep(0.5)
                import torch

                print(f"model {args.model}, adapter {args.adapter or 'identity LoRA (r=16, all linear)'}, "
                      f"{torch.get_num_threads()} CPU threads, max_new_tokens {args.max_new_tokens}, "
                      f"{len({q['db_id'] for q in todo})} databases")  # fmt: skip
                ask(url, todo[0])  # warm-up
                sequential: list[tuple[dict[str, Any], float]] = []
                concurrent: list[tuple[dict[str, Any], float]] = []
                sequential_s = concurrent_s = rows = calls = 0.0
                size = -(-len(todo) // args.rounds)
                for start in range(0, len(todo), size):
                    part = todo[start : start + size]
                    results, seconds = run(part, url, 1)
                    sequential, sequential_s = sequential + results, sequential_s + seconds
                    before = batches(url)
                    results, seconds = run(part, url, args.clients)
                    after = batches(url)
                    concurrent, concurrent_s = concurrent + results, concurrent_s + seconds
                    rows, calls = rows + after[0] - before[0], calls + after[1] - before[1]
                    print(f"round {start // size + 1}: {len(part)} questions, one at a time {sequential_s:.1f} s "
                          f"so far, {args.clients} clients {concurrent_s:.1f} s so far", flush=True)  # fmt: skip
            finally:
                server.terminate()
                server.wait(60)
    report("one client at a time", sequential, sequential_s)
    report(f"{args.clients} concurrent clients", concurrent, concurrent_s)
    print(f"throughput ratio {args.clients} clients / one at a time: {sequential_s / concurrent_s:.2f}x (goal >= 3x)")
    print(f"mean sequences per generate() call with {args.clients} clients: {rows / calls:.2f}")
    pairs = list(zip((a for a, _ in concurrent), (b for b, _ in sequential), strict=True))
    same_sql, same_raw = sum(a["sql"] == b["sql"] for a, b in pairs), sum(a["raw"] == b["raw"] for a, b in pairs)
    with_sql = sum(b["sql"] != NO_SQL for _, b in pairs)
    print(f"same SQL as one at a time: {same_sql}/{len(pairs)} (same text: {same_raw}; {with_sql} answers hold SQL)")


if __name__ == "__main__":
    main()
