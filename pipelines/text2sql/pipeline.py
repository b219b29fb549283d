"""The text2sql pipeline: preprocess -> train (GPU; SFT, then GRPO when rl_steps > 0) -> predict -> evaluate ->
publish if EX >= min_ex.

Compile with `make compile` (or `sqltune compile`); the compiled `pipelines/text2sql/text2sql.yaml` is checked in
and must stay byte-identical to a fresh compile (a test checks). GPU placement, secrets,
retries and timeouts are Kubernetes platform settings (kfp-kubernetes): ignored by kfp.local, applied by
the KFP backend on a cluster.
"""

from kfp import dsl, kubernetes
from kfp.dsl.pipeline_channel import PipelineChannel
from sqltune.components.evaluate import evaluate
from sqltune.components.placement import placement
from sqltune.components.predict import predict
from sqltune.components.preprocess import preprocess
from sqltune.components.publish import publish
from sqltune.components.train import train

from sqltune.pipeline import PIPELINE_NAME
from sqltune.preprocess.schema_text import DEFAULT_STYLE
from sqltune.preprocess.schema_units import DEFAULT_FILTER
from sqltune.sql.location import PASSWORD_ENV
from sqltune.train.trainjob import DEFAULT_RUNTIME, GPU_NODE_SELECTOR, GPU_TOLERATIONS

HOUR = 3600
# Where a pipeline default deliberately differs from the step library's default, and why. The library's
# defaults suit one run on a laptop or one GPU; the pipeline runs on a GPU node of a cluster.
PIPELINE_DEFAULTS = {
    "dataset": ("spider", "the dataset most users start with (the CLI makes them say it)"),
    "train_limit": (0, "KFP integer parameters have no None: 0 means every question"),
    "eval_limit": (0, "KFP integer parameters have no None: 0 means every question"),
    "method": ("qlora", "4-bit base weights let one GPU node train 7B-70B models"),
    "batch_size": (8, "a GPU node takes a larger micro-batch than a laptop"),
    "gradient_accumulation_steps": (2, "an effective batch of 16, the QLoRA paper's for 7B-13B models"),
    "max_seq_len": (1024, "predict uses the train step's value, so the base model is scored with the same context"),
    "prompt_template": ("alpaca", "preprocess, train and predict share one; predict-base has no adapter to ask"),
    "bucket": ("sqltune", "a bucket name to start from; the CLI makes users say it"),
    "model_name": ("text2sql", "a model name to start from; the CLI makes users say it"),
    "prefix": ("adapters", "keeps adapters apart from the data and checkpoints in a shared bucket"),
    "promote_channel": ("", "KFP string parameters have no None: '' means do not promote"),
    "num_nodes": (1, "KFP integer parameters have no None: the pipeline says 1 node, not Trainer's PET_NNODES"),
    "gpu_count": (1, "GPUs of a pod, and a worker per GPU: the library's None means every visible GPU"),
    "candidates": (
        4,
        "execution-checked candidates: LoRA EX 15.0 -> 20.5 on 200 Spider dev questions (11 right only "
        "with them, 0 only greedy) for 3x the prediction time; the CLI needs --db-dir for them",
    ),
    "rl_steps": (0, "the GRPO stage is off unless asked for: it costs sampling, and has to earn its place"),
    "rl_learning_rate": (1e-5, "GRPO's sampled updates are noisier than SFT's: a smaller step (TRL's LoRA examples)"),
    "database_url": ("", "KFP string parameters have no None: '' means the SQLite files of the dataset"),
}
# Keys of the S3 credentials Secret, exposed to the steps under boto3's standard variable names.
S3_SECRET_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
# The key of the database Secret whose value completes `database_url` (a URL without a password takes it).
DATABASE_SECRET_KEYS = {"password": PASSWORD_ENV}


def _s3_credentials(task: dsl.PipelineTask, secret_name: PipelineChannel) -> None:
    """S3 credentials from a Kubernetes Secret as environment variables, never from parameters."""
    kubernetes.use_secret_as_env(task, secret_name=secret_name, secret_key_to_env=S3_SECRET_KEYS, optional=True)


def _database_password(task: dsl.PipelineTask, secret_name: PipelineChannel) -> dsl.PipelineTask:
    """The database password from a Kubernetes Secret as an environment variable: never a parameter, so never in
    the compiled YAML, the run's parameters or a log line (optional: a URL may need none)."""
    kubernetes.use_secret_as_env(task, secret_name=secret_name, secret_key_to_env=DATABASE_SECRET_KEYS, optional=True)
    return task


