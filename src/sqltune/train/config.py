"""Every setting of a training run: the one place its name, type, default and help live.

The CLI options of `sqltune train` are generated from this class, the train component and the pipeline
take the same names (a test checks), and the accuracy benchmark's variants are overrides of it. The
defaults suit LoRA/QLoRA on a 0.1-8B model on one device; the pipeline's own defaults (QLoRA, batch 8 on a
GPU node) are listed with their reasons in `pipelines/text2sql/pipeline.py` (PIPELINE_DEFAULTS).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from enum import Enum
from typing import Any

from sqltune.errors import SqltuneError
from sqltune.prompt import PromptTemplate
from sqltune.settings import OPTIONS, SettingError, build_config, check_settings, setting
from sqltune.sql.location import URL_ENV, URL_HELP, check_url, hide_password


class Method(str, Enum):
    lora = "lora"
    qlora = "qlora"  # the base model is loaded 4-bit NF4 with double quantization
    grpo = "grpo"  # reinforcement learning from an SFT adapter (--init-adapter) with an execution reward


class Parallelism(str, Enum):
    ddp = "ddp"  # every worker holds the whole model; gradients are averaged
    fsdp = "fsdp"  # FSDP2: weights, LoRA weights and optimizer state sharded across the workers


class LrScheduler(str, Enum):
    """transformers' schedulers that need nothing beyond the warmup and total steps (SFT and TRL's GRPO alike)."""

    linear = "linear"
    cosine = "cosine"
    cosine_with_restarts = "cosine_with_restarts"
    polynomial = "polynomial"
    constant = "constant"
    constant_with_warmup = "constant_with_warmup"
    inverse_sqrt = "inverse_sqrt"


class Attention(str, Enum):
    auto = "auto"  # flash_attention_2 if installed on a GPU, else sdpa
    eager = "eager"
    sdpa = "sdpa"
    flash_attention_2 = "flash_attention_2"


# Settings of the GRPO stage alone: they do not change what LoRA/QLoRA trains.
GRPO_SETTINGS = ("num_generations", "prompts_per_step", "kl_coef", "reward_correct", "reward_executes", "temperature",
                 "max_completion_length", "database_url")  # fmt: skip


@dataclass
class TrainConfig:
    method: str = setting(
        "lora", "lora, qlora (4-bit NF4 base model), or grpo (RL from --init-adapter, rewarded by execution).",
        choices=Method,
    )  # fmt: skip
    prompt_template: str = setting(
        "alpaca", "Prompt template, saved with the adapter so predict uses the same one.",
        choices=PromptTemplate, aliases=("--template",),
    )  # fmt: skip
    max_seq_len: int = setting(1024, "Tokens per example (prompt + SQL + EOS); the schema is trimmed to fit.")
    lora_rank: int = setting(16, "LoRA rank r.")
    lora_alpha: int = setting(32, "LoRA alpha (the update is scaled by alpha / r).")
    lora_dropout: float = setting(0.05, "LoRA dropout.")
    target_modules: str | list[str] = setting("all-linear", "'all-linear' or comma-separated module names.")
    learning_rate: float = setting(2e-4, "Peak learning rate.", aliases=("--lr",))
    lr_scheduler: str = setting(
        "cosine", "Learning-rate schedule (transformers' scheduler of that name).",
        choices=LrScheduler, pipeline=OPTIONS,
    )  # fmt: skip
    warmup_ratio: float = setting(0.03, "Fraction of the steps spent warming up.", pipeline=OPTIONS)
    weight_decay: float = setting(0.0, "AdamW weight decay.", pipeline=OPTIONS)
    max_grad_norm: float = setting(1.0, "Gradient clipping norm (0: no clipping).", pipeline=OPTIONS)
    num_epochs: float = setting(1.0, "Epochs, when max_steps is not set.", aliases=("--epochs",))
    max_steps: int = setting(-1, "Optimizer steps; <= 0 trains for num_epochs.")
    batch_size: int = setting(4, "Examples per device per micro-batch.")
    gradient_accumulation_steps: int = setting(1, "Micro-batches per optimizer step.", aliases=("--grad-accum",))
    seed: int = setting(42, "Seed for LoRA init, data order and dropout.")
    group_by_length: bool = setting(
        True, "Batch examples of similar length (dynamic padding pads little).", pipeline=OPTIONS
    )
    packing: bool = setting(
        False, "Flatten each micro-batch into one row, attention isolated per example.", pipeline=OPTIONS
    )
    pad_to_max_length: bool = setting(False, "Pad every batch to max_seq_len (the naive baseline).", pipeline=OPTIONS)
    gradient_checkpointing: bool = setting(True, "Trade compute for activation memory.")
    attn_implementation: str = setting(
        "auto", "Attention kernel (auto: flash_attention_2 on a GPU when installed, else sdpa).",
        choices=Attention, aliases=("--attn",), pipeline=OPTIONS,
    )  # fmt: skip
    bf16: bool | None = setting(None, "bf16 compute (default: on GPUs that support it).", pipeline=OPTIONS)
    checkpoint_every: int = setting(50, "Checkpoint interval in optimizer steps (0: off).", pipeline=OPTIONS)
    keep_checkpoints: int = setting(
        2, "Checkpoints kept; 2 or more leave one to fall back to when the newest is damaged.", pipeline=OPTIONS
    )
    parallelism: str = setting(
        "ddp", "How several workers share the model: ddp replicates it, fsdp shards it (models larger than a GPU).",
        choices=Parallelism,
    )  # fmt: skip
    nproc_per_node: int | None = setting(
        None, "Workers per node, one per GPU (default: PET_NPROC_PER_NODE, else the visible GPUs, 1 on a CPU)."
    )
    num_nodes: int | None = setting(
        None, "Nodes training together (default: PET_NNODES as Kubeflow Trainer sets it, else 1)."
    )
    num_generations: int = setting(
        4, "GRPO: completions sampled per prompt, the group they are compared in.", pipeline=OPTIONS
    )
    prompts_per_step: int = setting(
        4, "GRPO: prompts per optimizer step; their completions go through the model batch_size at a time.",
        pipeline=OPTIONS,
    )  # fmt: skip
    kl_coef: float = setting(
        0.04, "GRPO: weight of the KL penalty that keeps the policy near the SFT adapter (TRL's beta).",
        pipeline=OPTIONS,
    )  # fmt: skip
    reward_correct: float = setting(1.0, "GRPO: reward of SQL whose result matches the gold result.", pipeline=OPTIONS)
    reward_executes: float = setting(
        0.1, "GRPO: reward of SQL that runs but returns another result (0: correctness alone).", pipeline=OPTIONS
    )
    temperature: float = setting(1.0, "GRPO: sampling temperature of the completions.", pipeline=OPTIONS)
    max_completion_length: int = setting(128, "GRPO: most tokens per sampled completion.", pipeline=OPTIONS)
    database_url: str | None = setting(
        None, URL_HELP + " GRPO: the reward runs completions there instead of --db-dir's SQLite files.", envvar=URL_ENV
    )
    fresh_if_corrupt_checkpoint: bool = setting(
        False, "When every checkpoint is damaged, train from step 0 instead of failing.", pipeline=OPTIONS
    )

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, str) and self.target_modules != "all-linear":
            self.target_modules = [m.strip() for m in self.target_modules.split(",") if m.strip()]
        check_settings(self, "train")
        checks = {
            "max_seq_len": (self.max_seq_len >= 16, ">= 16"),
            "lora_rank": (self.lora_rank >= 1, ">= 1"),
            "lora_alpha": (self.lora_alpha > 0, "> 0"),
            "lora_dropout": (0 <= self.lora_dropout < 1, "in [0, 1)"),
            "learning_rate": (0 < self.learning_rate < math.inf, "finite and > 0"),
            "num_epochs": (0 < self.num_epochs < math.inf or self.max_steps > 0, "finite and > 0 (or set max_steps)"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "gradient_accumulation_steps": (self.gradient_accumulation_steps >= 1, ">= 1"),
            "warmup_ratio": (0 <= self.warmup_ratio < 1, "in [0, 1)"),
            "weight_decay": (0 <= self.weight_decay < math.inf, "finite and >= 0"),
            "max_grad_norm": (0 <= self.max_grad_norm < math.inf, "finite and >= 0 (0: no clipping)"),
            "target_modules": (bool(self.target_modules), "'all-linear' or a non-empty list"),
            "checkpoint_every": (self.checkpoint_every >= 0, ">= 0"),
            "keep_checkpoints": (self.keep_checkpoints >= 1, ">= 1"),
            "nproc_per_node": (self.nproc_per_node is None or self.nproc_per_node >= 1, ">= 1"),
            "num_nodes": (self.num_nodes is None or self.num_nodes >= 1, ">= 1"),
            "num_generations": (self.num_generations >= 2, ">= 2 (GRPO compares completions within a group)"),
            "prompts_per_step": (
                self.prompts_per_step >= 1
                and (self.method != "grpo" or self.prompts_per_step * self.num_generations % self.batch_size == 0),
                f">= 1, and prompts_per_step x num_generations ({self.prompts_per_step * self.num_generations}) "
                f"completions a multiple of batch_size ({self.batch_size})",
            ),
            "kl_coef": (0 <= self.kl_coef < math.inf, "finite and >= 0"),
            "reward_correct": (0 < self.reward_correct < math.inf, "finite and > 0"),
            "reward_executes": (0 <= self.reward_executes < self.reward_correct, "in [0, reward_correct)"),
            "temperature": (0 < self.temperature < math.inf, "finite and > 0"),
            "max_completion_length": (1 <= self.max_completion_length < self.max_seq_len, ">= 1 and < max_seq_len"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise SettingError("train", name, getattr(self, name), expected)
        try:
            self.database_url = check_url(self.database_url)
        except SqltuneError as exc:
            raise SettingError("train", "database_url", hide_password(self.database_url or ""), str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        """The settings as manifests record them: the database URL without its password."""
        return {**asdict(self), "database_url": hide_password(self.database_url) if self.database_url else None}


@dataclass(frozen=True)
class Stages:
    """The train step's plan: SFT (LoRA or QLoRA) with `sft`, then, when `grpo` is set, GRPO from its adapter."""

    sft: TrainConfig
    grpo: TrainConfig | None = None


