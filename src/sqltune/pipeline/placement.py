"""What the train and predict pods request and where they land, decided at run time from the parameters by
the pipeline's `placement` task (no kfp here: the task's executor imports this module).

A task of its own, for two reasons a static request cannot meet:
- KFP's driver reads a resource placeholder as a string parameter (`resolvePodSpecInputRuntimeParameter` takes
  `GetStringValue()`), so the integer `gpu_count` resolves to no quantity and the pod is refused; this task
  hands the counts on as strings.
- With `num_nodes > 1` the training runs as a Kubeflow Trainer TrainJob on GPU nodes of its own, and the train
  pod only submits it and waits: it takes no GPU then, and lands on any node with a small CPU/memory request.
  The GRPO stage (`rl_steps > 0`) runs in the train pod after the TrainJob, on one GPU, which the pod then
  holds for the whole step (the TrainJob's wait included).
"""

from typing import Any, NamedTuple

TRAIN_CPU, TRAIN_MEMORY = "8", "64Gi"  # a pod that trains: data loading and the merged adapter in memory
LAUNCHER_CPU, LAUNCHER_MEMORY = "1", "2Gi"  # a pod that submits a TrainJob and streams its log


class Placement(NamedTuple):
    train_gpus: str
    train_cpu: str
    train_memory: str
    train_node_selector: dict
    train_tolerations: list
    predict_gpus: str


def place(gpu_count: int, num_nodes: int, rl_steps: int, node_selector: dict, tolerations: list) -> Placement:
    """The train pod takes `gpu_count` GPUs when it trains itself, one when it only runs the GRPO stage after
    a multi-node TrainJob, none (off the GPU nodes) when it only waits for one; predict takes `gpu_count`."""
    if gpu_count < 0 or num_nodes < 1:
        raise ValueError(f"gpu_count must be >= 0 and num_nodes >= 1, got gpu_count={gpu_count} num_nodes={num_nodes}")
    train_gpus = gpu_count if num_nodes == 1 else min(gpu_count, 1) if rl_steps > 0 else 0
    on_gpu: dict[str, Any] = (
        {"train_cpu": TRAIN_CPU, "train_memory": TRAIN_MEMORY, "node_selector": node_selector, "tolerations": tolerations}
        if train_gpus
        else {"train_cpu": LAUNCHER_CPU, "train_memory": LAUNCHER_MEMORY, "node_selector": {}, "tolerations": []}
    )
    return Placement(
        train_gpus=str(train_gpus),
        train_cpu=on_gpu["train_cpu"],
        train_memory=on_gpu["train_memory"],
        train_node_selector=on_gpu["node_selector"],
        train_tolerations=on_gpu["tolerations"],
        predict_gpus=str(gpu_count),
    )
