"""Training checkpoints in a local directory or under an s3:// prefix, and finding the latest complete one.

A checkpoint is `step-NNNNNNNN/` holding the adapter weights, optimizer and scheduler state, and
`state.json` (step, RNG state, the per-step log so far). `state.json` is what makes it complete: locally the
whole directory is renamed into place at once; on S3 `state.json` is uploaded after every other file. A
run killed mid-save therefore leaves nothing that resume would mistake for a checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sqltune.artifacts import atomic_write_json
from sqltune.log import get_logger
from sqltune.uri import download_dir, is_s3, join, list_objects, s3_client, split_s3, upload_dir

log = get_logger(__name__)

STATE = "state.json"
_NAME = re.compile(r"^step-(\d{8})$")


def _name(step: int) -> str:
    return f"step-{step:08d}"


def complete_steps(root: str, endpoint_url: str | None = None) -> list[int]:
    """Steps of the complete checkpoints under `root`, ascending."""
    if is_s3(root):
        bucket, key = split_s3(root)
        prefix = key.rstrip("/") + "/" if key else ""
        names = {
            obj["Key"][len(prefix) :].split("/")[0]
            for obj in list_objects(s3_client(endpoint_url), bucket, prefix)
            if obj["Key"].endswith("/" + STATE)
        }
    else:
        names = {p.parent.name for p in Path(root).glob(f"*/{STATE}")}
    return sorted(int(m.group(1)) for name in names if (m := _NAME.match(name)))


def save(
    root: str, step: int, files: dict[str, Any], state: dict[str, Any], keep: int, endpoint_url: str | None = None
) -> None:
    """Write checkpoint `step` under `root`: `files` maps file names to writers `f(path)`; then prune to `keep`."""
    staging = Path(
        tempfile.mkdtemp(prefix=f".{_name(step)}.", suffix=".tmp", dir=None if is_s3(root) else _mkdir(root))
    )
    try:
        for name, write in files.items():
            write(staging / name)
        if is_s3(root):
            target = join(root, _name(step))
            upload_dir(staging, target, endpoint_url)
            atomic_write_json(staging / STATE, state)
            bucket, key = split_s3(join(target, STATE))
            s3_client(endpoint_url).upload_file(str(staging / STATE), bucket, key)
        else:
            atomic_write_json(staging / STATE, state)
            final = Path(root) / _name(step)
            shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover of the same step
            os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("checkpoint %s written to %s", _name(step), root)
    for old in complete_steps(root, endpoint_url)[:-keep]:
        _delete(root, old, endpoint_url)


def load_latest(root: str, endpoint_url: str | None = None) -> tuple[Path, dict[str, Any]] | None:
    """(local directory, state) of the latest complete checkpoint, or None when there is none."""
    steps = complete_steps(root, endpoint_url)
    if not steps:
        return None
    source = join(root, _name(steps[-1]))
    if is_s3(root):
        local = Path(tempfile.mkdtemp(prefix="sqltune-resume-")) / _name(steps[-1])
        download_dir(source, local, endpoint_url)
    else:
        local = Path(source)
    return local, json.loads((local / STATE).read_text(encoding="utf-8"))


def _mkdir(root: str) -> Path:
    Path(root).mkdir(parents=True, exist_ok=True)
    return Path(root)


def _delete(root: str, step: int, endpoint_url: str | None) -> None:
    if not is_s3(root):
        shutil.rmtree(Path(root) / _name(step), ignore_errors=True)
        return
    bucket, key = split_s3(join(root, _name(step)))
    client = s3_client(endpoint_url)
    objects = list_objects(client, bucket, key + "/")
    # state.json first, so a partly deleted checkpoint is never taken for a complete one.
    for obj in sorted(objects, key=lambda o: not o["Key"].endswith("/" + STATE)):
        client.delete_object(Bucket=bucket, Key=obj["Key"])
