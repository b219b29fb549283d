"""S3 operations publish and the model registry share: the key layout, verified uploads and reading the registry's
JSON objects (conditional writes and the translation of S3 failures into clear errors are `sqltune.s3`'s).

Layout under `s3://BUCKET/PREFIX/<model>/`: `<version>/...` (a version is complete once its `manifest.json`
exists; the manifest is always written last) and `channels/<channel>.json` pointers with one history object
per move under `channels/<channel>/history/`.

Every uploaded file is checked by the server against the SHA256 we send (single PUT, or each part of a
multipart upload) and afterwards by a HEAD whose returned checksum must equal ours (the full-object SHA256,
or for multipart the SHA256 of the part digests, "-N"); an endpoint that returns no checksum gets the object
downloaded and hashed instead.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqltune.artifacts import MANIFEST
from sqltune.errors import SqltuneError
from sqltune.log import get_logger
from sqltune.s3 import NOT_FOUND, b64, describe, error_code

log = get_logger(__name__)

CHANNELS = "channels"
MULTIPART_THRESHOLD = 64 << 20
PART_SIZE = 16 << 20  # S3 allows 5 MiB..5 GiB per part and at most 10,000 parts
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class CorruptObject(SqltuneError):
    """A registry object that exists but is not what sqltune writes (not JSON, or the wrong shape).

    Carries its ETag, so a forced promotion can still replace a corrupt channel pointer by a conditional write.
    """

    def __init__(self, uri: str, reason: str, etag: str) -> None:
        super().__init__(f"{uri} is corrupt: {reason}")
        self.reason, self.etag = reason, etag


def check_name(value: str, what: str) -> str:
    """Model names, versions and channels become key segments: letters, digits, `.`, `_`, `-`."""
    if not _NAME.match(value or "") or value in {".", ".."}:
        raise SqltuneError(f"{what} {value!r} is invalid: use 1-128 letters, digits, '.', '_' or '-'")
    return value


@dataclass(frozen=True)
class Location:
    """Where one model lives: `s3://bucket/prefix/model/`."""

    bucket: str
    prefix: str
    model: str

    def __post_init__(self) -> None:
        if not self.bucket:
            raise SqltuneError("bucket must not be empty")
        check_name(self.model, "model name")

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, self.model, *parts) if p.strip("/"))

    def uri(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"

    def version_key(self, version: str, name: str = "") -> str:
        if check_name(version, "version") == CHANNELS:
            raise SqltuneError(f"version {version!r} is reserved for the channel pointers")
        return self.key(version, name) if name else self.key(version) + "/"

    def pointer_key(self, channel: str) -> str:
        return self.key(CHANNELS, check_name(channel, "channel") + ".json")

    def history_prefix(self, channel: str) -> str:
        return self.key(CHANNELS, check_name(channel, "channel"), "history") + "/"


def check_bucket(client: Any, bucket: str) -> None:
    """Fail early, before anything is written, when the bucket is missing or the credentials are wrong."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.head_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError) as exc:
        raise SqltuneError(describe(exc, bucket, client.meta.endpoint_url)) from None


def _parts(path: Path, part_size: int) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(part_size):
            yield chunk


def expected_checksum(path: Path, size: int, sha256_hex: str, multipart_threshold: int, part_size: int) -> str:
    """The ChecksumSHA256 S3 reports for `path` uploaded by `upload_file` (without the "-N" part-count suffix)."""
    if size <= multipart_threshold:
        return b64(bytes.fromhex(sha256_hex))
    digests = b"".join(hashlib.sha256(chunk).digest() for chunk in _parts(path, part_size))
    return b64(hashlib.sha256(digests).digest())


def head(client: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """The object's HEAD response with its checksum, or None when it does not exist."""
    from botocore.exceptions import ClientError

    try:
        return client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        if error_code(exc) in NOT_FOUND:
            return None
        raise


def object_matches(client: Any, bucket: str, key: str, size: int, sha256_hex: str, checksum: str) -> bool:
    """Whether the stored object has exactly this content (by the server's checksum, else by downloading it)."""
    meta = head(client, bucket, key)
    if meta is None or meta["ContentLength"] != size:
        return False
    stored = meta.get("ChecksumSHA256")
    if stored:
        return stored.split("-", 1)[0] == checksum
    digest = hashlib.sha256()
    for chunk in client.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(1 << 20):
        digest.update(chunk)
    return digest.hexdigest() == sha256_hex


def upload_file(
    client: Any, bucket: str, key: str, path: Path, sha256_hex: str, multipart_threshold: int, part_size: int
) -> None:
    """Upload with a SHA256 the server checks on receipt; multipart above the threshold, aborted on failure."""
    metadata = {"sha256": sha256_hex}
    if path.stat().st_size <= multipart_threshold:
        with open(path, "rb") as body:
            client.put_object(
                Bucket=bucket, Key=key, Body=body, ChecksumSHA256=b64(bytes.fromhex(sha256_hex)), Metadata=metadata
            )
        return
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256", Metadata=metadata)[
        "UploadId"
    ]
    try:
        parts = []
        for number, chunk in enumerate(_parts(path, part_size), 1):
            checksum = b64(hashlib.sha256(chunk).digest())
            reply = client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk, ChecksumSHA256=checksum
            )
            parts.append({"PartNumber": number, "ETag": reply["ETag"], "ChecksumSHA256": checksum})
        client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    except BaseException:
        abort_upload(client, bucket, key, upload_id)
        raise


