"""Training examples from records, the batch order, and the collators (padded or packed).

An example is the shared prompt (`build_prompt`, trimmed to leave room for the answer) followed by the gold
SQL and EOS; only the answer and EOS carry labels. Batch order is a pure function of (seed, epoch), so a
resumed or multi-process run sees exactly the batches an uninterrupted single run would.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqltune.errors import SqltuneError
from sqltune.prompt import build_prompt, encode_prompt, left_out_kinds, prompt_functions

IGNORE = -100
_MEGABATCH = 16  # length grouping sorts within windows of this many batches, keeping the order random


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]


@dataclass(frozen=True)
class ExampleStats:
    total: int
    trimmed: int  # prompts whose schema lost lines (or units) to fit max_seq_len
    dropped: list[str]  # record ids that do not fit even with an empty schema
    left_out: dict[str, int] = field(default_factory=dict)  # schema units left out to fit, by kind (table, values...)


def build_examples(
    records: Sequence[Mapping[str, Any]], tokenizer: Any, template: str, max_seq_len: int
) -> tuple[list[Example], ExampleStats]:
    """Tokenize records into examples; records missing fields are errors naming the record."""
    count_tokens, chat_render = prompt_functions(tokenizer, template)
    examples, trimmed, dropped, left_out = [], 0, [], Counter()
    for index, record in enumerate(records):
        record_id = str(record.get("id", f"#{index}"))
        missing = [key for key in ("question", "sql") if not isinstance(record.get(key), str) or not record[key]]
        if missing:
            raise SqltuneError(f"train record {record_id}: missing or empty field(s) {', '.join(missing)}")
        answer = tokenizer(record["sql"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        prompt = build_prompt(
            record,
            template,
            max_tokens=max_seq_len - len(answer),
            count_tokens=count_tokens,
            chat_render=chat_render,
        )
        if not prompt.fits:
            dropped.append(record_id)
            continue
        trimmed += prompt.schema_lines_dropped > 0
        left_out += left_out_kinds(prompt.left_out)
        prompt_ids = encode_prompt(tokenizer, prompt.text, template)
        examples.append(Example(prompt_ids + answer, [IGNORE] * len(prompt_ids) + answer))
    return examples, ExampleStats(total=len(records), trimmed=trimmed, dropped=dropped, left_out=dict(left_out))


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int, group_by_length: bool) -> list:
    """The micro-batches (lists of example indices) of one epoch, in training order."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        window = batch_size * _MEGABATCH
        order = [
            i
            for start in range(0, len(order), window)
            for i in sorted(order[start : start + window], key=lengths.__getitem__)
        ]
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches


def steps_per_epoch(num_batches: int, micro_batches_per_step: int) -> int:
    return max(1, math.ceil(num_batches / micro_batches_per_step))


def step_batches(batches: Sequence[list[int]], step_in_epoch: int, per_step: int) -> list[list[int]]:
    """The `per_step` micro-batches of one optimizer step (wrapping around at the end of the epoch)."""
    start = step_in_epoch * per_step
    return [batches[(start + k) % len(batches)] for k in range(per_step)]


def collate(examples: Sequence[Example], pad_id: int, *, packing: bool, pad_to: int | None = None) -> dict[str, Any]:
    """Tensors for one micro-batch.

    Padded: rows padded to the longest example (or to `pad_to`), with an attention mask. Packed: all
    examples flattened into one row without padding; `position_ids` restart at 0 for each example and
    there is no attention mask, which is how transformers' attention (SDPA, eager, FlashAttention-2)
    recognizes packed sequences and keeps each example from attending to the others.
    """
    import torch

    if packing:
        ids = [t for ex in examples for t in ex.input_ids]
        labels = [t for ex in examples for t in ex.labels]
        positions = [p for ex in examples for p in range(len(ex.input_ids))]
        return {
            "input_ids": torch.tensor([ids]),
            "labels": torch.tensor([labels]),
            "position_ids": torch.tensor([positions]),
        }
    width = pad_to or max(len(ex.input_ids) for ex in examples)
    pads = [width - len(ex.input_ids) for ex in examples]
    return {
        "input_ids": torch.tensor([ex.input_ids + [pad_id] * n for ex, n in zip(examples, pads, strict=True)]),
        "labels": torch.tensor([ex.labels + [IGNORE] * n for ex, n in zip(examples, pads, strict=True)]),
        "attention_mask": torch.tensor(
            [[1] * len(ex.input_ids) + [0] * n for ex, n in zip(examples, pads, strict=True)]
        ),
    }
