"""The train component: LoRA/QLoRA fine-tuning on every GPU of a node, or on several nodes as a Kubeflow
Trainer TrainJob (num_nodes > 1), then, when rl_steps > 0, the GRPO stage on this pod's GPU; resumable from
checkpoints.

The GRPO stage runs in this step rather than in a task of its own: a conditional GPU task cannot resolve its
accelerator parameters in kfp 2.17, and kfp.local cannot pick one of two branches' artifacts (dsl.OneOf).
"""

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
    rl_steps: int,
    rl_learning_rate: float,
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
    dataset: str,
    source_uri: str,
    database_url: str,
    adapter: Output[Model],
    sft_adapter: Output[Model],
    metrics: Output[Metrics],
    loss_curve: Output[HTML],
):
    """Fine-tune `base_model` on the train records; checkpoints under `checkpoint_uri/run_id` for resume.

    Each setting is the TrainConfig setting of the same name (`nproc_per_node` is the pipeline's gpu_count);
    `train_options` sets the rarely changed ones. With num_nodes > 1 the training runs as a TrainJob on the
    runtime `trainer_runtime`, placed by the GPU parameters, with the Secrets' credentials. The SFT adapter is
    `sft_adapter`; `adapter`, what predict and publish take, is the GRPO stage's continuation of it (rl_steps
    steps at rl_learning_rate, rewarded on the training questions' databases, read from `source_uri` as
    preprocess reads the `dataset`), or a copy of it when rl_steps is 0.

    Args:
        train_data: The training records from preprocess.
        base_model: The model to fine-tune: a local folder, hf://org/name[@revision], an s3:// prefix, or a built-in.
        rl_steps: Steps of the GRPO stage after SFT (0: no GRPO stage).
        rl_learning_rate: Peak learning rate of the GRPO stage.
        checkpoint_uri: Where checkpoints go (run_id below it); a retried or rerun step resumes from them ('': none).
        run_id: The pipeline run's id: the checkpoints' folder, so a retry of the same run resumes.
        trainer_runtime: The Kubeflow Trainer runtime a multi-node TrainJob runs on.
        gpu_type: The GPU resource a TrainJob's nodes request (nvidia.com/gpu).
        gpu_node_selector: Node labels a TrainJob's nodes must have.
        gpu_tolerations: Taints a TrainJob's nodes tolerate.
        s3_secret_name: The Secret with the S3 credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
        hf_token_secret_name: The Secret with a Hugging Face token (HF_TOKEN), for gated base models.
        endpoint_url: The S3 endpoint ('': AWS).
        dataset: The source's layout, for the GRPO stage's databases.
        source_uri: The raw dataset, for the GRPO stage's databases (the training questions').
        database_url: Where the GRPO stage's databases are instead ('': the source's SQLite files).
        adapter: The adapter predict and publish take: the GRPO stage's, else the SFT adapter.
        sft_adapter: The SFT stage's adapter.
        metrics: Loss, throughput, steps, trainable parameters (and the GRPO stage's reward).
        loss_curve: The loss (and reward) curves.
    """
    from pathlib import Path

    from sqltune.datasets import read_dataset
    from sqltune.images import image_for
    from sqltune.train.config import stage_configs
    from sqltune.train.io import TrainInputs
    from sqltune.train.plot import join_pages
    from sqltune.train.run import run_stages
    from sqltune.uri import join, localize

    stages = stage_configs(locals())
    endpoint = endpoint_url or None
    inputs = TrainInputs(
        Path(train_data.path) / "records.jsonl", base_model, adapter.path, endpoint_url=endpoint,
        checkpoint_dir=join(checkpoint_uri, run_id) if checkpoint_uri else None,
    )  # fmt: skip
    placement = dict(
        image=image_for("train"), runtime=trainer_runtime, gpu_resource=gpu_type, node_selector=gpu_node_selector,
        tolerations=gpu_tolerations, s3_secret=s3_secret_name, hf_token_secret=hf_token_secret_name,
    )  # fmt: skip

    def training_databases() -> Path:  # the GRPO stage's, read only when it runs
        return read_dataset(dataset, localize(source_uri, f"{dataset} source", endpoint), "train").database_dir

    results = run_stages(
        stages, inputs, sft_adapter.path, trainjob=placement, db_dir=None if database_url else training_databases
    )
    for name, value in results.summary().items():
        metrics.log_metric(name, value)
    for artifact, stage in ((sft_adapter, method), (adapter, "grpo" if stages.grpo is not None else method)):
        artifact.metadata.update({"base_model": base_model, "method": stage})
    join_pages(results.curves, Path(loss_curve.path))
