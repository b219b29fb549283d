"""`sqltune train`: the options are generated from TrainConfig, so the CLI and the library cannot disagree."""

from __future__ import annotations

import json

import typer

from sqltune.artifacts import OVERWRITE_HELP
from sqltune.settings import config_args, config_command
from sqltune.train.config import TrainConfig


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
    node_rank: int = typer.Option(0, envvar="PET_NODE_RANK", help="This node's rank when --num-nodes > 1."),
    master_addr: str = typer.Option(
        "127.0.0.1", envvar="PET_MASTER_ADDR", help="Address of node 0, where the nodes meet (--num-nodes > 1)."
    ),
    master_port: int = typer.Option(29500, envvar="PET_MASTER_PORT", help="Port on node 0 where the nodes meet."),
    *,
    config: TrainConfig,
) -> None:
    """Fine-tune a base model with LoRA/QLoRA on preprocess records; writes a PEFT adapter artifact.

    With several workers (--nproc-per-node, --num-nodes) the command starts them through torchrun and waits.
    """
    from sqltune.train import launch

    num_nodes, per_node = launch.nodes(config.num_nodes), launch.workers_per_node(config.nproc_per_node)
    if not launch.is_worker() and num_nodes * per_node > 1:
        rendezvous = launch.Rendezvous(node_rank, master_addr, master_port)
        inputs = [
            "--data",
            data,
            "--base-model",
            base_model,
            "--out",
            out,
            "--overwrite" if overwrite else "--no-overwrite",
        ]
        inputs += ["--checkpoint-dir", checkpoint_dir] if checkpoint_dir else []
        inputs += ["--endpoint-url", endpoint_url] if endpoint_url else []
        launch.launch(
            ["train", *inputs, *config_args(config)], num_nodes, per_node, rendezvous, base_model, endpoint_url
        )
        return
    from sqltune.train.run import train as run_train

    metrics = run_train(
        data, base_model, out, config=config, checkpoint_dir=checkpoint_dir, endpoint_url=endpoint_url,
        overwrite=overwrite,
    )  # fmt: skip
    typer.echo(json.dumps({k: v for k, v in metrics.items() if k != "dropped_ids"}, indent=2))
