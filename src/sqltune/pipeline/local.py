"""`sqltune run`: execute the checked-in compiled pipeline YAML end to end with kfp.local.

Each step runs as a subprocess of this Python (SubprocessRunner without a venv: sqltune and kfp are
already installed here, as in the step images). When no S3 endpoint is configured, a SeaweedFS server is
started on 127.0.0.1 for the run, so the publish step writes to a real S3 API. Outputs land under
`pipeline_root/<run>/<task>/`; the summary is read back from there. Quiet (the CLI's default), the steps' logs go
to `pipeline_root/logs/<time>.log` and the terminal shows a line per step (`console.py`); `sqltune -v` streams
them as kfp.local prints them. A pipeline root that cannot hold a run is refused before anything starts.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqltune.errors import SqltuneError
from sqltune.log import get_logger
from sqltune.pipeline import PIPELINE_FILE
from sqltune.pipeline.console import ANSI, StepConsole, shown
from sqltune.pipeline.params import coerce_params, load_pipeline_spec, parameter_defaults

log = get_logger(__name__)


@dataclass
class LocalRun:
    """What a local run produced: its directory, the evaluations and where the adapter was published."""

    run_dir: Path
    tasks: dict[str, Path]  # display name -> task output directory
    finetuned: dict[str, Any]  # metrics.json of the fine-tuned model's evaluation
    base: dict[str, Any] | None  # metrics.json of the base model's evaluation (when it ran)
    published_uri: str | None
    s3_endpoint_url: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    s3_data_dir: Path | None = None  # set when the run started its own S3 server (stopped when the run ended)
    log_file: Path | None = None  # the steps' full logs, when they did not go to the terminal

    def artifact(self, task: str, output: str) -> Path:
        return self.tasks[task] / output


def task_directories(spec: Mapping[str, Any]) -> dict[str, str]:
    """Display name -> task name (the output directory kfp.local uses), across nested condition DAGs."""
    names: dict[str, str] = {}
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec.get("components", {}).values() if "dag" in c]
    for dag in dags:
        for task_name, task in dag.get("tasks", {}).items():
            names[task.get("taskInfo", {}).get("name", task_name)] = task_name
    return names


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the steps' subprocesses; restore the previous values afterwards."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _read_executor_output(task_dir: Path) -> dict[str, Any]:
    path = task_dir / "executor_output.json"
    return json.loads(path.read_text()) if path.is_file() else {}


S3_DATA = "s3-data"  # under the pipeline root: the data of the S3 server a run starts for itself
LOGS = "logs"  # under the pipeline root: a quiet run's full logs


def own_s3(params: Mapping[str, Any]) -> bool:
    """Whether a run with these parameters starts its own S3 server (no endpoint configured)."""
    return not (params.get("s3_endpoint_url") or os.environ.get("AWS_ENDPOINT_URL"))


def usable_pipeline_root(path: str | Path, *, s3_data: bool) -> Path:
    """PATH, absolute and created, or a SqltuneError that names it and what is wrong, before anything runs.

    `s3_data`: the run keeps its own S3 server's data in PATH/s3-data. A pipeline root inside an S3 server's
    data directory is refused: the runs' outputs would mix with SeaweedFS's volumes.
    """
    from sqltune.locals3 import is_data_dir

    root = Path(path).expanduser().resolve()
    for place in (root, *root.parents):
        if place.exists() and not place.is_dir():
            problem = "is a file" if place == root else f"cannot be created: {place} is a file"
            raise SqltuneError(f"pipeline root {root} {problem}, not a directory")
        if place.is_dir() and is_data_dir(place):
            where = "is" if place == root else "is inside"
            raise SqltuneError(
                f"pipeline root {root} {where} the S3 server's data directory {place}; choose a directory outside it"
            )
    data = root / S3_DATA
    if s3_data and data.exists() and not data.is_dir():
        raise SqltuneError(f"pipeline root {root} cannot hold the run's S3 data: {data} is a file, not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SqltuneError(f"pipeline root {root} cannot be created: {exc.strerror or exc}") from None
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".sqltune-write-check-", dir=root))
    except OSError as exc:
        raise SqltuneError(f"pipeline root {root} is not writable: {exc.strerror or exc}") from None
    return root


def _new_runs(root: Path, before: set[Path]) -> list[Path]:
    """The run directories kfp.local created under `root` since `before`, oldest first."""
    made = [p for p in set(root.iterdir()) - before if p.is_dir() and p.name not in (S3_DATA, LOGS)]
    return sorted(made, key=lambda p: p.stat().st_mtime)


def _log_file(root: Path) -> Path:
    """A new file under PIPELINE_ROOT/logs/ named after the time the run starts."""
    (root / LOGS).mkdir(exist_ok=True)
    stamp, number = time.strftime("%Y-%m-%d-%H-%M-%S"), 1
    while True:
        path = root / LOGS / (f"{stamp}.log" if number == 1 else f"{stamp}-{number}.log")
        try:
            path.open("x").close()
            return path
        except FileExistsError:
            number += 1


def run_local(
    params: Mapping[str, Any],
    pipeline_file: str | Path = PIPELINE_FILE,
    pipeline_root: str | Path = "runs",
    *,
    quiet: bool = False,
) -> LocalRun:
    """Run the compiled pipeline with kfp.local; start a local S3 server unless an endpoint is configured.

    quiet: every step's output goes to a log file under the pipeline root, the terminal shows a line per step.
    """
    from sqltune.locals3 import local_s3

    spec = load_pipeline_spec(pipeline_file)
    params = coerce_params(params, spec)
    settings = {**parameter_defaults(spec), **params}
    root = usable_pipeline_root(pipeline_root, s3_data=own_s3(settings))
    before = set(root.iterdir())
    directories = task_directories(spec)

    def task_dir(task: str) -> Path | None:
        runs = _new_runs(root, before)
        return runs[-1] / task if runs else None

    console = StepConsole(_log_file(root), {d: name for name, d in directories.items()}, task_dir) if quiet else None
    s3_data_dir = None
    with ExitStack() as stack:
        if console:
            stack.enter_context(console.capture())
        from kfp import components, local

        endpoint = settings.get("s3_endpoint_url") or os.environ.get("AWS_ENDPOINT_URL")
        if not endpoint:
            s3_data_dir = root / S3_DATA
            server = stack.enter_context(local_s3(s3_data_dir, buckets=[settings["bucket"]]))
            stack.enter_context(_environment(server.env()))
            endpoint = server.endpoint_url
            log.info("no S3 endpoint configured: started SeaweedFS at %s (data in %s)", endpoint, s3_data_dir)
        # kfp.local warns about every cluster-only setting (images, GPUs, resources, display names): expected here.
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message="You may be attemping to run a task", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message=r"Task .* have no effect in the current local runner")
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
        pipeline = components.load_component_from_file(str(pipeline_file))
        try:
            pipeline(**params)
        except RuntimeError as exc:
            reason = ANSI.sub("", str(exc))
            if console is None:
                raise SqltuneError(f"local pipeline run failed: {reason} (step logs are above)") from None
            failed = f"step {', '.join(console.failed)} failed" if console.failed else reason
            raise SqltuneError(f"local pipeline run failed: {failed}; full log: {shown(console.log_file)}") from None

    new_runs = _new_runs(root, before)
    if not new_runs:
        raise SqltuneError(f"the pipeline run wrote nothing under {root}")
    run_dir = new_runs[-1]
    tasks = {display: run_dir / name for display, name in directories.items() if (run_dir / name).is_dir()}

    def metrics(task: str) -> dict[str, Any] | None:
        path = tasks.get(task, Path("/nonexistent")) / "evaluation" / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else None

    published = _read_executor_output(tasks["publish"]).get("parameterValues", {}) if "publish" in tasks else {}
    return LocalRun(
        run_dir=run_dir,
        tasks=tasks,
        finetuned=metrics("evaluate-finetuned") or {},
        base=metrics("evaluate-base"),
        published_uri=published.get("Output"),
        s3_endpoint_url=endpoint,
        parameters=settings,
        s3_data_dir=s3_data_dir,
        log_file=console.log_file if console else None,
    )


def summary_table(run: LocalRun) -> str:
    """EX/EM per hardness for the base and fine-tuned models, as a Markdown table."""
    columns = [("base", run.base), ("fine-tuned", run.finetuned)] if run.base else [("fine-tuned", run.finetuned)]
    levels = [level for level in ("easy", "medium", "hard", "extra", "all") if level in run.finetuned.get("ex", {})]
    header = "| model | metric | " + " | ".join(levels) + " |"
    lines = [header, "|" + "---|" * (len(levels) + 2)]
    for name, metrics in columns:
        for measure in ("ex", "em"):
            values = metrics.get(measure, {}) if metrics else {}
            cells = ["-" if values.get(level) is None else f"{values[level]:.3f}" for level in levels]
            lines.append(f"| {name} | {measure.upper()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
