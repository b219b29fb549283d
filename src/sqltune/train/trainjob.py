"""Multi-node training as a Kubeflow Trainer v2 TrainJob, built and followed with the Kubeflow SDK.

The TrainJob runs the train image's `sqltune train` on `num_nodes` pods of the runtime (default the
Trainer's `torch-distributed` ClusterTrainingRuntime); the runtime gives each pod PET_NNODES, PET_NODE_RANK,
PET_MASTER_ADDR, ..., which `sqltune train` reads to start its workers (`launch.py`). Records, checkpoints
and the adapter are on S3, as the pods share no disk. The object is built from the SDK's own API models
(`kubeflow_trainer_api.models`, with the SDK's helper for the trainer's resources), so `--print-trainjob`
shows exactly what `submit` creates; `follow` streams rank 0's log and fails with the TrainJob's reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sqltune.errors import SqltuneError
from sqltune.log import get_logger
from sqltune.settings import FROM_PIPELINE_ENV
from sqltune.train.config import TrainConfig
from sqltune.train.io import TrainInputs
from sqltune.uri import is_s3, join

log = get_logger(__name__)

DEFAULT_RUNTIME = "torch-distributed"
# The trainer container of the Trainer's torch runtimes, where the patches below apply.
NODE = "node"
# What the pipeline's GPU steps land on; the TrainJob's pods use the same pipeline parameters.
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
SDK_HINT = "the Kubeflow SDK is not installed: pip install 'sqltune[trainer]' (kubeflow==0.5.0)"


def build_trainjob(
    command: Sequence[str], *, image: str, num_nodes: int, gpus_per_node: int, gpu_resource: str = "nvidia.com/gpu",
    cpu: str = "8", memory: str = "64Gi", runtime: str = DEFAULT_RUNTIME,
    node_selector: dict[str, str] | None = None, tolerations: list[dict[str, Any]] | None = None,
    s3_secret: str = "sqltune-s3", hf_token_secret: str = "sqltune-hf-token", env: dict[str, str] | None = None,
    name: str | None = None,
) -> Any:  # fmt: skip
    """The TrainJob (a `TrainerV1alpha1TrainJob`) running `command` on `num_nodes` pods of `gpus_per_node` GPUs.

    S3 and Hugging Face credentials come from the Secrets as environment, never as values in the object.
    """
    try:
        from kubeflow.trainer import CustomTrainerContainer, Runtime, RuntimeKind, RuntimeTrainer, TrainerType
        from kubeflow.trainer.backends.kubernetes.utils import get_trainer_cr_from_custom_trainer
        from kubeflow.trainer.constants import constants
        from kubeflow_trainer_api import models
    except ImportError:
        raise SqltuneError(SDK_HINT) from None

    resources = {"cpu": cpu, "memory": memory, **({gpu_resource: str(gpus_per_node)} if gpus_per_node else {})}
    container = CustomTrainerContainer(image=image, num_nodes=num_nodes, resources_per_node=resources, env=env)
    runtime_ref = Runtime(
        name=runtime,
        kind=RuntimeKind.CLUSTER_TRAINING_RUNTIME,
        trainer=RuntimeTrainer(trainer_type=TrainerType.CUSTOM_TRAINER, framework="torch", image=image),
    )
    trainer = get_trainer_cr_from_custom_trainer(runtime_ref, container)
    trainer.command = list(command)
    trainer.num_proc_per_node = max(gpus_per_node, 1)
    secret_env = [_secret_env(key, s3_secret, key) for key in S3_SECRET_KEYS] + [
        _secret_env("HF_TOKEN", hf_token_secret, "HF_TOKEN")
    ]
    pod = {
        "nodeSelector": node_selector if node_selector is not None else GPU_NODE_SELECTOR,
        "tolerations": tolerations if tolerations is not None else GPU_TOLERATIONS,
        "containers": [{"name": NODE, "env": secret_env}],
    }
    patch = {
        "manager": "sqltune",
        "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
            {"name": NODE, "template": {"spec": {"template": {"spec": pod}}}}
        ]}}},
    }  # fmt: skip
    return models.TrainerV1alpha1TrainJob(
        apiVersion=constants.API_VERSION,
        kind=constants.TRAINJOB_KIND,
        metadata=models.IoK8sApimachineryPkgApisMetaV1ObjectMeta(
            name=name or f"sqltune-{uuid.uuid4().hex[:8]}", labels={"app.kubernetes.io/part-of": "sqltune"}
        ),
        spec=models.TrainerV1alpha1TrainJobSpec(
            runtimeRef=models.TrainerV1alpha1RuntimeRef(name=runtime, kind=runtime_ref.kind.value),
            trainer=trainer,
            runtimePatches=[models.TrainerV1alpha1RuntimePatch.from_dict(patch)],
        ),
    )


def train_on_trainer(
    inputs: TrainInputs, config: TrainConfig, *, echo: Callable[[str], None] = print, namespace: str | None = None,
    **placement: Any,
) -> dict[str, Any]:  # fmt: skip
    """The pipeline's multi-node train step: the local records `inputs.data` to `inputs.checkpoint_dir` on S3, a
    TrainJob that trains from there and checkpoints there (a retried step resumes), then the adapter back into the
    local `inputs.out`; returns its metrics.

    `placement` is `build_trainjob`'s image, runtime, resources, node selector, tolerations and Secrets.
    """
    import json

    from sqltune.uri import download_dir, s3_client, split_s3

    work_uri, endpoint_url = inputs.checkpoint_dir or "", inputs.endpoint_url
    if not is_s3(work_uri):
        raise SqltuneError(
            f"num_nodes={config.num_nodes} needs checkpoint_uri on s3:// (got {work_uri!r}): the TrainJob's pods "
            "read the records and write checkpoints and the adapter there"
        )
    bucket, key = split_s3(join(work_uri, "records.jsonl"))
    s3_client(endpoint_url).upload_file(str(inputs.data), bucket, key)
    on_s3 = TrainInputs(
        join(work_uri, "records.jsonl"), inputs.base_model, join(work_uri, "adapter"),
        checkpoint_dir=join(work_uri, "checkpoints"), endpoint_url=endpoint_url,
    )  # fmt: skip
    env = {"AWS_ENDPOINT_URL": endpoint_url} if endpoint_url else {}
    if os.environ.get(FROM_PIPELINE_ENV):  # the pods' errors advise pipeline parameters, as this step's do
        env[FROM_PIPELINE_ENV] = "1"
    job = build_trainjob(
        ["sqltune", *on_s3.argv(config)],
        num_nodes=config.num_nodes,
        gpus_per_node=config.nproc_per_node or 1,
        env=env or None,
        **placement,
    )
    client = kubernetes_client(namespace)
    follow(client, submit(client, job), echo)
    out = Path(inputs.out)
    download_dir(str(on_s3.out), out, endpoint_url, overwrite=True)
    return json.loads((out / "train_metrics.json").read_text(encoding="utf-8"))


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}


def to_yaml(trainjob: Any) -> str:
    import yaml

    return yaml.safe_dump(trainjob.to_dict(), sort_keys=False)


def kubernetes_client(namespace: str | None = None) -> Any:
    """A TrainerClient on the Kubernetes backend (in a pod: its service account and namespace)."""
    try:
        from kubeflow.trainer import KubernetesBackendConfig, TrainerClient
    except ImportError:
        raise SqltuneError(SDK_HINT) from None
    return TrainerClient(KubernetesBackendConfig(namespace=namespace))


def submit(client: Any, trainjob: Any) -> str:
    """Create `trainjob` through the client's Kubernetes backend, as `TrainerClient.train` creates its own."""
    from kubeflow.trainer.constants import constants

    backend = client.backend
    try:
        backend.custom_api.create_namespaced_custom_object(
            constants.GROUP, constants.VERSION, backend.namespace, constants.TRAINJOB_PLURAL, trainjob.to_dict()
        )
    except Exception as exc:  # the API server's answer: forbidden, no such CRD, invalid object
        raise SqltuneError(
            f"could not create TrainJob {trainjob.metadata.name} in namespace {backend.namespace}: {exc} "
            "(is Kubeflow Trainer v2 installed, and may this service account create trainjobs?)"
        ) from None
    log.info("TrainJob %s/%s created", backend.namespace, trainjob.metadata.name)
    return trainjob.metadata.name


