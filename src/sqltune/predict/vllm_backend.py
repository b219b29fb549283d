"""The vLLM backend for GPU images: continuous batching, the adapter applied unmerged through LoRARequest.

It receives the same token ids as the HF backend (so the prompt is exactly the same), decodes greedily
with the same stop string, and keeps the stop string in the output as the HF backend does, so both
backends feed the same text to SQL extraction. vLLM schedules all prompts itself: the timing it reports
is one wall time for the whole run.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Sequence
from pathlib import Path

from sqltune.predict.generate import STOP_STRINGS, Generation

# vLLM accepts only these values for max_lora_rank; the adapter's rank is rounded up to the next one.
_VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def max_lora_rank(rank: int) -> int:
    """The smallest rank vLLM allows that holds an adapter of rank `rank`."""
    for allowed in _VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"LoRA rank {rank} is above vLLM's largest max_lora_rank {_VLLM_LORA_RANKS[-1]}")


def generate_vllm(
    base_dir: Path,
    tokenizer_dir: Path,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    context_len: int,
    adapter_dir: Path | None = None,
    adapter_rank: int = 16,
) -> tuple[list[Generation], float]:
    """Greedy outputs in input order (vLLM returns them in request order) and the seconds spent generating."""
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    lora_kwargs = {"enable_lora": True, "max_lora_rank": max_lora_rank(adapter_rank)} if adapter_dir else {}
    llm = LLM(model=str(base_dir), tokenizer=str(tokenizer_dir), max_model_len=context_len, seed=0, **lora_kwargs)
    sampling = SamplingParams(
        temperature=0.0, max_tokens=max_new_tokens, stop=list(STOP_STRINGS), include_stop_str_in_output=True
    )
    lora = LoRARequest("adapter", 1, str(adapter_dir)) if adapter_dir else None
    started = time.perf_counter()
    outputs = llm.generate(
        [{"prompt_token_ids": list(ids)} for ids in prompt_ids], sampling, lora_request=lora, use_tqdm=True
    )
    elapsed = time.perf_counter() - started
    generations = [
        Generation(out.outputs[0].text, len(out.prompt_token_ids), len(out.outputs[0].token_ids), elapsed)
        for out in outputs
    ]
    return generations, elapsed
