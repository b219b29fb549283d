"""The compiled pipeline YAML: where it is, its declared parameters, and typed parameter values.

`sqltune run`, `sqltune submit` and `sqltune schedule` all take parameters as `--param key=value` or a
YAML file; both are checked and converted here against the pipeline's own declared types, so a typo or a
wrong type is a clear error before anything starts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from sqltune.errors import SqltuneError
from sqltune.pipeline import PIPELINE_FILE
from sqltune.settings import SettingError

_PARSERS = {
    "STRING": str,
    "NUMBER_INTEGER": int,
    "NUMBER_DOUBLE": float,
    "BOOLEAN": lambda text: {"true": True, "false": False}[text.strip().lower()],
    "STRUCT": json.loads,
    "LIST": json.loads,
}
_PYTHON_TYPES = {
    "STRING": (str,),
    "NUMBER_INTEGER": (int,),
    "NUMBER_DOUBLE": (int, float),
    "BOOLEAN": (bool,),
    "STRUCT": (dict,),
    "LIST": (list,),
}


def load_pipeline_spec(path: str | Path = PIPELINE_FILE) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SqltuneError(f"compiled pipeline not found: {path} (run from the repository root, or `make compile`)")
    documents = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    if not documents or "root" not in documents[0]:
        raise SqltuneError(f"{path} is not a compiled KFP pipeline (no `root` section)")
    return documents[0]


def parameter_types(spec: Mapping[str, Any]) -> dict[str, str]:
    """{name: KFP parameter type} of the pipeline's root inputs."""
    params = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    return {name: definition["parameterType"] for name, definition in params.items()}


def parameter_defaults(spec: Mapping[str, Any]) -> dict[str, Any]:
    """{name: default} of the pipeline's root inputs; integers as int (the YAML holds protobuf numbers: floats)."""
    params = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    return {
        name: int(d["defaultValue"]) if d["parameterType"] == "NUMBER_INTEGER" else d["defaultValue"]
        for name, d in params.items()
        if "defaultValue" in d
    }


def _unknown(name: str, types: Mapping[str, str]) -> SqltuneError:
    return SqltuneError(f"unknown pipeline parameter {name!r}; valid parameters: {', '.join(sorted(types))}")


