"""The vLLM backend for GPU images: continuous batching, the adapter applied unmerged through LoRARequest.

It receives the same token ids as the HF backend (so the prompt is exactly the same), decodes greedily
with the same stop string, and keeps the stop string in the output as the HF backend does, so both
backends feed the same text to SQL extraction. vLLM schedules all prompts itself: the timing it reports
is one wall time for the whole run.

With several candidates per prompt, each prompt is a second request that samples the other candidates
(`n`, a per-prompt seed); prefix caching runs the prompt (and the schema prefix prompts share) once. This path
has not been run in this project's tests: they have no GPU and no vLLM.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Sequence
from pathlib import Path

from sqltune.predict.generate import STOP_STRINGS, Generation, Sampling

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
    sampling: Sampling | None = None,
) -> tuple[list[list[Generation]], float]:
    """The outputs of every prompt in input order (vLLM returns them in request order): the greedy one, then with
    `sampling` the sampled ones, each with its log-probability; and the seconds spent generating."""
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    lora_kwargs = {"enable_lora": True, "max_lora_rank": max_lora_rank(adapter_rank)} if adapter_dir else {}
    llm = LLM(
        model=str(base_dir),
        tokenizer=str(tokenizer_dir),
        max_model_len=context_len,
        seed=0,
        enable_prefix_caching=True,
        **lora_kwargs,
    )
    common = {"max_tokens": max_new_tokens, "stop": list(STOP_STRINGS), "include_stop_str_in_output": True}
    if sampling:
        common["logprobs"] = 0  # the sampled token's log-probability only: enough for cumulative_logprob
    requests = [{"prompt_token_ids": list(ids)} for ids in prompt_ids]
    params = [SamplingParams(temperature=0.0, **common)] * len(requests)
    if sampling:
        requests += requests
        params += [
            SamplingParams(
                n=sampling.candidates - 1,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                seed=sampling.seed * 1_000_003 + index,
                **common,
            )
            for index in range(len(prompt_ids))
        ]
    lora = LoRARequest("adapter", 1, str(adapter_dir)) if adapter_dir else None
    started = time.perf_counter()
    outputs = llm.generate(requests, params, lora_request=lora, use_tqdm=True)
    elapsed = time.perf_counter() - started
    results: list[list[Generation]] = [[] for _ in prompt_ids]
    for index, out in enumerate(outputs):
        for completion in out.outputs:
            log_prob = completion.cumulative_logprob if sampling else None
            generation = Generation(
                completion.text, len(out.prompt_token_ids), len(completion.token_ids), elapsed, log_prob
            )
            results[index % len(prompt_ids)].append(generation)
    return results, elapsed
