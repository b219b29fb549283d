"""The train step's entry: one run of a recipe (`SFTRecipe` for lora and qlora, `GRPORecipe` for grpo) in this
process (`run_recipe`, `train`) or on this node's workers through PyTorch's launcher (`train_here`), and the step's
stage plan (`run_stages`: SFT, then the GRPO stage from its adapter when the plan has one).

The CLI calls `train_here`; the component and the accuracy benchmark call `run_stages`, which calls it (or, for
the benchmark, a child process running `run_recipe`); each launched worker is a `sqltune train` that runs the
recipe itself.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from sqltune.train.config import Stages, TrainConfig
from sqltune.train.io import TrainInputs
from sqltune.train.launch import Rendezvous, is_worker, launch, launches
from sqltune.train.lock import checkpoint_lock
from sqltune.train.sft import SFTRecipe
from sqltune.train.trainjob import train_on_trainer
from sqltune.uri import join


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


# The figures of a stage plan's run that the train step reports (its KFP Metrics), GRPO's prefixed where SFT has one
# of the same name.
SUMMARY = ("final_loss", "best_loss", "tokens_per_s", "steps", "trainable_params", "wall_time_s", "grpo_steps",
           "grpo_final_loss", "first_reward", "final_reward", "mean_reward", "correct_groups")  # fmt: skip

StageRunner = Callable[[TrainInputs, TrainConfig], dict[str, Any]]


@dataclass(frozen=True)
class StageResults:
    """The metrics of each stage that ran, and the pages of their loss (and reward) curves, in order."""

    sft: dict[str, Any]
    grpo: dict[str, Any] | None = None
    curves: list[Path] = field(default_factory=list)

    @property
    def final(self) -> dict[str, Any]:
        """The metrics of the adapter the plan ends with."""
        return self.grpo if self.grpo is not None else self.sft

    def summary(self) -> dict[str, float]:
        """The SUMMARY figures of both stages in one mapping (GRPO's `grpo_`-prefixed where SFT has the name)."""
        merged = dict(self.sft)
        merged.update({f"grpo_{k}" if k in merged else k: v for k, v in (self.grpo or {}).items()})
        return {name: float(merged[name]) for name in SUMMARY if isinstance(merged.get(name), (int, float))}


def run_stages(
    stages: Stages,
    inputs: TrainInputs,
    sft_out: str | os.PathLike[str],
    *,
    db_dir: Callable[[], str | os.PathLike[str]] | None = None,
    trainjob: Mapping[str, Any] | None = None,
    run_stage: StageRunner = train_here,
) -> StageResults:
    """SFT into `sft_out`; then, when `stages` has a GRPO stage, GRPO from that adapter into `inputs.out`, its
    checkpoints in `grpo` under `inputs.checkpoint_dir`, rewarded on the databases `db_dir()` (asked for only
    then: they may have to be downloaded); without one, `inputs.out` gets a copy of the SFT adapter (nothing to
    copy when it is `sft_out`).

    `run_stage(inputs, config)` runs a stage: `train_here` (this node's workers), unless the caller isolates it
    (the accuracy benchmark, in a child process). With `trainjob` (`build_trainjob`'s placement) and
    `num_nodes` > 1, SFT runs as a Kubeflow TrainJob on that many nodes instead (`trainjob.train_on_trainer`).
    """
    sft_inputs = replace(inputs, out=sft_out)
    if trainjob is not None and (stages.sft.num_nodes or 1) > 1:
        sft = train_on_trainer(sft_inputs, stages.sft, **trainjob)
    else:
        sft = run_stage(sft_inputs, stages.sft)
    curves = [Path(sft_out) / "loss_curve.html"]
    if stages.grpo is None:
        if Path(sft_out) != Path(inputs.out):
            shutil.copytree(sft_out, inputs.out, dirs_exist_ok=True)
        return StageResults(sft, curves=curves)
    root = inputs.checkpoint_dir
    grpo_inputs = replace(
        inputs, checkpoint_dir=join(root, "grpo") if root else None, init_adapter=sft_out,
        db_dir=db_dir() if db_dir else None,
    )  # fmt: skip
    grpo = run_stage(grpo_inputs, stages.grpo)
    return StageResults(sft, grpo, curves=[*curves, Path(inputs.out) / "loss_curve.html"])
