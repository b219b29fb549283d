"""The GRPO stage: reinforcement learning from an SFT adapter, rewarded by executing the SQL it writes.

TRL's `GRPOTrainer` does the algorithm (group sampling, group-relative advantages, the clipped objective and the
KL penalty) over a `datasets` dataset of the training prompts; this module supplies what is ours: the prompts
(the same `build_prompt` as SFT and predict, given to TRL as chat messages so its chat template yields exactly
our text), the reward (`ExecutionReward`: the evaluate step's sandbox and EX rule), the checkpoints and the
artifact. The SFT adapter is trained further (`is_trainable`), and TRL keeps a frozen copy of it as the
reference policy of the KL penalty, so `kl_coef` holds the policy near the SFT adapter, not the base model.

Checkpoints are TRL's (adapter, optimizer, scheduler, RNG, trainer state), mirrored into the same store as the
SFT loop's (`checkpoint.save`: complete or absent, sha256-checked, local or s3://), and a rerun resumes from the
newest usable one. The artifact is a PEFT adapter like SFT's, whose `train_log.jsonl` and curves carry the reward
per step beside the loss.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from transformers import PrinterCallback, TrainerCallback

from sqltune.artifacts import check_output, file_entries, input_fingerprint
from sqltune.errors import SqltuneError
from sqltune.log import get_logger
from sqltune.models import load_model, load_tokenizer, resolve_base_model
from sqltune.models.adapter import check_base_name, read_adapter
from sqltune.prompt import build_prompt, prompt_functions, prompt_messages
from sqltune.sql.location import Databases
from sqltune.train import checkpoint
from sqltune.train.checkpoint import CheckpointState
from sqltune.train.config import TrainConfig
from sqltune.train.io import TrainInputs, read_records, write_adapter
from sqltune.train.reward import ExecutionReward
from sqltune.uri import is_s3, localize

log = get_logger(__name__)

# What a rerun needs of a TRL checkpoint to continue (the frozen reference copy is rebuilt from --init-adapter).
RESUME_FILES = (
    "adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "scheduler.pt", "rng_state.pth",
    "trainer_state.json",
)  # fmt: skip
# Settings a resumed run may change, as they do not change what is trained.
_RESUMABLE_CHANGES = ("keep_checkpoints", "fresh_if_corrupt_checkpoint", "nproc_per_node", "num_nodes")


class GRPORecipe:
    """One GRPO run of `config` from the SFT adapter `inputs.init_adapter`, rewarded on the databases under
    `inputs.db_dir`, in the phases `sqltune.train.run.run_recipe` calls in order: `setup`, `resume`, `train` (TRL's
    checkpoints go through `save_checkpoint`), `save_adapter`, `cleanup`. One process."""

    def __init__(self, inputs: TrainInputs, config: TrainConfig) -> None:
        self.inputs, self.config = inputs, config
        self.state = CheckpointState(0)  # steps done and their rows: what checkpoints record
        self.resume_from: Path | None = None  # the TRL checkpoint to continue
        self.resumed_from: int | None = None
        self._held = ExitStack()  # what `cleanup` lets go of: the reward's workers, TRL's scratch directory

    def setup(self) -> None:
        """The SFT adapter on the base model, trainable; the prompts as a `datasets` dataset; the reward."""
        import torch
        from datasets import Dataset
        from peft import PeftModel

        inputs, config = self.inputs, self.config
        init_adapter, db_dir, endpoint_url = inputs.init_adapter, inputs.db_dir, inputs.endpoint_url
        where = db_dir or config.database_url
        if not init_adapter or not where:
            missing = " and ".join(f for f, v in (("--init-adapter", init_adapter), ("--db-dir", where)) if not v)
            raise SqltuneError(
                f"--method grpo needs {missing}: the SFT adapter to start from and the databases to run on"
            )
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise SqltuneError("--method grpo runs in one process (one GPU) for now: use --nproc-per-node 1")
        check_output(inputs.out, inputs=[inputs.data, init_adapter, db_dir, inputs.checkpoint_dir],
                     overwrite=inputs.overwrite)  # fmt: skip
        self.started = time.perf_counter()
        model_dir = resolve_base_model(inputs.base_model, endpoint_url)
        sft = read_adapter(localize(init_adapter, "--init-adapter", endpoint_url))  # sft.path: the local copy
        check_base_name(sft, inputs.base_model, model_dir)
        template = sft.parameters.get("prompt_template", config.prompt_template)
        if template != config.prompt_template:
            log.info("prompt template %r: the one %s was trained with", template, init_adapter)
            config.prompt_template = template
        self.tokenizer = load_tokenizer(model_dir)
        local = localize(db_dir, "--db-dir", endpoint_url) if db_dir and not config.database_url else None
        self.reward = ExecutionReward(
            Databases.of(local, config.database_url), correct=config.reward_correct, executes=config.reward_executes
        )
        self._held.callback(self.reward.close)
        records = read_records(inputs.data, endpoint_url)
        self.dataset = Dataset.from_list(_prompts(records, self.tokenizer, config, self.reward, inputs.data))

        self.cuda = cuda = torch.cuda.is_available()
        self.bf16 = config.bf16 if config.bf16 is not None else cuda and torch.cuda.is_bf16_supported()
        qlora = sft.parameters.get("method") == "qlora"
        torch.manual_seed(config.seed)
        model = load_model(
            model_dir, quantize_4bit=qlora, dtype=torch.bfloat16 if self.bf16 else torch.float32,
            device_map={"": torch.device("cuda:0" if cuda else "cpu")} if qlora else None,
        )  # fmt: skip
        self.model = PeftModel.from_pretrained(model, str(sft.path), is_trainable=True)
        fingerprint = {
            "base_model": inputs.base_model, "records": len(records), **config.to_dict(),
            "init_adapter": input_fingerprint(sft.path),
        }  # fmt: skip
        self.state = CheckpointState(0, rows=[], fingerprint=fingerprint)
        self.scratch = self._held.enter_context(_scratch(inputs.checkpoint_dir))

    def resume(self) -> None:
        """From the newest usable checkpoint of this run: its TRL checkpoint (copied into the scratch directory,
        where TRL continues from it) and its log rows. The frozen reference copy is rebuilt from --init-adapter."""
        root = self.inputs.checkpoint_dir
        if not root:
            return
        into = self.scratch / "resume"
        into.mkdir(parents=True)
        readers = {name: lambda path: shutil.copyfile(path, into / path.name) for name in RESUME_FILES}
        latest = checkpoint.load_latest(
            root, readers, fresh_if_corrupt=self.config.fresh_if_corrupt_checkpoint,
            endpoint_url=self.inputs.endpoint_url,
            accept=checkpoint.same_run(root, self.state.fingerprint, _RESUMABLE_CHANGES),
        )  # fmt: skip
        if latest is None:
            return
        state, _ = latest
        log.info("resuming GRPO from checkpoint at step %d", state.step)
        self.resume_from = into
        self.state = CheckpointState(state.step, rows=list(state.rows), fingerprint=self.state.fingerprint)
        self.resumed_from = state.rows[-1]["step"] if state.rows else None

    def train(self) -> None:
        """TRL's GRPOTrainer over the dataset, from the TRL checkpoint `resume` found, if any."""
        from trl import GRPOConfig, GRPOTrainer

        config = self.config
        checkpointing = bool(self.inputs.checkpoint_dir and config.checkpoint_every)
        args = GRPOConfig(
            output_dir=str(self.scratch / "trl"),
            max_steps=config.max_steps,
            num_train_epochs=config.num_epochs,
            # A step generates prompts_per_step x num_generations completions at once, then learns from them
            # batch_size at a time (the memory bound, as in SFT): TRL's micro-batches are gradient accumulation.
            per_device_train_batch_size=config.batch_size,
            gradient_accumulation_steps=config.prompts_per_step * config.num_generations // config.batch_size,
            num_generations=config.num_generations,
            max_completion_length=config.max_completion_length,
            temperature=config.temperature,
            beta=config.kl_coef,
            learning_rate=config.learning_rate,
            lr_scheduler_type=config.lr_scheduler,
            warmup_steps=config.warmup_ratio,  # a float in [0, 1) is a ratio of the steps
            weight_decay=config.weight_decay,
            max_grad_norm=config.max_grad_norm,
            gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
            bf16=self.bf16,
            use_cpu=not self.cuda,
            seed=config.seed,
            data_seed=config.seed,
            logging_steps=1,
            save_strategy="steps" if checkpointing else "no",
            save_steps=config.checkpoint_every or 1,
            report_to="none",
            disable_tqdm=True,
        )
        trainer = GRPOTrainer(
            model=self.model, reward_funcs=[self.reward], args=args, train_dataset=self.dataset,
            processing_class=self.tokenizer, callbacks=[_Recorder(self)],
        )  # fmt: skip
        trainer.remove_callback(PrinterCallback)  # the recorder logs each step
        trainer.train(resume_from_checkpoint=str(self.resume_from) if self.resume_from else None)

    def save_checkpoint(self, trl_checkpoint: Path, step: int) -> None:
        """Mirror TRL's checkpoint of `step` into the checkpoint store, with the log rows so far; then drop it."""
        if not self.inputs.checkpoint_dir:
            return
        self.state.step = step
        files = {name: _copier(trl_checkpoint / name) for name in file_entries(trl_checkpoint)}
        checkpoint.save(
            self.inputs.checkpoint_dir, self.state, files, keep=self.config.keep_checkpoints,
            endpoint_url=self.inputs.endpoint_url,
        )  # fmt: skip
        shutil.rmtree(trl_checkpoint)

    def save_adapter(self) -> dict[str, Any]:
        """The adapter artifact in `out` (the policy alone, not TRL's frozen reference copy); returns its metrics."""
        rows = self.state.rows
        trainable = self.model.get_nb_trainable_parameters()
        metrics = _metrics(rows, self.config, self.inputs.base_model, trainable=trainable, records=len(self.dataset))
        metrics.update(wall_time_s=time.perf_counter() - self.started, resumed_from_step=self.resumed_from)
        write_adapter(
            self.inputs, self.config, model=self.model, tokenizer=self.tokenizer, metrics=metrics, rows=rows,
            save={"selected_adapters": ["default"]},
        )  # fmt: skip
        return metrics

    def cleanup(self) -> None:
        """Stop the reward's workers and remove TRL's scratch directory, also after a failure."""
        self._held.close()


