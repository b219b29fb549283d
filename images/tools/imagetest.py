"""`make image-test`: build the component images and run each step inside its own image, as the KFP launcher does.

For every selected step: the component's command and arguments from the compiled pipeline
(`pipelines/text2sql/text2sql.yaml`), an executor input whose artifact URIs are `minio://...` (the executor maps them to
`/minio/...`, mounted writable from a host folder), the image's own non-root user, a read-only root
filesystem with a tmpfs /tmp, and no network except for publish, which reaches the SeaweedFS S3 server
(`sqltune.locals3`) on the host. Steps upstream of a selected one that are not selected run the same command
on the host, so `STEPS="evaluate publish"` needs only those two images. Each step's output artifacts must
verify against their manifests and its executor output must hold what the step returns; the CPU images must
not contain torch. The run is tiny: the sample dataset, 2 training steps of tiny-random-llama, 4 prompts.
The pipeline's helper tasks (placement) run in the image they use, and must return what the library decides.
Then the train step's TrainJob follow logic runs through the Kubeflow SDK's container backend on the first
selected image (`trainjob_follow.py`).

When a base image cannot be pulled (no registry reachable), a stand-in is made from the distribution's package
mirror with debootstrap (root only) and passed through the Dockerfile's base-image build argument.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from imagebuild import (
    REPO,
    Engine,
    add_build_options,
    build_all,
    find_engine,
    parse_bases,
    parse_steps,
    size_table,
)
from sqltune.artifacts import sha256_file, verify_artifact
from sqltune.errors import SqltuneError
from sqltune.images import RECIPES, STEPS, image_for
from sqltune.pipeline import PIPELINE_FILE
from trainjob_follow import check_trainjob_follow

PIPELINE = PIPELINE_FILE
RUN_PREFIX = "mlpipeline/v2/artifacts/sqltune-image-test"  # the launcher's layout: <root>/<pipeline run>/<task>
CONTAINER_OUTPUTS = "/tmp/kfp_outputs"  # where the launcher has the executor write its output
BUCKET = "sqltune-image-test"
GPU_STEPS = frozenset(step for step, recipe in RECIPES.items() if recipe.base_arg == "CUDA_IMAGE")
# Tasks that are not steps of their own run in a step's image: task -> the step whose image it runs in.
HELPER_TASKS = {"placement": "preprocess"}

# The smallest run that still exercises each step; predict uses transformers because vLLM needs a GPU.
PARAMETERS: dict[str, dict[str, Any]] = {
    "preprocess": {
        "dataset": "spider",
        "schema_style": "ddl",
        "prompt_template": "alpaca",
        "train_limit": 16,
        "eval_limit": 4,
    },  # + source_uri, the sample dataset
    "train": {
        "base_model": "tiny-random-llama",
        "method": "lora",
        "prompt_template": "alpaca",
        "lora_rank": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "target_modules": "all-linear",
        "learning_rate": 2e-4,
        "num_epochs": 1.0,
        "max_steps": 2,
        "rl_steps": 0,  # the GRPO stage is the library's, tested on the host
        "rl_learning_rate": 1e-5,
        "dataset": "spider",
        "batch_size": 2,
        "gradient_accumulation_steps": 1,
        "max_seq_len": 512,
        "gradient_checkpointing": False,
        "seed": 42,
        "train_options": {},
        "parallelism": "ddp",
        "num_nodes": 1,
        "nproc_per_node": 1,
        "trainer_runtime": "torch-distributed",
        "gpu_type": "nvidia.com/gpu",
        "gpu_node_selector": {},
        "gpu_tolerations": [],
        "s3_secret_name": "sqltune-s3",
        "hf_token_secret_name": "sqltune-hf-token",
        "endpoint_url": "",
        "checkpoint_uri": "",
        "run_id": "image-test",
    },  # + source_uri, the sample dataset
    "predict": {
        "base_model": "tiny-random-llama",
        "prompt_template": "alpaca",
        "max_seq_len": 512,
        "backend": "hf",
        "batch_size": 4,
        "max_new_tokens": 16,
        "candidates": 1,
        "predict_options": {},
    },
    "evaluate": {"dataset": "spider", "evaluate_options": {}},
    # Two nodes and a GRPO stage: the train pod keeps one GPU, predict takes them all.
    "placement": {
        "gpu_count": 4,
        "num_nodes": 2,
        "rl_steps": 1,
        "gpu_node_selector": {"nvidia.com/gpu.present": "true"},
        "gpu_tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "publish": {
        "bucket": BUCKET,
        "prefix": "adapters",
        "model_name": "text2sql",
        "promote_channel": "",
        "promote_margin": 0.0,
        "publish_options": {},
        "run_id": "image-test",
    },  # + endpoint_url, the host's S3 server
}


@dataclass(frozen=True)
class StandIn:
    """A base image built from a distribution's package mirror, standing in for one that cannot be pulled."""

    image: str
    suite: str
    mirror: str
    sources: str  # the sources.list an image of that distribution ships
    include: tuple[str, ...] = ()
    script: str | None = None  # debootstrap script, for releases newer than the host's debootstrap knows
    keyring_deb: tuple[str, str] | None = None  # (url, sha256) of the distribution's keyring package


