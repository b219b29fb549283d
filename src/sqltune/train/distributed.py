"""The workers of one training run: data parallel (DDP) or sharded (FSDP2), and their sharded checkpoints.

torchrun (started by `sqltune train --nproc-per-node`, see `launch.py`) gives each worker RANK, WORLD_SIZE
and LOCAL_RANK; alone, all of this is a no-op. Under `ddp` every worker holds the whole model and rank 0
writes checkpoints as a single process would. Under `fsdp` each decoder layer, then the whole model, is
`fully_shard`ed: the frozen base weights, the LoRA weights and their AdamW state are split across workers,
and checkpoints are written by every worker with `torch.distributed.checkpoint` (DCP) into a `shards/`
directory that `checkpoint.py` makes complete-or-absent and checksums like any other checkpoint file.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqltune.errors import SqltuneError
from sqltune.log import get_logger
from sqltune.settings import how_to_set
from sqltune.train import checkpoint
from sqltune.train.checkpoint import CheckpointState
from sqltune.train.config import TrainConfig

log = get_logger(__name__)

SHARDS = "shards"  # the DCP directory of an fsdp checkpoint: LoRA weights and optimizer state, one file per rank


class Distributed:
    """torchrun's environment: NCCL on GPUs, gloo on CPUs; `parallelism` says how the model is spread."""

    def __init__(self, parallelism: str = "ddp") -> None:
        import torch
        import torch.distributed as td

        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.is_main = self.rank == 0
        self.sharded = parallelism == "fsdp" and self.world_size > 1
        if parallelism == "fsdp" and self.world_size == 1:
            log.info("parallelism fsdp with one worker: nothing to shard, training as one process")
        if self.world_size > 1 and not td.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(self.local_rank)
            td.init_process_group("nccl" if torch.cuda.is_available() else "gloo")

    def wrap(self, model: Any, device: Any, bf16: bool) -> Any:
        """What the training step calls: the model itself, under DDP, or sharded in place by FSDP2."""
        if self.world_size == 1:
            return model
        if self.sharded:
            return _fully_shard(model, device, bf16)
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def accumulating(self, engine: Any, last: bool) -> AbstractContextManager[Any]:
        """Skip the gradient all-reduce (DDP) or reduce-scatter (FSDP) on every micro-batch but a step's last."""
        if self.world_size == 1:
            return nullcontext()
        if self.sharded:
            engine.set_requires_gradient_sync(last)
            return nullcontext()
        return nullcontext() if last else engine.no_sync()

    def mean_and_sum(self, mean: float, total: int, padded: int) -> tuple[float, int, int]:
        """The loss averaged over processes, token counts summed."""
        if self.world_size == 1:
            return mean, total, padded
        import torch
        import torch.distributed as td

        device = "cuda" if torch.cuda.is_available() else "cpu"
        values = torch.tensor([mean, float(total), float(padded)], dtype=torch.float64, device=device)
        td.all_reduce(values)
        return values[0].item() / self.world_size, int(values[1].item()), int(values[2].item())

    def gather(self, value: Any) -> list[Any] | None:
        """Every worker's `value`, on rank 0 (None elsewhere)."""
        if self.world_size == 1:
            return [value]
        import torch.distributed as td

        gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
        td.gather_object(value, gathered, dst=0)
        return gathered

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as td

            td.barrier()

    def close(self) -> None:
        if self.world_size > 1:
            import torch.distributed as td

            td.destroy_process_group()


def _fully_shard(model: Any, device: Any, bf16: bool) -> Any:
    """FSDP2: each decoder layer its own unit (gathered only while it computes), then the rest as the root."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (int(os.environ["WORLD_SIZE"]),))
    # bf16 compute on GPUs; gradients reduced in fp32 so the LoRA updates keep their precision.
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
    kwargs = {"mesh": mesh, **({"mp_policy": policy} if policy else {})}
    layer_types = set(getattr(model.get_base_model(), "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in layer_types]
    if not layers:
        raise SqltuneError(
            f"parallelism fsdp: {type(model.get_base_model()).__name__} names no decoder layer class "
            f"(_no_split_modules) to shard by; use {how_to_set(TrainConfig, parallelism='ddp')}"
        )
    for layer in layers:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    return model


def resident_bytes(model: Any, optimizer: Any) -> int:
    """Bytes this worker holds of the weights and the optimizer state (its shards only under fsdp)."""
    import torch

    def local(tensor: Any) -> Any:
        return tensor.to_local() if hasattr(tensor, "to_local") else tensor

    weights = sum(local(p).numel() * local(p).element_size() for p in model.parameters())
    state = sum(
        local(v).numel() * local(v).element_size()
        for per_param in optimizer.state.values()
        for v in per_param.values()
        if isinstance(v, torch.Tensor)
    )
    return weights + state


def full_adapter_state(model: Any, dist: Distributed) -> dict[str, Any] | None:
    """The trainable (LoRA) weights, whole, on rank 0 (None elsewhere): every worker must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    state = get_model_state_dict(model, options=options)
    return state if dist.is_main else None


def save_sharded(
    root: str, state: CheckpointState, files: dict[str, Any], *, model: Any, optimizer: Any, dist: Distributed,
    keep: int, endpoint_url: str | None,
) -> None:  # fmt: skip
    """A checkpoint of a sharded run: every worker writes its DCP shard; rank 0 adds `files` and completes it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemWriter

    if dist.is_main:
        checkpoint.clear_staging(root, state.step, endpoint_url)
    dist.barrier()
    with tempfile.TemporaryDirectory(prefix="sqltune-shards-") as scratch:
        # Each worker writes into its own directory (nodes share no disk); the files are then gathered.
        dcp.save(_sharded_state(model, optimizer), storage_writer=FileSystemWriter(scratch))
        staged = checkpoint.stage(root, state.step, Path(scratch), SHARDS, endpoint_url)
    everyone = dist.gather(staged)
    if dist.is_main:
        merged = {name: entry for entries in everyone or [] for name, entry in entries.items()}
        sharded = replace(state, world_size=dist.world_size)
        checkpoint.save(root, sharded, files, keep=keep, endpoint_url=endpoint_url, staged=merged)
    dist.barrier()


def sharded_reader(model: Any, optimizer: Any) -> Any:
    """A checkpoint reader that loads a `shards/` directory into this worker's shards of model and optimizer."""

    def read(path: Path) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        loaded = _sharded_state(model, optimizer)
        dcp.load(loaded, checkpoint_id=path)  # fails when the checkpoint lacks a tensor asked for
        # The frozen base weights are not in a checkpoint: they come from the base model.
        options = StateDictOptions(ignore_frozen_params=True, strict=False)
        set_state_dict(
            model, optimizer, model_state_dict=loaded["model"], optim_state_dict=loaded["optimizer"], options=options
        )

    return read


def _sharded_state(model: Any, optimizer: Any) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    weights, optimizer_state = get_state_dict(model, optimizer, options=StateDictOptions(ignore_frozen_params=True))
    return {"model": weights, "optimizer": optimizer_state}
