"""The one place that names the component images the pipeline runs, and says what each one holds.

Components take `base_image=image_for("<step>")` at compile time, `make images` builds and tags the same
names, and the checked-in pipeline YAML is compiled with the defaults (no environment overrides), so it is
byte-stable. Override for a private registry or a dev build:

    SQLTUNE_IMAGE_REGISTRY=registry.example.com/ml   every image under another registry
    SQLTUNE_IMAGE_TAG=dev                            every image with another tag
    SQLTUNE_IMAGE_TRAIN=registry.example.com/t:1     one step's full image reference
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sqltune import __version__
from sqltune.errors import SqltuneError

STEPS: tuple[str, ...] = ("preprocess", "train", "predict", "evaluate", "publish")
DEFAULT_REGISTRY = "ghcr.io/sqltune"
# A docker tag: https://docs.docker.com/reference/cli/docker/image/tag/ ('+' of a local version is not allowed).
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class Recipe:
    """How `make images` builds a step's image: a shared Dockerfile plus the build arguments that make it this step's.

    `base_arg` is the Dockerfile's base-image build argument (its default is the real, digest-pinned base).
    """

    dockerfile: str
    base_arg: str
    build_args: Mapping[str, str]

    @property
    def extras(self) -> list[str]:
        """The sqltune extras pip installs into the image."""
        return self.build_args["EXTRAS"].split(",")


_CPU = ("images/cpu/Dockerfile", "PYTHON_IMAGE")
_CUDA = ("images/cuda/Dockerfile", "CUDA_IMAGE")
# What each image holds: only its step's extras (no torch in the CPU images; vLLM, which pins the CUDA
# torch exactly, only in predict, which also runs `sqltune serve`), and kfp for the executor that runs the component.
RECIPES: dict[str, Recipe] = {
    "preprocess": Recipe(*_CPU, {"EXTRAS": "preprocess,kfp"}),
    "train": Recipe(*_CUDA, {"EXTRAS": "train,kfp,trainer"}),
    "predict": Recipe(*_CUDA, {"EXTRAS": "predict,vllm,serve,kfp", "VLLM_VERSION": "0.33.0"}),
    "evaluate": Recipe(*_CPU, {"EXTRAS": "evaluate,kfp"}),
    "publish": Recipe(*_CPU, {"EXTRAS": "publish,kfp"}),
}


def default_tag() -> str:
    """The sqltune version as a docker tag: images and the package that drives them are released together."""
    return __version__.replace("+", "-")


def image_name(step: str) -> str:
    """The repository name of a step's image, e.g. `sqltune-train`."""
    if step not in STEPS:
        raise SqltuneError(f"unknown pipeline step {step!r}; valid steps: {', '.join(STEPS)}")
    return f"sqltune-{step}"


def image_for(step: str, env: Mapping[str, str] | None = None) -> str:
    """The full image reference for a step: `<registry>/sqltune-<step>:<tag>`, or its per-step override."""
    env = os.environ if env is None else env
    name = image_name(step)
    override = env.get(f"SQLTUNE_IMAGE_{step.upper()}")
    if override:
        return override
    registry = (env.get("SQLTUNE_IMAGE_REGISTRY") or DEFAULT_REGISTRY).rstrip("/")
    tag = env.get("SQLTUNE_IMAGE_TAG") or default_tag()
    if not _TAG.fullmatch(tag):
        raise SqltuneError(f"SQLTUNE_IMAGE_TAG={tag!r} is not a valid image tag (letters, digits, '_', '.', '-')")
    return f"{registry}/{name}:{tag}"


def all_images(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every step's image reference, in pipeline order."""
    return {step: image_for(step, env) for step in STEPS}
