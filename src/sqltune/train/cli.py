"""`sqltune train`: the options are generated from TrainConfig, so the CLI and the library cannot disagree."""

from __future__ import annotations

import json

import typer

from sqltune.artifacts import OVERWRITE_HELP
from sqltune.settings import config_command
from sqltune.train.config import TrainConfig
from sqltune.train.io import TrainInputs
from sqltune.train.launch import Rendezvous, launches
from sqltune.train.run import train_here


@config_command(TrainConfig)
def train(
    data: str = typer.Option(..., help="Train records: a records.jsonl file or preprocess artifact dir (or s3://)."),
    base_model: str = typer.Option(
        ..., help="Local dir, hf://org/name[@rev], s3:// prefix, smollm2-135m, tiny-random-llama, tiny-random-qwen2."
    ),
    out: str = typer.Option(..., help="Output adapter artifact directory (or s3:// prefix)."),
    overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
    checkpoint_dir: str = typer.Option(None, help="Local dir or s3:// prefix for checkpoints; reruns resume."),
    endpoint_url: str = typer.Option(None, help="S3 endpoint (default: AWS_ENDPOINT_URL)."),
    init_adapter: str = typer.Option(None, help="--method grpo: the SFT adapter artifact to continue from."),
    db_dir: str = typer.Option(None, help="--method grpo: the databases (<db_id>/<db_id>.sqlite) the reward runs on."),
    node_rank: int = typer.Option(0, envvar="PET_NODE_RANK", help="This node's rank when --num-nodes > 1."),
    master_addr: str = typer.Option(
        "127.0.0.1", envvar="PET_MASTER_ADDR", help="Address of node 0, where the nodes meet (--num-nodes > 1)."
    ),
    master_port: int = typer.Option(29500, envvar="PET_MASTER_PORT", help="Port on node 0 where the nodes meet."),
    print_trainjob: bool = typer.Option(
        False, help="Print the Kubeflow TrainJob (YAML) that runs this on --num-nodes nodes, and exit."
    ),
    trainer_runtime: str = typer.Option("torch-distributed", help="Kubeflow Trainer runtime of --print-trainjob."),
    *,
    config: TrainConfig,
) -> None:
    """Fine-tune a base model with LoRA/QLoRA on preprocess records; writes a PEFT adapter artifact.

    With several workers (--nproc-per-node, --num-nodes) the command starts them through torchrun and waits.
    """
    inputs = TrainInputs(
        data, base_model, out, checkpoint_dir=checkpoint_dir, endpoint_url=endpoint_url, overwrite=overwrite,
        init_adapter=init_adapter, db_dir=db_dir,
    )  # fmt: skip
    if print_trainjob:
        typer.echo(_trainjob_yaml(inputs, config, trainer_runtime), nl=False)
        return
    metrics = train_here(inputs, config, Rendezvous(node_rank, master_addr, master_port))
    if launches(config):
        return  # rank 0, a worker, printed the summary
    typer.echo(json.dumps({k: v for k, v in metrics.items() if k != "dropped_ids"}, indent=2))


def _trainjob_yaml(inputs: TrainInputs, config: TrainConfig, runtime: str) -> str:
    """The TrainJob the pipeline would submit for this run: its pods share no disk, so every path is s3://."""
    from sqltune.errors import SqltuneError
    from sqltune.images import image_for
    from sqltune.train import trainjob
    from sqltune.uri import is_s3

    paths = {"--data": inputs.data, "--out": inputs.out, "--checkpoint-dir": inputs.checkpoint_dir}
    local = [f"{flag} {value}" for flag, value in paths.items() if not (value and is_s3(value))]
    if local:
        raise SqltuneError(
            f"--print-trainjob: a TrainJob's pods see no local path; give s3:// locations ({', '.join(local)})"
        )
    gpus = config.nproc_per_node or 1
    job = trainjob.build_trainjob(
        ["sqltune", *inputs.argv(config)], image=image_for("train"), num_nodes=config.num_nodes or 1,
        gpus_per_node=gpus, runtime=runtime,
    )  # fmt: skip
    return trainjob.to_yaml(job)
