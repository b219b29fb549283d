"""The model registry on S3: list, show, pull, promote and roll back published adapter versions.

A channel (`production`, `staging`, ...) is a small pointer object `channels/<channel>.json`. It moves by a
conditional write (If-Match on the ETag read, If-None-Match for the first promotion), so two concurrent
promotions cannot both win. S3 has no append, so the history is one object per move,
`channels/<channel>/history/<UTC time>-<version>.json`, each created with If-None-Match: an event is never
overwritten and a listing in key order is the history in time order.

One corrupt object (a manifest or a pointer someone overwrote) does not break the rest: `list_versions` marks
that version corrupt, `corrupt_channels` reports the pointer; reading, pulling or promoting that version is a
clear error. A corrupt pointer no longer says which version is live or what its EX is, so promoting onto it
needs `force` and rolling it back needs an explicit version; either replaces it by the same conditional write.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqltune.artifacts import MANIFEST, atomic_dir, atomic_write_json, sha256_file
from sqltune.errors import SqltuneError
from sqltune.log import get_logger, progress
from sqltune.publish.store import (
    CHANNELS,
    CorruptObject,
    Location,
    check_bucket,
    check_name,
    get_json,
    list_children,
    list_keys,
    load_version_manifest,
    pointer_problem,
    read_version_manifest,
)
from sqltune.s3 import put_json, s3_errors
from sqltune.uri import path_inside, s3_client

log = get_logger(__name__)
_TIE = 1e-9  # EX values are ratios of small integers; compare with a tolerance, not bit-exactly


@dataclass(frozen=True)
class VersionInfo:
    version: str
    complete: bool  # its publish finished: manifest.json exists
    ex_all: float | None = None
    created_at: str | None = None
    channels: tuple[str, ...] = ()
    corrupt: str | None = None  # why its manifest cannot be used; such a version is never pulled or promoted


@dataclass(frozen=True)
class PromotionResult:
    channel: str
    version: str
    promoted: bool
    reason: str
    previous: str | None = None
    candidate_ex: float | None = None
    current_ex: float | None = None


def ex_all(manifest: dict[str, Any]) -> float:
    value = manifest.get("metrics", {}).get("ex", {}).get("all")
    if not isinstance(value, int | float):
        raise SqltuneError(f"version {manifest.get('version')!r}: its manifest has no metrics.ex.all to compare")
    return float(value)


@dataclass
class Registry:
    """The published versions of one model at `s3://bucket/prefix/model_name/`."""

    bucket: str
    prefix: str
    model_name: str
    endpoint_url: str | None = None
    loc: Location = field(init=False)
    _client: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.loc = Location(self.bucket, self.prefix, self.model_name)

    @property
    def client(self) -> Any:
        if self._client is None:
            client = s3_client(self.endpoint_url)
            check_bucket(client, self.bucket)
            self._client = client
        return self._client

    def errors(self, doing: str) -> Any:
        """A block whose S3 failures become one clear SqltuneError about `doing`."""
        endpoint = self._client.meta.endpoint_url if self._client else self.endpoint_url
        return s3_errors(self.bucket, endpoint, doing)

    def manifest(self, version: str) -> dict[str, Any]:
        """The manifest of a complete version (an incomplete one is an error)."""
        with self.errors(f"reading {self.loc.uri(version)}"):
            return read_version_manifest(self.client, self.loc, version)

    def pointer(self, channel: str) -> tuple[dict[str, Any], str] | None:
        """The channel's pointer and its ETag, None before its first promotion; CorruptObject when unusable."""
        with self.errors(f"reading channel {channel!r}"):
            return get_json(self.client, self.bucket, self.loc.pointer_key(channel), pointer_problem)

    def _pointers(self) -> dict[str, str | CorruptObject]:
        """Every channel -> the version it points at, or why its pointer is corrupt."""
        with self.errors(f"listing channels of {self.loc.uri()}"):
            keys = list_keys(self.client, self.bucket, self.loc.key(CHANNELS) + "/")
        names = [
            k.rsplit("/", 1)[1][: -len(".json")] for k in keys if k.count("/") == self.loc.key(CHANNELS).count("/") + 1
        ]
        pointers: dict[str, str | CorruptObject] = {}
        for name in names:
            try:
                if found := self.pointer(name):
                    pointers[name] = found[0]["version"]
            except CorruptObject as exc:
                pointers[name] = exc
        return pointers

    def channels(self) -> dict[str, str]:
        """channel -> version it points at (corrupt pointers left out: see `corrupt_channels`)."""
        return {name: version for name, version in self._pointers().items() if isinstance(version, str)}

    def corrupt_channels(self) -> dict[str, str]:
        """channel -> why its pointer cannot be used."""
        return {name: str(exc) for name, exc in self._pointers().items() if isinstance(exc, CorruptObject)}

    def list_versions(self) -> list[VersionInfo]:
        """Every version, oldest first; incomplete (no manifest) and corrupt ones are listed as such."""
        with self.errors(f"listing {self.loc.uri()}"):
            names = [n for n in list_children(self.client, self.bucket, self.loc.key() + "/") if n != CHANNELS]
            on = self.channels()
            infos = []
            for name in names:
                channels = tuple(sorted(c for c, v in on.items() if v == name))
                try:
                    manifest = load_version_manifest(self.client, self.loc, name)
                except CorruptObject as exc:
                    infos.append(VersionInfo(name, complete=True, channels=channels, corrupt=exc.reason))
                    continue
                if manifest is None:
                    infos.append(VersionInfo(name, complete=False, channels=channels))
                    continue
                ex = manifest.get("metrics", {}).get("ex", {}).get("all")
                infos.append(VersionInfo(name, True, ex, manifest.get("created_at"), channels))
        return sorted(infos, key=lambda info: (info.created_at or "~", info.version))

    def resolve(self, version: str | None = None, channel: str | None = None) -> str:
        """A version given directly or through the channel that points at it."""
        if bool(version) == bool(channel):
            raise SqltuneError("give exactly one of a version or a channel")
        if version:
            return check_name(version, "version")
        found = self.pointer(channel)  # type: ignore[arg-type]
        if found is None:
            raise SqltuneError(f"channel {channel!r} of {self.loc.uri()} points at no version yet")
        return found[0]["version"]

    def pull(self, version: str, dest: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Download a complete version into `dest`, checking every file's sha256 and size against the manifest.

        Built in a temp sibling and renamed into place: a failed pull leaves `dest` as it was, and an existing
        `dest` is replaced only when it is an sqltune artifact or `overwrite` is set. The result carries the
        manifest, so `sqltune.artifacts.verify_artifact(dest)` works on it.
        """
        manifest = self.manifest(version)
        with atomic_dir(dest, overwrite=overwrite, option="--dest") as tmp:
            for rel, entry in progress(sorted(manifest["files"].items()), desc="pull", unit="file"):
                target = path_inside(tmp, rel, self.loc.uri(version, MANIFEST))
                target.parent.mkdir(parents=True, exist_ok=True)
                with self.errors(f"downloading {self.loc.uri(version, rel)}"):
                    self.client.download_file(self.bucket, self.loc.version_key(version, rel), str(target))
                if target.stat().st_size != entry["size"] or sha256_file(target) != entry["sha256"]:
                    raise SqltuneError(f"{self.loc.uri(version, rel)} does not match its sha256/size in the manifest")
            atomic_write_json(tmp / MANIFEST, manifest)
        dest = Path(dest)
        log.info("pulled %s (%d files, verified) to %s", self.loc.uri(version), len(manifest["files"]), dest)
        return dest

    def promote(self, version: str, channel: str, margin: float = 0.0, force: bool = False) -> PromotionResult:
        """Point `channel` at `version` if its EX (all) beats the current one's by at least `margin` (or `force`)."""
        candidate = ex_all(self.manifest(version))
        try:
            found = self.pointer(channel)
        except CorruptObject as exc:
            if not force:
                raise SqltuneError(
                    f"{exc}: the current version and its EX are unknown; pass force to point {channel!r} at {version}"
                ) from None
            return self._move(channel, version, None, exc.etag, "promote", "forced over a corrupt pointer", candidate)
        if found is None:
            return self._move(channel, version, None, None, "promote", "first version on the channel", candidate)
        current, etag = found
        current_ex = current.get("ex_all")
        result = PromotionResult(channel, version, False, "", current["version"], candidate, current_ex)
        if current["version"] == version:
            return replace(result, reason=f"{version} is already on {channel}")
        delta = candidate - float(current_ex if current_ex is not None else float("-inf"))
        if not force and not (delta > _TIE and delta + _TIE >= margin):
            reason = (
                f"EX {candidate:.4f} does not beat {current['version']}'s {current_ex:.4f} "
                f"by the margin {margin:.4f}; pass force to promote anyway"
            )
            log.info("not promoting %s to %s: %s", version, channel, reason)
            return replace(result, reason=reason)
        reason = "forced" if force else f"EX {candidate:.4f} beats {current_ex:.4f} by {delta:.4f} >= {margin:.4f}"
        return self._move(channel, version, current["version"], etag, "promote", reason, candidate, current_ex)

    def rollback(self, channel: str, to: str | None = None) -> PromotionResult:
        """Point `channel` back at `to`, by default the version it pointed at before the current one."""
        try:
            found = self.pointer(channel)
        except CorruptObject as exc:
            if not to:
                raise SqltuneError(
                    f"{exc}: the version before it is unknown; roll back to an explicit version (see its history)"
                ) from None
            reason = "rollback over a corrupt pointer"
            return self._move(channel, to, None, exc.etag, "rollback", reason, ex_all(self.manifest(to)))
        if found is None:
            raise SqltuneError(f"channel {channel!r} of {self.loc.uri()} points at no version: nothing to roll back")
        current, etag = found
        target = to or current.get("previous")
        if not target:
            raise SqltuneError(f"channel {channel!r} has no earlier version to roll back to")
        if target == current["version"]:
            raise SqltuneError(f"channel {channel!r} already points at {target}")
        manifest = self.manifest(target)
        reason = f"rollback from {current['version']}"
        return self._move(channel, target, current["version"], etag, "rollback", reason, ex_all(manifest))

    def history(self, channel: str) -> list[dict[str, Any]]:
        """Every move of `channel`, oldest first."""
        with self.errors(f"reading the history of channel {channel!r}"):
            keys = sorted(list_keys(self.client, self.bucket, self.loc.history_prefix(channel)))
            return [event for key in keys if (found := get_json(self.client, self.bucket, key)) for event in [found[0]]]

    def _previous_of(self, channel: str, version: str) -> str | None:
        """What was on the channel before `version` last arrived there (for a rollback's own pointer)."""
        for event in reversed(self.history(channel)):
            if event["version"] == version:
                return event.get("previous")
        return None

    def _move(
        self,
        channel: str,
        version: str,
        previous: str | None,
        etag: str | None,
        action: str,
        reason: str,
        candidate_ex: float,
        current_ex: float | None = None,
    ) -> PromotionResult:
        """Compare-and-swap the pointer (still `etag`, or still absent), then record the event (never overwritten)."""
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
        pointer = {
            "channel": channel,
            "version": version,
            "uri": self.loc.uri(version) + "/",
            "ex_all": candidate_ex,
            "previous": self._previous_of(channel, version) if action == "rollback" else previous,
            "updated_at": stamp,
            "action": action,
            "reason": reason,
        }
        with self.errors(f"moving channel {channel!r} to {version}"):
            if not put_json(
                self.client,
                self.bucket,
                self.loc.pointer_key(channel),
                pointer,
                if_match=etag,
            ):
                raise SqltuneError(f"channel {channel!r} changed while promoting {version}; run the promotion again")
            event = {**pointer, "from": previous}
            if not put_json(
                self.client, self.bucket, self.loc.history_prefix(channel) + f"{stamp}-{version}.json", event
            ):
                raise SqltuneError(f"history event {stamp}-{version} for channel {channel!r} already exists")
        log.info("%s: channel %s now points at %s (was %s): %s", action, channel, version, previous, reason)
        return PromotionResult(channel, version, True, reason, previous, candidate_ex, current_ex)
