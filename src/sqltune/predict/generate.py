"""Greedy batched generation with transformers: the HF backend.

Two things decide its speed. Prompts that share a long prefix (on Spider, the instruction and one
database's schema: ~50 questions per database) are batched together and that prefix is run through the
model once per batch, its cache copied to every row: on the CPU the prompt pass is most of the work.
Within a batch, rows are sorted by length and padded on the left of what follows the shared prefix, so
every row's new tokens start at the same column and padding covers only the differing tails. Generation
is greedy and stops at EOS or at the first `;` (the end of the statement: nothing after it is used).
Results come back in input order.

With several candidates per prompt (`generate_candidates_hf`), each prompt fills that many rows of one batch
after the same shared-prefix pass: the first row decodes greedily, the others sample (temperature, top-p) from
a generator seeded per batch, so a rerun gives the same candidates; each keeps its summed log-probability.
"""

from __future__ import annotations

import hashlib
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
    log_prob: float | None = None  # the model's log-likelihood of the new tokens (candidates only)


@dataclass(frozen=True)
class Sampling:
    """How many candidates each prompt gets (the first greedy, the rest sampled) and how they are sampled."""

    candidates: int
    temperature: float
    top_p: float
    seed: int


class _CandidateSampler:
    """A logits processor for batches of `copies` rows per prompt: row r is candidate r % copies of its prompt.

    Candidate 0 takes the most likely token, the others sample from the temperature- and top-p-shaped distribution
    with their own generator; the chosen token is forced by masking every other one, so generate() itself stays
    greedy and its global random state is never used. The raw model log-probability of each chosen token is kept.
    """

    def __init__(self, copies: int, sampling: Sampling, generator: Any) -> None:
        self.copies, self.sampling, self.generator = copies, sampling, generator
        self.token_log_probs: list[Any] = []  # one (rows,) tensor per generated position

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        chosen = scores.argmax(dim=-1)
        sampled = torch.arange(len(scores), device=scores.device) % self.copies != 0
        chosen[sampled] = nucleus_sample(
            scores[sampled], self.sampling.temperature, self.sampling.top_p, self.generator
        )
        log_probs = torch.log_softmax(scores.float(), dim=-1)
        self.token_log_probs.append(log_probs.gather(-1, chosen[:, None]).squeeze(-1))
        forced = torch.full_like(scores, -torch.inf)
        return forced.scatter_(-1, chosen[:, None], 0.0)

    def log_prob(self, row: int, tokens: int) -> float:
        """The summed log-probability of the first `tokens` tokens of `row`."""
        return float(sum(step[row] for step in self.token_log_probs[:tokens]))


def nucleus_sample(scores: Any, temperature: float, top_p: float, generator: Any) -> Any:
    """One token per row of `scores`, drawn with `generator` from the temperature-shaped distribution cut to its
    top-p nucleus."""
    import torch

    probs = torch.softmax(scores.float() / temperature, dim=-1)
    ranked, order = probs.sort(dim=-1, descending=True)
    ranked[ranked.cumsum(dim=-1) - ranked >= top_p] = 0.0  # outside the top-p nucleus
    picks = torch.multinomial(ranked, 1, generator=generator)
    return order.gather(-1, picks).squeeze(-1)


def _batch_generator(seed: int, batch_number: int, device: Any) -> Any:
    """A torch generator seeded by (seed, batch): reruns of the same batches sample the same tokens."""
    import torch

    digest = hashlib.sha256(f"{seed}:{batch_number}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") >> 1)


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


