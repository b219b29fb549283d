"""Every setting of the predict step: the one place its name, type, default and help live."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from sqltune.errors import SqltuneError
from sqltune.prompt import PromptTemplate
from sqltune.settings import OPTIONS, check_choices, setting


class Backend(str, Enum):
    auto = "auto"  # vLLM where it is installed (the GPU image), else transformers
    hf = "hf"
    vllm = "vllm"


@dataclass
class PredictConfig:
    backend: str = setting("auto", "auto: vLLM when installed, else transformers.", choices=Backend)
    batch_size: int = setting(16, "Prompts per generate() call (HF backend).")
    max_new_tokens: int = setting(128, "Most tokens generated per question.")
    limit: int | None = setting(None, "Only the first N records.", pipeline=OPTIONS)
    prompt_template: str | None = setting(
        None, "Prompt template (default: the adapter's, else alpaca).", choices=PromptTemplate, aliases=("--template",)
    )
    max_seq_len: int | None = setting(None, "Context length (default: the adapter's, else the model's).")
    quantize_4bit: bool = setting(
        False, "Load the base in 4-bit NF4; the adapter then stays unmerged.", pipeline=OPTIONS
    )
    base_name_check: bool = setting(True, "Require the adapter to name this base model.", pipeline=OPTIONS)

    def __post_init__(self) -> None:
        check_choices(self, "predict")
        for name in ("batch_size", "max_new_tokens", "limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SqltuneError(f"predict parameter {name}={value!r} is invalid: expected >= 1")
        if self.max_seq_len is not None and self.max_seq_len < 16:
            raise SqltuneError(f"predict parameter max_seq_len={self.max_seq_len!r} is invalid: expected >= 16")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
