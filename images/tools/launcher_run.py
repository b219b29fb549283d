"""Running a pipeline step as the KFP launcher does: its command and arguments from the compiled pipeline, an
executor input that wires in the artifacts upstream steps produced, and the executor's output read back.

In its image (`run_step` with an engine): artifact URIs are `minio://...` (the executor maps them to `/minio/...`,
mounted writable from a host folder), the image's own non-root user, a read-only root filesystem with a tmpfs
/tmp, and no network except for publish, which reaches the S3 server on the host. On the host (no engine): the
same command with host paths for the artifact root. Either way each output artifact is checked
(`step_checks.check_output`) before the next step gets it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from imagebuild import Engine, run_command
from sqltune.errors import SqltuneError
from sqltune.images import image_for
from sqltune.pipeline import PIPELINE_FILE
from step_checks import check_output

RUN_PREFIX = "mlpipeline/v2/artifacts/sqltune-image-test"  # the launcher's layout: <root>/<pipeline run>/<task>
CONTAINER_OUTPUTS = "/tmp/kfp_outputs"  # where the launcher has the executor write its output
# Tasks that are not steps of their own run in a step's image: task -> the step whose image it runs in.
HELPER_TASKS = {"placement": "preprocess"}


def load_pipeline(path: Path = PIPELINE_FILE) -> dict[str, Any]:
    """The compiled pipeline spec (the first YAML document; the second holds the Kubernetes platform spec)."""
    return next(yaml.safe_load_all(path.read_text(encoding="utf-8")))


def task_inputs(spec: dict[str, Any]) -> dict[str, dict[str, tuple[str, str]]]:
    """task -> {input artifact: (producer task, output key)}, following artifacts into condition sub-DAGs."""
    wiring: dict[str, dict[str, tuple[str, str]]] = {}

    def walk(tasks: dict[str, Any], channels: dict[str, tuple[str, str]]) -> None:
        for name, task in tasks.items():
            sources = {}
            for key, source in task.get("inputs", {}).get("artifacts", {}).items():
                if "taskOutputArtifact" in source:
                    output = source["taskOutputArtifact"]
                    sources[key] = (output["producerTask"], output["outputArtifactKey"])
                else:
                    sources[key] = channels[source["componentInputArtifact"]]
            sub_dag = spec["components"][task["componentRef"]["name"]].get("dag")
            if sub_dag:
                walk(sub_dag["tasks"], sources)
            else:
                wiring[name] = sources

    walk(spec["root"]["dag"]["tasks"], {})
    return wiring


def component(spec: dict[str, Any], task: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A step's component spec and its executor's container spec (image, command, args)."""
    comp = spec["components"][f"comp-{task}"]
    return comp, spec["deploymentSpec"]["executors"][comp["executorLabel"]]["container"]


@dataclass
class Artifact:
    """A runtime artifact: its place under the pipeline root, and the metadata its producer gave it."""

    key: str  # path under the pipeline root, e.g. mlpipeline/v2/artifacts/<run>/<task>/<name>
    schema_title: str
    schema_version: str
    metadata: dict[str, Any]

    def as_input(self, root: str) -> dict[str, Any]:
        return {
            "name": self.key.rsplit("/", 1)[1],
            "type": {"schemaTitle": self.schema_title, "schemaVersion": self.schema_version},
            "uri": f"{root}{self.key}",
            "metadata": self.metadata,
        }


def executor_input(
    comp: dict[str, Any],
    parameters: dict[str, Any],
    inputs: dict[str, Artifact],
    outputs: dict[str, Artifact],
    root: str,
    outputs_dir: str,
) -> dict[str, Any]:
    """The ExecutorInput the launcher hands the executor (as JSON): parameter values, input artifacts, and where
    each output goes. `root` prefixes artifact keys: `minio://` in a container, the host folder on the host."""
    declared = comp.get("inputDefinitions", {})
    missing = sorted(set(declared.get("parameters", {})) - set(parameters))
    if missing:
        raise SqltuneError(f"the image test passes no value for the component's parameter(s) {', '.join(missing)}")
    output_parameters = comp.get("outputDefinitions", {}).get("parameters", {})
    return {
        "inputs": {
            "parameterValues": parameters,
            "artifacts": {name: {"artifacts": [artifact.as_input(root)]} for name, artifact in inputs.items()},
        },
        "outputs": {
            "parameters": {name: {"outputFile": f"{outputs_dir}/{name}"} for name in output_parameters},
            "artifacts": {name: {"artifacts": [artifact.as_input(root)]} for name, artifact in outputs.items()},
            "outputFile": f"{outputs_dir}/output_metadata.json",
        },
    }


