"""One name per setting: each step config's settings exist, under the same names, in its CLI, its KFP
component and the pipeline; pipeline defaults differ from the library's only where that is listed."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import typer
from kfp.dsl.types.type_annotations import is_Input_Output_artifact_annotation
from sqltune.components.evaluate import evaluate as evaluate_component
from sqltune.components.predict import predict as predict_component
from sqltune.components.preprocess import preprocess as preprocess_component
from sqltune.components.publish import publish as publish_component
from sqltune.components.train import train as train_component
from sqltune.pipelines.text2sql.pipeline import PIPELINE_DEFAULTS, text2sql
from typer.main import get_command

from sqltune.cli import app
from sqltune.errors import SqltuneError
from sqltune.evaluate.config import EvaluateConfig
from sqltune.pipeline import QUALIFIED
from sqltune.predict.config import PredictConfig
from sqltune.preprocess.config import PreprocessConfig
from sqltune.publish.config import PublishConfig
from sqltune.settings import FIXED, OPTIONS, PARAM, build_config, config_command, setting
from sqltune.train.config import TrainConfig

STEPS = {
    "preprocess": (PreprocessConfig, preprocess_component),
    "train": (TrainConfig, train_component),
    "predict": (PredictConfig, predict_component),
    "evaluate": (EvaluateConfig, evaluate_component),
    "publish": (PublishConfig, publish_component),
}
# Component parameters that are inputs or locations, not settings; and where a TrainJob's pods go.
NOT_SETTINGS = {"source_uri", "base_model", "checkpoint_uri", "run_id", "endpoint_url"}
NOT_SETTINGS |= {"dataset"}  # train: where the GRPO stage finds the training questions' databases
TRAINJOB_PLACEMENT = {"trainer_runtime", "gpu_type", "gpu_node_selector", "gpu_tolerations", "s3_secret_name",
                      "hf_token_secret_name"}  # fmt: skip


def _role(field: dataclasses.Field) -> str:
    return field.metadata["pipeline"]


def _component_parameters(component) -> dict[str, inspect.Parameter]:
    """The component's plain parameters (artifacts are typed Input[...] / Output[...])."""
    parameters = inspect.signature(component.python_func).parameters
    return {n: p for n, p in parameters.items() if not is_Input_Output_artifact_annotation(p.annotation)}


def _pipeline_names(step: str, name: str) -> tuple[str, ...]:
    return QUALIFIED.get((step, name), (name,))


@pytest.mark.parametrize("step", STEPS)
def test_every_setting_is_a_cli_option_of_the_same_name(step):
    config, _ = STEPS[step]
    options = {opt for param in get_command(app).commands[step].params for opt in param.opts}
    for field in dataclasses.fields(config):
        assert "--" + field.name.replace("_", "-") in options, f"sqltune {step} has no option for {field.name}"


@pytest.mark.parametrize("step", STEPS)
def test_component_and_pipeline_take_every_setting_under_its_name(step):
    config, component = STEPS[step]
    own = _component_parameters(component)
    pipeline = inspect.signature(text2sql.pipeline_func).parameters
    settings = {f.name: f for f in dataclasses.fields(config)}
    for name, field in settings.items():
        if _role(field) == PARAM:
            for qualified in _pipeline_names(step, name):
                assert qualified in pipeline, f"the pipeline has no parameter {qualified} for {step}.{name}"
                component_name = qualified if step == "preprocess" else name
                assert component_name in own, f"the {step} component has no parameter {component_name}"
        elif _role(field) == OPTIONS:
            assert f"{step}_options" in own and f"{step}_options" in pipeline, f"{step}.{name} cannot be set"
        else:
            assert _role(field) == FIXED
    for name in own:
        known = name in settings or name == f"{step}_options" or name in NOT_SETTINGS
        known = known or (step == "train" and name in TRAINJOB_PLACEMENT)
        known = known or any(name in _pipeline_names(step, s) for s in settings)
        assert known, f"the {step} component takes {name!r}, which is no {config.__name__} setting"


@pytest.mark.parametrize("step", STEPS)
def test_pipeline_defaults_are_the_librarys_unless_listed_with_a_reason(step):
    config, _ = STEPS[step]
    pipeline = inspect.signature(text2sql.pipeline_func).parameters
    for field in dataclasses.fields(config):
        if _role(field) != PARAM:
            continue
        for name in _pipeline_names(step, field.name):
            default = pipeline[name].default
            if name in PIPELINE_DEFAULTS:
                value, reason = PIPELINE_DEFAULTS[name]
                assert default == value and reason, name
            else:
                assert default == field.default, (
                    f"pipeline {name}={default!r} but {config.__name__} has {field.default!r}"
                )


