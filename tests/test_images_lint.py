"""The component Dockerfiles and recipes: hadolint-clean, pinned bases, non-root, only the extras each step needs;
the tooling that builds and tests the images stays out of the package and the images."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from sqltune.images import RECIPES, STEPS

REPO = Path(__file__).resolve().parents[1]
HADOLINT = Path(sys.executable).parent / "hadolint"
DOCKERFILES = sorted({REPO / recipe.dockerfile for recipe in RECIPES.values()})
GPU_STEPS = {"train", "predict"}
TOOLS = REPO / "images" / "tools"


def _hadolint(*paths: Path) -> subprocess.CompletedProcess[str]:
    args = [str(HADOLINT), "--no-color", "--config", str(REPO / ".hadolint.yaml"), *map(str, paths)]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def _requirements(extra: str, optional: dict[str, list[str]]) -> set[str]:
    """Distribution names an extra pulls in, following `sqltune[...]` self-references."""
    names: set[str] = set()
    for req in optional[extra]:
        name = re.split(r"[\[<>=!~ ;]", req, maxsplit=1)[0].lower()
        if name == "sqltune":
            for inner in re.search(r"\[(.*)\]", req).group(1).split(","):
                names |= _requirements(inner.strip(), optional)
        else:
            names.add(name)
    return names


def test_hadolint_passes_on_every_dockerfile() -> None:
    assert set(RECIPES) == set(STEPS) and all(path.exists() for path in DOCKERFILES), "a recipe per pipeline step"
    result = _hadolint(*DOCKERFILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_threshold_catches_findings(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    result = _hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # `latest` tag


@pytest.mark.parametrize("step", STEPS)
def test_base_pinned_user_non_root_and_kfp_installed(step: str) -> None:
    recipe = RECIPES[step]
    text = (REPO / recipe.dockerfile).read_text()
    bases = re.findall(rf"^ARG {recipe.base_arg}=(\S+)$", text, flags=re.M)
    assert bases and all(re.search(r"^docker\.io/.+@sha256:[0-9a-f]{64}$", base) for base in bases), bases
    users = re.findall(r"^USER (\S+)$", text, flags=re.M)
    assert users and users[-1] not in {"0", "root"}, "the final stage runs as a non-root user"
    assert "kfp" in recipe.extras, "components run the KFP executor: every image needs kfp"
    declared = set(re.findall(r"^ARG (\w+)", text, flags=re.M))
    assert set(recipe.build_args) <= declared, f"{step}: build args the Dockerfile does not declare"
    assert '"/src[${EXTRAS' in text, "the recipe's extras are what pip installs"


def test_extras_exist_and_cpu_images_stay_free_of_torch() -> None:
    optional = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for step in STEPS:
        pulled = set().union(*(_requirements(extra, optional) for extra in RECIPES[step].extras))
        assert "kfp-kubernetes" not in pulled, f"{step}: images do not need kfp-kubernetes"
        assert ("torch" in pulled) == (step in GPU_STEPS), f"{step}: torch only in the GPU images"
        assert (RECIPES[step].base_arg == "CUDA_IMAGE") == (step in GPU_STEPS), f"{step}: CUDA base only for torch"
    assert "vllm" in _requirements("vllm", optional) and "vllm" in RECIPES["predict"].extras
    assert "VLLM_VERSION" in RECIPES["predict"].build_args and "vllm" not in RECIPES["train"].extras


def _build_context() -> set[str]:
    """What .dockerignore keeps of the repo root for the image builds (its `!path` lines)."""
    return {line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")}


def _top_level_imports(path: Path) -> set[str]:
    """The top-level names a module imports (absolute imports, anywhere in it)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_dockerignore_keeps_what_the_dockerfiles_copy() -> None:
    kept = _build_context()
    for path in DOCKERFILES:
        for line in re.findall(r"^COPY (?!--from)(.+)$", path.read_text(), flags=re.M):
            sources = line.split()[:-1]
            assert set(sources) <= kept, f"{path}: COPY {sources} excluded by .dockerignore (keeps {kept})"


def test_the_image_tooling_stays_out_of_the_package_and_the_images() -> None:
    """images/tools/ builds and tests the images: no file of the package (every folder pyproject maps into it) is one
    of its modules or imports one, and the images' build context leaves the folder out."""
    tools = {path.stem for path in TOOLS.glob("*.py")}
    assert {"imagebuild", "imagetest"} <= tools, f"the image tooling is not in {TOOLS}"
    package_dir = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    roots = [REPO / folder for folder in package_dir.values()]
    inside = [str(root) for root in roots if TOOLS.is_relative_to(root)]
    assert not inside, f"{TOOLS} is inside {inside}, which the package is built from"
    shipped = [path for root in roots for path in root.rglob("*.py")]
    assert any(path.name == "images.py" for path in shipped), "the package's own files were not found"
    named = sorted(str(path.relative_to(REPO)) for path in shipped if path.stem in tools)
    assert not named, f"modules of the image tooling in the package: {named}"
    importing = sorted(
        f"{path.relative_to(REPO)} imports {name}" for path in shipped for name in _top_level_imports(path) & tools
    )
    assert not importing, importing
    copied = sorted(kept for kept in _build_context() if TOOLS.is_relative_to(REPO / kept))
    assert not copied, f".dockerignore keeps {copied}, which holds the image tooling, in the images' build context"
