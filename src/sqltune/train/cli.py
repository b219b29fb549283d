"""`sqltune train`: the defaults shown are TrainConfig's, so the CLI and the library cannot disagree."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from sqltune.artifacts import OVERWRITE_HELP
from sqltune.prompt import PromptTemplate
from sqltune.train.checkpoint import FRESH_FLAG
from sqltune.train.config import TrainConfig

_DEFAULT = TrainConfig()


class Method(str, Enum):
    lora = "lora"
    qlora = "qlora"


_METHOD, _TEMPLATE = Method(_DEFAULT.method), PromptTemplate(_DEFAULT.template)


def train(
    data: str = typer.Option(..., help="Train records: a records.jsonl file or preprocess artifact dir (or s3://)."),
    base_model: str = typer.Option(
        ..., help="Local dir, hf://org/name[@rev], s3:// prefix, smollm2-135m, tiny-random-llama, tiny-random-qwen2."
    ),
    method: Method = typer.Option(_METHOD, help="lora, or qlora (4-bit NF4 base model)."),
    out: Path = typer.Option(..., help="Output adapter artifact directory."),
    overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
    template: PromptTemplate = typer.Option(_TEMPLATE, help="Prompt template (predict reuses it)."),
    max_seq_len: int = typer.Option(_DEFAULT.max_seq_len, help="Tokens per example; the schema is trimmed to fit."),
    max_steps: int = typer.Option(_DEFAULT.max_steps, help="Optimizer steps; <= 0 trains for --epochs."),
    epochs: float = typer.Option(_DEFAULT.num_epochs, help="Epochs when --max-steps is not set."),
    batch_size: int = typer.Option(_DEFAULT.batch_size, help="Examples per device per micro-batch."),
    grad_accum: int = typer.Option(_DEFAULT.gradient_accumulation_steps, help="Micro-batches per optimizer step."),
    learning_rate: float = typer.Option(_DEFAULT.learning_rate, "--lr", help="Peak learning rate."),
    lr_scheduler: str = typer.Option(_DEFAULT.lr_scheduler, help="transformers scheduler name (cosine, linear, ...)."),
    warmup_ratio: float = typer.Option(_DEFAULT.warmup_ratio, help="Fraction of steps spent warming up."),
    lora_rank: int = typer.Option(_DEFAULT.lora_rank, help="LoRA rank r."),
    lora_alpha: int = typer.Option(_DEFAULT.lora_alpha, help="LoRA alpha."),
    lora_dropout: float = typer.Option(_DEFAULT.lora_dropout, help="LoRA dropout."),
    target_modules: str = typer.Option(_DEFAULT.target_modules, help="'all-linear' or comma-separated names."),
    seed: int = typer.Option(_DEFAULT.seed, help="Seed for LoRA init, data order and dropout."),
    packing: bool = typer.Option(_DEFAULT.packing, help="Flatten micro-batches into one row (no padding)."),
    group_by_length: bool = typer.Option(_DEFAULT.group_by_length, help="Batch examples of similar length."),
    pad_to_max_length: bool = typer.Option(_DEFAULT.pad_to_max_length, help="Pad every batch to --max-seq-len."),
    gradient_checkpointing: bool = typer.Option(_DEFAULT.gradient_checkpointing, help="Trade compute for memory."),
    attn: str = typer.Option(_DEFAULT.attn_implementation, help="auto, sdpa, eager or flash_attention_2."),
    bf16: bool = typer.Option(None, "--bf16/--no-bf16", help="bf16 compute (default: on GPUs that support it)."),
    checkpoint_dir: str = typer.Option(None, help="Local dir or s3:// prefix for checkpoints; reruns resume."),
    checkpoint_every: int = typer.Option(_DEFAULT.checkpoint_every, help="Checkpoint interval in steps (0: off)."),
    keep_checkpoints: int = typer.Option(
        _DEFAULT.keep_checkpoints, help="Checkpoints kept; with 1 there is none to fall back to if it is damaged."
    ),
    fresh_if_corrupt_checkpoint: bool = typer.Option(
        _DEFAULT.fresh_if_corrupt_checkpoint, FRESH_FLAG, help="If every checkpoint is damaged, train from step 0."
    ),
    endpoint_url: str = typer.Option(None, help="S3 endpoint (default: AWS_ENDPOINT_URL)."),
) -> None:
    """Fine-tune a base model with LoRA/QLoRA on preprocess records; writes a PEFT adapter artifact."""
    from sqltune.train.run import train as run_train

    config = TrainConfig(
        method=method.value,
        template=template.value,
        max_seq_len=max_seq_len,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=target_modules,
        learning_rate=learning_rate,
        lr_scheduler=lr_scheduler,
        warmup_ratio=warmup_ratio,
        num_epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        seed=seed,
        group_by_length=group_by_length,
        packing=packing,
        pad_to_max_length=pad_to_max_length,
        gradient_checkpointing=gradient_checkpointing,
        attn_implementation=attn,
        bf16=bf16,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=keep_checkpoints,
        fresh_if_corrupt_checkpoint=fresh_if_corrupt_checkpoint,
    )
    metrics = run_train(data, base_model, out, config, checkpoint_dir, endpoint_url=endpoint_url, overwrite=overwrite)
    typer.echo(json.dumps({k: v for k, v in metrics.items() if k != "dropped_ids"}, indent=2))
