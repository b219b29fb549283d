"""Compile the pipeline, byte-identical on every compile: the checked-in YAML and its GitOps manifests.

Both outputs come from one in-process compile of `sqltune.pipelines.text2sql.pipeline` with the pinned KFP SDK.
The SDK is deterministic except in one place: the comment header lists dict/list parameter defaults in
protobuf map order, which changes from process to process, so those are rewritten from the key-sorted body.
The KFP `Pipeline` + `PipelineVersion` resources (`make manifests`) name the version after the sqltune
version and a digest of the compiled pipeline: KFP treats a pipeline version as immutable, so any change to
the pipeline must get a new name rather than an edit that the cluster would refuse.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from pathlib import Path

import yaml

from sqltune import __version__
from sqltune.artifacts import atomic_write_bytes
from sqltune.errors import SqltuneError
from sqltune.pipeline import MANIFEST_FILE, PIPELINE_FILE, PIPELINE_NAME

KFP_NAMESPACE = "kubeflow"


def _compile(out: Path, manifest_options: object | None = None) -> Path:
    """Compile the pipeline to `out` (atomically); with `manifest_options`, as KFP Kubernetes resources."""
    from kfp import compiler

    from sqltune.pipelines.text2sql.pipeline import text2sql

    with tempfile.TemporaryDirectory(prefix="sqltune-compile-") as scratch:
        compiled = Path(scratch) / out.name
        compiler.Compiler().compile(
            text2sql,
            str(compiled),
            kubernetes_manifest_options=manifest_options,
            kubernetes_manifest_format=manifest_options is not None,
        )
        _stabilize_header(compiled)
        atomic_write_bytes(out, compiled.read_bytes())
    return out


def compile_pipeline(out: str | Path = PIPELINE_FILE) -> Path:
    """The compiled pipeline YAML that `sqltune run`, `submit` and the Kubeflow UI take."""
    return _compile(Path(out))


def version_name(compiled: str | Path, pipeline_name: str = PIPELINE_NAME) -> str:
    """`<pipeline>-<sqltune version>-<8 hex of the compiled YAML>`, a valid Kubernetes resource name."""
    digest = hashlib.sha256(Path(compiled).read_bytes()).hexdigest()[:8]
    version = "".join(c if c.isalnum() else "-" for c in __version__.lower())
    return f"{pipeline_name}-{version}-{digest}"


def write_pipeline_manifests(
    out: str | Path = MANIFEST_FILE,
    *,
    compiled: str | Path = PIPELINE_FILE,
    namespace: str = KFP_NAMESPACE,
    pipeline_name: str = PIPELINE_NAME,
) -> Path:
    """The Pipeline and PipelineVersion resources of the pipeline, versioned by the `compiled` YAML's digest."""
    from kfp.compiler import KubernetesManifestOptions

    if not Path(compiled).is_file():
        raise SqltuneError(f"{compiled} not found: run `make compile` first")
    options = KubernetesManifestOptions(
        pipeline_name=pipeline_name,
        pipeline_display_name=pipeline_name,
        pipeline_version_name=version_name(compiled, pipeline_name),
        namespace=namespace,
        include_pipeline_manifest=True,
    )
    return _compile(Path(out), options)


_HEADER_DEFAULT = re.compile(r"^#    (?P<name>\w+): (?P<type>dict|list) \[Default: .*\]$", re.MULTILINE)


def _stabilize_header(path: Path) -> None:
    """Rewrite dict/list defaults in the comment header from the (key-sorted) spec body."""
    text = path.read_text(encoding="utf-8")
    spec = next(yaml.safe_load_all(text))
    if "root" not in spec:  # the manifest format starts with the Pipeline resource, whose header has no defaults
        return
    defaults = spec["root"]["inputDefinitions"]["parameters"]

    def render(match: re.Match[str]) -> str:
        default = defaults[match["name"]]["defaultValue"]
        return f"#    {match['name']}: {match['type']} [Default: {default}]"

    path.write_text(_HEADER_DEFAULT.sub(render, text), encoding="utf-8")