def follow(
    client: Any, name: str, echo: Callable[[str], None] = print, timeout_s: int = 7 * 24 * 3600, poll_s: int = 10
) -> None:
    """Stream rank 0's log through `echo` until the TrainJob ends; raise with its reason when it failed."""
    from kubeflow.trainer.constants import constants

    tail: list[str] = []
    for line in _lines(client.get_job_logs(name, follow=True)):
        echo(line)
        tail = [*tail[-49:], line]
    job = client.wait_for_job_status(
        name, status={constants.TRAINJOB_COMPLETE, constants.TRAINJOB_FAILED}, timeout=timeout_s,
        polling_interval=poll_s,
    )  # fmt: skip
    if job.status == constants.TRAINJOB_FAILED:
        raise SqltuneError(f"TrainJob {name} failed: {_reason(client, name, tail)}")
    log.info("TrainJob %s complete", name)


def _lines(chunks: Iterator[str]) -> Iterator[str]:
    for chunk in chunks:
        yield from chunk.rstrip("\n").split("\n")


def _reason(client: Any, name: str, tail: list[str]) -> str:
    """The error rank 0 printed, else the TrainJob's warning events (Kubernetes), else its last log lines."""
    errors = [line for line in tail if line.startswith("error: ")]
    if errors:
        return errors[-1][len("error: ") :]
    try:
        events = [f"{e.reason}: {e.message}" for e in client.get_job_events(name) if e.reason]
    except NotImplementedError:  # backends without Kubernetes events
        events = []
    return "; ".join(events[-3:]) or " | ".join(tail[-5:]) or "no log and no events"
