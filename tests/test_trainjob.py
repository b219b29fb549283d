"""Multi-node runs as Kubeflow Trainer TrainJobs: the object built with the Kubeflow SDK's API models.

The wait / stream / fail logic (`trainjob.follow`) runs in `make image-test` (`images/tools/trainjob_follow.py`),
through the SDK's container backend on the built images: it needs an image with sqltune, which the unit suite has
not."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from sqltune.cli import app
from sqltune.errors import SqltuneError
from sqltune.train import TrainConfig

pytest.importorskip("kubeflow.trainer", reason="the Kubeflow SDK is the trainer extra: pip install 'sqltune[trainer]'")
S3_ARGS = ["--data", "s3://runs/r1/records.jsonl", "--base-model", "hf://Qwen/Qwen2.5-72B-Instruct",
           "--out", "s3://runs/r1/adapter", "--checkpoint-dir", "s3://runs/r1/checkpoints"]  # fmt: skip


def test_print_trainjob_prints_a_two_node_trainjob_of_the_sdk_models():
    from kubeflow_trainer_api import models

    result = CliRunner().invoke(app, ["train", *S3_ARGS, "--num-nodes", "2", "--nproc-per-node", "8",
                                      "--parallelism", "fsdp", "--max-steps", "100", "--print-trainjob"])  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    job = models.TrainerV1alpha1TrainJob.from_dict(printed)  # the SDK's model accepts every field
    assert (job.api_version, job.kind) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert (job.spec.runtime_ref.name, job.spec.runtime_ref.kind) == ("torch-distributed", "ClusterTrainingRuntime")
    trainer = job.spec.trainer
    assert (trainer.num_nodes, trainer.num_proc_per_node) == (2, 8)
    assert printed["spec"]["trainer"]["resourcesPerNode"]["limits"] == {"cpu": "8", "memory": "64Gi",
                                                                         "nvidia.com/gpu": "8"}  # fmt: skip
    assert trainer.image.rsplit("/", 1)[-1].startswith("sqltune-train:")
    # The pods run the same `sqltune train`, which parses back into the same settings.
    assert trainer.command[:2] == ["sqltune", "train"]
    command = trainer.command[2:]
    assert command[command.index("--num-nodes") + 1] == "2" and command[command.index("--out") + 1] == S3_ARGS[5]
    pod = printed["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    assert pod["name"] == "node"
    spec = pod["template"]["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in spec["containers"][0]["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"] == {"name": "sqltune-s3", "key": "AWS_SECRET_ACCESS_KEY", "optional": True}
    assert env["HF_TOKEN"]["name"] == "sqltune-hf-token"
    assert not any("value" in e for e in spec["containers"][0]["env"])  # no credential as a plain value


def test_the_trainjob_command_gives_back_the_same_settings():
    from sqltune.settings import config_args, config_command

    config = TrainConfig(parallelism="fsdp", num_nodes=2, target_modules="q_proj,v_proj", packing=True)
    seen = []

    @config_command(TrainConfig)
    def command(*, config: TrainConfig) -> None:
        seen.append(config)

    import typer

    runner = typer.Typer()
    runner.command()(command)
    runner(config_args(config), standalone_mode=False)
    assert seen == [config]


def test_print_trainjob_refuses_local_paths(tmp_path):
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "r.jsonl"), "--base-model", "x",
                                      "--out", "s3://b/a", "--num-nodes", "2", "--print-trainjob"])  # fmt: skip
    assert isinstance(result.exception, SqltuneError)
    assert "a TrainJob's pods see no local path; give s3:// locations (--data" in str(result.exception)
    assert "--checkpoint-dir None" in str(result.exception)
