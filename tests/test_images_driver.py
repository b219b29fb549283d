"""The image-test driver without a container engine: the executor input it builds from the compiled pipeline,
run through KFP's own executor on the host, the step selection and the podman settings it writes."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest

from imagebuild import find_engine, parse_bases, parse_steps, podman_conf
from imagetest import PARAMETERS
from launcher_run import RUN_PREFIX, Workspace, component, executor_input, load_pipeline, run_step, task_inputs
from sqltune.artifacts import read_jsonl, verify_artifact, write_manifest
from sqltune.errors import SqltuneError
from sqltune.sample_data import write_sample_dataset
from step_checks import check_output, check_placement


def test_wiring_follows_the_compiled_pipeline_into_the_publish_condition() -> None:
    wiring = task_inputs(load_pipeline())
    assert wiring["publish"] == {"adapter": ("train", "adapter"), "evaluation": ("evaluate", "evaluation")}
    assert wiring["evaluate"]["predictions"] == ("predict", "predictions")
    base = {"eval_data": ("preprocess", "eval_data"), "databases": ("preprocess", "databases")}
    assert wiring["predict-2"] == base, "the base-model branch has no adapter"


def test_executor_input_names_a_parameter_the_test_does_not_pass() -> None:
    comp, _ = component(load_pipeline(), "train")
    parameters = {k: v for k, v in PARAMETERS["train"].items() if k != "max_steps"}
    with pytest.raises(SqltuneError, match=r"parameter\(s\) max_steps"):
        executor_input(comp, parameters, {}, {}, "minio://", "/tmp/kfp_outputs")


def test_preprocess_runs_through_the_kfp_executor_as_the_launcher_would(tmp_path: Path) -> None:
    """No engine: the same command and executor input the image gets, with host paths for the artifact root."""
    sample = tmp_path / "sample"
    write_sample_dataset(sample)
    workspace = Workspace(tmp_path / "work")
    produced: dict = {}
    parameters = {**PARAMETERS["preprocess"], "source_uri": str(sample)}
    result = run_step(None, load_pipeline(), "preprocess", parameters, produced, workspace, {})

    assert result.where == "host"
    root = workspace.minio / RUN_PREFIX / "preprocess"
    assert set(produced) == {("preprocess", name) for name in ("train_data", "eval_data", "databases")}
    assert verify_artifact(root / "eval_data")["kind"]
    assert len(read_jsonl(root / "eval_data" / "records.jsonl")) == PARAMETERS["preprocess"]["eval_limit"]
    assert (root / "databases" / "tables.json").is_file()
    # The metadata the component sets reaches the next step's input artifact, as in KFP.
    assert produced[("preprocess", "train_data")].metadata["records"] == PARAMETERS["preprocess"]["train_limit"]
    output = json.loads((workspace.path / "outputs" / "preprocess" / "output_metadata.json").read_text())
    assert output["artifacts"]["eval_data"]["artifacts"][0]["metadata"]["split"] == "dev"


def test_the_placement_task_returns_its_decision_through_the_kfp_executor(tmp_path: Path) -> None:
    """The helper task's NamedTuple of strings, dict and list comes back as KFP output parameters, as `place` says;
    the same check runs in the preprocess image under `make image-test`."""
    result = run_step(None, load_pipeline(), "placement", PARAMETERS["placement"], {}, Workspace(tmp_path), {})
    assert check_placement(result.executor_output, PARAMETERS["placement"]) == "train_gpus 1, predict_gpus 4"
    returned = result.executor_output["parameterValues"]
    assert returned["train_tolerations"] == PARAMETERS["placement"]["gpu_tolerations"]
    result.executor_output["parameterValues"]["train_gpus"] = "4"
    with pytest.raises(SqltuneError, match="placement returned"):
        check_placement(result.executor_output, PARAMETERS["placement"])


def test_a_failing_step_is_an_error_that_names_it(tmp_path: Path) -> None:
    parameters = {**PARAMETERS["preprocess"], "source_uri": str(tmp_path / "no-such-dataset")}
    with pytest.raises(SqltuneError, match=r"preprocess \(host\) exited with code 1"):
        run_step(None, load_pipeline(), "preprocess", parameters, {}, Workspace(tmp_path / "work"), {})


def test_an_output_that_does_not_hold_is_an_error_that_names_it(tmp_path: Path) -> None:
    """A directory must verify against its manifest, a file must hold something, Metrics must have values."""
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "weights.bin").write_bytes(b"weights")
    write_manifest(adapter, "adapter")
    check_output(adapter, "system.Model", {}, "train: output adapter")
    (adapter / "weights.bin").write_bytes(b"changed")
    with pytest.raises(SqltuneError, match=r"train: output adapter at .*adapter does not verify: .*weights\.bin"):
        check_output(adapter, "system.Model", {}, "train: output adapter")
    report = tmp_path / "report.md"
    report.write_text("")
    with pytest.raises(SqltuneError, match=r"evaluate: output report is missing or empty at .*report\.md"):
        check_output(report, "system.Markdown", {}, "evaluate: output report")
    check_output(tmp_path / "metrics", "system.Metrics", {"ex": 0.5}, "evaluate: output metrics")
    with pytest.raises(SqltuneError, match="evaluate: output metrics holds no metrics in the executor output"):
        check_output(tmp_path / "metrics", "system.Metrics", {}, "evaluate: output metrics")


def test_steps_and_bases_are_checked() -> None:
    assert parse_steps("publish, evaluate") == ["evaluate", "publish"], "pipeline order, commas or spaces"
    assert parse_steps("") == ["preprocess", "train", "predict", "evaluate", "publish"]
    with pytest.raises(SqltuneError, match=r"unknown step\(s\) deploy"):
        parse_steps("evaluate deploy")
    assert parse_bases(["CUDA_IMAGE=localhost/u:24.04"]) == {"CUDA_IMAGE": "localhost/u:24.04"}
    with pytest.raises(SqltuneError, match="PYTHON_IMAGE"):
        parse_bases(["PYTHON=python:3.12"])


def test_podman_settings_stay_within_this_machine_limits(tmp_path: Path) -> None:
    text = podman_conf(tmp_path).read_text()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = min(1048576, hard) if hard != resource.RLIM_INFINITY else 1048576
    assert f'"nofile={nofile}:{nofile}"' in text


def test_no_engine_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SqltuneError, match=r"no running container engine .*neither is installed"):
        find_engine(tmp_path / "state")