def coerce_params(values: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """Check already-typed values (e.g. from a YAML file) against the declared types."""
    types = parameter_types(spec)
    checked = {}
    for name, value in values.items():
        if name not in types:
            raise _unknown(name, types)
        kind = types[name]
        if (isinstance(value, bool) and kind != "BOOLEAN") or not isinstance(value, _PYTHON_TYPES[kind]):
            raise SqltuneError(f"pipeline parameter {name!r} must be {kind}, got {value!r}")
        checked[name] = float(value) if kind == "NUMBER_DOUBLE" else value
    return checked


def parse_params(pairs: Iterable[str], spec: Mapping[str, Any]) -> dict[str, Any]:
    """`key=value` strings -> typed values (JSON for dict/list parameters, true/false for booleans)."""
    types = parameter_types(spec)
    parsed = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise SqltuneError(f"--param {pair!r}: expected key=value")
        if name not in types:
            raise _unknown(name, types)
        try:
            parsed[name] = _PARSERS[types[name]](text)
        except (ValueError, KeyError) as exc:
            raise SqltuneError(f"--param {name}={text!r}: not a valid {types[name]} ({exc})") from None
    return coerce_params(parsed, spec)


def load_params(config: str | Path | None, pairs: Iterable[str], spec: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters from an optional YAML file, overridden by `--param` pairs."""
    values: dict[str, Any] = {}
    if config:
        path = Path(config)
        if not path.is_file():
            raise SqltuneError(f"parameter file not found: {path}")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise SqltuneError(f"{path}: expected a mapping of parameter names to values")
        values.update(coerce_params(loaded, spec))
    values.update(parse_params(pairs, spec))
    return values


# How each step's component builds its configs from its parameters: the same functions the components call.
def _step_configs() -> dict[str, Callable[[Mapping[str, Any]], Any]]:
    from sqltune.evaluate.config import EvaluateConfig
    from sqltune.pipeline.placement import place
    from sqltune.predict.config import PredictConfig
    from sqltune.preprocess.config import split_configs
    from sqltune.publish.config import component_config
    from sqltune.settings import build_config
    from sqltune.train.config import stage_configs

    return {
        "preprocess": split_configs,
        "placement": lambda p: place(p["gpu_count"], p["num_nodes"], p["rl_steps"], {}, []),
        "train": stage_configs,
        "predict": lambda p: build_config(PredictConfig, p, p["predict_options"], "predict_options"),
        "evaluate": lambda p: build_config(EvaluateConfig, p, p["evaluate_options"], "evaluate_options"),
        "publish": component_config,
    }


# Values the pipeline itself reads (not a step's setting), with what they must be.
_PIPELINE_VALUES = {"min_ex": (lambda v: 0 <= v <= 1, "in [0, 1] (the EX the fine-tuned model must reach)")}


def check_values(params: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
    """Check every value the run would start with, as the steps will check it, before any step starts.

    Each task's parameters are resolved from the compiled pipeline (which pipeline parameter feeds which
    component input, through nested condition DAGs), and the task's component builds its configs from them
    with its own function; an invalid value is reported under the pipeline parameter the user set, or as
    `<step>_options: 'key'`.
    """
    values = {**parameter_defaults(spec), **params}
    for name, (valid, expected) in _PIPELINE_VALUES.items():
        if name in values and not valid(values[name]):
            raise SqltuneError(f"pipeline parameter {name}={values[name]!r} is invalid: expected {expected}")
    builders = _step_configs()
    for component, inputs in task_parameters(spec, values):
        step = _STEP_OF.sub("", component.removeprefix("comp-"))
        if step not in builders:
            continue
        try:
            builders[step]({name: value for name, (value, _) in inputs.items()})
        except SettingError as exc:
            fed_by = inputs.get(exc.name, (None, None))[1]
            if fed_by is None and f"{step}_options" in inputs:  # a setting left at its default: set it there
                raise SqltuneError(
                    f"{step}_options: {exc.name!r}={exc.value!r} is invalid: expected {exc.expected}"
                ) from None
            if fed_by is None:
                raise
            raise SqltuneError(
                f"pipeline parameter {fed_by}={exc.value!r} is invalid: expected {exc.expected}"
            ) from None


_STEP_OF = re.compile(r"-\d+$")  # kfp names a component's second use `comp-predict-2`


def task_parameters(
    spec: Mapping[str, Any], values: Mapping[str, Any]
) -> Iterator[tuple[str, dict[str, tuple[Any, str | None]]]]:
    """(component name, {input: (value, the pipeline parameter it comes from)}) of every task whose inputs are known
    before the run: constants and pipeline parameters, through condition DAGs; task outputs are left out."""

    def walk(dag: Mapping[str, Any], scope: Mapping[str, tuple[Any, str | None]]) -> Iterator[Any]:
        for task in dag.get("tasks", {}).values():
            inputs: dict[str, tuple[Any, str | None]] = {}
            for name, source in task.get("inputs", {}).get("parameters", {}).items():
                if "componentInputParameter" in source and source["componentInputParameter"] in scope:
                    inputs[name] = scope[source["componentInputParameter"]]
                elif "constant" in source.get("runtimeValue", {}):
                    inputs[name] = (source["runtimeValue"]["constant"], None)
            component = task["componentRef"]["name"]
            inner = spec["components"].get(component, {}).get("dag")
            if inner:
                yield from walk(inner, inputs)
            else:
                yield component, inputs

    root = {name: (value, name) for name, value in values.items()}
    yield from walk(spec["root"]["dag"], root)


def pipeline_params(
    pipeline_file: str | Path, config: str | Path | None, pairs: Iterable[str] | None
) -> dict[str, Any]:
    """What every command that starts the pipeline takes: a YAML file and `--param` pairs, checked against it."""
    spec = load_pipeline_spec(pipeline_file)
    params = load_params(config, pairs or [], spec)
    check_values(params, spec)
    return params
