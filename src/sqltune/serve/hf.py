"""The transformers backend: one base model with the served versions as named LoRA adapters, and dynamic batching.

One worker thread owns the model. It drains a queue: requests that wait together (up to `batch_size` sequences,
after waiting `batch_wait_s` for company) and are bound to the same version become one padded generate() call,
made as predict makes its batches (`sqltune.predict.generate.generate_rows`: the shared prompt prefix run once,
left padding, positions from the attention mask), so a greedy answer is the one predict gives for the same prompt.
Each sequence stops on its own: at EOS, at its own `max_tokens`, at one of its stop sequences, or (for /v1/sql)
after the statement's `;` exactly as predict stops; sampled sequences draw from their own seeded generator.
Streaming requests get their text as it decodes, step by step, from inside the batch.

Loading a version (PEFT `load_adapter` under a new name) and unloading one run on the same thread between
generate() calls: a batch always runs on one version from its first token to its last, and the adapters stay
unmerged so that several share the one base model.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from sqltune.errors import SqltuneError
from sqltune.log import get_logger
from sqltune.predict.generate import STOP_STRINGS, _eos_ids, generate_rows, nucleus_sample
from sqltune.serve.engine import Completion, Delta, Event, Failed, Finished, Job, Served

log = get_logger(__name__)
_UNFINISHED_CHAR = "\ufffd"  # what a tokenizer decodes the first bytes of a multi-byte character to


class _Sampler:
    """A logits processor giving each sampled sequence its own temperature, top-p and seeded generator (greedy ones
    keep the most likely token), and keeping each chosen token's log-probability when candidates need it."""

    def __init__(self, settings: Sequence[tuple[float, float, int]], device: Any, keep_log_probs: bool) -> None:
        import torch

        self.settings = list(settings)
        self.generators = [
            torch.Generator(device=device).manual_seed(seed) if temperature > 0 else None
            for temperature, _, seed in self.settings
        ]
        self.keep_log_probs = keep_log_probs
        self.steps: list[Any] = []  # one (sequences,) tensor of log-probabilities per generated position

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        chosen = scores.argmax(dim=-1)
        for row, generator in enumerate(self.generators):
            if generator is not None:
                temperature, top_p, _ = self.settings[row]
                chosen[row] = nucleus_sample(scores[row : row + 1], temperature, top_p, generator)[0]
        if self.keep_log_probs:
            self.steps.append(torch.log_softmax(scores.float(), dim=-1).gather(-1, chosen[:, None]).squeeze(-1))
        forced = torch.full_like(scores, -torch.inf)
        return forced.scatter_(-1, chosen[:, None], 0.0)

    def log_prob(self, row: int, tokens: int) -> float:
        return float(sum(step[row] for step in self.steps[:tokens]))


class _Sequence:
    """One decoding sequence of a job: its tokens so far, its text, what has been streamed, why it ended."""

    def __init__(self, job: Job, index: int) -> None:
        self.job, self.index = job, index
        self.ids: list[int] = []
        self.text: str | None = None  # the final text: cut before a stop sequence, or all of it
        self.streamed = 0  # characters already sent as deltas
        self.finish_reason: str | None = None


