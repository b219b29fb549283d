"""The train component: LoRA/QLoRA fine-tuning on a GPU node, resumable from checkpoints."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from sqltune.images import image_for


@dsl.component(base_image=image_for("train"), install_kfp_package=False)
def train(
    train_data: Input[Dataset],
    base_model: str,
    method: str,
    prompt_template: str,
    lora_rank: int,
    lora_alpha: int,
    lora_dropout: float,
    target_modules: str,
    learning_rate: float,
    num_epochs: float,
    max_steps: int,
    batch_size: int,
    gradient_accumulation_steps: int,
    max_seq_len: int,
    gradient_checkpointing: bool,
    seed: int,
    train_options: dict,
    checkpoint_uri: str,
    run_id: str,
    adapter: Output[Model],
    metrics: Output[Metrics],
    loss_curve: Output[HTML],
):
    """Fine-tune `base_model` on the train records; checkpoints under `checkpoint_uri/run_id` for resume.

    Each parameter is the TrainConfig setting of the same name; `train_options` sets the rarely changed ones.
    """
    import shutil
    from pathlib import Path

    from sqltune.settings import build_config
    from sqltune.train import TrainConfig
    from sqltune.train import train as run_train
    from sqltune.uri import join

    settings = dict(
        method=method,
        prompt_template=prompt_template,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=target_modules,
        learning_rate=learning_rate,
        num_epochs=num_epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        max_seq_len=max_seq_len,
        gradient_checkpointing=gradient_checkpointing,
        seed=seed,
    )
    summary = run_train(
        data=Path(train_data.path) / "records.jsonl",
        base_model=base_model,
        out=adapter.path,
        config=build_config(TrainConfig, settings, train_options, "train_options"),
        checkpoint_dir=join(checkpoint_uri, run_id) if checkpoint_uri else None,
    )
    for name in ("final_loss", "best_loss", "tokens_per_s", "steps", "trainable_params", "wall_time_s"):
        if summary.get(name) is not None:
            metrics.log_metric(name, float(summary[name]))
    adapter.metadata.update({"base_model": base_model, "method": method})
    shutil.copyfile(Path(adapter.path) / "loss_curve.html", loss_curve.path)
