"""Greedy batched generation with transformers: the HF backend.

Two things decide its speed. Prompts that share a long prefix (on Spider, the instruction and one
database's schema: ~50 questions per database) are batched together and that prefix is run through the
model once per batch, its cache copied to every row: on the CPU the prompt pass is most of the work.
Within a batch, rows are sorted by length and padded on the left of what follows the shared prefix, so
every row's new tokens start at the same column and padding covers only the differing tails. Generation
is greedy and stops at EOS or at the first `;` (the end of the statement: nothing after it is used).
Results come back in input order.
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


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first; ties keep input order."""
    _check_batch_size(batch_size)
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all rows share."""
    first = rows[0]
    length = min(len(row) for row in rows)
    for row in rows[1:]:
        length = next((i for i in range(length) if row[i] != first[i]), length)
    return length


def shared_prefix_groups(prompt_ids: Sequence[Sequence[int]]) -> list[list[int]]:
    """Indices of prompts grouped by a shared prefix of at least half the shorter prompt (one schema).

    Sorting the token lists puts prompts with a common prefix next to each other; a group ends where two
    neighbours share less than half of the shorter one.
    """
    order = sorted(range(len(prompt_ids)), key=lambda i: (list(prompt_ids[i]), i))
    groups: list[list[int]] = []
    for index in order:
        if groups:
            previous = prompt_ids[groups[-1][-1]]
            shared = common_prefix_length([previous, prompt_ids[index]])
            if 2 * shared >= min(len(previous), len(prompt_ids[index])):
                groups[-1].append(index)
                continue
        groups.append([index])
    return groups


def prefix_batches(prompt_ids: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Batches that share long prefixes where there are enough such prompts, by length otherwise.

    A group of at least half a batch is cut into evenly sized batches of its own; smaller groups gain
    less from their prefix than from a full batch, so they are pooled and batched by length. Batches
    come longest first, so one that does not fit in memory fails at once; rows inside a batch are
    sorted by length.
    """
    _check_batch_size(batch_size)
    lengths = [len(ids) for ids in prompt_ids]
    batches, pooled = [], []
    for group in shared_prefix_groups(prompt_ids):
        if len(group) < max(2, batch_size // 2):
            pooled.extend(group)
            continue
        count = -(-len(group) // batch_size)
        batches.extend(group[part::count] for part in range(count))
    pooled_batches = length_sorted_batches([lengths[i] for i in pooled], batch_size)
    batches.extend([pooled[i] for i in batch] for batch in pooled_batches)
    batches = [sorted(batch, key=lambda i: (-lengths[i], i)) for batch in batches]
    return sorted(batches, key=lambda batch: -lengths[batch[0]])


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


def _prefilled_cache(model: Any, prefix: Sequence[int], rows: int, max_cache_len: int) -> Any:
    """A static key/value cache for `rows` rows, holding `prefix` (run through the model once) in each.

    Static, not transformers' default dynamic cache: that one re-copies every row's keys and values at each
    new token (torch.cat), a quarter of a decode step at batch 16 on the CPU.
    """
    import torch
    from transformers import StaticCache

    cache = StaticCache(config=model.config, max_cache_len=max_cache_len)
    if prefix:
        output = model(input_ids=torch.tensor([list(prefix)], device=model.device), use_cache=True, logits_to_keep=1)
        for index, layer in enumerate(output.past_key_values.layers):
            cache.update(layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1), index)
    return cache


def _generate_batch(
    model: Any, tokenizer: Any, rows: list[Sequence[int]], share_prefix: bool, max_new_tokens: int, eos_ids: set[int]
) -> tuple[list[list[int]], float]:
    """New token ids per row and the batch's seconds: [shared prefix | left padding | own tail] per row.

    Positions come from the attention mask, so padding inside a row shifts nothing; at least one token
    of every row stays outside the prefix, as generation starts from the last prompt token.
    """
    import torch

    prefix = min(common_prefix_length(rows), min(len(row) for row in rows) - 1) if share_prefix else 0
    width = prefix + max(len(row) - prefix for row in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, :prefix] = torch.tensor(row[:prefix], dtype=torch.long)
        input_ids[index, width - len(row) + prefix :] = torch.tensor(row[prefix:], dtype=torch.long)
        attention_mask[index, :prefix] = 1
        attention_mask[index, width - len(row) + prefix :] = 1
    started = time.perf_counter()
    with torch.inference_mode():
        cache = _prefilled_cache(model, rows[0][:prefix], len(rows), width + max_new_tokens)
        output = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            past_key_values=cache,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=sorted(eos_ids),
            stop_strings=list(STOP_STRINGS),
            tokenizer=tokenizer,
        )
    return output[:, width:].tolist(), time.perf_counter() - started


def generate_hf(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 128,
    share_prefixes: bool = True,
) -> tuple[list[Generation], float]:
    """Greedy outputs for already-tokenized prompts, in input order, and the seconds spent generating.

    `share_prefixes=False` batches by length alone and runs every prompt whole (for comparisons).
    """
    eos_ids = _eos_ids(model, tokenizer)
    results: list[Generation | None] = [None] * len(prompt_ids)
    if share_prefixes:
        batches = prefix_batches(prompt_ids, batch_size)
    else:
        batches = length_sorted_batches([len(ids) for ids in prompt_ids], batch_size)
    total = 0.0
    for batch in progress(batches, desc="predict", unit="batch"):
        rows = [prompt_ids[i] for i in batch]
        new_ids, elapsed = _generate_batch(model, tokenizer, rows, share_prefixes, max_new_tokens, eos_ids)
        total += elapsed
        for index, new in zip(batch, new_ids, strict=True):
            count = _new_token_count(new, eos_ids, tokenizer.pad_token_id)
            text = tokenizer.decode(new[:count], skip_special_tokens=True)
            results[index] = Generation(text, len(prompt_ids[index]), count, elapsed)
    return [result for result in results if result is not None], total
