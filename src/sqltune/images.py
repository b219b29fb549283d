"""The one place that names the component images the pipeline runs and says what each one holds, read from the
components' `metadata.yaml` (`image`: its name, and for a component with an image of its own, the Dockerfile and
the sqltune extras it installs).

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
from importlib.resources import files
from typing import Any

import yaml

from sqltune import __version__
from sqltune.errors import SqltuneError

DEFAULT_REGISTRY = "ghcr.io/sqltune"
# A docker tag: https://docs.docker.com/reference/cli/docker/image/tag/ ('+' of a local version is not allowed).
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
COMPONENTS: tuple[str, ...] = ("preprocess", "placement", "train", "predict", "evaluate", "publish")


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


def metadata(component: str) -> dict[str, Any]:
    """A component's `components/<name>/metadata.yaml`: its description, image and dependencies."""
    if component not in COMPONENTS:
        raise SqltuneError(f"unknown component {component!r}; valid components: {', '.join(COMPONENTS)}")
    return yaml.safe_load((files("sqltune.components") / component / "metadata.yaml").read_text(encoding="utf-8"))


def _recipes() -> dict[str, Recipe]:
    """What each image holds, from the metadata of the components that have an image of their own: only their
    step's extras (no torch in the CPU images; vLLM, which pins the CUDA torch exactly, only in predict), and kfp
    for the executor that runs the component."""
    recipes = {}
    for component in COMPONENTS:
        image = metadata(component)["image"]
        if "dockerfile" in image:
            extra_args = {key: str(value) for key, value in image.get("build_args", {}).items()}
            build_args = {"EXTRAS": ",".join(image["extras"]), **extra_args}
            recipes[component] = Recipe(image["dockerfile"], image["base_arg"], build_args)
    return recipes


RECIPES: dict[str, Recipe] = _recipes()
STEPS: tuple[str, ...] = tuple(RECIPES)  # the components with an image of their own, in pipeline order


def default_tag() -> str:
    """The sqltune version as a docker tag: images and the package that drives them are released together."""
    return __version__.replace("+", "-")


def image_name(component: str) -> str:
    """The repository name of the image a component runs in, e.g. `sqltune-train` (placement: `sqltune-preprocess`)."""
    return metadata(component)["image"]["name"]


def image_for(step: str, env: Mapping[str, str] | None = None) -> str:
    """The full image reference for a component: `<registry>/sqltune-<step>:<tag>`, or its image's override."""
    env = os.environ if env is None else env
    name = image_name(step)
    override = env.get(f"SQLTUNE_IMAGE_{name.removeprefix('sqltune-').upper()}")
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
