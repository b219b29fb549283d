"""Resolve a base-model spec to a local directory holding its config, tokenizer and weights.

A spec is a local directory, `hf://org/name[@revision]` (hub download, honours HF_HUB_OFFLINE), an `s3://`
prefix (a model mirror), or a built-in name (`sqltune.models.builtin`).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqltune.errors import SqltuneError
from sqltune.models.builtin import BUILTINS, build_builtin
from sqltune.uri import is_s3, localize

_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def resolve_base_model(spec: str, endpoint_url: str | None = None) -> Path:
    """A local directory holding config, tokenizer and weights for `spec` (see the module docstring)."""
    spec = str(spec).strip()
    if spec in BUILTINS:
        path = build_builtin(spec)
    elif spec.startswith("hf://"):
        path = _hub_download(spec[len("hf://") :])
    elif is_s3(spec):
        path = localize(spec, "base model", endpoint_url)
    else:
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise SqltuneError(
                f"base model not found: {spec!r} is not a directory; expected a local model directory, "
                f"hf://org/name[@revision], an s3:// prefix, or one of: {', '.join(BUILTINS)}"
            )
    _check_model_dir(path, spec)
    return path


def _check_model_dir(path: Path, spec: str) -> None:
    if not (path / "config.json").is_file():
        raise SqltuneError(f"base model {spec!r}: {path} has no config.json")
    if not any(p.name.endswith(_WEIGHT_SUFFIXES) for p in path.iterdir()):
        raise SqltuneError(f"base model {spec!r}: {path} has no weights (*.safetensors or *.bin)")


def _hub_download(repo: str) -> Path:
    """Download (or find in the HF cache, offline) `org/name[@revision]`; any failure is one clear error."""
    from huggingface_hub import snapshot_download

    repo_id, _, revision = repo.partition("@")
    if repo_id.count("/") != 1:
        raise SqltuneError(f"hf:// model spec must be hf://org/name[@revision], got hf://{repo}")
    try:
        return Path(snapshot_download(repo_id, revision=revision or None, etag_timeout=10))
    except Exception as exc:  # network, auth, missing repo or revision: all mean "cannot get this model"
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        hint = " (HF_HUB_OFFLINE is set and it is not in the local cache)" if offline else ""
        raise SqltuneError(f"could not fetch base model hf://{repo}{hint}: {type(exc).__name__}: {exc}") from None
