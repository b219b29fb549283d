"""One logging and progress style for every step: plain log lines (they end up in pod logs) and tqdm bars."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to sys.stderr as it is now: tests and CliRunner swap (and close) it after setup."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def setup_logging(verbose: bool = False) -> None:
    """Configure the root logger once (idempotent); SQLTUNE_LOG_LEVEL overrides the level."""
    level = os.environ.get("SQLTUNE_LOG_LEVEL") or ("DEBUG" if verbose else "INFO")
    root = logging.getLogger()
    if not any(getattr(h, "_sqltune", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        handler._sqltune = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def progress_enabled() -> bool:
    """Progress bars are on unless SQLTUNE_PROGRESS=0 (tests, CI logs)."""
    return os.environ.get("SQLTUNE_PROGRESS", "1") != "0"


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """A progress bar on stderr; silenced with SQLTUNE_PROGRESS=0 (tests, CI logs)."""
    disable = not progress_enabled()
    yield from tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, mininterval=1.0, file=sys.stderr)


def progress_bar(desc: str, total: int, unit: str, file: Any) -> Any:
    """A bar the caller moves itself (`bar.n = ...; bar.refresh()`), cleared when closed; silenced as above."""
    return tqdm(desc=desc, total=total, unit=unit, leave=False, disable=not progress_enabled(), file=file)