@contextmanager
def _scratch(checkpoint_dir: str | None) -> Iterator[Path]:
    """Where TRL writes its checkpoints before they are mirrored: inside a local checkpoint directory, so what a
    killed run leaves there is cleared by the rerun; else a temporary directory."""
    if checkpoint_dir and not is_s3(checkpoint_dir):
        path = Path(checkpoint_dir) / ".grpo-scratch"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
        return
    with tempfile.TemporaryDirectory(prefix="sqltune-grpo-") as scratch:
        yield Path(scratch)


def _prompts(
    records: list[dict[str, Any]], tokenizer: Any, config: TrainConfig, reward: ExecutionReward, data: Any
) -> list[dict[str, Any]]:
    """The dataset rows: the prompt (chat messages or text) with what the reward needs; records whose gold SQL
    fails in the sandbox or whose prompt does not fit are left out with a warning naming them."""
    count_tokens, chat_render = prompt_functions(tokenizer, config.prompt_template)
    rows, unusable = [], []
    for index, record in enumerate(records):
        record_id = str(record.get("id", f"#{index}"))
        missing = [k for k in ("question", "sql", "db_id") if not isinstance(record.get(k), str) or not record[k]]
        if missing:
            raise SqltuneError(f"train data {data}: record {record_id}: missing or empty field(s) {', '.join(missing)}")
        prompt = build_prompt(
            record, config.prompt_template, max_tokens=config.max_seq_len - config.max_completion_length,
            count_tokens=count_tokens, chat_render=chat_render,
        )  # fmt: skip
        why = reward.gold_runs(record) if prompt.fits else "prompt does not fit max_seq_len - max_completion_length"
        if why:
            unusable.append(f"{record_id} ({why})")
            continue
        text = prompt_messages(record, prompt.schema_lines_dropped) if chat_render else prompt.text
        rows.append({"prompt": text, "id": record_id, "db_id": record["db_id"], "sql": record["sql"]})
    if unusable:
        log.warning("%d of %d records left out of GRPO: %s", len(unusable), len(records), "; ".join(unusable[:5]))
    if not rows:
        raise SqltuneError(f"train data {data}: no record can be used for GRPO ({'; '.join(unusable[:3])})")
    return rows