STAND_INS: dict[str, StandIn] = {
    # python:3.11-slim-bookworm: Debian bookworm's python3 is 3.11; venv needs python3-venv there.
    "PYTHON_IMAGE": StandIn(
        image="localhost/sqltune-standin-python:3.11-bookworm",
        suite="bookworm",
        mirror="http://deb.debian.org/debian",
        sources="deb http://deb.debian.org/debian bookworm bookworm-updates main\n"
        "deb http://deb.debian.org/debian-security bookworm-security main\n",
        include=("python3", "python3-venv"),
    ),
    # nvidia/cuda:*-base-ubuntu24.04 without the CUDA hooks (a CPU machine cannot use them anyway).
    "CUDA_IMAGE": StandIn(
        image="localhost/sqltune-standin-ubuntu:24.04",
        suite="noble",
        mirror="http://archive.ubuntu.com/ubuntu",
        sources="deb http://archive.ubuntu.com/ubuntu noble noble-updates main universe\n"
        "deb http://security.ubuntu.com/ubuntu noble-security main universe\n",
        script="/usr/share/debootstrap/scripts/gutsy",
        keyring_deb=(
            "http://archive.ubuntu.com/ubuntu/pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb",
            "36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8",
        ),
    ),
}


def dockerfile_base(dockerfile: str, arg: str) -> str:
    """The default of a Dockerfile's base-image build argument: the real, pinned base."""
    match = re.search(rf"^ARG {arg}=(\S+)$", (REPO / dockerfile).read_text(), flags=re.M)
    if not match:
        raise SqltuneError(f"{dockerfile} has no `ARG {arg}=<image>` line")
    return match.group(1)


def _run(args: Sequence[str], what: str, **kwargs: Any) -> None:
    done = subprocess.run(list(args), capture_output=True, text=True, check=False, **kwargs)
    if done.returncode != 0:
        raise SqltuneError(f"{what} failed (exit {done.returncode}): {(done.stdout + done.stderr)[-2000:]}")


def make_stand_in(engine: Engine, stand_in: StandIn, work: Path) -> None:
    """debootstrap a minimal root filesystem and import it as `stand_in.image` (about a minute)."""
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        raise SqltuneError(
            f"cannot make the stand-in base {stand_in.image}: debootstrap needs root and the debootstrap package"
        )
    rootfs = work / stand_in.suite
    command = ["debootstrap", "--variant=minbase"]
    if stand_in.include:
        command.append(f"--include={','.join(stand_in.include)}")
    if stand_in.keyring_deb:
        command.append(f"--keyring={_keyring(stand_in.keyring_deb, work)}")
    command += [stand_in.suite, str(rootfs), stand_in.mirror]
    if stand_in.script:
        command.append(stand_in.script)
    print(f"making the stand-in base {stand_in.image} with debootstrap from {stand_in.mirror}", flush=True)
    _run(command, f"debootstrap {stand_in.suite}")
    (rootfs / "etc" / "apt" / "sources.list").write_text(stand_in.sources, encoding="utf-8")
    for cache in (rootfs / "var" / "cache" / "apt" / "archives", rootfs / "var" / "lib" / "apt" / "lists"):
        for item in cache.glob("*"):
            if item.is_file():
                item.unlink()
    tarball = work / f"{stand_in.suite}.tar"
    _run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], f"packing {rootfs}")
    engine.command("import", str(tarball), stand_in.image, capture=True)
    shutil.rmtree(rootfs)
    tarball.unlink()


