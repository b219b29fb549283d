"""Every setting of `sqltune serve`: the one place its name, type, default and help live.

Where serve has a setting that predict has too (backend, candidates, temperature, top_p, seed, batch_size,
max_new_tokens, prompt_template, max_seq_len, base_name_check), it has the same name, meaning and default. The
registry location (`--bucket --prefix --model-name`) is `sqltune.publish.config.ModelLocation`, as for every
registry command.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqltune.errors import SqltuneError
from sqltune.predict.config import Backend
from sqltune.preprocess.schema_text import SchemaStyle
from sqltune.prompt import PromptTemplate
from sqltune.settings import check_choices, setting

API_KEY_ENV = "SQLTUNE_API_KEY"


@dataclass
class ServeConfig:
    channel: str = setting("production", "Channel whose version is served and followed (with --bucket).")
    base_model: str | None = setting(
        None, "Local dir, hf://org/name, s3:// prefix or built-in name (default: the one the adapter was trained on)."
    )
    host: str = setting("127.0.0.1", "Address to listen on (0.0.0.0 to accept other machines, as in a pod).")
    port: int = setting(8000, "Port to listen on.")
    backend: str = setting("auto", "auto: vLLM when installed, else transformers.", choices=Backend)
    poll_seconds: float = setting(10.0, "How often the channel pointer is read.")
    candidates: int = setting(
        1,
        "SQL candidates per /v1/sql question: the greedy one and N-1 sampled, checked against the schema, run in "
        "the sandbox against --db-dir and voted on by result (1: greedy only).",
    )
    temperature: float = setting(0.7, "Sampling temperature of the candidates after the greedy one.")
    top_p: float = setting(0.95, "Nucleus (top-p) mass the sampled candidates are drawn from.")
    seed: int = setting(0, "Seed of the sampled candidates: the same question gets the same ones.")
    batch_size: int = setting(
        16, "Sequences per generate() call (HF backend): waiting requests are batched up to it, candidates count."
    )
    batch_wait_ms: float = setting(
        5.0, "How long the HF backend waits for more requests to batch with the first one waiting."
    )
    max_new_tokens: int = setting(128, "Most tokens generated per /v1/sql question.")
    max_tokens_limit: int = setting(512, "Largest max_tokens a completion request may ask for (400 above it).")
    max_request_bytes: int = setting(1 << 20, "Largest request body in bytes (413 above it).")
    prompt_template: str | None = setting(
        None, "Prompt template of /v1/sql (default: the adapter's, else alpaca).", choices=PromptTemplate
    )
    max_seq_len: int | None = setting(None, "Context length of /v1/sql (default: the adapter's, else the model's).")
    schema_style: str | None = setting(
        None, "How /v1/sql writes the schema (default: the adapter's training data's, else ddl).", choices=SchemaStyle
    )
    tables: str | None = setting(
        None, "tables.json of the databases /v1/sql answers about, or the directory holding it; also s3://."
    )
    db_dir: str | None = setting(
        None, "Databases of /v1/sql: <db_id>/*.sqlite (schema samples for `rich`, where candidates run); also s3://."
    )
    api_key: str | None = setting(
        None, f"Bearer token every /v1 request must carry (better: the {API_KEY_ENV} variable).", envvar=API_KEY_ENV
    )
    base_name_check: bool = setting(True, "Require every served adapter to name this base model.")
    versions_dir: str | None = setting(
        None, "Where versions pulled from the channel are kept (default: the sqltune cache)."
    )

    def __post_init__(self) -> None:
        check_choices(self, "serve")
        for name in ("candidates", "batch_size", "max_new_tokens", "max_tokens_limit", "max_request_bytes"):
            if getattr(self, name) < 1:
                raise SqltuneError(f"serve parameter {name}={getattr(self, name)!r} is invalid: expected >= 1")
        if not 0 < self.port < 65536:
            raise SqltuneError(f"serve parameter port={self.port!r} is invalid: expected 1-65535")
        if not self.poll_seconds > 0:
            raise SqltuneError(f"serve parameter poll_seconds={self.poll_seconds!r} is invalid: expected > 0")
        if not self.batch_wait_ms >= 0:
            raise SqltuneError(f"serve parameter batch_wait_ms={self.batch_wait_ms!r} is invalid: expected >= 0")
        if self.max_seq_len is not None and self.max_seq_len < 16:
            raise SqltuneError(f"serve parameter max_seq_len={self.max_seq_len!r} is invalid: expected >= 16")
        if not self.temperature > 0:
            raise SqltuneError(f"serve parameter temperature={self.temperature!r} is invalid: expected > 0")
        if not 0 < self.top_p <= 1:
            raise SqltuneError(f"serve parameter top_p={self.top_p!r} is invalid: expected in (0, 1]")
        if self.candidates > 1 and not self.db_dir:
            raise SqltuneError("serve parameter candidates > 1 needs --db-dir (the databases candidates run on)")
        if self.api_key is not None and not self.api_key.strip():
            raise SqltuneError(f"serve parameter api_key is empty; unset {API_KEY_ENV} or give a token")

    def to_dict(self) -> dict[str, Any]:
        """The settings without the API key (what may be logged or printed)."""
        return {**asdict(self), "api_key": "***" if self.api_key else None}
