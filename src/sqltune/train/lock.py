"""One training run at a time per checkpoint directory.

Two runs checkpointing into one directory interleave their checkpoints: each prunes the other's, and a resume
takes whichever is newest. So a run holds the directory while it trains, and a second run is refused with an
error that names the directory and the holder. The lock belongs to the run, not to a process: the process that
starts the workers holds it (`run.train_here`; node 0 of a multi-node run), or the one process that trains;
the workers never take it.

- A local directory: `flock` on `.sqltune-lock` in it, which says who holds it. The kernel releases the lock when
  its holder dies, however it dies (SIGKILL, the OOM killer), so a crashed run never leaves it stuck.
- An s3:// prefix: a lease object, `.sqltune-lease.json` (owner, host, pid, ttl_s), created only if absent
  (If-None-Match) and renewed by a heartbeat thread while the run lives (If-Match on the ETag it wrote last).
  A lease not renewed for `ttl_s` is that of a run that died: it expires by the S3 server's clock (its
  Last-Modified against the Date of the read, so the hosts' clocks do not matter) and is then taken over, by a
  conditional write too, so of two runs taking it over only one wins. It is deleted when the run ends.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from sqltune.errors import SqltuneError
from sqltune.log import get_logger
from sqltune.s3 import NOT_FOUND, PRECONDITION_FAILED, error_code, put_json, s3_errors
from sqltune.uri import is_s3, join, s3_client, split_s3

log = get_logger(__name__)

LOCK_FILE = ".sqltune-lock"
LEASE = ".sqltune-lease.json"
# A lease not renewed for this long is free; it is renewed every quarter of it. The pipeline retries a failed train
# step after 60 s and more, by when a crashed run's lease has expired.
LEASE_TTL_S = 60.0
_WHAT_TO_DO = "give this run another checkpoint directory (--checkpoint-dir)"


@contextmanager
def checkpoint_lock(root: str | None, endpoint_url: str | None = None, *, ttl_s: float = LEASE_TTL_S) -> Iterator[None]:
    """Hold the checkpoint directory `root` (local or s3://) for this run; SqltuneError if another run holds it."""
    if not root:
        yield
    elif is_s3(root):
        lease = _Lease(root, endpoint_url, ttl_s)
        lease.acquire()
        try:
            yield
        finally:
            lease.release()
    else:
        with _flock(Path(root)):
            yield


def _holder() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def _who(holder: Any) -> str:
    if not isinstance(holder, dict) or "pid" not in holder:
        return "which has not said who it is yet"
    since = f", since {holder['since']}" if holder.get("since") else ""
    return f"pid {holder['pid']} on {holder.get('host', 'an unknown host')}{since}"


@contextmanager
def _flock(root: Path) -> Iterator[None]:
    if root.exists() and not root.is_dir():
        raise SqltuneError(f"checkpoint directory {root} exists and is not a directory; choose another path")
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    while True:
        handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(handle.read())
            except ValueError:  # it has locked the file and not written it yet
                holder = None
            handle.close()
            raise SqltuneError(
                f"checkpoint directory {root} is in use by another training run ({_who(holder)}): wait for it to "
                f"finish, or {_WHAT_TO_DO}"
            ) from None
        try:  # the run before us removes the file as it ends: lock the file that is there, not the one it removed
            current = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        handle.close()
    try:
        handle.truncate()
        handle.write(json.dumps(_holder()))
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # while still locked, so the next run locks a file of its own
        handle.close()


class _Lease:
    """The lease object of an s3:// checkpoint prefix (see the module's docstring)."""

    def __init__(self, root: str, endpoint_url: str | None, ttl_s: float) -> None:
        self.root, self.endpoint_url, self.ttl_s = root, endpoint_url, ttl_s
        self.uri = join(root, LEASE)
        self.bucket, self.key = split_s3(self.uri)
        self.client = s3_client(endpoint_url)
        self.owner, self.holder = uuid.uuid4().hex, _holder()
        self.etag: str | None = None
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._renew, name="sqltune-lease", daemon=True)

    def _body(self) -> dict[str, Any]:
        return {"owner": self.owner, **self.holder, "ttl_s": self.ttl_s}

    def acquire(self) -> None:
        with s3_errors(self.bucket, self.endpoint_url, f"taking the lease {self.uri} of the checkpoint directory"):
            for _ in range(5):  # each retry means another run wrote or removed the lease meanwhile
                self.etag = put_json(self.client, self.bucket, self.key, self._body())
                if self.etag:
                    break
                found = self._read()
                if found is None:
                    continue  # released between our write and our read
                holder, etag, expires, now = found
                if now < expires:
                    raise SqltuneError(
                        f"checkpoint directory {self.root} is in use by another training run ({_who(holder)}), "
                        f"whose lease {self.uri} expires at {expires:%Y-%m-%d %H:%M:%S} UTC unless that run renews "
                        f"it: wait for it to finish (if it crashed, the directory is free from that time), or "
                        f"{_WHAT_TO_DO}"
                    )
                log.warning(
                    "checkpoint directory %s: taking over the lease of a run that stopped renewing it (%s; expired "
                    "at %s UTC)", self.root, _who(holder), f"{expires:%Y-%m-%d %H:%M:%S}",
                )  # fmt: skip
                self.etag = put_json(self.client, self.bucket, self.key, self._body(), if_match=etag)
                if self.etag:
                    break
            else:
                raise SqltuneError(f"checkpoint directory {self.root} is contended by other runs: {_WHAT_TO_DO}")
        self._heartbeat.start()

    def _read(self) -> tuple[Any, str, datetime, datetime] | None:
        """(the lease, its ETag, when it expires, the server's time now), or None when there is none."""
        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except Exception as exc:
            if error_code(exc) in NOT_FOUND:
                return None
            raise
        try:
            holder = json.loads(reply["Body"].read())
        except ValueError:
            holder = None
        ttl = holder.get("ttl_s") if isinstance(holder, dict) else None
        ttl = ttl if isinstance(ttl, int | float) and not isinstance(ttl, bool) else LEASE_TTL_S
        now = parsedate_to_datetime(reply["ResponseMetadata"]["HTTPHeaders"]["date"])
        return holder, reply["ETag"], reply["LastModified"] + timedelta(seconds=ttl), now

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                etag = put_json(self.client, self.bucket, self.key, self._body(), if_match=self.etag)
            except Exception as exc:  # the store unreachable for a moment: the next beat tries again
                log.warning("could not renew the lease %s (%s); trying again", self.uri, exc)
                continue
            if etag is None:
                log.error(
                    "lost the lease %s: it was not renewed for %ss and another run took the checkpoint directory "
                    "over; its checkpoints and this run's may now interleave", self.uri, self.ttl_s,
                )  # fmt: skip
                return
            self.etag = etag

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours; never fails the run (it expires anyway)."""
        self._stop.set()
        if self._heartbeat.is_alive():
            self._heartbeat.join()
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
        except Exception as exc:
            if error_code(exc) in PRECONDITION_FAILED:
                return  # another run holds it now (see _renew)
            log.warning("could not remove the lease %s (%s); it expires %ss after its last renewal", self.uri, exc,
                        self.ttl_s)  # fmt: skip
