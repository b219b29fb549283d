"""Every setting of the preprocess step: the one place its name, type, default and help live."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from sqltune.errors import SqltuneError
from sqltune.preprocess.schema_text import DEFAULT_STYLE, SchemaStyle
from sqltune.prompt import PromptTemplate
from sqltune.settings import FIXED, check_choices, setting


class Dataset(str, Enum):
    spider = "spider"
    bird = "bird"
    cosql = "cosql"
    sparc = "sparc"


class Split(str, Enum):
    train = "train"
    dev = "dev"


@dataclass
class PreprocessConfig:
    dataset: str = setting(..., "Dataset layout of the source.", choices=Dataset)
    split: str = setting(..., "Which split to preprocess (the pipeline does both).", choices=Split, pipeline=FIXED)
    schema_style: str = setting(DEFAULT_STYLE, "How the schema is written into the prompt.", choices=SchemaStyle)
    prompt_template: str = setting("alpaca", "Prompt template.", choices=PromptTemplate, aliases=("--template",))
    limit: int | None = setting(None, "Only the first N questions (the pipeline: train_limit, eval_limit).")

    def __post_init__(self) -> None:
        check_choices(self, "preprocess")
        if self.limit is not None and self.limit < 1:
            raise SqltuneError(f"preprocess parameter limit={self.limit!r} is invalid: expected >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
