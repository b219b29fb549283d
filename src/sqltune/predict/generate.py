"""Greedy batched generation with transformers: the HF backend.

Prompts are sorted by length (longest first, so an out-of-memory batch shows at once) and cut into batches,
so each batch pads only to its own longest prompt; padding goes on the left, so every row's new tokens
start at the same column. Generation is greedy and stops at EOS or at the first `;` (the end of the
statement: nothing after it is used). Results come back in input order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqltune.log import progress

STOP_STRINGS = (";",)


@dataclass(frozen=True)
class Generation:
    """One model output: decoded text, token counts, and the wall time of the batch that produced it."""

    text: str
    prompt_tokens: int
    new_tokens: int
    batch_latency_s: float


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first; ties keep input order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def _new_token_count(row: list[int], eos_ids: set[int], pad_id: int) -> int:
    """Generated tokens before EOS; the pad tokens generate() appends after a stop are not counted."""
    for index, token in enumerate(row):
        if token in eos_ids:
            return index
    end = len(row)
    while end and row[end - 1] == pad_id:
        end -= 1
    return end


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    return ids | {tokenizer.eos_token_id}


def generate_hf(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 128,
) -> tuple[list[Generation], float]:
    """Greedy outputs for already-tokenized prompts, in input order, and the seconds spent generating."""
    import torch

    pad_id = tokenizer.pad_token_id
    eos_ids = _eos_ids(model, tokenizer)
    results: list[Generation | None] = [None] * len(prompt_ids)
    batches = length_sorted_batches([len(ids) for ids in prompt_ids], batch_size)
    total = 0.0
    for batch in progress(batches, desc="predict", unit="batch"):
        width = max(len(prompt_ids[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, index in enumerate(batch):
            ids = prompt_ids[index]
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        started = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids.to(model.device),
                attention_mask=attention_mask.to(model.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=pad_id,
                eos_token_id=sorted(eos_ids),
                stop_strings=list(STOP_STRINGS),
                tokenizer=tokenizer,
            )
        elapsed = time.perf_counter() - started
        total += elapsed
        for row, index in enumerate(batch):
            new = output[row, width:].tolist()
            count = _new_token_count(new, eos_ids, pad_id)
            text = tokenizer.decode(new[:count], skip_special_tokens=True)
            results[index] = Generation(text, len(prompt_ids[index]), count, elapsed)
    return [result for result in results if result is not None], total