def plan_stages(sft: TrainConfig, rl_steps: int, rl_learning_rate: float, **grpo_settings: Any) -> Stages:
    """SFT with `sft`, then `rl_steps` GRPO steps (none when 0) at `rl_learning_rate`, in one process, with the
    settings of `sft` and `grpo_settings` (GRPO_SETTINGS for that stage alone). Errors name rl_steps and
    rl_learning_rate, as the pipeline calls them."""
    if isinstance(rl_steps, bool) or not isinstance(rl_steps, int) or rl_steps < 0:
        raise SettingError("train", "rl_steps", rl_steps, "a whole number >= 0 (0: no GRPO stage)")
    if rl_steps == 0:
        return Stages(sft)
    if set(grpo_settings) - set(GRPO_SETTINGS):
        raise TypeError(f"plan_stages: {sorted(set(grpo_settings) - set(GRPO_SETTINGS))} are not GRPO_SETTINGS")
    stage = {"max_steps": rl_steps, "learning_rate": rl_learning_rate, **grpo_settings}
    try:
        grpo = replace(sft, method=Method.grpo.value, nproc_per_node=1, num_nodes=1, **stage)
    except SettingError as exc:  # name the pipeline's GRPO parameter, not the SFT stage's setting
        raise SettingError("train", QUALIFIED_GRPO.get(exc.name, exc.name), exc.value, exc.expected) from None
    return Stages(sft, grpo)


def stage_configs(params: Mapping[str, Any]) -> Stages:
    """The train component's stages from its parameters (the component and the pipeline's submission check both
    build them here)."""
    if params["method"] == Method.grpo.value:
        raise SettingError("train", "method", params["method"], "lora or qlora: rl_steps > 0 adds GRPO after them")
    sft = build_config(TrainConfig, params, params["train_options"], "train_options")
    return plan_stages(sft, params["rl_steps"], params["rl_learning_rate"])


# The GRPO stage's settings that the pipeline sets under names of their own.
QUALIFIED_GRPO = {"max_steps": "rl_steps", "learning_rate": "rl_learning_rate"}
