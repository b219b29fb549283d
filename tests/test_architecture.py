"""Architecture rules a reader relies on: the step libraries never import kfp, the CLI starts light."""

from __future__ import annotations

import subprocess
import sys

STEP_LIBRARIES = ("preprocess", "train", "predict", "evaluate", "publish")


def _imported_after(code: str) -> set[str]:
    """Top-level packages in sys.modules after running `code` in a fresh interpreter."""
    script = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    return set(done.stdout.split())


def test_step_libraries_do_not_import_kfp():
    imports = "\n".join(f"import sqltune.{step}, sqltune.{step}.run, sqltune.{step}.cli" for step in STEP_LIBRARIES)
    assert "kfp" not in _imported_after(imports), "only <step>/component.py and sqltune.pipeline may import kfp"


def test_the_cli_starts_without_kfp_or_torch():
    loaded = _imported_after("from sqltune.cli import app")
    assert not {"kfp", "torch", "transformers"} & loaded, loaded


def test_serve_never_imports_kfp_and_loads_torch_only_with_a_backend():
    modules = ("cli", "app", "service", "run", "hf", "vllm_engine", "inferenceservice")
    loaded = _imported_after("\n".join(f"import sqltune.serve.{module}" for module in modules))
    assert not {"kfp", "torch", "transformers", "vllm"} & loaded, loaded
