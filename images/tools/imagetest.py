"""`make image-test`: build the component images and run each step inside its own image, as the KFP launcher does.

For every selected step: the component's command and arguments from the compiled pipeline
(`pipelines/text2sql/text2sql.yaml`), an executor input whose artifact URIs are `minio://...` (the executor maps them to
`/minio/...`, mounted writable from a host folder), the image's own non-root user, a read-only root
filesystem with a tmpfs /tmp, and no network except for publish, which reaches the SeaweedFS S3 server
(`sqltune.locals3`) on the host. Steps upstream of a selected one that are not selected run the same command
on the host, so `STEPS="evaluate publish"` needs only those two images. Each step's output artifacts must
verify against their manifests and its executor output must hold what the step returns; the CPU images must
not contain torch. The run is tiny: the sample dataset, 2 training steps of tiny-random-llama, 4 prompts.
The pipeline's helper tasks (placement) run in the image they use, and must return what the library decides.
Then the train step's TrainJob follow logic runs through the Kubeflow SDK's container backend on the first
selected image (`trainjob_follow.py`).

When a base image cannot be pulled (no registry reachable), a stand-in is made from the distribution's package
mirror with debootstrap (root only) and passed through the Dockerfile's base-image build argument
(`standin_bases.py`). This module is the driver: what runs where, with which parameters; a step runs as the
launcher does in `launcher_run.py`, and what must hold of an image and a step's outputs is in `step_checks.py`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from imagebuild import (
    Engine,
    add_build_options,
    build_all,
    find_engine,
    parse_bases,
    parse_steps,
    run_command,
    size_table,
)
from launcher_run import HELPER_TASKS, Artifact, Workspace, load_pipeline, run_step
from sqltune.errors import SqltuneError
from sqltune.images import STEPS, image_for
from standin_bases import prepare_bases
from step_checks import check_image, check_placement, check_publish
from trainjob_follow import check_trainjob_follow

BUCKET = "sqltune-image-test"

# The smallest run that still exercises each step; predict uses transformers because vLLM needs a GPU.
PARAMETERS: dict[str, dict[str, Any]] = {
    "preprocess": {
        "dataset": "spider",
        "schema_style": "ddl",
        "prompt_template": "alpaca",
        "schema_filter": "lexical",  # the filter and the value index run in the image too
        "schema_values": 1,
        "train_limit": 16,
        "eval_limit": 4,
        "dialect": "sqlite",
        "database_url": "",  # '': the source's SQLite files (PostgreSQL is the library's, tested on the host)
    },  # + source_uri, the sample dataset
    "train": {
        "base_model": "tiny-random-llama",
        "method": "lora",
        "prompt_template": "alpaca",
        "lora_rank": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "target_modules": "all-linear",
        "learning_rate": 2e-4,
        "num_epochs": 1.0,
        "max_steps": 2,
        "rl_steps": 0,  # the GRPO stage is the library's, tested on the host
        "rl_learning_rate": 1e-5,
        "dataset": "spider",
        "batch_size": 2,
        "gradient_accumulation_steps": 1,
        "max_seq_len": 512,
        "gradient_checkpointing": False,
        "seed": 42,
        "train_options": {},
        "parallelism": "ddp",
        "num_nodes": 1,
        "nproc_per_node": 1,
        "trainer_runtime": "torch-distributed",
        "gpu_type": "nvidia.com/gpu",
        "gpu_node_selector": {},
        "gpu_tolerations": [],
        "s3_secret_name": "sqltune-s3",
        "hf_token_secret_name": "sqltune-hf-token",
        "endpoint_url": "",
        "checkpoint_uri": "",
        "run_id": "image-test",
        "database_url": "",
    },  # + source_uri, the sample dataset
    "predict": {
        "base_model": "tiny-random-llama",
        "prompt_template": "alpaca",
        "max_seq_len": 512,
        "backend": "hf",
        "batch_size": 4,
        "max_new_tokens": 16,
        "candidates": 1,
        "predict_options": {},
        "database_url": "",
    },
    "evaluate": {"dataset": "spider", "evaluate_options": {}, "database_url": ""},
    # Two nodes and a GRPO stage: the train pod keeps one GPU, predict takes them all.
    "placement": {
        "gpu_count": 4,
        "num_nodes": 2,
        "rl_steps": 1,
        "gpu_node_selector": {"nvidia.com/gpu.present": "true"},
        "gpu_tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "publish": {
        "bucket": BUCKET,
        "prefix": "adapters",
        "model_name": "text2sql",
        "promote_channel": "",
        "promote_margin": 0.0,
        "publish_options": {},
        "run_id": "image-test",
    },  # + endpoint_url, the host's S3 server
}


def image_test(
    engine: Engine, steps: Sequence[str], bases: dict[str, str], ca_bundle: Path | None, workspace: Workspace
) -> None:
    """Build the selected images, run the pipeline's chain up to the last selected step, check it all."""
    from sqltune.locals3 import local_s3
    from sqltune.sample_data import write_sample_dataset

    bases = prepare_bases(engine, steps, bases, workspace.path)
    built = build_all(engine, steps, bases, ca_bundle)
    for step in steps:
        check_image(engine, step)
    spec = load_pipeline()
    chain = STEPS[: max(STEPS.index(step) for step in steps) + 1]
    sample = workspace.path / "sample"
    write_sample_dataset(sample)
    # Mounted read-only into the images, for whichever user they run as.
    run_command(["chmod", "-R", "a+rX", str(sample)], "making the sample dataset readable")
    produced: dict[tuple[str, str], Artifact] = {}
    results = []
    with local_s3(workspace.path / "s3", buckets=[BUCKET]) as server:
        s3_env = server.env()
        os.environ.update(s3_env)  # for the publish check here; containers get the names only (`--env NAME`)
        runtime = {
            "preprocess": {"source_uri": str(sample)},
            "train": {"source_uri": str(sample)},
            "publish": {"endpoint_url": s3_env["AWS_ENDPOINT_URL"]},
        }
        for step in chain:
            parameters = {**PARAMETERS[step], **runtime.get(step, {})}
            print(f"--- {step}: {'in its image' if step in steps else 'on the host'}", flush=True)
            result = run_step(engine if step in steps else None, spec, step, parameters, produced, workspace, s3_env)
            results.append(result)
        for task, image_step in HELPER_TASKS.items():
            if image_step in steps:
                print(f"--- {task}: in the {image_step} image", flush=True)
                results.append(run_step(engine, spec, task, PARAMETERS[task], produced, workspace, s3_env))
        summary = {
            "evaluate": lambda r: f"EX {r.executor_output['parameterValues']['Output']}",
            "placement": lambda r: check_placement(r.executor_output, PARAMETERS["placement"]),
        }
        if "publish" in chain:
            summary["publish"] = lambda r: check_publish(
                r.executor_output, PARAMETERS["publish"], s3_env["AWS_ENDPOINT_URL"], workspace.path / "pulled"
            )
        print("\nimage test passed:")
        for r in results:
            extra = summary[r.step](r) if r.step in summary else ""
            print(f"  {r.step:<10} {r.where:<5} {r.seconds:6.1f} s  {extra}")
    started = time.perf_counter()
    followed = check_trainjob_follow(engine, image_for(steps[0]), workspace.path / "trainjob")
    print(f"  {'trainjob':<10} {'image':<5} {time.perf_counter() - started:6.1f} s  {followed}")
    print(size_table(engine, built))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="images/tools/imagetest.py", description=__doc__.split("\n")[0])
    add_build_options(parser)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (artifacts, logs) for a look")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="sqltune-image-test-"))
    try:
        engine = find_engine(work / "engine")
        image_test(engine, parse_steps(args.steps), parse_bases(args.base), args.ca_bundle, Workspace(work))
    except SqltuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