def launcher_command(container: dict[str, Any], executor_input_json: str) -> list[str]:
    """The container's command and args with the `{{$}}` placeholder filled in, as the launcher does."""
    return [*container["command"], *(arg.replace("{{$}}", executor_input_json) for arg in container["args"])]


@dataclass
class Workspace:
    """The host folders of one image test: the pipeline root (mounted at /minio), inputs, and a model cache."""

    path: Path

    @property
    def minio(self) -> Path:
        return self.path / "minio"

    @property
    def cache(self) -> Path:
        return self.path / "cache"

    def writable(self, path: Path) -> Path:
        """A folder the image's non-root user can write through a bind mount (the launcher's volume is too)."""
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)
        return path


@dataclass
class StepResult:
    step: str
    where: str  # "image" or "host"
    seconds: float
    executor_output: dict[str, Any]


def run_step(
    engine: Engine | None,
    spec: dict[str, Any],
    step: str,
    parameters: dict[str, Any],
    produced: dict[tuple[str, str], Artifact],
    workspace: Workspace,
    s3_env: dict[str, str],
) -> StepResult:
    """Run one step (or helper task) in its image (with `engine`) or on the host (without), then check what it
    wrote."""
    comp, container = component(spec, step)
    inputs = {name: produced[source] for name, source in task_inputs(spec)[step].items()}
    outputs = {
        name: Artifact(
            f"{RUN_PREFIX}/{step}/{name}", t["artifactType"]["schemaTitle"], t["artifactType"]["schemaVersion"], {}
        )
        for name, t in comp.get("outputDefinitions", {}).get("artifacts", {}).items()
    }
    workspace.writable(workspace.minio / RUN_PREFIX / step)
    outputs_dir = workspace.writable(workspace.path / "outputs" / step)
    started = time.perf_counter()
    if engine is None:
        where = "host"
        command = launcher_command(
            container,
            json.dumps(executor_input(comp, parameters, inputs, outputs, f"{workspace.minio}/", str(outputs_dir))),
        )
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        done = subprocess.run(command, env={**os.environ, **s3_env, "PATH": path, "SQLTUNE_PROGRESS": "0"}, check=False)
        # The launcher hands a step's inputs to the pod's user; here that user reads them through the mount.
        run_command(
            ["chmod", "-R", "a+rX", str(workspace.minio / RUN_PREFIX / step)], f"making {step}'s outputs readable"
        )
    else:
        where = "image"
        image = image_for(HELPER_TASKS.get(step, step))
        if container["image"] != image:
            raise SqltuneError(f"the compiled pipeline runs {container['image']} for {step}, but we built {image}")
        document = json.dumps(executor_input(comp, parameters, inputs, outputs, "minio://", CONTAINER_OUTPUTS))
        options = [
            "run", "--rm", "--read-only", "--tmpfs", "/tmp:rw,exec,mode=1777",
            "-v", f"{workspace.minio}:/minio", "-v", f"{outputs_dir}:{CONTAINER_OUTPUTS}",
            "-v", f"{workspace.writable(workspace.cache)}:/cache", "--env", "SQLTUNE_CACHE=/cache",
            "--env", "HF_HOME=/tmp/hf", "--env", "SQLTUNE_PROGRESS=0",
        ]  # fmt: skip
        source = parameters.get("source_uri")
        if source:
            options += ["-v", f"{source}:{source}:ro"]
        if step == "publish":  # the S3 server listens on the host's 127.0.0.1; credentials stay off the command line
            options += ["--network", "host", *(arg for name in s3_env for arg in ("--env", name))]
        else:
            options += ["--network", "none"]
        done = subprocess.run(
            [engine.binary, *options, image, *launcher_command(container, document)],
            env={**engine.env, **s3_env},
            check=False,
        )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SqltuneError(f"{step} ({where}) exited with code {done.returncode}")
    result = StepResult(step, where, seconds, _executor_output(outputs_dir, step))
    for name, artifact in outputs.items():
        reported = result.executor_output.get("artifacts", {}).get(name, {}).get("artifacts", [{}])[0]
        artifact.metadata = reported.get("metadata", {})
        check_output(workspace.minio / artifact.key, artifact.schema_title, artifact.metadata, f"{step}: output {name}")
        produced[(step, name)] = artifact
    return result


def _executor_output(outputs_dir: Path, step: str) -> dict[str, Any]:
    path = outputs_dir / "output_metadata.json"
    if not path.is_file():
        raise SqltuneError(f"{step}: the executor wrote no output file ({path})")
    return json.loads(path.read_text(encoding="utf-8"))
