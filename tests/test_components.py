"""The house as the design card draws it: one folder per component with its code, metadata and generated README;
one folder per pipeline with its definition, compiled YAML and parameter files; both installed inside sqltune."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import sqltune
from sqltune.images import COMPONENTS, RECIPES, metadata
from sqltune.pipeline import COMPONENTS_DIR, PIPELINE_DIR, PIPELINE_FILE
from sqltune.pipeline.readme import README, _docstring, render

REPO = Path(__file__).resolve().parents[1]
FOLDER_FILES = {"__init__.py", "component.py", "metadata.yaml", README}


def test_every_component_has_its_folder_of_three_files():
    folders = {path.name for path in (REPO / "components").iterdir() if path.is_dir() and path.name != "__pycache__"}
    assert folders == set(COMPONENTS)
    for component in COMPONENTS:
        files = {path.name for path in (REPO / "components" / component).iterdir()}
        assert files >= FOLDER_FILES, f"components/{component} lacks {FOLDER_FILES - files}"
    assert COMPONENTS_DIR == REPO / "components" and PIPELINE_DIR == REPO / "pipelines" / "text2sql"
    assert {path.name for path in PIPELINE_DIR.iterdir()} >= {"pipeline.py", "text2sql.yaml", "params"}


@pytest.mark.parametrize("component", COMPONENTS)
def test_each_readme_is_what_its_code_says(component):
    checked_in = (REPO / "components" / component / README).read_text(encoding="utf-8")
    assert checked_in == render(component), f"components/{component}/README.md is stale: run `make compile`"


@pytest.mark.parametrize("component", COMPONENTS)
def test_metadata_names_the_component_its_image_and_release(component):
    meta = metadata(component)
    assert meta["name"] == component and meta["version"] == sqltune.__version__
    assert meta["stability"] in {"alpha", "beta", "stable"} and meta["description"].strip()
    assert any(d["name"] == "Pipelines" for d in meta["dependencies"]["kubeflow"])
    image = meta["image"]
    if "dockerfile" in image:  # an image of its own, built from these settings
        assert (REPO / image["dockerfile"]).is_file() and "kfp" in image["extras"]
        assert RECIPES[component].extras == image["extras"] and image["name"] == f"sqltune-{component}"
    else:  # runs in another component's image
        assert image["name"] in {metadata(other)["image"]["name"] for other in RECIPES}


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_parameter_and_artifact_is_described(component):
    """From the step config's help, or the component's docstring (Args) for what is no setting."""
    page = render(component)
    task = getattr(__import__(f"sqltune.components.{component}", fromlist=[component]), component)
    _, described, _ = _docstring(task.python_func)
    for name in inspect.signature(task.python_func).parameters:
        row = next(line for line in page.splitlines() if line.startswith(f"| `{name}` |"))
        assert not row.endswith("|  |"), f"{component}: {name} has no description"
    assert set(described) <= set(inspect.signature(task.python_func).parameters), "Args name what is not there"


def test_every_package_folder_is_installed():
    """pyproject lists the packages (components/ and pipelines/ are mapped into sqltune): a new folder with an
    __init__.py that is not listed would be missing from the images."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO / "src").parts) for p in (REPO / "src").rglob("__init__.py")}
    for top in ("components", "pipelines"):
        found |= {".".join(("sqltune", *p.parent.relative_to(REPO).parts)) for p in (REPO / top).rglob("__init__.py")}
    assert listed == found


def test_sqltune_compile_gives_the_checked_in_bytes_from_any_directory(tmp_path):
    """The pipeline is found through the installed package, not the working directory."""
    out = tmp_path / "fresh.yaml"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    command = [str(Path(sys.executable).parent / "sqltune"), "compile", "--out", str(out)]
    env = {key: value for key, value in os.environ.items() if not key.startswith("SQLTUNE_IMAGE")}
    done = subprocess.run(command, cwd=elsewhere, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == PIPELINE_FILE.read_bytes()
    assert next(yaml.safe_load_all(out.read_text()))["pipelineInfo"]["name"] == "sqltune-text2sql"
