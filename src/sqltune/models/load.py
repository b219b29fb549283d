"""The one place that loads tokenizers and causal LMs (train, predict and the benchmarks all call it)."""

from __future__ import annotations

import os
from typing import Any

from sqltune.errors import SqltuneError


def load_tokenizer(path: str | os.PathLike[str]) -> Any:
    """The model's tokenizer; a missing pad token falls back to EOS (labels are masked explicitly)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.eos_token_id is None:
        raise SqltuneError(f"tokenizer in {path} has no EOS token: the model could never learn to stop")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    path: str | os.PathLike[str],
    *,
    quantize_4bit: bool = False,
    dtype: Any = None,
    attn_implementation: str | None = None,
    device_map: Any = None,
    quant_storage: Any = None,
) -> Any:
    """A causal LM from `path`; `quantize_4bit` loads it as QLoRA does (NF4, double quantization).

    `quant_storage` packs the 4-bit weights into tensors of that dtype, which FSDP can shard like any
    other weight (the FSDP-QLoRA recipe of bitsandbytes and PEFT); by default they are uint8.
    """
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = dtype or torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
    if quantize_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            **({"bnb_4bit_quant_storage": quant_storage} if quant_storage is not None else {}),
        )
    return AutoModelForCausalLM.from_pretrained(path, **kwargs)