def _generated_length(row: list[int], eos_ids: set[int], pad_id: int, tokenizer: Any) -> tuple[int, int]:
    """(tokens the model generated for this row, how many of them are text). Generation ends at an EOS token, which
    was generated (as vLLM and an OpenAI usage count it) but is no text, or at the token that completes a stop
    string; generate() pads the row after that. Where the pad token is the EOS token (SmolLM2), an EOS right after
    a stop string is that padding."""
    for index, token in enumerate(row):
        if token in eos_ids:
            padding = pad_id in eos_ids and tokenizer.decode(row[:index]).rstrip().endswith(STOP_STRINGS)
            return (index if padding else index + 1), index
    end = len(row)
    while end and row[end - 1] == pad_id:
        end -= 1
    return end, end


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
    model: Any,
    tokenizer: Any,
    rows: list[Sequence[int]],
    share_prefix: bool,
    max_new_tokens: int,
    eos_ids: set[int],
    sampler: Any = None,
    *,
    stop_strings: Sequence[str] = STOP_STRINGS,
    stopping_criteria: Sequence[Any] = (),
) -> tuple[list[list[int]], float]:
    """New token ids per row and the batch's seconds: [shared prefix | left padding | own tail] per row.

    Positions come from the attention mask, so padding inside a row shifts nothing; at least one token
    of every row stays outside the prefix, as generation starts from the last prompt token. `sampler` is a logits
    processor, `stopping_criteria` are transformers' StoppingCriteria (per row), beside the stop strings.
    """
    import torch
    from transformers import StoppingCriteriaList

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
            **({"stop_strings": list(stop_strings), "tokenizer": tokenizer} if stop_strings else {}),
            **({"logits_processor": [sampler]} if sampler else {}),
            **({"stopping_criteria": StoppingCriteriaList(stopping_criteria)} if stopping_criteria else {}),
        )
    return output[:, width:].tolist(), time.perf_counter() - started


def generate_rows(
    model: Any,
    tokenizer: Any,
    rows: list[Sequence[int]],
    *,
    max_new_tokens: int,
    logits_processor: Any = None,
    stopping_criteria: Sequence[Any] = (),
) -> tuple[list[list[int]], float]:
    """One generate() call over `rows` as predict runs a batch (shared prefix once, left padding), for a caller that
    decides per row when it stops (the server): no stop string applies to every row. Returns each row's new token
    ids (padding after its end) and the seconds."""
    eos_ids = _eos_ids(model, tokenizer)
    return _generate_batch(
        model, tokenizer, rows, True, max_new_tokens, eos_ids, logits_processor,
        stop_strings=(), stopping_criteria=stopping_criteria,
    )  # fmt: skip


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
    outputs, total = _generate(model, tokenizer, prompt_ids, batch_size, max_new_tokens, share_prefixes, None)
    return [candidates[0] for candidates in outputs], total


def generate_candidates_hf(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    sampling: Sampling,
    *,
    batch_size: int = 16,
    max_new_tokens: int = 128,
) -> tuple[list[list[Generation]], float]:
    """`sampling.candidates` outputs per prompt (the greedy one first, each with its log-probability), in input
    order, and the seconds spent generating. `batch_size` counts rows: batch_size // candidates prompts per batch."""
    return _generate(model, tokenizer, prompt_ids, batch_size, max_new_tokens, True, sampling)


def _generate(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    batch_size: int,
    max_new_tokens: int,
    share_prefixes: bool,
    sampling: Sampling | None,
) -> tuple[list[list[Generation]], float]:
    """The outputs of every prompt in input order: one greedy, or `sampling.candidates` with their log-probabilities."""
    _check_batch_size(batch_size)
    copies = sampling.candidates if sampling else 1
    prompts_per_batch = max(1, batch_size // copies)
    eos_ids = _eos_ids(model, tokenizer)
    results: list[list[Generation]] = [[] for _ in prompt_ids]
    if share_prefixes:
        batches = prefix_batches(prompt_ids, prompts_per_batch)
    else:
        batches = length_sorted_batches([len(ids) for ids in prompt_ids], prompts_per_batch)
    total = 0.0
    for number, batch in enumerate(progress(batches, desc="predict", unit="batch")):
        rows = [prompt_ids[i] for i in batch for _ in range(copies)]
        sampler = (
            _CandidateSampler(copies, sampling, _batch_generator(sampling.seed, number, model.device))
            if sampling
            else None
        )
        new_ids, elapsed = _generate_batch(model, tokenizer, rows, share_prefixes, max_new_tokens, eos_ids, sampler)
        total += elapsed
        for row, new in enumerate(new_ids):
            index = batch[row // copies]
            count, text_tokens = _generated_length(new, eos_ids, tokenizer.pad_token_id, tokenizer)
            text = tokenizer.decode(new[:text_tokens], skip_special_tokens=True)
            log_prob = sampler.log_prob(row, count) if sampler else None
            results[index].append(Generation(text, len(prompt_ids[index]), count, elapsed, log_prob))
    return results, total
