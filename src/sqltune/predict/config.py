"""Every setting of the predict step: the one place its name, type, default and help live."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from sqltune.errors import SqltuneError
from sqltune.prompt import PromptTemplate
from sqltune.settings import OPTIONS, SettingError, check_settings, setting
from sqltune.sql.location import URL_ENV, URL_HELP, check_url, hide_password


class Backend(str, Enum):
    auto = "auto"  # vLLM where it is installed (the GPU image), else transformers
    hf = "hf"
    vllm = "vllm"


@dataclass
class PredictConfig:
    backend: str = setting("auto", "auto: vLLM when installed, else transformers.", choices=Backend)
    batch_size: int = setting(16, "Sequences per generate() call (HF backend): prompts times candidates.")
    max_new_tokens: int = setting(128, "Most tokens generated per question.")
    candidates: int = setting(
        1,
        "SQL candidates per question: the greedy one and N-1 sampled, checked against the schema, run in the "
        "sandbox against --db-dir and voted on by result (1: greedy only).",
    )
    temperature: float = setting(0.7, "Sampling temperature of the candidates after the greedy one.", pipeline=OPTIONS)
    top_p: float = setting(0.95, "Nucleus (top-p) mass the sampled candidates are drawn from.", pipeline=OPTIONS)
    seed: int = setting(0, "Seed of the sampled candidates: a rerun gives the same ones.", pipeline=OPTIONS)
    limit: int | None = setting(None, "Only the first N records.", pipeline=OPTIONS)
    prompt_template: str | None = setting(
        None, "Prompt template (default: the adapter's, else alpaca).", choices=PromptTemplate, aliases=("--template",)
    )
    max_seq_len: int | None = setting(None, "Context length (default: the adapter's, else the model's).")
    quantize_4bit: bool = setting(
        False, "Load the base in 4-bit NF4; the adapter then stays unmerged.", pipeline=OPTIONS
    )
    base_name_check: bool = setting(True, "Require the adapter to name this base model.", pipeline=OPTIONS)
    database_url: str | None = setting(
        None, URL_HELP + " Candidates run there instead of in --db-dir's SQLite files.", envvar=URL_ENV
    )

    def __post_init__(self) -> None:
        check_settings(self, "predict")
        for name in ("batch_size", "max_new_tokens", "limit", "candidates"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SettingError("predict", name, value, ">= 1")
        if self.max_seq_len is not None and self.max_seq_len < 16:
            raise SettingError("predict", "max_seq_len", self.max_seq_len, ">= 16")
        if not self.temperature > 0:  # also catches NaN
            raise SettingError("predict", "temperature", self.temperature, "> 0")
        if not 0 < self.top_p <= 1:
            raise SettingError("predict", "top_p", self.top_p, "in (0, 1]")
        try:
            self.database_url = check_url(self.database_url)
        except SqltuneError as exc:
            raise SettingError("predict", "database_url", hide_password(self.database_url or ""), str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        """The settings as manifests record them: the database URL without its password."""
        return {**asdict(self), "database_url": hide_password(self.database_url) if self.database_url else None}