class _Tracker:
    """A per-sequence stopping criterion for one generate() call (transformers calls it after each new token): it
    ends each sequence on its own terms, streams deltas, and answers each job as soon as all its sequences ended."""

    def __init__(self, tokenizer: Any, jobs: Sequence[Job], eos_ids: set[int], statement_stop: Any) -> None:
        self.tokenizer, self.eos_ids, self.statement_stop = tokenizer, eos_ids, statement_stop
        self.sequences = [_Sequence(job, n) for job in jobs for n in range(job.candidates)]
        self.any_statement = any(job.statement_end for job in jobs)
        self.sampler: _Sampler | None = None
        self.answered: set[int] = set()  # id() of the jobs already sent their Finished

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        tokens = input_ids[:, -1].tolist()
        statement_done = self.statement_stop(input_ids, scores).tolist() if self.any_statement else None
        for row, sequence in enumerate(self.sequences):
            if sequence.finish_reason is not None:
                continue
            job, token = sequence.job, tokens[row]
            if token in self.eos_ids:
                self._end(sequence, "stop")
                continue
            sequence.ids.append(token)
            text = self._decode(sequence) if job.stop or (job.stream and sequence.index == 0) else None
            cut = min((at for stop in job.stop if (at := text.find(stop)) >= 0), default=None) if job.stop else None
            if cut is not None:
                sequence.text = text[:cut]  # type: ignore[index]
                self._end(sequence, "stop")
            elif job.cancelled or (statement_done is not None and job.statement_end and statement_done[row]):
                self._end(sequence, "stop")
            elif len(sequence.ids) >= job.max_new_tokens:
                self._end(sequence, "length")
            elif text is not None and job.stream and sequence.index == 0:
                self._stream(sequence, text, final=False)
        return torch.tensor([s.finish_reason is not None for s in self.sequences], device=input_ids.device)

    def _decode(self, sequence: _Sequence) -> str:
        return self.tokenizer.decode(sequence.ids, skip_special_tokens=True)

    def _stream(self, sequence: _Sequence, text: str, final: bool) -> None:
        """Send what is new in the text, holding back what could still become a stop sequence or a character."""
        safe = len(text)
        if not final:
            safe -= max((len(stop) - 1 for stop in sequence.job.stop), default=0)
            while safe > 0 and text[safe - 1] == _UNFINISHED_CHAR:
                safe -= 1
        if safe > sequence.streamed:
            sequence.job.emit(Delta(text[sequence.streamed : safe]))
            sequence.streamed = safe

    def _end(self, sequence: _Sequence, reason: str) -> None:
        sequence.finish_reason = reason
        if sequence.text is None:
            sequence.text = self._decode(sequence)
        if sequence.job.stream and sequence.index == 0:
            self._stream(sequence, sequence.text, final=True)
        siblings = [s for s in self.sequences if s.job is sequence.job]
        if all(s.finish_reason is not None for s in siblings):
            self.answered.add(id(sequence.job))
            sequence.job.emit(Finished([self._completion(s) for s in siblings]))

    def _completion(self, sequence: _Sequence) -> Completion:
        log_prob = None
        if self.sampler is not None and sequence.job.candidates > 1:
            log_prob = self.sampler.log_prob(self.sequences.index(sequence), len(sequence.ids))
        return Completion(
            sequence.text or "", len(sequence.job.prompt_ids), len(sequence.ids), sequence.finish_reason or "length",
            log_prob,
        )  # fmt: skip

    def finish(self) -> None:
        """After generate() returned: sequences it ended by its overall length limit end here."""
        for sequence in self.sequences:
            if sequence.finish_reason is None:
                self._end(sequence, "length")