def _wait_for_producers(task: dsl.PipelineTask, *values: str | PipelineChannel) -> None:
    """Run after the tasks whose outputs set this task's resources: kfp's compiler does not count a channel read
    only by a resource field as a dependency, so the task could start before its GPU count or memory exists."""
    for value in values:
        if isinstance(value, PipelineChannel) and value.task_name:
            task.after(value.task)


def _configure(
    task: dsl.PipelineTask,
    *,
    hours: int,
    cpu: str | PipelineChannel,
    memory: str | PipelineChannel,
    s3_secret: PipelineChannel | None = None,
) -> dsl.PipelineTask:
    """What every task sets: a timeout, CPU/memory requests equal to limits (the namespace LimitRange only
    fills in defaults), no caching unless asked, and S3 credentials from the Secret when it reads or writes S3."""
    kubernetes.set_timeout(task, hours * HOUR)
    task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory).set_memory_limit(memory)
    _wait_for_producers(task, cpu, memory)
    task.set_caching_options(False)
    if s3_secret is not None:
        _s3_credentials(task, s3_secret)
    return task


def _on_gpu(
    task: dsl.PipelineTask,
    gpu_type: PipelineChannel,
    gpu_count: PipelineChannel,
    node_selector: PipelineChannel,
    tolerations: PipelineChannel,
) -> None:
    """Ask for GPUs and land on the GPU nodes (pipeline parameters, or the placement task's outputs)."""
    task.set_accelerator_type(gpu_type).set_accelerator_limit(gpu_count)
    _wait_for_producers(task, gpu_type, gpu_count)
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.add_toleration_json(task, tolerations)


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Fine-tune an open LLM for Text2SQL with LoRA/QLoRA, evaluate EX/EM per hardness, "
    "and publish the adapter to S3 when it reaches the minimum EX.",
)
def text2sql(
    dataset: str = "spider",
    source_uri: str = "s3://sqltune-data/spider",
    schema_style: str = DEFAULT_STYLE,
    prompt_template: str = "alpaca",
    schema_filter: str = DEFAULT_FILTER,
    schema_values: int = 0,
    train_limit: int = 0,
    eval_limit: int = 0,
    dialect: str = "sqlite",
    database_url: str = "",
    base_model: str = "smollm2-135m",
    method: str = "qlora",
    lora_rank: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    target_modules: str = "all-linear",
    learning_rate: float = 2e-4,
    num_epochs: float = 1.0,
    max_steps: int = -1,
    batch_size: int = 8,
    gradient_accumulation_steps: int = 2,
    max_seq_len: int = 1024,
    gradient_checkpointing: bool = True,
    seed: int = 42,
    parallelism: str = "ddp",
    num_nodes: int = 1,
    trainer_runtime: str = DEFAULT_RUNTIME,
    rl_steps: int = 0,
    rl_learning_rate: float = 1e-5,
    train_options: dict = {},  # noqa: B006 (TrainConfig settings without a parameter of their own)
    checkpoint_uri: str = "",
    backend: str = "auto",
    predict_batch_size: int = 16,
    max_new_tokens: int = 128,
    candidates: int = 4,
    predict_options: dict = {},  # noqa: B006 (PredictConfig settings without a parameter of their own)
    evaluate_options: dict = {},  # noqa: B006 (EvaluateConfig settings without a parameter of their own)
    gpu_type: str = "nvidia.com/gpu",
    gpu_count: int = 1,
    gpu_node_selector: dict = GPU_NODE_SELECTOR,
    gpu_tolerations: list = GPU_TOLERATIONS,
    min_ex: float = 0.0,
    bucket: str = "sqltune",
    prefix: str = "adapters",
    model_name: str = "text2sql",
    promote_channel: str = "",
    promote_margin: float = 0.0,
    publish_options: dict = {},  # noqa: B006 (PublishConfig settings without a parameter of their own)
    s3_endpoint_url: str = "",
    s3_secret_name: str = "sqltune-s3",
    hf_token_secret_name: str = "sqltune-hf-token",
    database_secret_name: str = "sqltune-database",
):
    prep = preprocess(
        dataset=dataset,
        source_uri=source_uri,
        schema_style=schema_style,
        prompt_template=prompt_template,
        schema_filter=schema_filter,
        schema_values=schema_values,
        train_limit=train_limit,
        eval_limit=eval_limit,
        dialect=dialect,
        database_url=database_url,
    )
    _configure(prep, hours=2, cpu="2", memory="8Gi", s3_secret=s3_secret_name).set_caching_options(True)
    _database_password(prep, database_secret_name)
    place = placement(
        gpu_count=gpu_count,
        num_nodes=num_nodes,
        rl_steps=rl_steps,
        gpu_node_selector=gpu_node_selector,
        gpu_tolerations=gpu_tolerations,
    )
    _configure(place, hours=1, cpu="100m", memory="256Mi")

    fit = train(
        train_data=prep.outputs["train_data"],
        base_model=base_model,
        method=method,
        prompt_template=prompt_template,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=target_modules,
        learning_rate=learning_rate,
        num_epochs=num_epochs,
        max_steps=max_steps,
        rl_steps=rl_steps,
        rl_learning_rate=rl_learning_rate,
        dataset=dataset,
        source_uri=source_uri,
        database_url=database_url,
        batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        max_seq_len=max_seq_len,
        gradient_checkpointing=gradient_checkpointing,
        seed=seed,
        parallelism=parallelism,
        num_nodes=num_nodes,
        nproc_per_node=gpu_count,
        train_options=train_options,
        checkpoint_uri=checkpoint_uri,
        run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        trainer_runtime=trainer_runtime,
        gpu_type=gpu_type,
        gpu_node_selector=gpu_node_selector,
        gpu_tolerations=gpu_tolerations,
        s3_secret_name=s3_secret_name,
        hf_token_secret_name=hf_token_secret_name,
        endpoint_url=s3_endpoint_url,
    )
    where = place.outputs
    _configure(fit, hours=24, cpu=where["train_cpu"], memory=where["train_memory"], s3_secret=s3_secret_name)
    # A preempted GPU pod is retried; the train step resumes from its last checkpoint under checkpoint_uri.
    fit.set_retry(num_retries=3, backoff_duration="60s", backoff_factor=2.0)
    _on_gpu(fit, gpu_type, where["train_gpus"], where["train_node_selector"], where["train_tolerations"])
    kubernetes.use_secret_as_env(
        fit, secret_name=hf_token_secret_name, secret_key_to_env={"HF_TOKEN": "HF_TOKEN"}, optional=True
    )
    _database_password(fit, database_secret_name)

    def predict_and_score(label: str, **adapter: PipelineChannel) -> dsl.PipelineTask:
        """Predict the eval set on a GPU (with the adapter, or the base model alone) and score it."""
        predictions = predict(
            eval_data=prep.outputs["eval_data"],
            databases=prep.outputs["databases"],
            base_model=base_model,
            prompt_template=prompt_template,
            max_seq_len=max_seq_len,
            backend=backend,
            batch_size=predict_batch_size,
            max_new_tokens=max_new_tokens,
            candidates=candidates,
            database_url=database_url,
            predict_options=predict_options,
            **adapter,
        ).set_display_name(f"predict-{label}")
        _configure(predictions, hours=6, cpu="8", memory="64Gi", s3_secret=s3_secret_name)
        _database_password(predictions, database_secret_name)
        _on_gpu(predictions, gpu_type, where["predict_gpus"], gpu_node_selector, gpu_tolerations)
        scored = evaluate(
            eval_data=prep.outputs["eval_data"],
            predictions=predictions.outputs["predictions"],
            databases=prep.outputs["databases"],
            dataset=dataset,
            database_url=database_url,
            evaluate_options=evaluate_options,
        ).set_display_name(f"evaluate-{label}")
        return _database_password(_configure(scored, hours=2, cpu="4", memory="8Gi"), database_secret_name)

    scored = predict_and_score("finetuned", adapter=fit.outputs["adapter"])
    # The base model without an adapter, scored the same way: the gain the fine-tune buys, side by side in
    # the UI. Unconditional: kfp 2.17's compiler drops the accelerator parameters of GPU tasks inside a
    # dsl.If group from the group's inputs, so a conditional GPU task cannot resolve them.
    predict_and_score("base")

    with dsl.If(scored.outputs["Output"] >= min_ex, name="ex-reaches-min-ex"):
        release = publish(
            adapter=fit.outputs["adapter"],
            evaluation=scored.outputs["evaluation"],
            bucket=bucket,
            prefix=prefix,
            model_name=model_name,
            endpoint_url=s3_endpoint_url,
            promote_channel=promote_channel,
            promote_margin=promote_margin,
            publish_options=publish_options,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        _configure(release, hours=1, cpu="1", memory="2Gi", s3_secret=s3_secret_name)
