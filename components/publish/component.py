"""The publish component: the adapter, its model card and metrics to S3, with optional promotion."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model

from sqltune.images import image_for


@dsl.component(base_image=image_for("publish"), install_kfp_package=False)
def publish(
    adapter: Input[Model],
    evaluation: Input[Dataset],
    bucket: str,
    prefix: str,
    model_name: str,
    endpoint_url: str,
    promote_channel: str,
    promote_margin: float,
    publish_options: dict,
    run_id: str,
) -> str:
    """Publish a verified adapter version; returns its s3:// URI. Credentials come from the environment.

    Args:
        adapter: The adapter from train.
        evaluation: Its evaluation (the EX that decides promotion).
        endpoint_url: The S3 endpoint ('': AWS).
        promote_channel: The channel to promote the version to when it beats the current one ('': do not promote).
        run_id: The pipeline run's id: the version is named run-<id>, so a retry publishes the same version.

    Returns:
        The published version's s3:// URI.
    """
    from pathlib import Path

    from sqltune.publish import publish as run_publish
    from sqltune.publish.config import component_config

    result = run_publish(
        adapter=Path(adapter.path),
        eval_dir=Path(evaluation.path),
        config=component_config(locals()),
        endpoint_url=endpoint_url or None,
        run_id=run_id,
    )
    return result.uri
