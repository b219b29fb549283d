"""`sqltune predict`."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from sqltune.artifacts import OVERWRITE_HELP
from sqltune.prompt import PromptTemplate


class Backend(str, Enum):
    auto = "auto"
    hf = "hf"
    vllm = "vllm"


def predict(
    data: str = typer.Option(..., help="Eval records: records.jsonl, its artifact directory, or an s3:// URI."),
    base_model: str = typer.Option(..., help="Local dir, hf://org/name, s3:// prefix, or a built-in name."),
    adapter: str = typer.Option(None, help="LoRA adapter directory or s3:// prefix (default: the base model alone)."),
    out: Path = typer.Option(..., help="Output artifact directory (predictions.jsonl, predictions.txt, metrics)."),
    backend: Backend = typer.Option(Backend.auto, help="auto: vLLM when installed, else transformers."),
    batch_size: int = typer.Option(16, min=1, help="Prompts per generate() call (HF backend)."),
    max_new_tokens: int = typer.Option(128, min=1, help="Most tokens generated per question."),
    limit: int = typer.Option(None, min=1, help="Only the first N records."),
    template: PromptTemplate = typer.Option(None, help="Prompt template (default: the adapter's, else alpaca)."),
    max_seq_len: int = typer.Option(None, min=16, help="Context length (default: the adapter's, else the model's)."),
    quantize_4bit: bool = typer.Option(False, help="Load the base in 4-bit NF4; the adapter then stays unmerged."),
    base_name_check: bool = typer.Option(True, help="Require the adapter to name this base model."),
    endpoint_url: str = typer.Option(None, help="S3 endpoint for s3:// inputs (default: AWS_ENDPOINT_URL)."),
    overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
) -> None:
    """Generate one SQL query per eval record, greedily and in batches, and write the predictions artifact."""
    from sqltune.predict import predict as run_predict

    metrics = run_predict(
        data,
        base_model,
        adapter,
        out,
        backend=backend.value,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        limit=limit,
        template=template.value if template else None,
        max_seq_len=max_seq_len,
        quantize_4bit=quantize_4bit,
        base_name_check=base_name_check,
        endpoint_url=endpoint_url,
        overwrite=overwrite,
    )
    typer.echo(json.dumps(metrics, indent=2))
