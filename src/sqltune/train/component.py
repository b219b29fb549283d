"""The train component: LoRA/QLoRA fine-tuning on every GPU of a node, or on several nodes as a Kubeflow
Trainer TrainJob (num_nodes > 1), resumable from checkpoints."""

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
    parallelism: str,
    num_nodes: int,
    nproc_per_node: int,
    train_options: dict,
    checkpoint_uri: str,
    run_id: str,
    trainer_runtime: str,
    gpu_type: str,
    gpu_node_selector: dict,
    gpu_tolerations: list,
    s3_secret_name: str,
    hf_token_secret_name: str,
    endpoint_url: str,
    adapter: Output[Model],
    metrics: Output[Metrics],
    loss_curve: Output[HTML],
):
    """Fine-tune `base_model` on the train records; checkpoints under `checkpoint_uri/run_id` for resume.

    Each setting is the TrainConfig setting of the same name (`nproc_per_node` is the pipeline's gpu_count);
    `train_options` sets the rarely changed ones. With num_nodes > 1 the training runs as a TrainJob on the
    runtime `trainer_runtime`, placed by the GPU parameters, with the Secrets' credentials.
    """
    import shutil
    from pathlib import Path

    from sqltune.images import image_for
    from sqltune.settings import build_config
    from sqltune.train import TrainConfig
    from sqltune.train.launch import train_here
    from sqltune.train.trainjob import train_on_trainer
    from sqltune.uri import join

    config = build_config(TrainConfig, locals(), train_options, "train_options")
    records = Path(train_data.path) / "records.jsonl"
    checkpoints = join(checkpoint_uri, run_id) if checkpoint_uri else None
    if num_nodes > 1:
        summary = train_on_trainer(
            records, base_model, Path(adapter.path), config, work_uri=checkpoints or "",
            endpoint_url=endpoint_url or None, image=image_for("train"), runtime=trainer_runtime,
            gpu_resource=gpu_type, node_selector=gpu_node_selector, tolerations=gpu_tolerations,
            s3_secret=s3_secret_name, hf_token_secret=hf_token_secret_name,
        )  # fmt: skip
    else:
        summary = train_here(
            records, base_model, adapter.path, config, checkpoint_dir=checkpoints, endpoint_url=endpoint_url or None
        )
    for name in ("final_loss", "best_loss", "tokens_per_s", "steps", "trainable_params", "wall_time_s"):
        if summary.get(name) is not None:
            metrics.log_metric(name, float(summary[name]))
    adapter.metadata.update({"base_model": base_model, "method": method})
    shutil.copyfile(Path(adapter.path) / "loss_curve.html", loss_curve.path)
