"""The terminal of `sqltune demo` and `sqltune run`: a line per step, the long steps' progress, the logs in a file.

kfp.local runs each step as a subprocess, reads its stdout and stderr through one pipe and `print`s every line
on this process's sys.stdout, between its own log lines (the executor input JSON, each task's outputs). All the
noise travels that way: kfp's executor logging, the warnings of the libraries a step imports (bitsandbytes,
transformers), the steps' Python warnings and sqltune's INFO logs. This process's own logs and warnings go to
sys.stderr. `StepConsole.capture()` points both at the run's log file, so all of it lands there (nothing of a
step reaches the terminal's file descriptors directly: kfp pipes it), and it reads the lines on their way: a
task starts ("Executing task 'train'"), finishes ("Task 'train' finished with status SUCCESS"), is retried, and
the step's own bar (`sqltune.log.progress`, named after the step) moves. The terminal gets one line when a task
starts and one when it finishes, with its duration and a short result read from the outputs it wrote, a bar
while a step's own bar moves (train, predict, evaluate), and a failed step's last lines. The lines read are
kfp 2.17's (pinned in pyproject.toml); tests/test_pipeline_local.py reads a real run's terminal.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from sqltune.log import progress_bar

if TYPE_CHECKING:
    from sqltune.pipeline.local import LocalRun

ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r" - INFO - Executing task '(?P<task>[^']+)'$")
_FINISHED = re.compile(r" - [A-Z]+ - Task '(?P<task>[^']+)' finished with status (?P<status>[A-Z]+)$")
_RETRYING = re.compile(
    r"Task (?P<task>\S+) failed \(attempt (?P<attempt>\d+)/(?P<of>\d+)\)\. Retrying in (?P<s>[\d.]+)s"
)
_BAR = re.compile(r"(?P<desc>[\w-]+):\s+\d+%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+) \[(?P<timing>[^\]]*)\]")
_UNIT = re.compile(r"(?:\?|[\d.]+)(?P<per_s>[A-Za-z]+)/s$|s/(?P<s_per>[A-Za-z]+)$")
TAIL_LINES = 12  # of a failed step, on the terminal


def shown(path: Path) -> str:
    """A path as a user would type it here: relative to the working directory when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def duration(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m {int(seconds % 60):02d}s"


def step_kind(task: str) -> str:
    """The component a kfp.local task runs: 'predict-2' -> 'predict' (also the name of the step's own bar)."""
    return re.sub(r"-\d+$", "", task)


def _metadata(output: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    artifacts = output.get("artifacts") or {}
    return {name: ((entry.get("artifacts") or [{}])[0].get("metadata") or {}) for name, entry in artifacts.items()}


def step_result(kind: str, task_dir: Path | None) -> str:
    """A few words on what a finished step produced, from its executor output; '' when there is nothing to say."""
    try:
        output = json.loads((task_dir / "executor_output.json").read_text()) if task_dir else {}
        meta, values = _metadata(output), output.get("parameterValues") or {}
        if kind == "preprocess":
            train, dev = meta["train_data"], meta["eval_data"]
            return f"{train['records']:.0f} {train['split']} / {dev['records']:.0f} {dev['split']} questions"
        if kind == "train":
            return f"{meta['metrics']['steps']:.0f} steps, final loss {meta['metrics']['final_loss']:.3f}"
        if kind == "predict":
            predictions = meta["predictions"]
            return f"{predictions['prompts']:.0f} questions, {predictions['no_sql_outputs']:.0f} answers without SQL"
        if kind == "evaluate":
            return f"EX {meta['metrics']['ex_all']:.3f}, EM {meta['metrics']['em_all']:.3f}"
        if kind == "publish":
            return str(values["Output"])
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        pass  # an output this summary does not know: the step's line says less, the run goes on
    return ""


class _LineTap(io.TextIOBase):
    """A text stream that writes everything to `log` and hands each complete line to `on_line`."""

    def __init__(self, log: TextIO, on_line: Callable[[str], None]) -> None:
        super().__init__()
        self._log, self._on_line, self._partial = log, on_line, ""
        self._lock = threading.Lock()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._log.write(text)
            *lines, self._partial = (self._partial + text).split("\n")
            for line in lines:
                self._on_line(line)
        return len(text)

    def flush(self) -> None:
        self._log.flush()


class StepConsole:
    """Shows a kfp.local run as a line per task while its full output goes to `log_file` (see the module doc)."""

    def __init__(self, log_file: Path, names: Mapping[str, str], task_dir: Callable[[str], Path | None]) -> None:
        self.log_file = log_file
        self.failed: list[str] = []  # display names of the tasks that failed
        self._names = names  # kfp.local task name -> display name
        self._task_dir = task_dir  # kfp.local task name -> its output directory in the run (once it exists)
        self._width = max((len(name) for name in names.values()), default=12)
        self._current: str | None = None
        self._since = 0.0
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._bar: Any = None
        self._out: TextIO = sys.stdout
        self._err: TextIO = sys.stderr

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Everything this process and its steps print goes to the log file until the block ends."""
        self._out, self._err = sys.stdout, sys.stderr
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "a", buffering=1, encoding="utf-8", errors="replace") as log:
            self._echo(f"full logs: {shown(self.log_file)}")
            sys.stdout = sys.stderr = _LineTap(log, self._line)
            try:
                yield
            finally:
                sys.stdout, sys.stderr = self._out, self._err
                self._close_bar()

    def _echo(self, text: str) -> None:
        click.echo(text, file=self._out)

    def _say(self, task: str, text: str) -> None:
        self._echo(f"{time.strftime('%H:%M:%S')} {self._names.get(task, task):<{self._width}} {text}")

    def _line(self, line: str) -> None:
        plain = ANSI.sub("", line).rstrip()
        if started := _STARTED.search(plain):
            self._started(started["task"])
        elif finished := _FINISHED.search(plain):
            self._finished(finished["task"], finished["status"] == "SUCCESS")
        elif retrying := _RETRYING.search(plain):
            attempt, of = int(retrying["attempt"]) + 1, retrying["of"]
            self._say(retrying["task"], f"retrying in {duration(float(retrying['s']))} (attempt {attempt} of {of})")
        elif self._current is not None:
            text = plain.removeprefix("    ")  # kfp indents a step's lines by four spaces
            bar = _BAR.match(text.lstrip())
            if bar:
                self._progress(bar)
            elif text.strip(" ^~"):  # not blank, nor one of Python's markers under a traceback's line
                self._tail.append(text)

    def _started(self, task: str) -> None:
        self._close_bar()
        self._current, self._since = task, time.monotonic()
        self._tail.clear()
        self._say(task, "started")

    def _progress(self, bar: re.Match[str]) -> None:
        if self._current is None or bar["desc"] != step_kind(self._current):
            return  # another bar of the step (loading weights, candidates, ...)
        n, total = int(bar["n"]), int(bar["total"])
        if self._bar is None:
            unit = _UNIT.search(bar["timing"])
            name = self._names.get(self._current, self._current)
            self._bar = progress_bar(name, total, (unit["per_s"] or unit["s_per"]) if unit else "it", self._err)
        if (self._bar.n, self._bar.total) != (n, total):
            self._bar.total, self._bar.n = total, n
            self._bar.refresh()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _finished(self, task: str, succeeded: bool) -> None:
        self._close_bar()
        took = duration(time.monotonic() - self._since)
        if succeeded:
            result = step_result(step_kind(task), self._task_dir(task))
            self._say(task, f"{click.style('done', fg='green')} in {took}" + (f": {result}" if result else ""))
        else:
            self.failed.append(self._names.get(task, task))
            self._say(task, f"{click.style('FAILED', fg='red')} after {took}; its last lines:")
            for line in self._tail:
                self._echo(f"    {line}")
            self._echo(f"    (full log: {shown(self.log_file)})")
        self._current = None


def what_next(run: LocalRun) -> list[tuple[str, list[str]]]:
    """What to do after a local run: (what for, the commands or paths), one entry each; extend it here."""
    steps: list[tuple[str, list[str]]] = []
    evaluation = run.tasks.get("evaluate-finetuned")
    if evaluation and (evaluation / "evaluation" / "report.md").is_file():
        report = evaluation / "evaluation" / "report.md"
        steps.append(("the fine-tuned model's answers, question by question", [shown(report)]))
    steps.append(("every step's outputs, with their manifests and lineage", [shown(run.run_dir)]))
    if run.published_uri:
        p = run.parameters
        location = " ".join(
            f"--{key.replace('_', '-')} {shlex.quote(str(p[key]))}" for key in ("bucket", "prefix", "model_name")
        )
        version = run.published_uri.rstrip("/").rsplit("/", 1)[-1]
        if run.s3_data_dir:
            endpoint = "http://127.0.0.1:8333"
            serve = f"sqltune s3-server --dir {shlex.quote(shown(run.s3_data_dir))} --port 8333"
            why = "the published versions: serve the run's S3 data again, then, in a second shell with the credentials "
            why += "it prints"
            commands = [serve]
        else:
            endpoint = str(run.s3_endpoint_url)
            why, commands = "the published versions", []
        commands += [
            f"sqltune registry list {location} --endpoint-url {endpoint}",
            f"sqltune registry show {location} --version {version} --endpoint-url {endpoint}",
        ]
        steps.append((why, commands))
        steps.append(("the published adapter behind an OpenAI-compatible API and /v1/sql (with the S3 server up)",
                      [_serve_command(run, location, endpoint)]))  # fmt: skip
    return steps


def _serve_command(run: LocalRun, location: str, endpoint: str) -> str:
    """`sqltune serve` of what the run published: the channel it promoted to (followed: a later promotion is served
    without a restart), else the version itself; /v1/sql answers about the run's own databases."""
    channel = run.parameters.get("promote_channel")
    where = f"{location} --channel {shlex.quote(channel)}" if channel else f"--adapter {run.published_uri}"
    command = f"sqltune serve {where} --endpoint-url {endpoint}"
    databases = run.tasks.get("preprocess")
    if databases and (databases / "databases" / "tables.json").is_file():
        root = shlex.quote(shown(databases / "databases"))
        command += f" --tables {root}/tables.json --db-dir {root}/database"
    return command


def result_lines(run: LocalRun, table: str) -> list[str]:
    """The end of a local run on the terminal: the EX/EM table, where the adapter went, the log file, what next."""
    lines = ["", table, ""]
    adapter = run.tasks["train"] / "adapter" if "train" in run.tasks else None
    if run.published_uri and run.s3_data_dir:
        lines.append(f"adapter published to {run.published_uri} on the run's own S3 server (stopped with the run)")
    elif run.published_uri:
        lines.append(f"adapter published to {run.published_uri} (S3 endpoint {run.s3_endpoint_url})")
    else:
        ex = run.finetuned.get("ex", {}).get("all")
        lines.append(f"adapter not published: EX {ex} is below min_ex {run.parameters.get('min_ex')}")
    if adapter and adapter.is_dir():
        lines.append(f"adapter files: {shown(adapter)}")
    if run.log_file:
        lines.append(f"full logs: {shown(run.log_file)}")
    lines += ["", "what next:"]
    for why, commands in what_next(run):
        lines += [f"  {why}:", *(f"    {command}" for command in commands)]
    return lines
