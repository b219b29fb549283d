"""Artifact directories: atomic writes and the `manifest.json` every artifact carries.

A manifest records what the artifact is, the sqltune version, the inputs it was made from (by the sha256
of their own manifests, so lineage chains), the parameters, and the sha256 and size of every file.
Artifacts are built in a sibling temp directory and renamed into place, so a crash never leaves a half
artifact that looks whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqltune import __version__
from sqltune.errors import SqltuneError

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write to a temp file beside `path`, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike[str], rows: Any) -> int:
    """Write an iterable of dicts as JSON lines (atomically); returns the row count."""
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read JSON lines; a malformed line is an error naming the file and line number."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SqltuneError(f"{path}:{lineno}: malformed JSON line: {exc.msg}") from None
    return rows


def file_entries(root: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under `root` except the manifest, by POSIX relative path."""
    entries = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel != MANIFEST:
            entries[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return entries


def input_fingerprint(value: str | os.PathLike[str]) -> str:
    """How an input is named in lineage: an artifact directory by its manifest's sha256, else as given."""
    manifest = Path(value) / MANIFEST
    if manifest.is_file():
        return "sha256:" + sha256_file(manifest)
    return str(value)


def write_manifest(
    root: str | os.PathLike[str],
    kind: str,
    *,
    parameters: Mapping[str, Any] | None = None,
    inputs: Mapping[str, str | os.PathLike[str]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `root/manifest.json` describing the files already in `root`; returns the manifest."""
    root = Path(root)
    manifest: dict[str, Any] = {
        "kind": kind,
        "sqltune_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": {name: input_fingerprint(value) for name, value in (inputs or {}).items()},
        "parameters": dict(parameters or {}),
        "files": file_entries(root),
    }
    manifest.update(extra or {})
    atomic_write_json(root / MANIFEST, manifest)
    return manifest


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise SqltuneError(f"{root} is not a complete sqltune artifact: {MANIFEST} is missing")
    return json.loads(path.read_text(encoding="utf-8"))


def verify_artifact(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Check every file listed in the manifest against its sha256; returns the manifest."""
    manifest = read_manifest(root)
    for rel, entry in manifest["files"].items():
        path = Path(root) / rel
        if not path.is_file():
            raise SqltuneError(f"{root}: {rel} is listed in the manifest but missing")
        if sha256_file(path) != entry["sha256"]:
            raise SqltuneError(f"{root}: {rel} does not match its sha256 in the manifest")
    return manifest


def _replace_dir(src: Path, dest: Path) -> None:
    """Move the finished `src` to `dest`; an existing `dest` is removed only after the new one is in place."""
    if dest.is_dir() and not any(dest.iterdir()):
        dest.rmdir()
    if not dest.exists():
        os.replace(src, dest)
        return
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    os.replace(dest, old)
    os.replace(src, dest)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def artifact_dir(
    out: str | os.PathLike[str],
    kind: str,
    *,
    parameters: Mapping[str, Any] | None = None,
    inputs: Mapping[str, str | os.PathLike[str]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Iterator[Path]:
    """Yield a temp directory to fill; on success write its manifest and rename it to `out`.

    On any error the temp directory is removed and `out` is left as it was. `extra` may be mutated by
    the caller inside the block (e.g. to add metrics) and is merged into the manifest at the end.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        write_manifest(tmp, kind, parameters=parameters, inputs=inputs, extra=extra)
        _replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