def abort_upload(client: Any, bucket: str, key: str, upload_id: str) -> None:
    """Best effort: when the server is unreachable the next publish of the version aborts it instead."""
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        log.info("aborted the multipart upload of %s", key)
    except Exception as exc:
        log.warning("could not abort the multipart upload of %s (%s); the next publish will", key, error_code(exc))


def abort_stale_uploads(client: Any, bucket: str, prefix: str) -> int:
    """Abort multipart uploads left under `prefix` by an interrupted publish; returns how many."""
    stale = [
        upload
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix)
        for upload in page.get("Uploads", [])
    ]
    for upload in stale:
        abort_upload(client, bucket, upload["Key"], upload["UploadId"])
    return len(stale)


def get_json(
    client: Any, bucket: str, key: str, problem: Callable[[dict[str, Any]], str | None] = lambda _: None
) -> tuple[dict[str, Any], str] | None:
    """A JSON object and its ETag, or None when it does not exist; CorruptObject when it is not a JSON object
    or `problem` finds something wrong with it."""
    from botocore.exceptions import ClientError

    try:
        reply = client.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in NOT_FOUND:
            return None
        raise
    try:
        obj = json.loads(reply["Body"].read())
    except ValueError as exc:  # also UnicodeDecodeError
        raise CorruptObject(f"s3://{bucket}/{key}", f"not valid JSON ({exc})", reply["ETag"]) from None
    reason = problem(obj) if isinstance(obj, dict) else f"a JSON {type(obj).__name__}, not an object"
    if reason:
        raise CorruptObject(f"s3://{bucket}/{key}", reason, reply["ETag"])
    return obj, reply["ETag"]


def list_keys(client: Any, bucket: str, prefix: str) -> list[str]:
    return [
        obj["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for obj in page.get("Contents", [])
    ]


def list_children(client: Any, bucket: str, prefix: str) -> list[str]:
    """The names of the "directories" right below `prefix`."""
    names = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        names.extend(p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", []))
    return names


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and bool(_NAME.match(value)) and value not in {".", "..", CHANNELS}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def manifest_problem(manifest: dict[str, Any], version: str) -> str | None:
    """What makes a version's manifest unusable (pull, show, list and promotion read these fields), or None."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "it lists no files"
    for rel, entry in files.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and _is_number(entry.get("size"))):
            return f"file {rel!r} has no sha256 and size"
    if manifest.get("version", version) != version:
        return f"it is the manifest of version {manifest['version']!r}"
    metrics = manifest.get("metrics", {})
    ex = metrics.get("ex", {}) if isinstance(metrics, dict) else None
    if not isinstance(ex, dict) or not (_is_number(ex.get("all")) or ex.get("all") is None):
        return "metrics.ex.all is not a number"
    if not isinstance(manifest.get("created_at", ""), str):
        return "created_at is not a time stamp"
    return None


def pointer_problem(pointer: dict[str, Any]) -> str | None:
    """What makes a channel pointer unusable, or None."""
    if not _is_name(pointer.get("version")):
        return f"no valid version ({pointer.get('version')!r})"
    if not (_is_number(pointer.get("ex_all")) or pointer.get("ex_all") is None):
        return "ex_all is not a number"
    if not (_is_name(pointer.get("previous")) or pointer.get("previous") is None):
        return "previous is not a version"
    return None


def load_version_manifest(client: Any, loc: Location, version: str) -> dict[str, Any] | None:
    """A version's manifest, None when it has none; CorruptObject when it cannot be used."""
    found = get_json(client, loc.bucket, loc.version_key(version, MANIFEST), lambda m: manifest_problem(m, version))
    return found[0] if found else None


def read_version_manifest(client: Any, loc: Location, version: str) -> dict[str, Any]:
    """The manifest of a complete version; an incomplete, missing or corrupt version is a clear error."""
    manifest = load_version_manifest(client, loc, version)
    if manifest is not None:
        return manifest
    if list_keys(client, loc.bucket, loc.version_key(version)):
        raise SqltuneError(
            f"{loc.uri(version)} is incomplete (no {MANIFEST}): an interrupted publish; "
            "rerun it to complete the version"
        )
    raise SqltuneError(f"{loc.uri(version)} does not exist")
