"""One URI layer for every step: a location is a local path or an `s3://bucket/prefix` URI.

S3 access goes through boto3's standard credential chain (environment, config files, IAM roles); the
endpoint comes from `endpoint_url`, else `AWS_ENDPOINT_URL` (which boto3 reads itself), so MinIO,
SeaweedFS, Ceph and AWS all work. Credentials are never taken as parameters or logged.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

from sqltune.artifacts import atomic_dir
from sqltune.errors import SqltuneError
from sqltune.log import get_logger

log = get_logger(__name__)


def is_s3(uri: str | os.PathLike[str]) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/key` -> (`bucket`, `some/key`)."""
    if not is_s3(uri):
        raise SqltuneError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise SqltuneError(f"s3 URI without a bucket: {uri!r}")
    return bucket, key


def join(uri: str, *parts: str) -> str:
    """Join path segments onto a local path or an s3 URI."""
    if is_s3(uri):
        return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(uri, *parts))


def cache_root() -> Path:
    return Path(os.environ.get("SQLTUNE_CACHE", Path.home() / ".cache" / "sqltune"))


def s3_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client with retries (standard mode: throttling, 5xx and dropped connections)."""
    import boto3
    import botocore.session
    from botocore.config import Config

    config = Config(retries={"max_attempts": 6, "mode": "standard"}, connect_timeout=10, read_timeout=60)
    # A fresh session resolves the credential chain now (boto3's default session keeps the first credentials it
    # found); sharing the loader keeps that cheap, as the service model is then parsed once per process.
    session = botocore.session.Session()
    session.register_component("data_loader", _botocore_loader())
    return boto3.session.Session(botocore_session=session).client(
        "s3", endpoint_url=endpoint_url or None, config=config
    )


@functools.cache
def _botocore_loader() -> Any:
    from botocore.loaders import create_loader

    return create_loader()


def list_objects(client: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every object under `prefix` (paginated), as boto3's `Contents` entries."""
    objects: list[dict[str, Any]] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        objects.extend(page.get("Contents", []))
    return objects


def path_inside(root: Path, key: str, source: str) -> Path:
    """The local path under `root` for `key`, a relative name read from storage others can write to.

    Whoever can write to a bucket chooses its keys and the file names its manifests list, so a download must
    not follow them anywhere: an absolute name, an empty, `.` or `..` segment, or a name that resolves outside
    `root` (through a symlink) is refused with an error naming the key and `source`, where it was read.
    """
    parts = key.split("/")
    if "\0" in key or any(part in {"", ".", ".."} for part in parts):
        raise SqltuneError(
            f"{source}: refusing to write {key!r}: not a plain relative path (absolute, or with '..', '.' "
            "or empty segments)"
        )
    target = root.joinpath(*parts)
    if not target.resolve().is_relative_to(root.resolve()):
        raise SqltuneError(f"{source}: refusing to write {key!r}: it resolves outside {root}")
    return target


def download_dir(
    uri: str, dest: str | os.PathLike[str], endpoint_url: str | None = None, *, overwrite: bool = False
) -> Path:
    """Copy every object under the s3 prefix `uri` into `dest` (built in a temp dir, then renamed).

    `dest` is replaced only when it is an sqltune artifact or `overwrite` is set (see `atomic_dir`).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3(uri)
    prefix = key.rstrip("/") + "/" if key else ""
    try:
        with atomic_dir(dest, overwrite=overwrite, option="destination") as tmp:
            client = s3_client(endpoint_url)
            objects = list_objects(client, bucket, prefix)
            if not objects:
                raise SqltuneError(f"{uri}: no objects under this prefix")
            for obj in objects:
                rel = obj["Key"][len(prefix) :]
                if not rel or rel.endswith("/"):
                    continue
                target = path_inside(tmp, rel, uri)
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, obj["Key"], str(target))
    except (BotoCoreError, ClientError) as exc:
        raise SqltuneError(f"could not download {uri}: {exc}") from None
    log.info("downloaded %s (%d objects) to %s", uri, len(objects), dest)
    return Path(dest)


def upload_dir(src: str | os.PathLike[str], uri: str, endpoint_url: str | None = None) -> list[str]:
    """Upload every file under `src` to the s3 prefix `uri`; returns the keys written."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3(uri)
    prefix = key.rstrip("/") + "/" if key else ""
    client = s3_client(endpoint_url)
    written = []
    try:
        for path in sorted(p for p in Path(src).rglob("*") if p.is_file()):
            object_key = prefix + path.relative_to(src).as_posix()
            client.upload_file(str(path), bucket, object_key)
            written.append(object_key)
    except (BotoCoreError, ClientError) as exc:
        raise SqltuneError(f"upload of {src} to {uri} failed after {len(written)} files: {exc}") from None
    return written


def localize(uri: str | os.PathLike[str], what: str = "input", endpoint_url: str | None = None) -> Path:
    """A local directory or file for `uri`: local paths as they are, s3 prefixes downloaded once to the cache."""
    if not is_s3(uri):
        path = Path(uri).expanduser()
        if not path.exists():
            raise SqltuneError(f"{what} not found: {path}")
        return path
    digest = hashlib.sha256(str(uri).encode()).hexdigest()[:16]
    dest = cache_root() / "s3" / digest
    if not dest.is_dir():
        download_dir(str(uri), dest, endpoint_url, overwrite=True)  # our own cache
    return dest
