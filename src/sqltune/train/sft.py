"""The LoRA/QLoRA recipe: supervised fine-tuning on one device, or on several workers (DDP or FSDP2), resumable
from checkpoints.

A plain PyTorch loop rather than transformers' Trainer, because the guarantees the pipeline relies on live
here: checkpoints that are complete or absent (also on S3), resume that replays the exact batch order,
a hard stop on a non-finite loss, and throughput counted in real (non-padding) tokens.
"""

from __future__ import annotations

import math
import os
import resource
import time
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

from sqltune.artifacts import check_output
from sqltune.errors import SqltuneError
from sqltune.log import get_logger, progress
from sqltune.models import load_model, load_tokenizer, resolve_base_model
from sqltune.settings import how_to_set
from sqltune.train import checkpoint, memory
from sqltune.train.checkpoint import CheckpointState
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
from sqltune.train.io import TrainInputs, read_records, write_adapter
from sqltune.uri import is_s3

log = get_logger(__name__)

# Settings a resumed run may change, as they do not change what is trained (the world size is checked itself).
_RESUMABLE_CHANGES = ("keep_checkpoints", "fresh_if_corrupt_checkpoint", "nproc_per_node", "num_nodes", *GRPO_SETTINGS)


class SFTRecipe:
    """One LoRA or QLoRA run of `config` on `inputs`, in the phases `sqltune.train.run.run_recipe` calls in order:
    `setup`, `resume`, `train` (which calls `save_checkpoint`), `save_adapter`, `cleanup`.

    Under torchrun every worker runs it; rank 0 writes the artifact (and, unsharded, the checkpoints).
    """

    def __init__(self, inputs: TrainInputs, config: TrainConfig) -> None:
        self.inputs, self.config = inputs, config
        self.dist: Distributed | None = None
        self.state = CheckpointState(0)  # steps done, their rows, training time: what checkpoints record
        self.resumed_from: int | None = None
        self.adapter_written = False

    # --- setup: the data, the model with LoRA, the optimizer and schedule, the workers ---

    def setup(self) -> None:
        inputs, config = self.inputs, self.config
        if inputs.init_adapter or inputs.db_dir:
            raise SqltuneError("--init-adapter and --db-dir are inputs of --method grpo; LoRA/QLoRA start fresh")
        if not is_s3(inputs.out):
            check_output(inputs.out, inputs=[inputs.data, inputs.checkpoint_dir], overwrite=inputs.overwrite)
        self.started = time.perf_counter()
        self.dist = Distributed(config.parallelism)
        self.model_dir = resolve_base_model(inputs.base_model, inputs.endpoint_url)
        self.tokenizer = load_tokenizer(self.model_dir)
        self.records = read_records(inputs.data, inputs.endpoint_url)
        self._setup_data()
        self._setup_model()
        self._setup_optimizer()
        fingerprint = {"base_model": inputs.base_model, "records": len(self.records), **config.to_dict(),
                       "world_size": self.dist.world_size}  # fmt: skip
        self.state = CheckpointState(0, rows=[], fingerprint=fingerprint, train_time=0.0)

    def _setup_data(self) -> None:
        config = self.config
        self.examples, self.stats = build_examples(
            self.records, self.tokenizer, config.prompt_template, config.max_seq_len
        )
        stats = self.stats
        if not self.examples:
            raise SqltuneError(
                f"train data {self.inputs.data}: none of its {stats.total} records fits "
                f"max_seq_len={config.max_seq_len}"
            )
        if stats.trimmed or stats.dropped:
            log.warning(
                "%d of %d prompts had their schema trimmed to fit max_seq_len=%d; %d records dropped (too long "
                "even without schema): %s",
                stats.trimmed, stats.total, config.max_seq_len, len(stats.dropped), ", ".join(stats.dropped[:10]),
            )  # fmt: skip
        if stats.left_out:
            log.warning("schema units left out to fit, by kind: %s", stats.left_out)

    def _setup_model(self) -> None:
        """The base model (4-bit for QLoRA) with fresh LoRA adapters, on this worker's device (or sharded)."""
        import torch

        config, dist = self.config, self.dist
        cuda = torch.cuda.is_available()
        self.device = torch.device(f"cuda:{dist.local_rank}") if cuda else torch.device("cpu")
        self.bf16 = config.bf16 if config.bf16 is not None else cuda and torch.cuda.is_bf16_supported()
        if cuda:  # fail now, with the option that fits, rather than out of memory an hour in
            gpus_per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            memory.check_fits(
                memory.model_shape(self.model_dir, config), config, dist.world_size, gpus_per_node, self.bf16,
                torch.cuda.get_device_properties(self.device).total_memory, self.inputs.base_model,
            )  # fmt: skip
        torch.manual_seed(config.seed)
        self.model = self._load_model()
        self.trainable, self.total_params = self.model.get_nb_trainable_parameters()
        self.engine = dist.wrap(self.model, self.device, self.bf16)

    def _load_model(self) -> Any:
        """The base model (4-bit for QLoRA) with fresh LoRA adapters on the target modules.

        Sharded (fsdp), it stays where it loaded until `fully_shard` moves each worker's shard to its device.
        """
        import torch
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        config, device, sharded = self.config, self.device, self.dist.sharded
        qlora = config.method == "qlora"
        model = load_model(
            self.model_dir,
            quantize_4bit=qlora,
            dtype=torch.bfloat16 if self.bf16 else torch.float32,
            attn_implementation=_attention(config.attn_implementation, device),
            device_map={"": device} if qlora else None,
            quant_storage=torch.bfloat16 if qlora and sharded else None,
        )
        if not qlora and not sharded:
            model.to(device)
        _check_target_modules(model, config.target_modules, self.inputs.base_model)
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

    def _setup_optimizer(self) -> None:
        """AdamW over the LoRA weights, the steps of the run and the learning-rate schedule over them."""
        import torch
        from transformers import get_scheduler

        config = self.config
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad], lr=config.learning_rate,
            weight_decay=config.weight_decay,
        )  # fmt: skip
        self.per_step = config.gradient_accumulation_steps * self.dist.world_size
        self.lengths = [len(ex.input_ids) for ex in self.examples]
        self.epoch_steps = steps_per_epoch(math.ceil(len(self.examples) / config.batch_size), self.per_step)
        self.total_steps = config.max_steps if config.max_steps > 0 else math.ceil(config.num_epochs * self.epoch_steps)
        self.scheduler = get_scheduler(
            config.lr_scheduler,
            self.optimizer,
            num_warmup_steps=int(config.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )

    # --- resume: from the newest usable checkpoint ---

    def resume(self) -> None:
        """Continue from the newest usable checkpoint of this run in `checkpoint_dir`, if there is one."""
        if not self.inputs.checkpoint_dir:
            return
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        def load_torch(path: Any) -> Any:
            return torch.load(path, weights_only=True)

        readers = {"scheduler.pt": load_torch, "rng.pt": load_torch}
        if self.dist.sharded:
            readers[SHARDS] = sharded_reader(self.model, self.optimizer)
        else:
            readers.update({"adapter.safetensors": load_file, "optimizer.pt": load_torch})
        root = self.inputs.checkpoint_dir
        latest = checkpoint.load_latest(
            root,
            readers,
            fresh_if_corrupt=self.config.fresh_if_corrupt_checkpoint,
            endpoint_url=self.inputs.endpoint_url,
            accept=checkpoint.same_run(root, self.state.fingerprint, _RESUMABLE_CHANGES),
        )
        if latest is None:
            return
        state, loaded = latest
        if not self.dist.sharded:
            set_peft_model_state_dict(self.model, loaded["adapter.safetensors"])
            self.optimizer.load_state_dict(loaded["optimizer.pt"])
        self.scheduler.load_state_dict(loaded["scheduler.pt"])
        rng = loaded["rng.pt"]
        torch.set_rng_state(rng["cpu"])
        if torch.cuda.is_available() and rng["cuda"]:
            torch.cuda.set_rng_state_all(rng["cuda"])
        # Its progress, under this run's fingerprint (which may differ in the settings a resumed run may change).
        self.state = replace(state, fingerprint=self.state.fingerprint, world_size=None)
        self.resumed_from = state.step
        log.info("resumed from checkpoint at step %d of %d", state.step, self.total_steps)

    # --- train: the steps, a row of the log each, checkpoints as configured ---

    def train(self) -> None:
        import torch

        config, dist, state = self.config, self.dist, self.state
        batches: list[list[int]] = []
        batches_epoch = -1
        steps = range(state.step, self.total_steps)
        for step in progress(steps, desc="train", total=len(steps), unit="step") if dist.is_main else steps:
            epoch = step // self.epoch_steps
            if epoch != batches_epoch:
                batches = epoch_batches(self.lengths, config.batch_size, config.seed, epoch, config.group_by_length)
                batches_epoch = epoch
            mine = step_batches(batches, step % self.epoch_steps, self.per_step)[dist.rank :: dist.world_size]
            tick = time.perf_counter()
            loss, tokens, padded = self._train_step([[self.examples[i] for i in b] for b in mine])
            if not math.isfinite(loss):
                raise SqltuneError(
                    f"training loss became {loss} at step {step + 1}: stopping (lower the learning rate, e.g. "
                    f"{how_to_set(TrainConfig, learning_rate=config.learning_rate / 4)}, check the data, or use "
                    "bf16/fp32 instead of fp16)"
                )
            if config.max_grad_norm > 0:
                trainable = [p for p in self.model.parameters() if p.requires_grad]
                torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            elapsed = time.perf_counter() - tick
            state.train_time += elapsed
            state.rows.append(
                {
                    "step": step + 1,
                    "epoch": round((step + 1) / self.epoch_steps, 4),
                    "loss": loss,
                    "lr": self.scheduler.get_last_lr()[0],
                    "tokens": tokens,
                    "padded_tokens": padded,
                    "tokens_per_s": tokens / elapsed,
                    "step_time_s": elapsed,
                }
            )
            state.step = done = step + 1
            every = config.checkpoint_every
            if self.inputs.checkpoint_dir and every and (done % every == 0 or done == self.total_steps):
                self.save_checkpoint()

    def _train_step(self, micro_batches: list[list[Example]]) -> tuple[float, int, int]:
        """Forward and backward over this process's micro-batches; returns (mean loss, real tokens, padded tokens)."""
        import torch

        config, device, dist, pad_id = self.config, self.device, self.dist, self.tokenizer.pad_token_id
        losses, tokens, padded = [], 0, 0
        pad_to = config.max_seq_len if config.pad_to_max_length else None
        for index, examples in enumerate(micro_batches):
            batch = {
                k: v.to(device) for k, v in collate(examples, pad_id, packing=config.packing, pad_to=pad_to).items()
            }
            sync = dist.accumulating(self.engine, last=index == len(micro_batches) - 1)
            autocast = torch.autocast(device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()
            with sync:
                with autocast:
                    loss = self.engine(**batch).loss
                (loss / len(micro_batches)).backward()
            losses.append(loss.item())
            tokens += sum(len(ex.input_ids) for ex in examples)
            padded += batch["input_ids"].numel()
        return dist.mean_and_sum(sum(losses) / len(losses), tokens, padded)

    def save_checkpoint(self) -> None:
        """Rank 0 writes the checkpoint, or, sharded, every worker its part of the weights and optimizer state."""
        import torch
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        root, keep, endpoint_url = self.inputs.checkpoint_dir, self.config.keep_checkpoints, self.inputs.endpoint_url
        model, optimizer, dist = self.model, self.optimizer, self.dist
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        rng = {"cpu": torch.get_rng_state(), "cuda": cuda}
        files = {
            "scheduler.pt": lambda p: torch.save(self.scheduler.state_dict(), p),
            "rng.pt": lambda p: torch.save(rng, p),
        }
        if dist.sharded:
            save_sharded(
                root, self.state, files, model=model, optimizer=optimizer, dist=dist, keep=keep,
                endpoint_url=endpoint_url,
            )  # fmt: skip
            return
        if dist.is_main:
            adapter = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
            files["adapter.safetensors"] = lambda p: save_file(adapter, str(p))
            files["optimizer.pt"] = lambda p: torch.save(optimizer.state_dict(), p)
            checkpoint.save(root, self.state, files, keep=keep, endpoint_url=endpoint_url)
        dist.barrier()

    # --- save_adapter, cleanup ---

    def save_adapter(self) -> dict[str, Any]:
        """Rank 0 writes the adapter artifact to `out` (sharded, the LoRA weights gathered first); every worker
        returns the run's metrics once it is written."""
        metrics = self._metrics()
        metrics["wall_time_s"] = time.perf_counter() - self.started
        metrics["weights_and_optimizer_gb"] = resident_bytes(self.model, self.optimizer) / 2**30
        adapter = full_adapter_state(self.model, self.dist) if self.dist.sharded else None
        if self.dist.is_main:
            # Sharded, the LoRA weights come gathered (`adapter`); PEFT writes the same files either way.
            write_adapter(
                self.inputs, self.config, model=self.model, tokenizer=self.tokenizer, metrics=metrics,
                rows=self.state.rows, save={"state_dict": adapter} if adapter is not None else None,
            )  # fmt: skip
        self.dist.barrier()
        self.adapter_written = True
        return metrics

    def cleanup(self) -> None:
        """Leave the process group once the adapter is written. After a failure it is left as it is: the launcher
        stops the other workers, and tearing it down while they may still be in a collective can hang."""
        if self.dist is not None and self.adapter_written:
            self.dist.close()

    def _metrics(self) -> dict[str, Any]:
        rows, stats, config, dist = self.state.rows, self.stats, self.config, self.dist
        losses = [r["loss"] for r in rows]
        tokens = sum(r["tokens"] for r in rows)
        padded = sum(r["padded_tokens"] for r in rows)
        train_time = self.state.train_time
        peak, peak_kind = _peak_memory_gb(self.device)
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
            "trainable_params": self.trainable,
            "total_params": self.total_params,
            "examples": stats.total - len(stats.dropped),
            "trimmed_examples": stats.trimmed,
            "dropped_examples": len(stats.dropped),
            "dropped_ids": stats.dropped,
            **({"schema_units_left_out": stats.left_out} if stats.left_out else {}),
            "method": config.method,
            "prompt_template": config.prompt_template,
            "max_seq_len": config.max_seq_len,
            "base_model": self.inputs.base_model,
            "world_size": dist.world_size,
            "parallelism": config.parallelism if dist.world_size > 1 else "none",
            "device": str(self.device.type),
            "resumed_from_step": self.resumed_from,
        }


def _attention(choice: str, device: Any) -> str:
    import importlib.util

    if choice != "auto":
        return choice
    return "flash_attention_2" if device.type == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"


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


def _peak_memory_gb(device: Any) -> tuple[float, str]:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process_max_rss"  # ru_maxrss is in KiB
