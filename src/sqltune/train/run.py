"""The training loop: LoRA/QLoRA on one device, or on several workers (DDP or FSDP2), resumable from checkpoints.

A plain PyTorch loop rather than transformers' Trainer, because the guarantees the pipeline relies on live
here: checkpoints that are complete or absent (also on S3), resume that replays the exact batch order,
a hard stop on a non-finite loss, and throughput counted in real (non-padding) tokens.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import resource
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from sqltune.artifacts import artifact_dir, atomic_write_json, check_output, read_jsonl, write_jsonl
from sqltune.errors import SqltuneError
from sqltune.log import get_logger, progress
from sqltune.models import load_model, load_tokenizer, resolve_base_model
from sqltune.settings import how_to_set
from sqltune.train import checkpoint, memory
from sqltune.train.config import GRPO_SETTINGS, TrainConfig
from sqltune.train.data import Example, build_examples, collate, epoch_batches, step_batches, steps_per_epoch
from sqltune.train.distributed import (
    SHARDS,
    Distributed,
    full_adapter_state,
    resident_bytes,
    save_sharded,
    sharded_reader,
)
from sqltune.train.lock import checkpoint_lock
from sqltune.train.plot import write_loss_curve
from sqltune.uri import is_s3, join, localize, upload_dir

log = get_logger(__name__)

RECORDS = "records.jsonl"
# Settings a resumed run may change, as they do not change what is trained (the world size is checked itself).
_RESUMABLE_CHANGES = ("keep_checkpoints", "fresh_if_corrupt_checkpoint", "nproc_per_node", "num_nodes", *GRPO_SETTINGS)


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
    """Fine-tune `base_model` on the records in `data` and write the adapter artifact to `out`.

    `data` is a records JSONL file or a preprocess artifact directory (local or s3://). With
    `checkpoint_dir` (local or s3://), checkpoints are written every `config.checkpoint_every` steps and a
    rerun continues from the latest complete one. Under torchrun every process calls this; rank 0 writes
    the artifact. With `config.method` grpo, `init_adapter` (the SFT adapter) is trained further by GRPO,
    rewarded by running its SQL against the databases under `db_dir` (`sqltune.train.grpo`). Returns the
    metrics also written to `train_metrics.json`.

    The run holds `checkpoint_dir` while it trains (`lock.checkpoint_lock`): a second run on it is refused.
    Launched workers leave that to their launcher (`launch.train_here`), which holds it for the run.
    """
    from sqltune.train.launch import is_worker

    config = config or TrainConfig()
    inputs = dict(init_adapter=init_adapter, db_dir=db_dir, checkpoint_dir=checkpoint_dir, endpoint_url=endpoint_url,
                  overwrite=overwrite)  # fmt: skip
    with nullcontext() if is_worker() else checkpoint_lock(checkpoint_dir, endpoint_url):
        return _train(data, base_model, out, config, **inputs)


def _train(
    data: str | os.PathLike[str], base_model: str, out: str | os.PathLike[str], config: TrainConfig, *,
    checkpoint_dir: str | None, endpoint_url: str | None, overwrite: bool, init_adapter: str | None,
    db_dir: str | None,
) -> dict[str, Any]:  # fmt: skip
    import torch

    if config.method == "grpo":
        from sqltune.train.grpo import train_grpo

        return train_grpo(
            data, base_model, out, config=config, init_adapter=init_adapter, db_dir=db_dir,
            checkpoint_dir=checkpoint_dir, endpoint_url=endpoint_url, overwrite=overwrite,
        )  # fmt: skip
    if init_adapter or db_dir:
        raise SqltuneError("--init-adapter and --db-dir are inputs of --method grpo; LoRA/QLoRA start fresh")
    if not is_s3(out):
        check_output(out, inputs=[data, checkpoint_dir], overwrite=overwrite)
    started = time.perf_counter()
    dist = Distributed(config.parallelism)
    model_dir = resolve_base_model(base_model, endpoint_url)
    tokenizer = load_tokenizer(model_dir)
    records = read_records(data, endpoint_url)
    examples, stats = build_examples(records, tokenizer, config.prompt_template, config.max_seq_len)
    if not examples:
        raise SqltuneError(
            f"train data {data}: none of its {stats.total} records fits max_seq_len={config.max_seq_len}"
        )
    if stats.trimmed or stats.dropped:
        log.warning(
            "%d of %d prompts had their schema trimmed to fit max_seq_len=%d; %d records dropped (too long even "
            "without schema): %s",
            stats.trimmed, stats.total, config.max_seq_len, len(stats.dropped), ", ".join(stats.dropped[:10]),
        )  # fmt: skip
    if stats.left_out:
        log.warning("schema units left out to fit, by kind: %s", stats.left_out)

    device = torch.device(f"cuda:{dist.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    bf16 = config.bf16 if config.bf16 is not None else device.type == "cuda" and torch.cuda.is_bf16_supported()
    if device.type == "cuda":  # fail now, with the option that fits, rather than out of memory an hour in
        gpus_per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        memory.check_fits(
            memory.model_shape(model_dir, config), config, dist.world_size, gpus_per_node, bf16,
            torch.cuda.get_device_properties(device).total_memory, base_model,
        )  # fmt: skip
    torch.manual_seed(config.seed)
    model = _peft_model(model_dir, config, device, bf16, base_model, dist.sharded)
    trainable, total_params = model.get_nb_trainable_parameters()
    engine = dist.wrap(model, device, bf16)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.learning_rate, weight_decay=config.weight_decay
    )

    per_step = config.gradient_accumulation_steps * dist.world_size
    lengths = [len(ex.input_ids) for ex in examples]
    epoch_steps = steps_per_epoch(math.ceil(len(examples) / config.batch_size), per_step)
    total_steps = config.max_steps if config.max_steps > 0 else math.ceil(config.num_epochs * epoch_steps)
    scheduler = _scheduler(config, optimizer, total_steps)
    fingerprint = {"base_model": base_model, "records": len(records), **config.to_dict(), "world_size": dist.world_size}

    step, rows, train_time = 0, [], 0.0
    resumed = None
    if checkpoint_dir:
        fresh_if_corrupt = config.fresh_if_corrupt_checkpoint
        resumed = _resume(
            checkpoint_dir, endpoint_url, model, optimizer, scheduler, fingerprint, fresh_if_corrupt, dist
        )
    if resumed:
        step, rows, train_time = resumed["step"], resumed["rows"], resumed["train_time"]
        log.info("resumed from checkpoint at step %d of %d", step, total_steps)

    batches: list[list[int]] = []
    batches_epoch = -1
    steps = range(step, total_steps)
    for step in progress(steps, desc="train", total=len(steps), unit="step") if dist.is_main else steps:
        epoch = step // epoch_steps
        if epoch != batches_epoch:
            batches = epoch_batches(lengths, config.batch_size, config.seed, epoch, config.group_by_length)
            batches_epoch = epoch
        mine = step_batches(batches, step % epoch_steps, per_step)[dist.rank :: dist.world_size]
        tick = time.perf_counter()
        loss, tokens, padded = _train_step(
            engine, [[examples[i] for i in b] for b in mine], tokenizer, config, device, bf16, dist
        )
        if not math.isfinite(loss):
            raise SqltuneError(
                f"training loss became {loss} at step {step + 1}: stopping (lower the learning rate, e.g. "
                f"{how_to_set(TrainConfig, learning_rate=config.learning_rate / 4)}, check the data, or use bf16/fp32 "
                "instead of fp16)"
            )
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - tick
        train_time += elapsed
        rows.append(
            {
                "step": step + 1,
                "epoch": round((step + 1) / epoch_steps, 4),
                "loss": loss,
                "lr": scheduler.get_last_lr()[0],
                "tokens": tokens,
                "padded_tokens": padded,
                "tokens_per_s": tokens / elapsed,
                "step_time_s": elapsed,
            }
        )
        done = step + 1
        if checkpoint_dir and config.checkpoint_every and (done % config.checkpoint_every == 0 or done == total_steps):
            _save_checkpoint(
                checkpoint_dir, endpoint_url, done, model, optimizer, scheduler, rows, train_time, fingerprint, config,
                dist,
            )  # fmt: skip

    metrics = _metrics(rows, stats, config, base_model, trainable, total_params, train_time, device, dist, resumed)
    metrics["wall_time_s"] = time.perf_counter() - started
    metrics["weights_and_optimizer_gb"] = resident_bytes(model, optimizer) / 2**30
    adapter = full_adapter_state(model, dist) if dist.sharded else None
    if dist.is_main:
        # Sharded, the LoRA weights come gathered (`adapter`); PEFT writes the same files either way.
        gathered = {"state_dict": adapter} if adapter is not None else {}
        write_adapter(
            out, model, tokenizer, config, metrics, rows, {"data": data}, base_model, overwrite, endpoint_url,
            **gathered,
        )  # fmt: skip
    dist.barrier()
    dist.close()
    return metrics


def read_records(data: str | os.PathLike[str], endpoint_url: str | None) -> list[dict[str, Any]]:
    path, source = localize(data, "train data", endpoint_url), str(data)
    if path.is_dir():
        path, source = path / RECORDS, join(source, RECORDS)
        if not path.is_file():
            raise SqltuneError(f"train data {data}: directory has no {RECORDS}")
    records = read_jsonl(path)
    if not records:
        raise SqltuneError(f"train data {data} is empty: no records to train on")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise SqltuneError(
                f"train data {source}:{_line_of_row(path, index)}: a record must be a JSON object, "
                f"not {type(record).__name__} {json.dumps(record)[:80]}"
            )
    return records


def _line_of_row(path: Path, index: int) -> int:
    """The line number of the `index`-th row `read_jsonl` returned (it skips blank lines)."""
    with open(path, encoding="utf-8") as handle:
        rows = (lineno for lineno, line in enumerate(handle, 1) if line.strip())
        return next(itertools.islice(rows, index, None))


def _attention(choice: str, device: Any) -> str:
    import importlib.util

    if choice != "auto":
        return choice
    return "flash_attention_2" if device.type == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"


def _peft_model(model_dir: Path, config: TrainConfig, device: Any, bf16: bool, base_model: str, sharded: bool) -> Any:
    """The base model (4-bit for QLoRA) with fresh LoRA adapters on the target modules.

    Sharded (fsdp), it stays where it loaded until `fully_shard` moves each worker's shard to its device.
    """
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    qlora = config.method == "qlora"
    model = load_model(
        model_dir,
        quantize_4bit=qlora,
        dtype=torch.bfloat16 if bf16 else torch.float32,
        attn_implementation=_attention(config.attn_implementation, device),
        device_map={"": device} if qlora else None,
        quant_storage=torch.bfloat16 if qlora and sharded else None,
    )
    if not qlora and not sharded:
        model.to(device)
    _check_target_modules(model, config.target_modules, base_model)
    checkpointing = {"use_reentrant": False}
    if qlora:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs=checkpointing,
        )
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
    model.config.use_cache = False
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    # Training mode: from_pretrained leaves the base in eval mode, where transformers skips gradient checkpointing
    # and bitsandbytes repacks 4-bit weights for CPU inference in place (which FSDP's re-gather then undoes).
    return get_peft_model(model, lora).train()


def _check_target_modules(model: Any, targets: str | list[str], base_model: str) -> None:
    """Each named target must match a module (peft only complains when none of them does)."""
    if targets == "all-linear":
        return
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(name == t or name.endswith("." + t) for name in names)]
    if missing:
        import torch

        linear = sorted(
            {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        )
        raise SqltuneError(
            f"target module(s) {', '.join(missing)} match no module of base model {base_model}; "
            f"its linear layers are: {', '.join(linear)} (or use 'all-linear')"
        )


def _scheduler(config: TrainConfig, optimizer: Any, total_steps: int) -> Any:
    from transformers import get_scheduler

    return get_scheduler(
        config.lr_scheduler,
        optimizer,
        num_warmup_steps=int(config.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )


def _train_step(
    engine: Any,
    micro_batches: list[list[Example]],
    tokenizer: Any,
    config: TrainConfig,
    device: Any,
    bf16: bool,
    dist: Distributed,
) -> tuple[float, int, int]:
    """Forward and backward over this process's micro-batches; returns (mean loss, real tokens, padded tokens)."""
    import torch

    losses, tokens, padded = [], 0, 0
    pad_to = config.max_seq_len if config.pad_to_max_length else None
    for index, examples in enumerate(micro_batches):
        batch = {
            k: v.to(device)
            for k, v in collate(examples, tokenizer.pad_token_id, packing=config.packing, pad_to=pad_to).items()
        }
        sync = dist.accumulating(engine, last=index == len(micro_batches) - 1)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        with sync:
            with autocast:
                loss = engine(**batch).loss
            (loss / len(micro_batches)).backward()
        losses.append(loss.item())
        tokens += sum(len(ex.input_ids) for ex in examples)
        padded += batch["input_ids"].numel()
    return dist.mean_and_sum(sum(losses) / len(losses), tokens, padded)


def _save_checkpoint(
    root: str, endpoint_url: str | None, step: int, model: Any, optimizer: Any, scheduler: Any,
    rows: list[dict[str, Any]], train_time: float, fingerprint: dict[str, Any], config: TrainConfig,
    dist: Distributed,
) -> None:  # fmt: skip
    """Rank 0 writes the checkpoint, or, sharded, every worker its part of the weights and optimizer state."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    files = {
        "scheduler.pt": lambda p: torch.save(scheduler.state_dict(), p),
        "rng.pt": lambda p: torch.save(rng, p),
    }
    state = {"step": step, "rows": rows, "train_time": train_time, "fingerprint": fingerprint}
    if dist.sharded:
        save_sharded(root, step, model, optimizer, files, state, config.keep_checkpoints, endpoint_url, dist)
        return
    if dist.is_main:
        adapter = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
        files["adapter.safetensors"] = lambda p: save_file(adapter, str(p))
        files["optimizer.pt"] = lambda p: torch.save(optimizer.state_dict(), p)
        checkpoint.save(root, step, files, state, config.keep_checkpoints, endpoint_url)
    dist.barrier()


def _resume(
    root: str, endpoint_url: str | None, model: Any, optimizer: Any, scheduler: Any, fingerprint: dict[str, Any],
    fresh_if_corrupt: bool, dist: Distributed,
) -> dict[str, Any] | None:  # fmt: skip
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    def load_torch(path: Path) -> Any:
        return torch.load(path, weights_only=True)

    readers = {"scheduler.pt": load_torch, "rng.pt": load_torch}
    if dist.sharded:
        readers[SHARDS] = sharded_reader(model, optimizer)
    else:
        readers.update({"adapter.safetensors": load_file, "optimizer.pt": load_torch})
    latest = checkpoint.load_latest(
        root,
        readers,
        fresh_if_corrupt=fresh_if_corrupt,
        endpoint_url=endpoint_url,
        accept=checkpoint.same_run(root, fingerprint, _RESUMABLE_CHANGES),
    )
    if latest is None:
        return None
    state, loaded = latest
    if not dist.sharded:
        set_peft_model_state_dict(model, loaded["adapter.safetensors"])
        optimizer.load_state_dict(loaded["optimizer.pt"])
    scheduler.load_state_dict(loaded["scheduler.pt"])
    rng = loaded["rng.pt"]
    torch.set_rng_state(rng["cpu"])
    if torch.cuda.is_available() and rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state


def _peak_memory_gb(device: Any) -> tuple[float, str]:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process_max_rss"  # ru_maxrss is in KiB


def _metrics(
    rows: list[dict[str, Any]], stats: Any, config: TrainConfig, base_model: str, trainable: int, total_params: int,
    train_time: float, device: Any, dist: Distributed, resumed: dict[str, Any] | None,
) -> dict[str, Any]:  # fmt: skip
    losses = [r["loss"] for r in rows]
    tokens = sum(r["tokens"] for r in rows)
    padded = sum(r["padded_tokens"] for r in rows)
    peak, peak_kind = _peak_memory_gb(device)
    return {
        "steps": len(rows),
        "final_loss": losses[-1] if losses else None,
        "best_loss": min(losses) if losses else None,
        "first_loss": losses[0] if losses else None,
        "tokens": tokens,
        "tokens_per_s": tokens / train_time if train_time else None,
        "padding_fraction": 1 - tokens / padded if padded else None,
        "train_time_s": train_time,
        "peak_memory_gb": peak,
        "peak_memory_kind": peak_kind,
        "trainable_params": trainable,
        "total_params": total_params,
        "examples": stats.total - len(stats.dropped),
        "trimmed_examples": stats.trimmed,
        "dropped_examples": len(stats.dropped),
        "dropped_ids": stats.dropped,
        **({"schema_units_left_out": stats.left_out} if stats.left_out else {}),
        "method": config.method,
        "prompt_template": config.prompt_template,
        "max_seq_len": config.max_seq_len,
        "base_model": base_model,
        "world_size": dist.world_size,
        "parallelism": config.parallelism if dist.world_size > 1 else "none",
        "device": str(device.type),
        "resumed_from_step": resumed["step"] if resumed else None,
    }


def write_adapter(
    out: str | os.PathLike[str], model: Any, tokenizer: Any, config: TrainConfig, metrics: dict[str, Any],
    rows: list[dict[str, Any]], inputs: dict[str, Any], base_model: str, overwrite: bool, endpoint_url: str | None,
    **save: Any,
) -> None:  # fmt: skip
    """The adapter artifact in `out` (`save` goes to PEFT's `save_pretrained`); an s3:// `out` (a Kubeflow
    TrainJob's) is built locally, then uploaded."""
    if is_s3(out):
        with tempfile.TemporaryDirectory(prefix="sqltune-adapter-") as scratch:
            local = Path(scratch) / "adapter"
            write_adapter(local, model, tokenizer, config, metrics, rows, inputs, base_model, False, None, **save)
            upload_dir(local, str(out), endpoint_url)
        log.info("adapter uploaded to %s", out)
        return
    parameters = {"base_model": base_model, **config.to_dict()}
    with artifact_dir(
        out, "adapter", parameters=parameters, inputs=inputs, extra={"metrics": metrics}, overwrite=overwrite
    ) as tmp:
        model.save_pretrained(tmp, **save)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "train_metrics.json", metrics)
        write_jsonl(tmp / "train_log.jsonl", rows)
        if rows:
            title = f"{config.method} on {base_model}: {len(rows)} steps, final loss {rows[-1]['loss']:.4f}"
            write_loss_curve(rows, tmp / "loss_curve.png", tmp / "loss_curve.html", title)
        # PEFT records the base model by its local cache path; record the spec the user gave instead.
        adapter_config = json.loads((tmp / "adapter_config.json").read_text(encoding="utf-8"))
        adapter_config["base_model_name_or_path"] = base_model
        atomic_write_json(tmp / "adapter_config.json", adapter_config)
    log.info("adapter written to %s (%d steps, final loss %s)", out, metrics["steps"], metrics["final_loss"])
