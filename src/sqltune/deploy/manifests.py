"""Generate the KFP `Pipeline` + `PipelineVersion` resources (GitOps) from `pipelines/text2sql.py`.

Runs `kfp dsl compile --kubernetes-manifest-format` in a subprocess with the default image references (no
SQLTUNE_IMAGE_* overrides), so the checked-in `manifests/pipeline/text2sql.yaml` is reproducible, exactly
like the checked-in pipeline YAML. The PipelineVersion name carries the sqltune version and a digest of
the compiled pipeline: KFP treats a pipeline version as immutable, so any change to the pipeline must get
a new name rather than an edit that the cluster would refuse.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from sqltune import __version__
from sqltune.artifacts import atomic_write_bytes
from sqltune.errors import SqltuneError
from sqltune.pipeline.spec import DEFAULT_PIPELINE_FILE

PIPELINE_NAME = "sqltune-text2sql"
PIPELINE_PY = Path("pipelines/text2sql.py")
MANIFEST_FILE = Path("manifests/pipeline/text2sql.yaml")
KFP_NAMESPACE = "kubeflow"


def version_name(compiled: str | Path, pipeline_name: str = PIPELINE_NAME) -> str:
    """`<pipeline>-<sqltune version>-<8 hex of the compiled YAML>`, a valid Kubernetes resource name."""
    digest = hashlib.sha256(Path(compiled).read_bytes()).hexdigest()[:8]
    version = "".join(c if c.isalnum() else "-" for c in __version__.lower())
    return f"{pipeline_name}-{version}-{digest}"


def _kfp_cli() -> str:
    """The `kfp` command of the environment sqltune runs in (kfp.cli has no runnable __main__)."""
    found = shutil.which("kfp", path=str(Path(sys.executable).parent)) or shutil.which("kfp")
    if not found:
        raise SqltuneError("the `kfp` command is not installed: pip install 'sqltune[pipeline]'")
    return found


def write_pipeline_manifests(
    repo: str | Path = ".",
    out: str | Path | None = None,
    *,
    namespace: str = KFP_NAMESPACE,
    pipeline_name: str = PIPELINE_NAME,
) -> Path:
    """Write the Pipeline and PipelineVersion resources for the pipeline in `repo` to `out` (atomically)."""
    repo = Path(repo).resolve()
    source, compiled = repo / PIPELINE_PY, repo / DEFAULT_PIPELINE_FILE
    for path, fix in ((source, "run from the sqltune repository root"), (compiled, "run `make compile` first")):
        if not path.is_file():
            raise SqltuneError(f"{path} not found: {fix}")
    out = Path(out) if out else repo / MANIFEST_FILE
    scratch = Path(tempfile.mkdtemp(prefix="sqltune-manifests-"))
    tmp = scratch / out.name
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQLTUNE_IMAGE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")]))
    command = [
        _kfp_cli(), "dsl", "compile",
        "--py", str(source), "--function", "text2sql", "--output", str(tmp),
        "--kubernetes-manifest-format", "--include-pipeline-manifest",
        "--pipeline-name", pipeline_name, "--pipeline-display-name", pipeline_name,
        "--pipeline-version-name", version_name(compiled, pipeline_name),
        "--namespace", namespace,
    ]  # fmt: skip
    try:
        result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        if result.returncode != 0 or not tmp.is_file():
            raise SqltuneError(f"kfp dsl compile failed for {source}:\n{result.stderr.strip()[-2000:]}")
        atomic_write_bytes(out, tmp.read_bytes())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


if __name__ == "__main__":  # `python -m sqltune.deploy.manifests` (make manifests), from the repo root
    try:
        print(write_pipeline_manifests())
    except SqltuneError as exc:
        sys.exit(f"error: {exc}")
