"""Publish/pull cost against a local SeaweedFS server, and the server's own startup time.

Baselines, measured in the same run on the same server: uploading the same files with plain
`boto3 upload_file` (no checksums, no verification, no manifest) and downloading them with
`sqltune.uri.download_dir` (no sha256 check). The ratios are the price of verified, atomic publishing.

    .venv/bin/python benchmarks/bench_publish.py [--weights-mib 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("SQLTUNE_PROGRESS", "0")

from sqltune.artifacts import artifact_dir
from sqltune.locals3 import local_s3
from sqltune.publish import PublishConfig, Registry, publish
from sqltune.uri import download_dir


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def make_inputs(root: Path, weights_mib: int) -> tuple[Path, Path]:
    """An adapter artifact (random weights of the given size, tokenizer, PEFT config) and an evaluation."""
    with artifact_dir(root / "adapter", "adapter", parameters={"base_model": "bench", "method": "lora"}) as out:
        (out / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16}))
        (out / "adapter_model.safetensors").write_bytes(os.urandom(weights_mib << 20))
        (out / "tokenizer.json").write_bytes(os.urandom(2 << 20))
    with artifact_dir(root / "eval", "evaluation") as out:
        (out / "metrics.json").write_text(json.dumps({"ex": {"all": 0.5}, "em": {"all": 0.4}, "levels": ["all"]}))
        (out / "report.md").write_text("# report\n")
    return root / "adapter", root / "eval"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights-mib", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        starts = []
        for i in range(args.repeat):
            began = time.perf_counter()
            with local_s3(root / f"cold-{i}"):
                starts.append(time.perf_counter() - began)
        print(f"s3 server cold start to ready: median {statistics.median(starts):.2f}s (min {min(starts):.2f}s)")

        adapter, evaluation = make_inputs(root, args.weights_mib)
        size_mib = sum(p.stat().st_size for p in adapter.rglob("*") if p.is_file()) / (1 << 20)
        with local_s3(root / "s3", buckets=["bench"]) as server:
            os.environ.update(server.env())
            restart = timed(lambda: (server.stop(), server.start()))
            print(f"s3 server restart (existing data) to ready: {restart:.2f}s")
            client = server.client()
            files = sorted(p for p in adapter.rglob("*") if p.is_file())
            rows = []
            for i in range(args.repeat):
                plain_up = timed(
                    lambda i=i: [client.upload_file(str(p), "bench", f"plain/{i}/{p.name}") for p in files]
                )
                ours_up = timed(
                    lambda i=i: publish(
                        adapter,
                        evaluation,
                        config=PublishConfig(bucket="bench", prefix="ours", model_name="m", version=f"v{i}"),
                    )
                )
                plain_down = timed(lambda i=i: download_dir(f"s3://bench/plain/{i}", root / f"plain-{i}"))
                ours_down = timed(lambda i=i: Registry("bench", "ours", "m").pull(f"v{i}", root / f"pulled-{i}"))
                rows.append((plain_up, ours_up, plain_down, ours_down))
        plain_up, ours_up, plain_down, ours_down = (min(column) for column in zip(*rows, strict=True))
        print(f"adapter: {size_mib:.0f} MiB in {len(files)} files; best of {args.repeat}")
        print(f"publish (verified, manifest last): {ours_up:.2f}s = {size_mib / ours_up:.0f} MiB/s")
        print(f"  baseline plain upload_file:      {plain_up:.2f}s; ratio {ours_up / plain_up:.2f}x")
        print(f"pull (sha256 verified):            {ours_down:.2f}s = {size_mib / ours_down:.0f} MiB/s")
        print(f"  baseline download_dir:           {plain_down:.2f}s; ratio {ours_down / plain_down:.2f}x")


if __name__ == "__main__":
    main()
