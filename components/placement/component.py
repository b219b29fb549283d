"""The placement component: what the train and predict pods request and where they land, decided at run time."""

from typing import NamedTuple

from kfp import dsl

from sqltune.images import image_for


@dsl.component(base_image=image_for("placement"), install_kfp_package=False)
def placement(
    gpu_count: int, num_nodes: int, rl_steps: int, gpu_node_selector: dict, gpu_tolerations: list
) -> NamedTuple(
    "Placement",
    train_gpus=str,
    train_cpu=str,
    train_memory=str,
    train_node_selector=dict,
    train_tolerations=list,
    predict_gpus=str,
):
    """Resources and node placement of the train and predict pods (see sqltune.pipeline.placement).

    Args:
        gpu_count: GPUs of a training node and of the predict pod.
        num_nodes: Nodes training together (more than 1: a Kubeflow Trainer TrainJob).
        rl_steps: Steps of the GRPO stage (it runs in the train pod, on one GPU).
        gpu_node_selector: Node labels the GPU pods must have.
        gpu_tolerations: Taints the GPU pods tolerate.

    Returns:
        The train pod's GPUs, CPU, memory, node selector and tolerations, and the predict pod's GPUs.
    """
    from sqltune.pipeline.placement import place

    return place(gpu_count, num_nodes, rl_steps, gpu_node_selector, gpu_tolerations)
