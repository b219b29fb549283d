"""Every setting of `sqltune serve`: the one place its name, type, default and help live.

Where serve has a setting that predict has too (backend, candidates, temperature, top_p, seed, batch_size,
max_new_tokens, prompt_template, max_seq_len, base_name_check) or preprocess has (schema_style, schema_filter,
schema_values, dialect), it has the same name and meaning; the prompt settings default to the adapter's. The
registry location (`--bucket --prefix --model-name`) is `sqltune.publish.config.ModelLocation`, as for every
registry command.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqltune.errors import SqltuneError
from sqltune.predict.config import Backend
from sqltune.preprocess.config import MAX_VALUES
from sqltune.preprocess.schema_text import SchemaStyle
from sqltune.preprocess.schema_units import SchemaFilter
from sqltune.prompt import PromptTemplate
from sqltune.settings import SettingError, check_settings, setting
from sqltune.sql.location import URL_ENV, URL_HELP, check_url, hide_password
from sqltune.sql.transpile import SqlDialect

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
        20.0,
        "How long the HF backend waits for more requests to batch with the first one waiting (requests that arrive "
        "together are parsed one after another: 5 ms split 8 of them into two calls on 2 CPU cores, 20 ms did not).",
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
    schema_filter: str | None = setting(
        None,
        "Which tables and columns /v1/sql's prompts show (default: the adapter's training data's, else none).",
        choices=SchemaFilter,
    )
    schema_values: int | None = setting(
        None, "Cell values per column in /v1/sql's prompts (default: the adapter's training data's, else 0)."
    )
    dialect: str | None = setting(
        None, "SQL dialect /v1/sql's prompts ask for (default: the adapter's training data's, else sqlite).",
        choices=SqlDialect,
    )  # fmt: skip
    tables: str | None = setting(
        None, "tables.json of the databases /v1/sql answers about, or the directory holding it; also s3://."
    )
    db_dir: str | None = setting(
        None, "Databases of /v1/sql: <db_id>/*.sqlite (schema samples for `rich`, where candidates run); also s3://."
    )
    database_url: str | None = setting(
        None, URL_HELP + " /v1/sql reads each schema from it (unless --tables) and runs candidates there.",
        envvar=URL_ENV,
    )  # fmt: skip
    api_key: str | None = setting(
        None, f"Bearer token every /v1 request must carry (better: the {API_KEY_ENV} variable).", envvar=API_KEY_ENV
    )
    base_name_check: bool = setting(True, "Require every served adapter to name this base model.")
    versions_dir: str | None = setting(
        None, "Where versions pulled from the channel are kept (default: the sqltune cache)."
    )

    def __post_init__(self) -> None:
        check_settings(self, "serve")
        checks = {
            "candidates": (self.candidates >= 1, ">= 1"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "max_new_tokens": (self.max_new_tokens >= 1, ">= 1"),
            "max_tokens_limit": (self.max_tokens_limit >= 1, ">= 1"),
            "max_request_bytes": (self.max_request_bytes >= 1, ">= 1"),
            "port": (0 < self.port < 65536, "1-65535"),
            "poll_seconds": (self.poll_seconds > 0, "> 0"),
            "batch_wait_ms": (self.batch_wait_ms >= 0, ">= 0"),
            "max_seq_len": (self.max_seq_len is None or self.max_seq_len >= 16, ">= 16"),
            "temperature": (self.temperature > 0, "> 0"),  # also catches NaN
            "top_p": (0 < self.top_p <= 1, "in (0, 1]"),
            "schema_values": (
                self.schema_values is None or 0 <= self.schema_values <= MAX_VALUES,
                f"0 to {MAX_VALUES}",
            ),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise SettingError("serve", name, getattr(self, name), expected)
        if self.database_url:
            try:
                self.database_url = check_url(self.database_url)
            except SqltuneError as exc:
                raise SettingError("serve", "database_url", hide_password(self.database_url), str(exc)) from None
        if self.candidates > 1 and not (self.db_dir or self.database_url):
            raise SqltuneError(
                "serve parameter candidates > 1 needs --db-dir or --database-url (the databases candidates run on)"
            )
        if self.api_key is not None and not self.api_key.strip():
            raise SqltuneError(f"serve parameter api_key is empty; unset {API_KEY_ENV} or give a token")

    def to_dict(self) -> dict[str, Any]:
        """The settings without the API key (what may be logged or printed)."""
        hidden = {"api_key": "***" if self.api_key else None}
        if self.database_url:
            hidden["database_url"] = hide_password(self.database_url)
        return {**asdict(self), **hidden}
