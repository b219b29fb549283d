"""EX+EM on the 1034 Spider dev predictions: parallel workers with cached connections and gold results, against
a naive sequential run of the same evaluator (one worker, a fresh connection per query, gold re-run), in one process.

    .venv/bin/python benchmarks/bench_evaluate.py [--data ../shared/data] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from sqltune.evaluate.config import EvaluateConfig
from sqltune.evaluate.run import evaluate


def _timed(data: Path, out: Path, workers: int, cache: bool = True) -> tuple[float, dict]:
    spider = data / "spider"
    start = time.perf_counter()
    metrics = evaluate(
        spider / "dev_gold.sql",
        data / "spider-predictions" / "din_sql_gpt4.txt",
        spider / "database",
        spider / "tables.json",
        out,
        config=EvaluateConfig(workers=workers),
        cache=cache,
    )
    return time.perf_counter() - start, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    os.environ.setdefault("SQLTUNE_PROGRESS", "0")
    with tempfile.TemporaryDirectory() as tmp:
        naive, naive_metrics = _timed(args.data, Path(tmp) / "naive", workers=1, cache=False)
        fast, fast_metrics = _timed(args.data, Path(tmp) / "fast", workers=args.workers)
    assert naive_metrics["ex"] == fast_metrics["ex"] and naive_metrics["em"] == fast_metrics["em"]
    print(
        f"predictions: 1034 (EX on {fast_metrics['counts']['ex']['all']}, EM on {fast_metrics['counts']['em']['all']})"
    )
    print(f"naive sequential, uncached: {naive:.2f} s")
    print(f"parallel ({args.workers} workers), cached: {fast:.2f} s")
    print(f"speed-up: {naive / fast:.2f}x")


if __name__ == "__main__":
    main()