def test_options_dicts_are_validated_by_the_config():
    config = build_config(TrainConfig, {"batch_size": 2}, {"packing": True}, "train_options")
    assert (config.batch_size, config.packing) == (2, True)
    with pytest.raises(SqltuneError, match="train_options: 'batch_size' is a pipeline parameter of its own"):
        build_config(TrainConfig, {}, {"batch_size": 2}, "train_options")
    with pytest.raises(SqltuneError, match="predict_options: unknown setting 'num_beams'"):
        build_config(PredictConfig, {}, {"num_beams": 4}, "predict_options")
    with pytest.raises(SqltuneError, match=r"train_options: 'keep_checkpoints'=0 is invalid: expected >= 1"):
        build_config(TrainConfig, {}, {"keep_checkpoints": 0}, "train_options")
    # KFP hands a dict parameter over as a protobuf Struct: its numbers arrive as floats.
    assert build_config(TrainConfig, {}, {"num_generations": 2.0}, "train_options").num_generations == 2
    assert type(build_config(TrainConfig, {}, {"num_generations": 2.0}, "train_options").num_generations) is int
    with pytest.raises(SqltuneError, match=r"train_options: 'num_generations' must be a whole number, not 2\.5"):
        build_config(TrainConfig, {}, {"num_generations": 2.5}, "train_options")


@pytest.mark.parametrize(
    ("config", "values", "message"),
    [
        (TrainConfig, {"packing": "false"}, "expected true or false, not the string 'false'"),
        (TrainConfig, {"lora_rank": 8.0}, "expected a whole number, not float 8.0"),
        (TrainConfig, {"lora_rank": True}, "expected a whole number, not bool True"),
        (TrainConfig, {"learning_rate": "1e-4"}, "expected a number, not the string '1e-4'"),
        (TrainConfig, {"bf16": "yes"}, r"expected true or false \(or unset\)"),
        (TrainConfig, {"target_modules": ["q_proj", 3]}, "expected a string or a list of strings"),
        (TrainConfig, {"lr_scheduler": "sideways"}, "expected one of linear, cosine"),
        (PredictConfig, {"top_p": "high"}, "expected a number, not the string 'high'"),
        (PredictConfig, {"limit": "10"}, r"expected a whole number \(or unset\), not the string '10'"),
        (EvaluateConfig, {"workers": None}, "expected a whole number, not none"),
        (PreprocessConfig, {"dataset": "spider", "split": "dev", "schema_style": 1}, "expected a string, not int 1"),
        (PublishConfig, {"bucket": "b", "model_name": "m", "force": "true"}, "expected true or false"),
    ],
)
def test_every_setting_holds_a_value_of_its_type(config, values, message):
    """A library call or a component parameter may hold anything: the config refuses a value of the wrong type
    by name, whichever way it came in (the CLI parses its options itself)."""
    name = next(iter(values)) if config is not PreprocessConfig else "schema_style"
    name = {PublishConfig: "force"}.get(config, name)
    with pytest.raises(SqltuneError, match=rf"parameter {name}=.* is invalid: {message}"):
        config(**values)


def test_an_options_key_of_the_wrong_type_is_named_with_its_dict():
    with pytest.raises(SqltuneError, match=r"^train_options: 'packing'='false' is invalid: expected true or false"):
        build_config(TrainConfig, {}, {"packing": "false"}, "train_options")
    with pytest.raises(SqltuneError, match=r"^train parameter lora_rank='8' is invalid"):  # set as a parameter
        build_config(TrainConfig, {"lora_rank": "8"}, {}, "train_options")
    assert build_config(PredictConfig, {}, {"limit": 3.0}, "predict_options").limit == 3  # a Struct's number


@dataclasses.dataclass
class Demo:
    rate: float = setting(0.5, "A rate.", aliases=("-r",))
    switch: bool | None = setting(None, "Three states.")
    names: str | list[str] = setting("all", "Names.")


def test_generated_options_parse_into_the_config():
    seen = []

    @config_command(Demo, defaults={"rate": 0.25})
    def command(out: str = typer.Option(...), *, config: Demo) -> None:
        seen.append((out, config))

    runner = typer.Typer()
    runner.command()(command)
    runner(["--out", "x", "-r", "2", "--no-switch"], standalone_mode=False)
    runner(["--out", "y"], standalone_mode=False)
    assert seen == [("x", Demo(2.0, False, "all")), ("y", Demo(0.25, None, "all"))]


def test_advice_names_what_the_user_can_change_where_they_are(monkeypatch):
    """On the command line a flag; in a pipeline run (once a component built its config) the pipeline parameter,
    under its qualified name, or the step's options key."""
    from sqltune.settings import FROM_PIPELINE_ENV, how_to_set, setting_name

    monkeypatch.delenv(FROM_PIPELINE_ENV, raising=False)
    assert how_to_set(PredictConfig, base_name_check=False) == "--no-base-name-check"
    assert how_to_set(TrainConfig, parallelism="fsdp", num_nodes=2) == "--parallelism fsdp --num-nodes 2"
    build_config(PredictConfig, {"batch_size": 4}, {}, "predict_options")  # as the predict component does
    assert how_to_set(PredictConfig, base_name_check=False) == 'predict_options {"base_name_check": false}'
    assert how_to_set(PredictConfig, batch_size=2) == "pipeline parameter predict_batch_size=2"
    assert setting_name(TrainConfig, "nproc_per_node") == "gpu_count"
    assert how_to_set(TrainConfig, fresh_if_corrupt_checkpoint=True) == (
        'train_options {"fresh_if_corrupt_checkpoint": true}'
    )
