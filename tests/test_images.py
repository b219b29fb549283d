"""Image references: one module names them; defaults are deterministic, environment overrides work."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sqltune import __version__
from sqltune.errors import SqltuneError
from sqltune.images import RECIPES, STEPS, all_images, image_for
from sqltune.pipeline import PIPELINE_FILE


def test_defaults_use_registry_and_version() -> None:
    images = all_images(env={})
    assert list(images) == list(STEPS)
    assert images["train"] == f"ghcr.io/sqltune/sqltune-train:{__version__}"
    assert len(set(images.values())) == len(STEPS)


def test_registry_tag_and_step_overrides() -> None:
    env = {
        "SQLTUNE_IMAGE_REGISTRY": "registry.example.com/ml/",
        "SQLTUNE_IMAGE_TAG": "dev-1",
        "SQLTUNE_IMAGE_PREDICT": "example.com/vllm-predict@sha256:" + "0" * 64,
    }
    assert image_for("train", env) == "registry.example.com/ml/sqltune-train:dev-1"
    assert image_for("predict", env) == "example.com/vllm-predict@sha256:" + "0" * 64


def test_reads_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQLTUNE_IMAGE_TAG", "abc")
    assert image_for("evaluate").endswith("/sqltune-evaluate:abc")


def test_bad_step_and_tag_are_clear_errors() -> None:
    with pytest.raises(SqltuneError, match="valid components: preprocess, placement, train"):
        image_for("deploy", {})
    with pytest.raises(SqltuneError, match="SQLTUNE_IMAGE_TAG"):
        image_for("train", {"SQLTUNE_IMAGE_TAG": "bad tag"})


def test_compiled_pipeline_uses_the_default_images_we_build() -> None:
    repo = Path(__file__).resolve().parents[1]
    used = set(re.findall(r"^ +image: (\S+)$", PIPELINE_FILE.read_text(), flags=re.M))
    assert used == set(all_images(env={}).values()), "every step runs an image that `make images` builds"
    assert all((repo / RECIPES[step].dockerfile).is_file() for step in STEPS)
