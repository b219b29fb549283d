"""sqltune: Text2SQL fine-tuning with LoRA/QLoRA as a Kubeflow Pipelines workflow."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sqltune")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
