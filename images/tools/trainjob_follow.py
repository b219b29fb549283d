"""The train step's TrainJob wait / stream / fail logic (`trainjob.follow`) run through a real Kubeflow SDK
backend: the SDK's container backend, on this machine's engine, running TrainJobs of a component image.

`make image-test` runs it after building the images. The container backend runs a Python function on each
node (the Kubernetes backend runs our `sqltune train` command; the SDK's container backend refuses command
trainers), so the nodes here call the image's own `sqltune`: one completes, one fails with sqltune's error,
and `follow` must stream the first's log and fail the second with that error as the reason.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from imagebuild import Engine
from sqltune import __version__
from sqltune.errors import SqltuneError

MISSING_SOURCE = "/no/such/spider"  # node_fails_in_sqltune's: a node's source cannot read this module


def node_runs_sqltune() -> None:
    """A TrainJob node that runs the image's sqltune and completes (its source runs inside the container)."""
    import subprocess

    print(subprocess.run(["sqltune", "--version"], capture_output=True, text=True, check=True).stdout, flush=True)


def node_fails_in_sqltune() -> None:
    """A TrainJob node whose sqltune command fails (a dataset source that does not exist)."""
    import subprocess
    import sys

    argv = ["sqltune", "preprocess", "--dataset", "spider", "--source", "/no/such/spider", "--split", "train"]
    sys.exit(subprocess.run([*argv, "--out", "/tmp/out"], check=False).returncode)


@contextmanager
def engine_api(engine: Engine, work: Path) -> Iterator[str | None]:
    """The engine's API for the SDK: podman's own service on a private socket for the block; for docker, the
    daemon's default socket (None)."""
    if Path(engine.binary).name != "podman":
        yield None
        return
    socket = work / "podman.sock"
    service = subprocess.Popen(
        [engine.binary, "system", "service", "--time=0", f"unix://{socket}"],
        env=engine.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not socket.exists():
            if service.poll() is not None or time.monotonic() > deadline:
                raise SqltuneError(f"`podman system service` did not open {socket} (exit {service.poll()})")
            time.sleep(0.2)
        yield f"unix://{socket}"
    finally:
        service.terminate()
        service.wait(timeout=30)


def check_trainjob_follow(engine: Engine, image: str, work: Path) -> str:
    """Run two TrainJobs of `image` through the SDK's container backend and check what `follow` makes of them."""
    from kubeflow.trainer import CustomTrainer, TrainerClient
    from kubeflow.trainer.backends.container.types import ContainerBackendConfig, TrainingRuntimeSource

    from sqltune.train.trainjob import DEFAULT_RUNTIME, follow

    runtimes = work / "runtimes"  # none here: the SDK falls back to its packaged definitions, without network
    runtimes.mkdir(parents=True, exist_ok=True)
    with engine_api(engine, work) as host:
        config = ContainerBackendConfig(
            container_runtime=Path(engine.binary).name,
            container_host=host,
            pull_policy="Never",
            runtime_source=TrainingRuntimeSource(sources=[str(runtimes)]),
        )
        client = TrainerClient(config)
        runtime = client.backend.get_runtime(DEFAULT_RUNTIME)

        def run(node: Callable[[], None]) -> tuple[list[str], str | None]:
            """The lines `follow` streamed, and its error (None when it returned)."""
            name = client.train(runtime=runtime, trainer=CustomTrainer(func=node, image=image))
            lines: list[str] = []
            try:
                follow(client, name, echo=lines.append, timeout_s=600, poll_s=1)
                return lines, None
            except SqltuneError as exc:
                return lines, str(exc)
            finally:
                client.delete_job(name)

        lines, error = run(node_runs_sqltune)
        if error is not None or not any(f"sqltune {__version__}" in line for line in lines):
            raise SqltuneError(f"a TrainJob that ran `sqltune --version` was followed to {error!r}, log {lines}")
        _, error = run(node_fails_in_sqltune)
        expected = f"failed: spider source not found: {MISSING_SOURCE}"
        if error is None or expected not in error:
            raise SqltuneError(f"a TrainJob whose sqltune failed was followed to {error!r}, not {expected!r}")
    return f"completed job streamed {len(lines)} line(s); failed job: {error}"
