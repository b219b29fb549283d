"""The vLLM backend for GPU images: vLLM's async engine batches every request itself (continuous batching), and each
request names its version's adapter as a `LoRARequest`, so a new version is one more adapter, not a restart.

A version is loaded with `add_lora` and must answer a one-token request before it is served; a retired one is
removed with `remove_lora`. Requests get the same token ids as on the HF backend; /v1/sql decodes with predict's
vLLM settings (greedy, stop after `;`, kept in the text), the candidates as a second request sampling the others.
This path has not run in this project's tests: they have no GPU and no vLLM (see the README).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqltune.errors import SqltuneError
from sqltune.predict.generate import STOP_STRINGS
from sqltune.predict.vllm_backend import max_lora_rank
from sqltune.serve.engine import Completion, Delta, Event, Failed, Finished, Job, Served

MIN_LORA_RANK = 64  # later versions may have a larger rank than the first; vLLM fixes the largest at start


class VLLMBackend:
    name = "vllm"

    def __init__(self, base_dir: Path, tokenizer_dir: Path, *, context_len: int, lora_rank: int) -> None:
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        args = AsyncEngineArgs(
            model=str(base_dir),
            tokenizer=str(tokenizer_dir),
            max_model_len=context_len,
            enable_lora=True,
            max_lora_rank=max_lora_rank(max(lora_rank, MIN_LORA_RANK)),
            max_loras=2,  # the serving version and the one taking over
            enable_prefix_caching=True,
            seed=0,
        )
        self.engine = AsyncLLMEngine.from_engine_args(args)
        self.requests = itertools.count()
        self.alive = True

    def _lora(self, served: Served) -> Any:
        from vllm.lora.request import LoRARequest

        return LoRARequest(served.name, served.number, str(served.path))

    async def load(self, served: Served) -> None:
        if not await self.engine.add_lora(self._lora(served)):
            raise SqltuneError(f"version {served.version}: vLLM did not load its adapter")
        probe = Job(served.tokenizer("SELECT 1")["input_ids"], max_new_tokens=1)
        async for event in self.generate(served, probe):
            if isinstance(event, Failed):
                raise SqltuneError(f"version {served.version}: no answer with its adapter: {event.message}")

    async def unload(self, served: Served) -> None:
        await self.engine.remove_lora(served.number)

    def _params(self, job: Job, temperature: float, top_p: float, seed: int, n: int) -> Any:
        from vllm import SamplingParams

        stop = list(STOP_STRINGS) if job.statement_end else list(job.stop)
        return SamplingParams(
            n=n,
            temperature=temperature,
            top_p=top_p,
            seed=seed if temperature > 0 else None,
            max_tokens=job.max_new_tokens,
            stop=stop or None,
            include_stop_str_in_output=job.statement_end,
            logprobs=0 if job.candidates > 1 else None,
        )

    async def generate(self, served: Served, job: Job) -> AsyncIterator[Event]:
        sequences = job.sequences()
        requests = [self._params(job, *sequences[0], n=1)]
        if job.candidates > 1:
            temperature, top_p, seed = sequences[1]
            requests.append(self._params(job, temperature, top_p, seed, n=job.candidates - 1))
        completions: list[Completion] = []
        try:
            for number, params in enumerate(requests):
                streamed = 0
                final: Any = None
                prompt = {"prompt_token_ids": list(job.prompt_ids)}
                request_id = f"sqltune-{next(self.requests)}"
                async for output in self.engine.generate(prompt, params, request_id, lora_request=self._lora(served)):
                    final = output
                    if job.stream and number == 0:
                        text = output.outputs[0].text
                        if len(text) > streamed:
                            yield Delta(text[streamed:])
                            streamed = len(text)
                    if job.cancelled:
                        await self.engine.abort(request_id)
                        return
                for completion in final.outputs:
                    completions.append(
                        Completion(
                            completion.text,
                            len(final.prompt_token_ids),
                            len(completion.token_ids),
                            "length" if completion.finish_reason == "length" else "stop",
                            completion.cumulative_logprob if job.candidates > 1 else None,
                        )
                    )
        except Exception as exc:
            yield Failed(f"generation failed: {type(exc).__name__}: {exc}")
            return
        yield Finished(completions)

    async def close(self) -> None:
        self.alive = False
        self.engine.shutdown()
