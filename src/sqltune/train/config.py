"""Every knob of a training run, with defaults that suit LoRA/QLoRA on a 0.1-8B model."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from sqltune.errors import SqltuneError
from sqltune.prompt import TEMPLATES

METHODS = ("lora", "qlora")
ATTENTION = ("auto", "eager", "sdpa", "flash_attention_2")


@dataclass
class TrainConfig:
    method: str = "lora"  # "qlora": the base model is loaded 4-bit NF4 with double quantization
    template: str = "alpaca"  # prompt template, saved with the adapter so predict uses the same one
    max_seq_len: int = 1024  # prompt + answer + EOS; the schema is trimmed to fit, never the question or SQL
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"  # or a list / comma-separated module names
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"  # any transformers.get_scheduler name
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    num_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides num_epochs
    batch_size: int = 4  # per device, in examples
    gradient_accumulation_steps: int = 1
    seed: int = 42
    # Throughput switches; the naive baseline is pad_to_max_length=True, group_by_length=False, packing=False.
    group_by_length: bool = True  # batches of similar length, so dynamic padding pads little
    packing: bool = False  # flatten each micro-batch into one row, attention isolated per example
    pad_to_max_length: bool = False
    gradient_checkpointing: bool = True
    attn_implementation: str = "auto"  # auto: flash_attention_2 if installed on a GPU, else sdpa
    bf16: bool | None = None  # None: on a GPU that supports it
    checkpoint_every: int = 50  # optimizer steps; 0 disables checkpoints
    keep_checkpoints: int = 2  # >= 2 leaves an older checkpoint to fall back to when the newest is damaged
    fresh_if_corrupt_checkpoint: bool = False  # no usable checkpoint (all damaged): train from step 0, not fail
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, recorded in the manifest

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, str) and self.target_modules != "all-linear":
            self.target_modules = [m.strip() for m in self.target_modules.split(",") if m.strip()]
        checks = {
            "method": (self.method in METHODS, f"one of {', '.join(METHODS)}"),
            "template": (self.template in TEMPLATES, f"one of {', '.join(TEMPLATES)}"),
            "attn_implementation": (self.attn_implementation in ATTENTION, f"one of {', '.join(ATTENTION)}"),
            "max_seq_len": (self.max_seq_len >= 16, ">= 16"),
            "lora_rank": (self.lora_rank >= 1, ">= 1"),
            "lora_alpha": (self.lora_alpha > 0 and math.isfinite(self.lora_alpha), "> 0"),
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
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise SqltuneError(f"train parameter {name}={getattr(self, name)!r} is invalid: expected {expected}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
