"""Artifact directories: atomic writes, safe output paths and the `manifest.json` every artifact carries.

A manifest records what the artifact is, the sqltune version, the inputs it was made from (by content: an
artifact by the sha256 of its own manifest, so lineage chains; anything else by the sha256 of its bytes), the
parameters, and the sha256 and size of every file. Every directory sqltune writes is built in a sibling temp
directory and renamed into place (`atomic_dir`), so a crash never leaves a half artifact that looks whole, and
an existing path is replaced only when it is an sqltune artifact or the user said `--overwrite`: what a user
owns is never deleted. Files and directories get the modes the umask gives (group-readable under the usual
022), not the 0600/0700 of temp files, because KFP steps may run as different users of one group.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqltune import __version__
from sqltune.errors import SqltuneError

MANIFEST = "manifest.json"
OVERWRITE_HELP = "Replace the output even when it is a directory sqltune did not write (its content is deleted)."
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _usual_mode(path: Path, directory: bool) -> None:
    """Give a temp file or directory the mode a plain `open`/`mkdir` would have (mkstemp makes it private)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write to a temp file beside `path`, fsync, then rename over it."""
    path = Path(path)
    _mkdir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        _usual_mode(Path(tmp), directory=False)
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


def file_entries(root: Path, include_manifest: bool = False) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under `root` (except the manifest), by POSIX relative path."""
    entries = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if include_manifest or rel != MANIFEST:
            entries[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return entries


def is_artifact(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a directory sqltune wrote: its manifest.json parses and names a kind and a version."""
    manifest = Path(path) / MANIFEST
    try:
        found = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(found, dict) and "kind" in found and "sqltune_version" in found


def enclosing_artifact(path: str | os.PathLike[str]) -> Path | None:
    """The artifact directory that is `path` or holds it (a records file inside a records artifact), else None."""
    path = Path(path).absolute()
    for candidate in [path, *path.parents]:
        if is_artifact(candidate):
            return candidate
    return None


def _tree_sha256(root: Path) -> str:
    """One digest for a plain directory's content: its files' relative paths and sha256s, sorted."""
    digest = hashlib.sha256()
    for rel, entry in file_entries(root, include_manifest=True).items():
        digest.update(f"{rel}\t{entry['sha256']}\n".encode())
    return digest.hexdigest()


def input_fingerprint(value: str | os.PathLike[str]) -> str:
    """How an input is named in lineage: by content, never by path (paths mean nothing on another machine).

    An artifact, or a file or folder inside one, is `sha256:` of that artifact's manifest, so lineage chains
    from manifest to manifest; a plain file is `sha256:` of its bytes, a plain folder `tree-sha256:` of its
    files. Remote inputs (s3://, hf://) keep their URI: their content is not here to hash.
    """
    if "://" in str(value) or not Path(value).exists():
        return str(value)
    artifact = enclosing_artifact(value)
    if artifact is not None:
        return "sha256:" + sha256_file(artifact / MANIFEST)
    if Path(value).is_dir():
        return "tree-sha256:" + _tree_sha256(Path(value))
    return "sha256:" + sha256_file(value)


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
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SqltuneError(f"{root}: {MANIFEST} is corrupt: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise SqltuneError(f"{root}: {MANIFEST} is corrupt: it has no files table")
    return manifest


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


def _mkdir(path: Path) -> None:
    """`mkdir -p`, with an error that names the path when it cannot be made (a file in the way, no permission)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SqltuneError(f"cannot create directory {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise SqltuneError(f"cannot write into {path}: permission denied")


def _overlap(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_output(
    out: str | os.PathLike[str],
    *,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    overwrite: bool = False,
    option: str = "--out",
) -> Path:
    """Refuse an output path that would destroy what the user owns or what the step reads; returns it resolved.

    `out` may be missing, an empty directory, or an sqltune artifact (replaced when the new one is complete);
    anything else only with `overwrite`. An output inside an input, or an input inside the output, is refused
    even then: replacing it would delete what the step is reading. Call it before the work starts, so a bad
    path fails in a second; `atomic_dir` calls it again before it replaces anything.
    """
    path = Path(out).expanduser().absolute()
    for given in inputs:
        if given is None or "://" in str(given):
            continue
        source = Path(given).expanduser().absolute()
        if _overlap(path.resolve(), source.resolve()):
            raise SqltuneError(
                f"{option} {out} overlaps the input {given}: writing it would delete what the step reads; "
                "choose an output outside the inputs"
            )
    if path.exists() and not path.is_dir():
        raise SqltuneError(f"{option} {out} exists and is not a directory; choose another path")
    if path.is_dir() and not overwrite and not is_artifact(path) and any(path.iterdir()):
        raise SqltuneError(
            f"{option} {out} is not empty and is not an sqltune artifact (no sqltune {MANIFEST}): refusing to "
            "replace it; choose another path, or pass --overwrite to replace it"
        )
    return path


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
def atomic_dir(
    out: str | os.PathLike[str],
    *,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    overwrite: bool = False,
    option: str = "--out",
) -> Iterator[Path]:
    """Yield a temp sibling of `out` to fill; when the block succeeds, rename it to `out`.

    The one way sqltune writes a directory. On any error the temp directory is removed and `out` is left as
    it was; `out` is checked by `check_output` first and again just before it is replaced.
    """
    out = check_output(out, inputs=inputs, overwrite=overwrite, option=option)
    _mkdir(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        for path in [tmp, *tmp.rglob("*")]:  # writers such as safetensors make owner-only files too
            if not path.is_symlink():
                _usual_mode(path, directory=path.is_dir())
        check_output(out, overwrite=overwrite, option=option)
        _replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def artifact_dir(
    out: str | os.PathLike[str],
    kind: str,
    *,
    parameters: Mapping[str, Any] | None = None,
    inputs: Mapping[str, str | os.PathLike[str]] | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    option: str = "--out",
) -> Iterator[Path]:
    """`atomic_dir` for an artifact: the block fills the directory, then its manifest is written.

    `inputs` are recorded in the manifest by content (`input_fingerprint`) and must not overlap `out`. `extra`
    may be mutated by the caller inside the block (e.g. to add metrics) and is merged into the manifest.
    """
    inputs = dict(inputs or {})
    with atomic_dir(out, inputs=inputs.values(), overwrite=overwrite, option=option) as tmp:
        yield tmp
        write_manifest(tmp, kind, parameters=parameters, inputs=inputs, extra=extra)
