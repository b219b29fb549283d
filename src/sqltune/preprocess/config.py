"""Every setting of the preprocess step: the one place its name, type, default and help live."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqltune.datasets import Dataset, Split
from sqltune.errors import SqltuneError
from sqltune.preprocess.schema_text import DEFAULT_STYLE, SchemaStyle
from sqltune.preprocess.schema_units import DEFAULT_FILTER, SchemaFilter
from sqltune.prompt import PromptTemplate
from sqltune.settings import FIXED, SettingError, check_settings, setting
from sqltune.sql.location import URL_ENV, URL_HELP, check_url, hide_password
from sqltune.sql.transpile import SqlDialect

MAX_VALUES = 10  # values per column: more than this is a table dump, not a hint


@dataclass
class PreprocessConfig:
    dataset: str = setting(..., "Dataset layout of the source.", choices=Dataset)
    split: str = setting(..., "Which split to preprocess (the pipeline does both).", choices=Split, pipeline=FIXED)
    schema_style: str = setting(DEFAULT_STYLE, "How the schema is written into the prompt.", choices=SchemaStyle)
    prompt_template: str = setting("alpaca", "Prompt template.", choices=PromptTemplate, aliases=("--template",))
    limit: int | None = setting(None, "Only the first N questions (the pipeline: train_limit, eval_limit).")
    dialect: str = setting(
        "sqlite",
        "SQL dialect of the engine the questions run on (sqlglot's names): the prompt names it, and the gold SQL of "
        "Spider, BIRD, CoSQL, SParC and WikiSQL is transpiled to it (a query that does not transpile, or does not "
        "run on --database-url, is dropped with its reason). jsonl gold is taken as written in it.",
        choices=SqlDialect,
    )
    database_url: str | None = setting(
        None,
        URL_HELP + " preprocess reads the schemas from it (unless --tables is given) and runs each gold query there.",
        envvar=URL_ENV,
    )
    schema_filter: str = setting(
        DEFAULT_FILTER,
        "Which of the database's tables and columns each prompt shows: none (all of them) or lexical (those the "
        "question's words and cell values point at, kept joinable; training records also keep what their gold SQL "
        "reads). A filtered prompt over its token budget drops whole tables, least relevant first, never the question.",
        choices=SchemaFilter,
    )
    schema_values: int = setting(
        0,
        "Cell values per column in each prompt: up to N the question mentions (read from the database) and N "
        "samples of each text column; 0 for none.",
    )

    def __post_init__(self) -> None:
        check_settings(self, "preprocess")
        if self.limit is not None and self.limit < 1:
            raise SettingError("preprocess", "limit", self.limit, ">= 1")
        if not 0 <= self.schema_values <= MAX_VALUES:
            raise SettingError("preprocess", "schema_values", self.schema_values, f"0 to {MAX_VALUES}")
        try:
            self.database_url = check_url(self.database_url)
        except SqltuneError as exc:
            raise SettingError("preprocess", "database_url", hide_password(self.database_url or ""), str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        """The settings as manifests record them: the database URL without its password."""
        return {**asdict(self), "database_url": hide_password(self.database_url) if self.database_url else None}


def split_configs(params: Mapping[str, Any]) -> dict[str, PreprocessConfig]:
    """The preprocess component's config of each split, from its parameters (`train_limit`, `eval_limit`: 0 means
    every question); the component and the pipeline's submission check both build them here."""
    configs = {}
    for split, limit_name in ((Split.train.value, "train_limit"), (Split.dev.value, "eval_limit")):
        limit = params[limit_name]
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise SettingError("preprocess", limit_name, limit, "a whole number >= 0 (0: every question)")
        names = ("dataset", "schema_style", "prompt_template", "schema_filter", "schema_values", "dialect")
        settings = {name: params[name] for name in names}
        settings["database_url"] = params["database_url"] or None
        configs[split] = PreprocessConfig(split=split, limit=limit or None, **settings)
    return configs