class _Recorder(TrainerCallback):
    """Keeps one log row per optimizer step (loss, reward, the share of groups with a correct completion, KL) in
    the recipe's state, and hands each TRL checkpoint to the recipe's `save_checkpoint`."""

    def __init__(self, recipe: GRPORecipe) -> None:
        self.recipe, self.reward, self.rows = recipe, recipe.reward, recipe.state.rows
        self._tick = time.perf_counter()

    def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        self._tick = time.perf_counter()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **_: Any) -> None:
        if not logs or "loss" not in logs or "reward" not in logs:
            return  # the end-of-training summary, not a step
        hits, self.reward.group_hits[:] = list(self.reward.group_hits), []
        now = time.perf_counter()
        self.rows.append(
            {
                "step": state.global_step,
                "loss": logs["loss"],
                "reward": logs["reward"],
                "reward_std": logs.get("reward_std"),
                "correct_groups": sum(hits) / len(hits) if hits else None,
                "kl": logs.get("kl"),
                "lr": logs.get("learning_rate"),
                "completion_tokens": logs.get("completions/mean_length"),
                "step_time_s": now - self._tick,
            }
        )
        self._tick = now
        log.info("GRPO step %d: loss %.4f, reward %.3f", state.global_step, logs["loss"], logs["reward"])

    def on_save(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        self.recipe.save_checkpoint(Path(args.output_dir) / f"checkpoint-{state.global_step}", state.global_step)


def _copier(source: Path) -> Any:
    def write(target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)

    return write


def _metrics(
    rows: list[dict[str, Any]], config: TrainConfig, base_model: str, trainable: tuple[int, int], records: int
) -> dict[str, Any]:
    rewards = [r["reward"] for r in rows]
    hits = [r["correct_groups"] for r in rows if r["correct_groups"] is not None]
    return {
        "steps": len(rows),
        "final_loss": rows[-1]["loss"] if rows else None,
        "first_reward": rewards[0] if rewards else None,
        "final_reward": rewards[-1] if rewards else None,
        "mean_reward": sum(rewards) / len(rewards) if rewards else None,
        "correct_groups": sum(hits) / len(hits) if hits else None,
        "train_time_s": sum(r["step_time_s"] for r in rows),
        "trainable_params": trainable[0],
        "total_params": trainable[1],
        "examples": records,
        "method": config.method,
        "num_generations": config.num_generations,
        "prompt_template": config.prompt_template,
        "max_seq_len": config.max_seq_len,
        "base_model": base_model,
    }
