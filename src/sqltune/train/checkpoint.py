"""Training checkpoints in a local directory or under an s3:// prefix, and finding the newest usable one.

A checkpoint is `step-NNNNNNNN/` holding the adapter weights, optimizer and scheduler state, and
`state.json` (the run's progress, `CheckpointState`, and the sha256 and size of every other file). `state.json` is
what makes it complete: locally the whole directory is renamed into place at once; on S3 `state.json` is
uploaded after every other file. A run killed mid-save therefore leaves nothing that resume would mistake
for a checkpoint, and a file damaged later (a truncated copy, a full disk) fails its checksum, so resume
falls back to the checkpoint before it instead of failing every retry the same way.

A sharded (fsdp) run's workers each contribute files: after `clear_staging`, each `stage`s its own into the
step's staging place (a hidden sibling directory, or the step's S3 prefix, still without `state.json`), and
rank 0 completes the checkpoint with `save(..., staged=...)`, recording every file's checksum.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqltune.artifacts import atomic_dir, atomic_write_json, file_entries, sha256_file
from sqltune.errors import SqltuneError
from sqltune.log import get_logger
from sqltune.settings import how_to_set, setting_name
from sqltune.train.config import TrainConfig
from sqltune.uri import download_dir, is_s3, join, list_objects, s3_client, split_s3, upload_dir

log = get_logger(__name__)

STATE = "state.json"
FILES = "files"  # the key of state.json recording {file name: {"sha256": ..., "size": ...}}
_NAME = re.compile(r"^step-(\d{8})$")


@dataclass
class CheckpointState:
    """A run's progress as its checkpoints record it in `state.json`, beside the checksums of their files.

    The JSON keys are the ones checkpoints have always had, so a checkpoint written before this class resumes.
    """

    step: int  # optimizer steps done
    rows: list[dict[str, Any]] = field(default_factory=list)  # the per-step log so far (train_log.jsonl)
    fingerprint: dict[str, Any] = field(default_factory=dict)  # the run's settings: a resume must match (`same_run`)
    train_time: float | None = None  # SFT: seconds spent in optimizer steps (GRPO's rows time each step)
    world_size: int | None = None  # a sharded checkpoint: the workers whose shards it holds

    def to_json(self) -> dict[str, Any]:
        state = {"step": self.step, "rows": self.rows, "fingerprint": self.fingerprint}
        optional = {"train_time": self.train_time, "world_size": self.world_size}
        return {**state, **{key: value for key, value in optional.items() if value is not None}}

    @classmethod
    def from_json(cls, state: Mapping[str, Any]) -> CheckpointState:
        return cls(
            step=state["step"], rows=state.get("rows", []), fingerprint=state.get("fingerprint", {}),
            train_time=state.get("train_time"), world_size=state.get("world_size"),
        )  # fmt: skip


class _Unusable(Exception):
    """A file of a checkpoint is missing, damaged or unreadable; the message names the file."""


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


def _staging(root: str, step: int) -> str:
    """Where workers put their files before checkpoint `step` is complete."""
    return join(root, _name(step)) if is_s3(root) else str(Path(root) / f".{_name(step)}.staging")


def clear_staging(root: str, step: int, endpoint_url: str | None = None) -> None:
    """Remove what an interrupted save of `step` left (rank 0, before any worker stages)."""
    if is_s3(root):
        _delete(root, step, endpoint_url)
    else:
        shutil.rmtree(_staging(root, step), ignore_errors=True)


def stage(root: str, step: int, local: Path, under: str, endpoint_url: str | None = None) -> dict[str, Any]:
    """Put this worker's files (the tree under `local`) into checkpoint `step` as `under/...`; returns their
    checksums for `save(..., staged=...)`."""
    entries = {f"{under}/{name}": entry for name, entry in file_entries(local).items()}
    target = join(_staging(root, step), under)
    if is_s3(root):
        upload_dir(local, target, endpoint_url)
    else:
        for name in file_entries(local):
            Path(target, name).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(local / name, Path(target, name))
    return entries


def save(
    root: str, state: CheckpointState, files: dict[str, Any], *, keep: int, endpoint_url: str | None = None,
    staged: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    """Write the checkpoint of `state.step` under `root`: `files` maps file names to writers `f(path)`; then prune.

    `staged` are the checksums of files the workers already `stage`d for this step: they become part of it.
    Pruning keeps the `keep` newest checkpoints up to this step and removes those after it: they are what
    resume skipped as unusable, and would otherwise be taken for the newest again.
    """
    step = state.step
    if is_s3(root):
        if staged is None:
            _delete(root, step, endpoint_url)  # an incomplete or unusable leftover of the same step
        with tempfile.TemporaryDirectory(prefix="sqltune-checkpoint-") as scratch:
            staging = Path(scratch)
            written = _write_files(staging, files, state)
            written[FILES].update(staged or {})
            target = join(root, _name(step))
            upload_dir(staging, target, endpoint_url)
            atomic_write_json(staging / STATE, written)
            bucket, key = split_s3(join(target, STATE))
            s3_client(endpoint_url).upload_file(str(staging / STATE), bucket, key)
    else:  # our own directory: a leftover of the same step is replaced
        with atomic_dir(Path(root) / _name(step), overwrite=True, option="checkpoint") as staging:
            if staged is not None:
                for part in Path(_staging(root, step)).iterdir():
                    part.rename(staging / part.name)
            atomic_write_json(staging / STATE, _write_files(staging, files, state))
        if staged is not None:
            shutil.rmtree(_staging(root, step), ignore_errors=True)
    log.info("checkpoint %s written to %s", _name(step), root)
    steps = complete_steps(root, endpoint_url)
    older, newer = [s for s in steps if s < step], [s for s in steps if s > step]
    for old in older[: max(0, len(older) - keep + 1)] + newer:
        _delete(root, old, endpoint_url)


def same_run(root: str, fingerprint: dict[str, Any], may_change: tuple[str, ...]) -> Callable[[CheckpointState], None]:
    """`load_latest`'s `accept`: the checkpoint must come from a run with these settings (`fingerprint`), up to
    the settings in `may_change`, and with as many workers."""

    def accept(state: CheckpointState) -> None:
        saved = state.fingerprint
        if saved.get("world_size", fingerprint.get("world_size")) != fingerprint.get("world_size"):
            # Each optimizer step takes one micro-batch per worker: another world size is another batch order.
            raise SqltuneError(
                f"checkpoint directory {root} holds a run of {saved['world_size']} workers, this run has "
                f"{fingerprint['world_size']}: resume it with {setting_name(TrainConfig, 'nproc_per_node')} x "
                f"{setting_name(TrainConfig, 'num_nodes')} = {saved['world_size']} workers, or use a new checkpoint "
                "directory"
            )
        changed = sorted(
            k for k in set(saved) | set(fingerprint) if k not in may_change and saved.get(k) != fingerprint.get(k)
        )
        if changed:
            raise SqltuneError(
                f"checkpoint directory {root} holds a run with different settings ({', '.join(changed)}); "
                "use a new checkpoint directory for a new run"
            )

    return accept


def load_latest(
    root: str,
    readers: Mapping[str, Callable[[Path], Any]],
    *,
    fresh_if_corrupt: bool = False,
    endpoint_url: str | None = None,
    accept: Callable[[CheckpointState], None] | None = None,
) -> tuple[CheckpointState, dict[str, Any]] | None:
    """(state, {file name: what its reader returned}) of the newest usable checkpoint; None to start fresh.

    `accept(state)` runs before any reader and raises when the checkpoint belongs to another run.
    A checkpoint whose files do not match the sizes and sha256 in its `state.json`, or that a reader
    cannot read, is skipped with a warning naming it and the file, for the one before it. When there are
    checkpoints but none is usable, that is an error unless `fresh_if_corrupt`. Files under an s3://
    `root` are read from a temporary download that is removed before this returns (or raises).
    """
    unusable = []
    scratch = Path(tempfile.mkdtemp(prefix="sqltune-resume-")) if is_s3(root) else None
    try:
        for step in reversed(complete_steps(root, endpoint_url)):
            source = join(root, _name(step))
            local = download_dir(source, scratch / _name(step), endpoint_url) if scratch else Path(source)
            try:
                state = _verified_state(local)
                if accept:
                    accept(state)
                loaded = {name: _read(local / name, read) for name, read in readers.items()}
            except _Unusable as exc:
                log.warning("checkpoint %s is unusable: %s; skipping it", source, exc)
                unusable.append(f"{_name(step)}: {exc}")
                continue
            if unusable:
                log.warning("resuming from %s, the newest usable checkpoint", source)
            return state, loaded
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    if not unusable:
        return None
    if fresh_if_corrupt:
        log.warning("no usable checkpoint under %s (%s): starting from step 0", root, "; ".join(unusable))
        return None
    raise SqltuneError(
        f"no usable checkpoint under {root} ({'; '.join(unusable)}): rerun with "
        f"{how_to_set(TrainConfig, fresh_if_corrupt_checkpoint=True)} to train from step 0 and replace them, or use a "
        "new checkpoint directory"
    )


def _write_files(staging: Path, files: dict[str, Any], state: CheckpointState) -> dict[str, Any]:
    """Write the checkpoint's files; returns the content of its `state.json`, which records their sha256 and size."""
    for name, write in files.items():
        write(staging / name)
    return {**state.to_json(), FILES: file_entries(staging)}


def _verified_state(local: Path) -> CheckpointState:
    """The checkpoint's state, once every file it records has its recorded size and sha256."""
    try:
        state = json.loads((local / STATE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Unusable(f"{STATE} cannot be read ({exc})") from None
    if not isinstance(state, dict) or not isinstance(state.get(FILES, {}), dict) or type(state.get("step")) is not int:
        raise _Unusable(f"{STATE} is not a checkpoint state")
    # Checkpoints written before checksums were recorded have none: for them the readers catch the damage.
    for name, entry in state.get(FILES, {}).items():
        path = local / name
        if not path.is_file():
            raise _Unusable(f"{name} is missing")
        if path.stat().st_size != entry["size"]:
            raise _Unusable(f"{name} has {path.stat().st_size} bytes, {entry['size']} expected")
        if sha256_file(path) != entry["sha256"]:
            raise _Unusable(f"{name} does not match its sha256")
    return CheckpointState.from_json(state)


def _read(path: Path, read: Callable[[Path], Any]) -> Any:
    try:
        return read(path)
    except Exception as exc:  # each format fails its own way (SafetensorError, pickle, zip); all mean unusable
        raise _Unusable(f"{path.name} cannot be read ({type(exc).__name__}: {exc})") from None


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
