"""Start `sqltune train` as N workers per node through PyTorch's elastic launcher (what torchrun runs).

The command relaunches itself: `sqltune train --nproc-per-node 4 ...` on a pod, on a laptop or in a KFP step
runs the same `sqltune train ...` in 4 worker processes, so every path trains the same way. Across nodes the
rendezvous is torchrun's static one (node rank, master address and port), read from the environment Kubeflow
Trainer's torch runtime gives its pods (PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_ADDR,
PET_MASTER_PORT) unless given. A worker that fails stops the others; the command then fails with that
worker's error (not that of a worker that only lost it), which the worker leaves in the error file the launcher
names (TORCHELASTIC_ERROR_FILE).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqltune.errors import SqltuneError
from sqltune.log import get_logger

if TYPE_CHECKING:
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

log = get_logger(__name__)

# Set by torchrun in every worker it starts: a worker trains, it never launches again.
WORKER_ENV = "TORCHELASTIC_RUN_ID"
# The launcher's log directory (the workers' output but local rank 0's), under TMPDIR while the workers run.
LOG_DIR_PREFIX = "sqltune-launch-"


@dataclass(frozen=True)
class Rendezvous:
    """Where the nodes of one run meet (torchrun's static rendezvous: node 0 hosts it)."""

    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500


def train_argv(
    data: str, base_model: str, out: str, config: Any, *, checkpoint_dir: str | None = None,
    endpoint_url: str | None = None, overwrite: bool = False, init_adapter: str | None = None,
    db_dir: str | None = None,
) -> list[str]:  # fmt: skip
    """`sqltune train` arguments for these inputs and settings: what the workers and a TrainJob's pods run.

    A database URL's password never goes into them (a process list, a TrainJob's spec): it moves to
    $SQLTUNE_DATABASE_PASSWORD, which the workers inherit and a URL without a password takes."""
    from dataclasses import replace

    from sqltune.settings import config_args
    from sqltune.sql.location import PASSWORD_ENV, split_password

    if getattr(config, "database_url", None):
        url, password = split_password(config.database_url)
        if password:
            os.environ[PASSWORD_ENV] = password
            config = replace(config, database_url=url)

    argv = ["train", "--data", str(data), "--base-model", base_model, "--out", str(out)]
    argv += ["--overwrite"] if overwrite else []
    argv += ["--checkpoint-dir", checkpoint_dir] if checkpoint_dir else []
    argv += ["--endpoint-url", endpoint_url] if endpoint_url else []
    argv += ["--init-adapter", str(init_adapter)] if init_adapter else []
    argv += ["--db-dir", str(db_dir)] if db_dir else []
    return argv + config_args(config)


def train_here(
    data: str, base_model: str, out: str, config: Any, *, checkpoint_dir: str | None = None,
    endpoint_url: str | None = None, overwrite: bool = False, init_adapter: str | None = None,
    db_dir: str | None = None, rendezvous: Rendezvous | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Train on this node: in this process for one worker, else through the launcher; what the CLI and the
    KFP component both call. Returns the run's metrics (those of the adapter written to `out` when launched)."""
    if not launches(config):
        from sqltune.train.run import train

        return train(
            data, base_model, out, config=config, checkpoint_dir=checkpoint_dir, endpoint_url=endpoint_url,
            overwrite=overwrite, init_adapter=init_adapter, db_dir=db_dir,
        )  # fmt: skip
    argv = train_argv(
        data, base_model, out, config, checkpoint_dir=checkpoint_dir, endpoint_url=endpoint_url, overwrite=overwrite,
        init_adapter=init_adapter, db_dir=db_dir,
    )  # fmt: skip
    from sqltune.train.lock import checkpoint_lock

    num_nodes, per_node = nodes(config.num_nodes), workers_per_node(config.nproc_per_node)
    rendezvous = rendezvous or Rendezvous()
    # The run holds its checkpoint directory from here, for all its workers (node 0's launcher, for all nodes').
    with checkpoint_lock(None if rendezvous.node_rank else checkpoint_dir, endpoint_url):
        launch(argv, num_nodes, per_node, rendezvous, base_model, endpoint_url)
    if rendezvous.node_rank:
        return {}  # node 0 writes the adapter
    return json.loads((Path(out) / "train_metrics.json").read_text(encoding="utf-8"))


def launches(config: Any) -> bool:
    """Whether `config` trains through the launcher from here (several workers, and this is not one of them)."""
    return not is_worker() and nodes(config.num_nodes) * workers_per_node(config.nproc_per_node) > 1


def is_worker() -> bool:
    return WORKER_ENV in os.environ


def nodes(configured: int | None) -> int:
    """The number of nodes: the setting, else Kubeflow Trainer's PET_NNODES, else 1."""
    if configured is not None:
        return configured
    return _env_int("PET_NNODES") or 1


def workers_per_node(configured: int | None) -> int:
    """Workers on this node: the setting, else PET_NPROC_PER_NODE, else one per visible GPU (1 on a CPU)."""
    if configured is not None:
        return configured
    from_env = _env_int("PET_NPROC_PER_NODE")
    if from_env:
        return from_env
    import torch

    return torch.cuda.device_count() or 1


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        if name == "PET_NPROC_PER_NODE":  # Trainer may say "auto"/"gpu"/"cpu": one worker per device then
            return None
        raise SqltuneError(f"environment {name}={value!r} is invalid: expected a positive integer")
    return int(value)


def launch(
    argv: Sequence[str], num_nodes: int, nproc_per_node: int, rendezvous: Rendezvous, base_model: str,
    endpoint_url: str | None = None,
) -> None:  # fmt: skip
    """Run `sqltune <argv>` as `nproc_per_node` workers on this node, `num_nodes` nodes in all; raise if one fails.

    Only local rank 0's output reaches the console (the others' goes to files in a log directory of this process,
    removed when the workers are done, also when they failed): rank 0 logs the run, a failing worker's error is
    reported here. The base model is resolved here first, so a download or a build happens once per node, not
    once per worker. torchrun's own `run()` is not used: its `--redirects` can only name local ranks 0-9 and its
    log directories are never removed; the launch goes through the API `run()` calls (`elastic_launch`).
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, get_args_parser

    from sqltune.models import resolve_base_model

    resolve_base_model(base_model, endpoint_url)
    if num_nodes == 1:  # what torchrun's --standalone does inside run(): a store on a free port of this machine
        where = ["--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0", "--rdzv-id", str(uuid.uuid4())]
    else:
        where = ["--node-rank", str(rendezvous.node_rank), "--master-addr", rendezvous.master_addr,
                 "--master-port", str(rendezvous.master_port)]  # fmt: skip
    sizes = ["--nnodes", str(num_nodes), "--nproc-per-node", str(nproc_per_node), "--max-restarts", "0"]
    log.info(
        "starting %d training workers on node %d of %d (%d in all)",
        nproc_per_node, rendezvous.node_rank, num_nodes, num_nodes * nproc_per_node,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix=LOG_DIR_PREFIX, ignore_cleanup_errors=True) as logs:
        args = get_args_parser().parse_args([*sizes, *where, "--log-dir", logs, "--module", "sqltune.cli", *argv])
        config, entrypoint, entry_args = config_from_args(args)
        # Local rank 0 writes to this console as it is (its JSON summary stays parseable); the others to files.
        config.logs_specs = DefaultLogsSpecs(log_dir=logs, redirects=dict.fromkeys(range(1, nproc_per_node), Std.ALL))
        try:
            elastic_launch(config, entrypoint)(*entry_args)
        except ChildFailedError as exc:
            rank, failure = root_failure(exc.failures)
            raise SqltuneError(
                f"training worker rank {rank} of {num_nodes * nproc_per_node} failed (exit code {failure.exitcode}): "
                f"{failure.message}; the other workers were stopped{_last_output(logs, failure)}"
            ) from None


def _last_output(logs: str, failure: ProcessFailure, lines: int = 3) -> str:
    """For a worker that died without leaving an error of its own (a signal, a native crash: NCCL or gloo print
    their reason and abort), the end of what it wrote to its log file in `logs`, as a clause of one line; else
    nothing (its error says it, or local rank 0 wrote to the console)."""
    if _left_an_error(failure):
        return ""
    written = list(Path(logs).glob(f"*/attempt_*/{failure.local_rank}/stderr.log"))
    if not written:
        return ""
    text = max(written, key=lambda path: path.stat().st_mtime).read_text(encoding="utf-8", errors="replace")
    tail = [line.strip()[:200] for line in text.splitlines() if line.strip()][-lines:]
    return f"; its last output: {' | '.join(tail)}" if tail else ""


def root_failure(failures: dict[int, ProcessFailure]) -> tuple[int, ProcessFailure]:
    """The worker whose failure made the others fail. The launcher lists every failed worker, including those it
    stopped itself (SIGTERM) and those that lost a peer mid-collective, with whole-second timestamps, so the
    earliest is often a consequence. A worker that died without leaving an error (a signal, a crash, the OOM
    killer) comes first, then one that raised an error on its own, then the earliest, then the lowest rank."""

    def order(item: tuple[int, ProcessFailure]) -> tuple[bool, bool, int, int]:
        rank, failure = item
        stopped_by_launcher = failure.exitcode == -signal.SIGTERM
        return stopped_by_launcher, _left_an_error(failure), failure.timestamp, rank

    return min(failures.items(), key=order)


def _left_an_error(failure: ProcessFailure) -> bool:
    return "timestamp" in failure.error_file_data  # what record_worker_error writes


def record_worker_error(exc: BaseException) -> None:
    """In a worker, leave `exc` where the launcher reads the failing worker's error; elsewhere nothing."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path or not is_worker():
        return
    message = str(exc) if isinstance(exc, SqltuneError) else f"{type(exc).__name__}: {exc}"
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"message": message, "timestamp": int(time.time())}, handle)
