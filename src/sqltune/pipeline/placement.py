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

from typing import NamedTuple

from sqltune.settings import SettingError

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
    a multi-node TrainJob, and none, off the GPU nodes, when it only waits for one; predict takes `gpu_count`."""
    for name, value, least in (("gpu_count", gpu_count, 0), ("num_nodes", num_nodes, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise SettingError("placement", name, value, f"a whole number >= {least}")
    if num_nodes == 1:
        return Placement(str(gpu_count), TRAIN_CPU, TRAIN_MEMORY, node_selector, tolerations, str(gpu_count))
    if rl_steps > 0:
        return Placement(str(min(gpu_count, 1)), TRAIN_CPU, TRAIN_MEMORY, node_selector, tolerations, str(gpu_count))
    return Placement("0", LAUNCHER_CPU, LAUNCHER_MEMORY, {}, [], str(gpu_count))
