"""The compiled pipeline YAML: where it is, its declared parameters, and typed parameter values.

`sqltune run`, `sqltune submit` and `sqltune schedule` all take parameters as `--param key=value` or a
YAML file; both are checked and converted here against the pipeline's own declared types, so a typo or a
wrong type is a clear error before anything starts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from sqltune.errors import SqltuneError
from sqltune.pipeline import PIPELINE_FILE

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
    params = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    return {name: d["defaultValue"] for name, d in params.items() if "defaultValue" in d}


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


def check_step_options(params: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    """Validate each `<step>_options` dict as its step will, so a wrong setting fails before a run starts.

    A config's required settings (publish's bucket, ...) are pipeline parameters of the same name.
    """
    from dataclasses import MISSING, fields

    from sqltune.evaluate.config import EvaluateConfig
    from sqltune.predict.config import PredictConfig
    from sqltune.publish.config import PublishConfig
    from sqltune.settings import build_config
    from sqltune.train.config import TrainConfig

    values = {**defaults, **params}
    steps = {"train": TrainConfig, "predict": PredictConfig, "evaluate": EvaluateConfig, "publish": PublishConfig}
    for step, config in steps.items():
        name = f"{step}_options"
        if name in params:
            required = {f.name: values[f.name] for f in fields(config) if f.default is MISSING}
            build_config(config, required, params[name], name)


def pipeline_params(
    pipeline_file: str | Path, config: str | Path | None, pairs: Iterable[str] | None
) -> dict[str, Any]:
    """What every command that starts the pipeline takes: a YAML file and `--param` pairs, checked against it."""
    spec = load_pipeline_spec(pipeline_file)
    params = load_params(config, pairs or [], spec)
    check_step_options(params, parameter_defaults(spec))
    return params
