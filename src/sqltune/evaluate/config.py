"""Every setting of the evaluate step: the one place its name, type, default and help live."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from sqltune.datasets import Dataset
from sqltune.errors import SqltuneError
from sqltune.settings import OPTIONS, SettingError, check_settings, setting
from sqltune.sql.execution import Limits
from sqltune.sql.location import URL_ENV, URL_HELP, check_url, hide_password

_LIMITS = Limits()


class Etype(str, Enum):
    all = "all"
    exec = "exec"  # execution accuracy only
    match = "match"  # exact match only


@dataclass
class EvaluateConfig:
    dataset: str = setting(
        "spider", "bird: set-equality EX by difficulty, no EM; the others: Spider's rules.", choices=Dataset
    )
    etype: str = setting("all", "exec, match or all.", choices=Etype, pipeline=OPTIONS)
    keep_distinct: bool = setting(False, "Keep DISTINCT when comparing execution results.", pipeline=OPTIONS)
    plug_value: bool = setting(False, "Try gold values in the prediction's literals (lenient).", pipeline=OPTIONS)
    ves_repeats: int = setting(0, "Time correct predictions N times for BIRD's R-VES (0: off).", pipeline=OPTIONS)
    timeout: float = setting(_LIMITS.timeout_s, "Per-query time limit in seconds (comparing too).", pipeline=OPTIONS)
    max_rows: int = setting(_LIMITS.max_rows, "Results with more rows count as errors.", pipeline=OPTIONS)
    max_result_bytes: int = setting(
        _LIMITS.max_result_bytes, "Results (or any string or blob) larger than this count as errors.", pipeline=OPTIONS
    )
    max_heap_bytes: int = setting(
        _LIMITS.max_heap_bytes, "SQLite's memory per worker process, temporary storage included.", pipeline=OPTIONS
    )
    workers: int = setting(0, "Worker processes (0: one per CPU).", pipeline=OPTIONS)
    database_url: str | None = setting(None, URL_HELP + " evaluate runs gold and predictions there.", envvar=URL_ENV)

    def __post_init__(self) -> None:
        check_settings(self, "evaluate")
        if self.bird:
            self.etype = Etype.exec.value  # BIRD has no exact-match metric
        if self.workers < 0:
            raise SettingError("evaluate", "workers", self.workers, ">= 0 (0: one per CPU)")
        if self.ves_repeats < 0:
            raise SettingError("evaluate", "ves_repeats", self.ves_repeats, ">= 0 (0: off)")
        try:
            self.database_url = check_url(self.database_url)
        except SqltuneError as exc:
            raise SettingError("evaluate", "database_url", hide_password(self.database_url or ""), str(exc)) from None
        for name in ("timeout", "max_rows", "max_result_bytes", "max_heap_bytes"):
            value = getattr(self, name)
            if not value > 0:  # also catches NaN
                raise SettingError("evaluate", name, value, "> 0")

    @property
    def bird(self) -> bool:
        return self.dataset == Dataset.bird.value

    @property
    def limits(self) -> Limits:
        return Limits(self.timeout, self.max_rows, self.max_result_bytes, self.max_heap_bytes)

    def to_dict(self) -> dict[str, Any]:
        """The settings as manifests record them: the database URL without its password."""
        return {**asdict(self), "database_url": hide_password(self.database_url) if self.database_url else None}
