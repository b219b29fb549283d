"""What `make image-test` checks of an image and of a step run in it: the image runs as a non-root user and a CPU
image holds no torch; each output artifact verifies against its manifest; a step's executor output holds what the
library says it returns (placement) and what it published can be pulled back (publish).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from imagebuild import Engine
from sqltune.artifacts import verify_artifact
from sqltune.errors import SqltuneError
from sqltune.images import RECIPES, image_for

GPU_STEPS = frozenset(step for step, recipe in RECIPES.items() if recipe.base_arg == "CUDA_IMAGE")


def check_output(path: Path, schema_title: str, metadata: dict[str, Any], what: str) -> None:
    """An output artifact (`what`, e.g. "train: output adapter") is a directory whose manifest verifies, a non-empty
    file (a report), or for Metrics the values in the executor output (KFP keeps logged metrics there, not in the
    file)."""
    if schema_title == "system.Metrics":
        if not metadata:
            raise SqltuneError(f"{what} holds no metrics in the executor output")
    elif path.is_dir():
        try:
            verify_artifact(path)
        except SqltuneError as exc:
            raise SqltuneError(f"{what} at {path} does not verify: {exc}") from None
    elif not path.is_file() or path.stat().st_size == 0:
        raise SqltuneError(f"{what} is missing or empty at {path}")


def check_image(engine: Engine, step: str) -> None:
    """The image runs as a non-root user, and the CPU images hold no torch."""
    image = image_for(step)
    user = engine.command("image", "inspect", "--format", "{{.Config.User}}", image, capture=True).strip()
    if user in ("", "0", "root"):
        raise SqltuneError(f"{image} runs as root (USER {user!r})")
    if step not in GPU_STEPS:
        probe = "import importlib.util, sys; sys.exit(3 if importlib.util.find_spec('torch') else 0)"
        done = subprocess.run(
            [engine.binary, "run", "--rm", "--network", "none", image, "python3", "-c", probe],
            env=engine.env,
            check=False,
        )
        if done.returncode != 0:
            raise SqltuneError(f"{image} contains torch (or python3 failed there: exit {done.returncode})")


def check_placement(executor_output: dict[str, Any], params: dict[str, Any]) -> str:
    """The placement task returned, through its executor, what `place` decides for its parameters."""
    from sqltune.pipeline.placement import place

    expected = place(
        params["gpu_count"], params["num_nodes"], params["rl_steps"], params["gpu_node_selector"],
        params["gpu_tolerations"],
    )._asdict()  # fmt: skip
    returned = executor_output.get("parameterValues", {})
    if returned != expected:
        raise SqltuneError(f"placement returned {returned}, expected {expected}")
    return f"train_gpus {returned['train_gpus']}, predict_gpus {returned['predict_gpus']}"


def check_publish(executor_output: dict[str, Any], params: dict[str, Any], endpoint_url: str, pull_to: Path) -> str:
    """The version publish returned is in the bucket and verifies after a pull (into `pull_to`)."""
    from sqltune.publish.registry import Registry

    uri = executor_output["parameterValues"]["Output"]
    prefix = f"s3://{params['bucket']}/{params['prefix']}/{params['model_name']}/"
    if not uri.startswith(prefix):
        raise SqltuneError(f"publish returned {uri!r}, not a version under {prefix}")
    version = uri[len(prefix) :].strip("/")
    registry = Registry(params["bucket"], params["prefix"], params["model_name"], endpoint_url)
    pulled = registry.pull(version, pull_to)
    verify_artifact(pulled)
    return uri
