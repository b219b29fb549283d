"""The train step's entry: one run of a recipe (`SFTRecipe` for lora and qlora, `GRPORecipe` for grpo) in this
process (`run_recipe`, `train`), or on this node's workers through PyTorch's launcher (`train_here`).

The CLI calls `train_here`; so does the stage plan (`stages.run_stages`) that the component and the accuracy
benchmark run; each launched worker is a `sqltune train` that runs the recipe itself.
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol

from sqltune.train.config import TrainConfig
from sqltune.train.io import TrainInputs
from sqltune.train.launch import Rendezvous, is_worker, launch, launches
from sqltune.train.lock import checkpoint_lock
from sqltune.train.sft import SFTRecipe


class Recipe(Protocol):
    """A training algorithm's run of one config on one set of inputs, in phases that `run_recipe` calls in order."""

    def setup(self) -> None:
        """Check the inputs, load the model, build the data and the optimizer."""

    def resume(self) -> None:
        """Continue from the newest usable checkpoint in `checkpoint_dir`, if there is one."""

    def train(self) -> None:
        """The training steps, checkpointing every `checkpoint_every` (`save_checkpoint`)."""

    def save_adapter(self) -> dict[str, Any]:
        """Write the adapter artifact to `out`; returns the run's metrics (also in its `train_metrics.json`)."""

    def cleanup(self) -> None:
        """Let go of what the run holds; called also when a phase failed."""


def recipe_for(inputs: TrainInputs, config: TrainConfig) -> Recipe:
    if config.method == "grpo":
        from sqltune.train.grpo import GRPORecipe  # TRL loads only for GRPO

        return GRPORecipe(inputs, config)
    return SFTRecipe(inputs, config)


def run_recipe(inputs: TrainInputs, config: TrainConfig) -> dict[str, Any]:
    """Train in this process (under torchrun, every worker calls this; rank 0 writes the artifact); returns the
    metrics also written to `train_metrics.json`.

    The run holds `checkpoint_dir` while it trains (`lock.checkpoint_lock`): a second run on it is refused.
    Launched workers leave that to their launcher (`train_here`), which holds it for the run.
    """
    with nullcontext() if is_worker() else checkpoint_lock(inputs.checkpoint_dir, inputs.endpoint_url):
        recipe = recipe_for(inputs, config)
        try:
            recipe.setup()
            recipe.resume()
            recipe.train()
            return recipe.save_adapter()
        finally:
            recipe.cleanup()


def train(
    data: str | os.PathLike[str],
    base_model: str,
    out: str | os.PathLike[str],
    *,
    config: TrainConfig | None = None,
    checkpoint_dir: str | None = None,
    endpoint_url: str | None = None,
    overwrite: bool = False,
    init_adapter: str | None = None,
    db_dir: str | None = None,
) -> dict[str, Any]:
    """Fine-tune `base_model` on the records in `data` and write the adapter artifact to `out`, in this process.

    `data` is a records JSONL file or a preprocess artifact directory (local or s3://). With
    `checkpoint_dir` (local or s3://), checkpoints are written every `config.checkpoint_every` steps and a
    rerun continues from the latest complete one. With `config.method` grpo, `init_adapter` (the SFT adapter)
    is trained further by GRPO, rewarded by running its SQL against the databases under `db_dir`. Returns the
    metrics also written to `train_metrics.json`. (`run_recipe` with the inputs as keywords.)
    """
    inputs = TrainInputs(
        data, base_model, out, checkpoint_dir=checkpoint_dir, endpoint_url=endpoint_url, overwrite=overwrite,
        init_adapter=init_adapter, db_dir=db_dir,
    )  # fmt: skip
    return run_recipe(inputs, config or TrainConfig())


def train_here(inputs: TrainInputs, config: TrainConfig, rendezvous: Rendezvous | None = None) -> dict[str, Any]:
    """Train on this node: in this process for one worker, else as `sqltune train` workers started through the
    launcher. Returns the run's metrics (those of the adapter written to `out` when launched; nothing on a node
    other than node 0, which writes it)."""
    if not launches(config):
        return run_recipe(inputs, config)
    rendezvous = rendezvous or Rendezvous()
    # The run holds its checkpoint directory from here, for all its workers (node 0's launcher, for all nodes').
    with checkpoint_lock(None if rendezvous.node_rank else inputs.checkpoint_dir, inputs.endpoint_url):
        launch(inputs, config, rendezvous)
    if rendezvous.node_rank:
        return {}
    return json.loads((Path(inputs.out) / "train_metrics.json").read_text(encoding="utf-8"))
