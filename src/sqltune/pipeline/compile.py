"""Compile `pipelines/text2sql.py` to the checked-in YAML, byte-identical on every compile.

The pinned KFP SDK is deterministic except in one place: the comment header it writes lists dict/list
parameter defaults in protobuf map order, which changes from process to process. The body of the spec is
key-sorted, so the header defaults are rewritten from it.
"""

from __future__ import annotations

import importlib
import re
import sys
import tempfile
from pathlib import Path

import yaml

from sqltune.artifacts import atomic_write_bytes
from sqltune.errors import SqltuneError


def compile_pipeline(repo: str | Path = ".", out: str | Path | None = None) -> Path:
    """Compile the pipeline defined in `repo/pipelines/text2sql.py` to `out` (default: beside it)."""
    from kfp import compiler

    repo = Path(repo).resolve()
    if not (repo / "pipelines" / "text2sql.py").is_file():
        raise SqltuneError(f"{repo} has no pipelines/text2sql.py: run from the sqltune repository root")
    sys.path.insert(0, str(repo))
    try:
        module = importlib.import_module("pipelines.text2sql")
    finally:
        sys.path.remove(str(repo))
    out = Path(out) if out else repo / "pipelines" / "text2sql.yaml"
    with tempfile.TemporaryDirectory(prefix="sqltune-compile-") as scratch:
        compiled = Path(scratch) / out.name
        compiler.Compiler().compile(module.text2sql, str(compiled))
        _stabilize_header(compiled)
        atomic_write_bytes(out, compiled.read_bytes())
    return out


_HEADER_DEFAULT = re.compile(r"^#    (?P<name>\w+): (?P<type>dict|list) \[Default: .*\]$", re.MULTILINE)


def _stabilize_header(path: Path) -> None:
    """Rewrite dict/list defaults in the comment header from the (key-sorted) spec body."""
    text = path.read_text(encoding="utf-8")
    spec = next(yaml.safe_load_all(text))
    defaults = spec["root"]["inputDefinitions"]["parameters"]

    def render(match: re.Match[str]) -> str:
        default = defaults[match["name"]]["defaultValue"]
        return f"#    {match['name']}: {match['type']} [Default: {default}]"

    path.write_text(_HEADER_DEFAULT.sub(render, text), encoding="utf-8")
