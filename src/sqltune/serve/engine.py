"""What the server asks a backend for: a generation job, the events it answers with, and the backend interface.

A job is one request's prompt (token ids, built by the server with the served version's tokenizer) and how to decode
it. It runs on the version it was bound to when the request arrived, whatever the channel does meanwhile. With
`candidates` > 1 (/v1/sql), it decodes that many sequences from the prompt: the first greedily, the others sampled.
Backends report through the job's asyncio queue: `Delta`s of the first sequence's text while it decodes (streaming
requests only), then one `Finished` with every sequence, or one `Failed`.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Completion:
    """One decoded sequence: its text (stop sequences removed, a statement's `;` kept), token counts, why it ended
    (`stop` or `length`) and, for candidates, its log-likelihood."""

    text: str
    prompt_tokens: int
    new_tokens: int
    finish_reason: str
    log_prob: float | None = None


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Finished:
    completions: list[Completion]


@dataclass(frozen=True)
class Failed:
    message: str


Event = Delta | Finished | Failed


@dataclass
class Job:
    """One request's generation. `temperature` 0 is greedy; `stop` are OpenAI stop sequences (the text ends before
    the first); `statement_end` stops after the first `;` as predict does, keeping it."""

    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    statement_end: bool = False
    candidates: int = 1
    stream: bool = False
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    loop: asyncio.AbstractEventLoop | None = None
    cancelled: bool = False  # the client went away: stop decoding it

    def __post_init__(self) -> None:
        if self.seed is None and (self.temperature > 0 or self.candidates > 1):
            self.seed = secrets.randbits(63)

    def sequences(self) -> list[tuple[float, float, int]]:
        """(temperature, top_p, seed) of each sequence: with candidates, the greedy one first, then sampled ones."""
        if self.candidates == 1:
            return [(self.temperature, self.top_p, self.seed or 0)]
        assert self.seed is not None
        return [(0.0, 1.0, 0)] + [(self.temperature, self.top_p, self.seed + n) for n in range(1, self.candidates)]

    def emit(self, event: Event) -> None:
        """Hand an event to the request, from any thread."""
        if self.loop is None:
            self.events.put_nowait(event)
            return
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # its event loop is closed: the server stopped, nobody waits for the answer
            self.cancelled = True


@dataclass
class Served:
    """A version the server holds: where it is, its adapter, the tokenizer and prompt settings its requests use."""

    version: str
    path: Path
    adapter: Any  # sqltune.models.adapter.Adapter
    tokenizer: Any
    template: str  # the /v1/sql prompt template, from the adapter's training parameters unless overridden
    context_len: int  # /v1/sql prompt + new tokens, the adapter's max_seq_len capped by the model's
    model_context: int  # what chat and completion requests may use
    schema_style: str  # the /v1/sql schema as the adapter's training records had it: style, filter, values
    schema_filter: str
    schema_values: int
    dialect: str
    name: str  # the backend's name for it (a PEFT adapter name, a vLLM LoRA name)
    number: int  # a unique positive id (vLLM's lora_int_id)
    tokenizer_dir: Path
    users: int = 0  # requests bound to it and not finished
    retired: bool = False  # no longer current: unloaded once its last request finishes


class Backend(Protocol):
    """What generates: `hf` (transformers, batching in one worker thread) or `vllm` (its async engine)."""

    name: str

    async def load(self, served: Served) -> None:
        """Load `served`'s adapter beside the ones already loaded; raise if it does not load or answer."""

    async def unload(self, served: Served) -> None:
        """Free a retired version's adapter."""

    def generate(self, served: Served, job: Job) -> AsyncIterator[Event]:
        """The job's events, ending with `Finished` or `Failed`."""

    async def close(self) -> None:
        """Stop: jobs still waiting fail."""