class HFBackend:
    """One base model, the served versions as named PEFT adapters on it, and the worker thread that generates."""

    name = "hf"

    def __init__(
        self, base_dir: Path, *, batch_size: int, batch_wait_s: float, on_batch: Callable[[int], None] | None = None
    ) -> None:
        self.base_dir, self.batch_size, self.batch_wait_s, self.on_batch = base_dir, batch_size, batch_wait_s, on_batch
        self.base = self._load_base()
        self.model: Any = None  # the PeftModel, once the first adapter is loaded
        self.statement_stops: dict[int, Any] = {}  # id(tokenizer) -> its StopStringCriteria for ";"
        self.cond = threading.Condition()
        self.jobs: deque[tuple[Served, Job, float]] = deque()
        self.tasks: deque[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = deque()
        self.closed = False
        self.thread = threading.Thread(target=self._work, name="sqltune-serve-generate", daemon=True)
        self.thread.start()

    def _load_base(self) -> Any:
        import torch

        from sqltune.models import load_model

        cuda = torch.cuda.is_available()
        model = load_model(
            self.base_dir, dtype=torch.bfloat16 if cuda else torch.float32, device_map="cuda" if cuda else None
        )
        return model.eval()

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and not self.closed

    # --- called from the event loop ---

    async def load(self, served: Served) -> None:
        await self._call(lambda: self._load(served))

    async def unload(self, served: Served) -> None:
        await self._call(lambda: self._delete(served.name))

    async def generate(self, served: Served, job: Job) -> AsyncIterator[Event]:
        job.loop = asyncio.get_running_loop()
        with self.cond:
            if self.closed:
                raise SqltuneError("the server is shutting down")
            self.jobs.append((served, job, time.monotonic()))
            self.cond.notify_all()
        try:
            while True:
                event = await job.events.get()
                yield event
                if isinstance(event, Finished | Failed):
                    return
        finally:
            job.cancelled = True  # a no-op once finished; stops decoding a request whose client went away

    async def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        await asyncio.to_thread(self.thread.join, 60)

    def _call(self, task: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run `task` on the worker thread between generate() calls."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self.cond:
            if self.closed:
                raise SqltuneError("the server is shutting down")
            self.tasks.append((task, future))
            self.cond.notify_all()
        return asyncio.wrap_future(future)

    # --- the worker thread ---

    def _load(self, served: Served) -> None:
        """Load the adapter under its own name and check that the model answers with it (finite logits)."""
        import torch
        from peft import PeftModel

        try:
            if self.model is None:
                self.model = PeftModel.from_pretrained(self.base, str(served.path), adapter_name=served.name)
            else:
                self.model.load_adapter(str(served.path), adapter_name=served.name)
            self.model.eval()
            self.model.set_adapter(served.name)
            probe = served.tokenizer("SELECT 1")["input_ids"] or [served.tokenizer.eos_token_id]
            with torch.inference_mode():
                logits = self.model(input_ids=torch.tensor([probe], device=self.base.device)).logits
            if not torch.isfinite(logits).all():
                raise SqltuneError(f"version {served.version}: the model's outputs with its adapter are not finite")
        except BaseException:
            self._forget(served.name)
            raise

    def _delete(self, name: str) -> None:
        others = [other for other in self.model.peft_config if other != name]
        if others and name in self.model.active_adapters:
            self.model.set_adapter(others[-1])  # the newest other one: PEFT would pick one and warn
        self.model.delete_adapter(name)

    def _forget(self, name: str) -> None:
        """Undo a failed load: delete the adapter, or start over from a fresh base when it was the first."""
        if self.model is not None and name in self.model.peft_config and len(self.model.peft_config) > 1:
            self._delete(name)
        elif self.model is None or name in self.model.peft_config:
            self.model = None
            self.base = self._load_base()

    def _work(self) -> None:
        while True:
            with self.cond:
                while not (self.jobs or self.tasks or self.closed):
                    self.cond.wait()
                task = self.tasks.popleft() if self.tasks else None
                if task is None and not self.jobs:
                    break  # closed, nothing waiting
            if task is not None:
                self._run_task(*task)
                continue
            batch = self._next_batch()
            if batch:
                self._run_batch(batch[0][0], [job for _, job, _ in batch])
        with self.cond:
            for _, job, _ in self.jobs:
                job.emit(Failed("the server is shutting down"))
            for _, future in self.tasks:
                future.set_exception(SqltuneError("the server is shutting down"))

    @staticmethod
    def _run_task(task: Callable[[], Any], future: concurrent.futures.Future[Any]) -> None:
        try:
            future.set_result(task())
        except BaseException as exc:
            future.set_exception(exc)

    def _next_batch(self) -> list[tuple[Served, Job, float]]:
        """The oldest waiting job and those bound to the same version that fit beside it, after a short wait for
        more when there is room."""
        with self.cond:
            served, _, arrived = self.jobs[0]
            deadline = arrived + self.batch_wait_s
            while (
                not self.closed
                and not self.tasks
                and sum(job.candidates for s, job, _ in self.jobs if s is served) < self.batch_size
                and (left := deadline - time.monotonic()) > 0
            ):
                self.cond.wait(left)
            batch, rows = [], 0
            for entry in list(self.jobs):
                same, job = entry[0] is served, entry[1]
                if same and job.cancelled:
                    self.jobs.remove(entry)
                    job.emit(Failed("cancelled"))
                elif same and (not batch or rows + job.candidates <= self.batch_size):
                    self.jobs.remove(entry)
                    batch.append(entry)
                    rows += job.candidates
            return batch

    def _statement_stop(self, tokenizer: Any) -> Any:
        """transformers' own criterion for predict's stop strings (`;`), as predict's generate() applies it."""
        from transformers import StopStringCriteria

        if id(tokenizer) not in self.statement_stops:
            self.statement_stops[id(tokenizer)] = StopStringCriteria(tokenizer, list(STOP_STRINGS))
        return self.statement_stops[id(tokenizer)]

    def _run_batch(self, served: Served, jobs: list[Job]) -> None:
        tracker = _Tracker(
            served.tokenizer, jobs, _eos_ids(self.model, served.tokenizer), self._statement_stop(served.tokenizer)
        )
        settings = [setting for job in jobs for setting in job.sequences()]
        if self.on_batch:
            self.on_batch(len(settings))
        try:
            self.model.set_adapter(served.name)
            keep_log_probs = any(job.candidates > 1 for job in jobs)
            if keep_log_probs or any(temperature > 0 for temperature, _, _ in settings):
                tracker.sampler = _Sampler(settings, self.base.device, keep_log_probs)
            rows = [job.prompt_ids for job in jobs for _ in range(job.candidates)]
            generate_rows(
                self.model,
                served.tokenizer,
                rows,
                max_new_tokens=max(job.max_new_tokens for job in jobs),
                logits_processor=tracker.sampler,
                stopping_criteria=[tracker],
            )
            tracker.finish()
        except Exception as exc:
            log.exception("generation failed for a batch of %d sequences on %s", len(settings), served.version)
            for job in jobs:
                if id(job) not in tracker.answered:
                    job.emit(Failed(f"generation failed: {type(exc).__name__}: {exc}"))
