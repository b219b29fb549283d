"""`sqltune serve`: the options are generated from ServeConfig and the registry location (ModelLocation)."""

from __future__ import annotations

import typer

from sqltune.errors import SqltuneError
from sqltune.publish.config import ModelLocation
from sqltune.serve.config import ServeConfig
from sqltune.settings import config_command


@config_command(ServeConfig)
@config_command(ModelLocation, defaults={"bucket": None, "model_name": None}, name="location")
def serve(
    adapter: str = typer.Option(
        None, "--adapter", help="Serve this one adapter (a directory or s3:// prefix) instead of following a channel."
    ),
    endpoint_url: str = typer.Option(None, "--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL, else AWS)."),
    print_inferenceservice: bool = typer.Option(
        False, "--print-inferenceservice", help="Print the KServe InferenceService running this command, and exit."
    ),
    name: str = typer.Option(None, "--name", help="InferenceService name (default: from the model name)."),
    namespace: str = typer.Option("sqltune", "--namespace", help="InferenceService namespace."),
    gpu_count: int = typer.Option(1, "--gpu-count", help="GPUs of the InferenceService's pod (0: CPU only)."),
    s3_secret_name: str = typer.Option("sqltune-s3", "--s3-secret-name", help="Secret with the S3 credentials."),
    *,
    location: ModelLocation,
    config: ServeConfig,
) -> None:
    """Serve the adapter a registry channel points at (and follow the channel: promotion is the rollout), or one
    --adapter, behind an OpenAI-compatible API with /v1/sql; on 127.0.0.1 unless --host says otherwise."""
    channel = bool(location.bucket or location.model_name)
    if channel == bool(adapter):
        raise SqltuneError("give the registry location (--bucket and --model-name) or --adapter, not both")
    if channel and not (location.bucket and location.model_name):
        raise SqltuneError("serving a channel needs both --bucket and --model-name")
    if print_inferenceservice:
        from sqltune.serve.inferenceservice import build_inferenceservice, service_name, to_yaml
        from sqltune.uri import is_s3

        if adapter and not is_s3(adapter):
            raise SqltuneError("--print-inferenceservice needs the registry location or an s3:// --adapter")
        source_args = ["--adapter", adapter]
        if channel:
            source_args = ["--bucket", location.bucket, "--model-name", location.model_name]
            source_args += ["--prefix", location.prefix] if location.prefix else []
        model_name = location.model_name if channel else adapter.rstrip("/").rsplit("/", 1)[-1]
        resource = build_inferenceservice(
            config, source_args, name=name or service_name(model_name), namespace=namespace, gpu_count=gpu_count,
            s3_secret=s3_secret_name, endpoint_url=endpoint_url,
        )  # fmt: skip
        typer.echo(to_yaml(resource), nl=False)
        return
    from sqltune.serve.run import serve as run_serve

    run_serve(config, location=location if channel else None, adapter=adapter, endpoint_url=endpoint_url)