def _keyring(deb: tuple[str, str], work: Path) -> Path:
    """The archive keyring from the distribution's keyring package, checked against its pinned sha256."""
    import urllib.request

    url, sha256 = deb
    package = work / Path(url).name
    with urllib.request.urlopen(url, timeout=60) as response:
        package.write_bytes(response.read())
    if sha256_file(package) != sha256:
        raise SqltuneError(f"{url}: sha256 {sha256_file(package)} is not the pinned {sha256}")
    _run(["dpkg-deb", "-x", str(package), str(work / "keyring")], f"unpacking {package}")
    found = sorted((work / "keyring").rglob("*-archive-keyring.gpg"))
    if not found:
        raise SqltuneError(f"{url} holds no *-archive-keyring.gpg")
    return found[0]


def prepare_bases(engine: Engine, steps: Sequence[str], overrides: dict[str, str], work: Path) -> dict[str, str]:
    """Base-image build arguments: the caller's overrides; else the real base if it is here or can be pulled;
    else a stand-in (made once, reused by later runs)."""
    bases = dict(overrides)
    for arg in sorted({RECIPES[step].base_arg for step in steps} - set(overrides)):
        real = dockerfile_base(next(r.dockerfile for r in RECIPES.values() if r.base_arg == arg), arg)
        if engine.has_image(real) or engine.pull(real):
            continue
        stand_in = STAND_INS[arg]
        print(f"{real} cannot be pulled here; using the stand-in {stand_in.image}", flush=True)
        if not engine.has_image(stand_in.image):
            make_stand_in(engine, stand_in, work)
        bases[arg] = stand_in.image
    return bases


# ---- the pipeline as the launcher sees it ---------------------------------------------------------------------


def load_pipeline(path: Path = PIPELINE) -> dict[str, Any]:
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
        _run(["chmod", "-R", "a+rX", str(workspace.minio / RUN_PREFIX / step)], f"making {step}'s outputs readable")
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
        _check_output(workspace.minio / artifact.key, artifact, step, name)
        produced[(step, name)] = artifact
    return result


def _executor_output(outputs_dir: Path, step: str) -> dict[str, Any]:
    path = outputs_dir / "output_metadata.json"
    if not path.is_file():
        raise SqltuneError(f"{step}: the executor wrote no output file ({path})")
    return json.loads(path.read_text(encoding="utf-8"))


def _check_output(path: Path, artifact: Artifact, step: str, name: str) -> None:
    """An output artifact is a directory whose manifest verifies, a non-empty file (a report), or for Metrics the
    values in the executor output (KFP keeps logged metrics there, not in the file)."""
    if artifact.schema_title == "system.Metrics":
        if not artifact.metadata:
            raise SqltuneError(f"{step}: output {name} holds no metrics in the executor output")
    elif path.is_dir():
        try:
            verify_artifact(path)
        except SqltuneError as exc:
            raise SqltuneError(f"{step}: output {name} at {path} does not verify: {exc}") from None
    elif not path.is_file() or path.stat().st_size == 0:
        raise SqltuneError(f"{step}: output {name} is missing or empty at {path}")


def check_image(engine: Engine, step: str) -> None:
    """The image runs as a non-root user, and the CPU images hold no torch."""
    image = image_for(step)
    user = engine.command("image", "inspect", "--format", "{{.Config.User}}", image, capture=True).strip()
    if user in ("", "0", "root"):
        raise SqltuneError(f"{image} runs as root (USER {user!r})")
    if step not in GPU_STEPS:
        probe = "import importlib.util, sys; sys.exit(3 if importlib.util.find_spec('torch') else 0)"
        done = subprocess.run(
            [engine.binary, "run", "--rm", "--network", "none", image, "python3", "-c", probe],
            env=engine.env,
            check=False,
        )
        if done.returncode != 0:
            raise SqltuneError(f"{image} contains torch (or python3 failed there: exit {done.returncode})")


