"""Preprocessing throughput (records/s) on the real Spider dev set, per schema style.

Baseline, measured in the same run: serializing the schema for every record (for `rich`, reopening the
SQLite file per record to read sample values) instead of once per database. Also reports the whole
`preprocess` call (read, hardness, prompts, artifact write) per style.

    .venv/bin/python benchmarks/bench_preprocess.py [--spider ../shared/data/spider] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("SQLTUNE_PROGRESS", "0")

from sqltune.datasets import read_dataset
from sqltune.preprocess import PreprocessConfig, preprocess
from sqltune.preprocess.run import build_records, db_file, make_record
from sqltune.preprocess.schema_text import STYLES, serialize_schema
from sqltune.sql.schema import load_tables


def best_of(repeat: int, work: Callable[[], object]) -> float:
    """The fastest of `repeat` runs, in seconds (the least disturbed by other processes)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spider", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/spider")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not (args.spider / "dev.json").is_file():
        raise SystemExit(f"Spider not found at {args.spider} (pass --spider DIR)")

    layout = read_dataset("spider", args.spider, "dev")
    schemas = load_tables(layout.tables_file)
    examples = layout.examples
    n, db_ids = len(examples), sorted({e.db_id for e in examples})

    def naive(style: str) -> list[dict]:
        return [
            make_record(e, serialize_schema(schemas[e.db_id], style, db_file(layout.database_dir, e.db_id)), "alpaca",
                        "spider", None)
            for e in examples
        ]  # fmt: skip

    def cached_text_only(style: str) -> list[dict]:
        texts = {db: serialize_schema(schemas[db], style, db_file(layout.database_dir, db)) for db in db_ids}
        return [make_record(e, texts[e.db_id], "alpaca", "spider", None) for e in examples]

    print(f"Spider dev: {n} records, {len(db_ids)} databases, best of {args.repeat}")
    print(f"{'style':6} {'per-db rec/s':>13} {'per-record rec/s':>17} {'speedup':>8} {'+hardness rec/s':>16} "
          f"{'preprocess rec/s':>21}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for style in STYLES:
            cached = best_of(args.repeat, lambda s=style: cached_text_only(s))
            baseline = best_of(args.repeat, lambda s=style: naive(s))
            full = best_of(args.repeat, lambda s=style: build_records("spider", layout, examples, schemas, s, "alpaca"))
            end_to_end = best_of(
                args.repeat,
                lambda s=style: preprocess(
                    args.spider, Path(tmp, s), config=PreprocessConfig(dataset="spider", split="dev", schema_style=s)
                ),
            )
            print(
                f"{style:6} {n / cached:13.0f} {n / baseline:17.0f} {baseline / cached:7.1f}x {n / full:16.0f} "
                f"{n / end_to_end:21.0f}"
            )


if __name__ == "__main__":
    main()