def check_placement(result: StepResult) -> str:
    """The placement task returned, through its executor, what `place` decides for its parameters."""
    from sqltune.pipeline.placement import place

    params = PARAMETERS["placement"]
    expected = place(
        params["gpu_count"], params["num_nodes"], params["rl_steps"], params["gpu_node_selector"],
        params["gpu_tolerations"],
    )._asdict()  # fmt: skip
    returned = result.executor_output.get("parameterValues", {})
    if returned != expected:
        raise SqltuneError(f"placement returned {returned}, expected {expected}")
    return f"train_gpus {returned['train_gpus']}, predict_gpus {returned['predict_gpus']}"


def check_publish(result: StepResult, s3_env: dict[str, str], workspace: Workspace) -> str:
    """The version publish returned is in the bucket and verifies after a pull."""
    from sqltune.publish.registry import Registry

    uri = result.executor_output["parameterValues"]["Output"]
    params = PARAMETERS["publish"]
    prefix = f"s3://{BUCKET}/{params['prefix']}/{params['model_name']}/"
    if not uri.startswith(prefix):
        raise SqltuneError(f"publish returned {uri!r}, not a version under {prefix}")
    version = uri[len(prefix) :].strip("/")
    registry = Registry(BUCKET, params["prefix"], params["model_name"], s3_env["AWS_ENDPOINT_URL"])
    pulled = registry.pull(version, workspace.path / "pulled")
    verify_artifact(pulled)
    return uri


def image_test(
    engine: Engine, steps: Sequence[str], bases: dict[str, str], ca_bundle: Path | None, workspace: Workspace
) -> None:
    """Build the selected images, run the pipeline's chain up to the last selected step, check it all."""
    from sqltune.locals3 import local_s3
    from sqltune.sample_data import write_sample_dataset

    bases = prepare_bases(engine, steps, bases, workspace.path)
    built = build_all(engine, steps, bases, ca_bundle)
    for step in steps:
        check_image(engine, step)
    spec = load_pipeline()
    chain = STEPS[: max(STEPS.index(step) for step in steps) + 1]
    sample = workspace.path / "sample"
    write_sample_dataset(sample)
    _run(["chmod", "-R", "a+rX", str(sample)], "making the sample dataset readable")  # mounted read-only, for any user
    produced: dict[tuple[str, str], Artifact] = {}
    results = []
    with local_s3(workspace.path / "s3", buckets=[BUCKET]) as server:
        s3_env = server.env()
        os.environ.update(s3_env)  # for the publish check here; containers get the names only (`--env NAME`)
        runtime = {
            "preprocess": {"source_uri": str(sample)},
            "train": {"source_uri": str(sample)},
            "publish": {"endpoint_url": s3_env["AWS_ENDPOINT_URL"]},
        }
        for step in chain:
            parameters = {**PARAMETERS[step], **runtime.get(step, {})}
            print(f"--- {step}: {'in its image' if step in steps else 'on the host'}", flush=True)
            result = run_step(engine if step in steps else None, spec, step, parameters, produced, workspace, s3_env)
            results.append(result)
        for task, image_step in HELPER_TASKS.items():
            if image_step in steps:
                print(f"--- {task}: in the {image_step} image", flush=True)
                results.append(run_step(engine, spec, task, PARAMETERS[task], produced, workspace, s3_env))
        summary = {
            "evaluate": lambda r: f"EX {r.executor_output['parameterValues']['Output']}",
            "placement": check_placement,
        }
        if "publish" in chain:
            summary["publish"] = lambda r: check_publish(r, s3_env, workspace)
        print("\nimage test passed:")
        for r in results:
            extra = summary[r.step](r) if r.step in summary else ""
            print(f"  {r.step:<10} {r.where:<5} {r.seconds:6.1f} s  {extra}")
    started = time.perf_counter()
    followed = check_trainjob_follow(engine, image_for(steps[0]), workspace.path / "trainjob")
    print(f"  {'trainjob':<10} {'image':<5} {time.perf_counter() - started:6.1f} s  {followed}")
    print(size_table(engine, built))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="images/tools/imagetest.py", description=__doc__.split("\n")[0])
    add_build_options(parser)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (artifacts, logs) for a look")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="sqltune-image-test-"))
    try:
        engine = find_engine(work / "engine")
        image_test(engine, parse_steps(args.steps), parse_bases(args.base), args.ca_bundle, Workspace(work))
    except SqltuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
