"""One definition per step setting: a config dataclass field holds its name, type, default and help.

A step's config (`TrainConfig`, `PredictConfig`, ...) declares each setting once with `setting()`. From it
come the step's CLI options (`config_command`), the KFP component's parameters (same names, checked by a
test) and the pipeline's: a setting is `learning_rate` in the config, `--learning-rate` on the CLI and
`learning_rate` in the Kubeflow UI. Settings the UI form would drown in are marked `pipeline="options"`:
the pipeline sets them through one validated dict parameter per step (`train_options`, ...).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import types
import typing
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, TypeVar

import typer

from sqltune.errors import SqltuneError

# How the pipeline sets a setting: its own parameter, a key of `<step>_options`, or the component itself (FIXED).
PARAM, OPTIONS, FIXED = "param", "options", "fixed"
# Set (and inherited by the training workers and a TrainJob's pods) once a pipeline step built its config from its
# parameters: advice in errors then names pipeline parameters and options keys instead of CLI flags.
FROM_PIPELINE_ENV = "SQLTUNE_SETTINGS_FROM_PIPELINE"
Config = TypeVar("Config")


def setting(
    default: Any,
    help: str,
    *,
    choices: type[Enum] | None = None,
    aliases: tuple[str, ...] = (),
    pipeline: str = PARAM,
    envvar: str | None = None,
) -> Any:
    """A config field with its CLI help, allowed values, extra CLI flags (today's short ones) and pipeline role.


    A `default` of `...` makes the setting required (a required CLI option, a dataclass field without default);
    `envvar` is an environment variable the CLI reads the setting from when the option is not given.
    """
    if pipeline not in (PARAM, OPTIONS, FIXED):
        raise ValueError(f"pipeline must be {PARAM!r}, {OPTIONS!r} or {FIXED!r}")
    metadata = {"help": help, "choices": choices, "aliases": aliases, "pipeline": pipeline, "envvar": envvar}
    if default is ...:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class SettingError(SqltuneError):
    """A setting holds a value it cannot take. `step` and `name` say which setting (so a caller that set it under
    another name, a pipeline parameter or an options key, can say so), `expected` what it takes."""

    def __init__(self, step: str, name: str, value: Any, expected: str) -> None:
        self.step, self.name, self.value, self.expected = step, name, value, expected
        super().__init__(f"{step} parameter {name}={value!r} is invalid: expected {expected}")


def check_settings(config: Any, step: str) -> None:
    """Every setting holds a value of its declared type, and one of its `choices` where it has them: the CLI
    parses and checks its options, but a library call, a component parameter or an options dict may hold
    anything (`"false"` is truthy)."""
    hints = _hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        expected = _expected_type(hints[field.name], value)
        if expected:
            raise SettingError(step, field.name, value, f"{expected}, not {_describe(value)}")
        choices: type[Enum] | None = field.metadata.get("choices")
        if choices is not None and value is not None and value not in {c.value for c in choices}:
            raise SettingError(step, field.name, value, "one of " + ", ".join(c.value for c in choices))


@functools.cache
def _hints(config: type) -> dict[str, Any]:
    return typing.get_type_hints(config)


_TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def _expected_type(annotation: Any, value: Any) -> str | None:
    """What `annotation` takes, when `value` is not of it; None when it is."""
    options = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    if value is None and type(None) in options:
        return None
    names = []
    for option in options:
        if option is type(None):
            continue
        if typing.get_origin(option) is list:
            if isinstance(value, list) and all(isinstance(item, str) for item in value):
                return None
            names.append("a list of strings")
            continue
        number = option is float and isinstance(value, int | float)
        if (number or isinstance(value, option)) and (option is bool) == isinstance(value, bool):
            return None
        names.append(_TYPE_NAMES.get(option, getattr(option, "__name__", str(option))))
    return " or ".join(names) + (" (or unset)" if type(None) in options else "")


def _is_union(annotation: Any) -> bool:
    return isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"{type(value).__name__} {value!r}" if value is not None else "none"


def settings_of(config: type) -> list[dataclasses.Field]:
    return list(dataclasses.fields(config))


def pipeline_settings(config: type, role: str) -> list[str]:
    """The names of the settings the pipeline sets as `role` (PARAM or OPTIONS)."""
    return [f.name for f in settings_of(config) if f.metadata.get("pipeline", PARAM) == role]


def build_config(config: type[Config], params: Mapping[str, Any], options: Mapping[str, Any], what: str) -> Config:
    """The config from a component's parameters (its `locals()`: other names are ignored) plus its options dict.

    A component takes each pipeline-parameter setting under the setting's own name, so its locals hold them;
    an options key that is such a setting, or no setting at all, is an error naming `what`.
    """
    if not isinstance(options, Mapping):
        raise SqltuneError(f"{what} must be a dict of settings, not {type(options).__name__}")
    roles = {f.name: f.metadata.get("pipeline", PARAM) for f in settings_of(config)}
    for key in options:
        if roles.get(key) == PARAM:
            raise SqltuneError(f"{what}: {key!r} is a pipeline parameter of its own; set it there")
        if roles.get(key) != OPTIONS:
            allowed = ", ".join(sorted(pipeline_settings(config, OPTIONS)))
            raise SqltuneError(f"{what}: unknown setting {key!r}; expected one of {allowed}")
    own = {name: params[name] for name, role in roles.items() if role == PARAM and name in params}
    hints = _hints(config)
    chosen = {key: _whole(value, hints[key], what, key) for key, value in options.items()}
    os.environ[FROM_PIPELINE_ENV] = "1"
    try:
        return config(**own, **chosen)
    except SettingError as exc:
        if exc.name in chosen:  # say where the user set it
            raise SqltuneError(f"{what}: {exc.name!r}={exc.value!r} is invalid: expected {exc.expected}") from None
        raise


def _whole(value: Any, annotation: Any, what: str, key: str) -> Any:
    """An integer setting's value: KFP passes a dict parameter as a protobuf Struct, whose numbers are floats."""
    options = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    if int not in options or float in options or not isinstance(value, float):
        return value
    if not value.is_integer():
        raise SqltuneError(f"{what}: {key!r} must be a whole number, not {value!r}")
    return int(value)


def how_to_set(config: type, **values: Any) -> str:
    """How the user sets these settings from where they started the run: `--no-base-name-check` on the command
    line, `predict_options {"base_name_check": false}` in a pipeline run (see FROM_PIPELINE_ENV)."""
    parts = []
    for name, value in values.items():
        where = setting_name(config, name)
        if not os.environ.get(FROM_PIPELINE_ENV):
            parts.append(where if value is True else f"--no-{where[2:]}" if value is False else f"{where} {value}")
        elif where.endswith("_options"):
            parts.append(f'{where} {{"{name}": {json.dumps(value)}}}')
        else:
            parts.append(f"pipeline parameter {where}={json.dumps(value)}")
    return (" and " if os.environ.get(FROM_PIPELINE_ENV) else " ").join(parts)


def setting_name(config: type, name: str) -> str:
    """The name the user sets a setting by where the run started: its CLI flag, or its pipeline parameter (the
    step's options dict for the rarely changed ones)."""
    from sqltune.pipeline import QUALIFIED

    if not os.environ.get(FROM_PIPELINE_ENV):
        return "--" + name.replace("_", "-")
    step = config.__name__.removesuffix("Config").lower()
    role = next(f.metadata.get("pipeline", PARAM) for f in settings_of(config) if f.name == name)
    return f"{step}_options" if role == OPTIONS else QUALIFIED.get((step, name), (name,))[0]


def config_args(config: Any) -> list[str]:
    """The CLI options that give `config` back (the inverse of `config_command`): to start the same step
    elsewhere, as the training launcher's workers and a Kubeflow TrainJob do. None ("decide at run time")
    is left out, so the other side decides."""
    args = []
    for field in settings_of(type(config)):
        value = getattr(config, field.name)
        flag = "--" + field.name.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, list):
            args += [flag, ",".join(value)]
        else:
            args += [flag, str(value.value if isinstance(value, Enum) else value)]
    return args


def _cli_type(annotation: Any) -> Any:
    """The type typer parses a setting as: `X | None` as X, `str | list[str]` (several names) as str."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if _is_union(annotation):
        return str if str in args else args[0]
    return annotation


def _option(field: dataclasses.Field, annotation: Any, default: Any) -> inspect.Parameter:
    flag = "--" + field.name.replace("_", "-")
    choices: type[Enum] | None = field.metadata.get("choices")
    cli_type = choices or _cli_type(annotation)
    default = ... if default is dataclasses.MISSING else default
    if choices is not None and default not in (None, ...):
        default = choices(default)
    # Booleans are --x/--no-x; a None default is a third state: "decide at run time".
    decls = [f"{flag}/--no-{flag[2:]}"] if cli_type is bool else [flag, *field.metadata.get("aliases", ())]
    help_text = field.metadata.get("help", "")
    option = typer.Option(
        default, *decls, help=help_text, show_default=default not in (None, ...), envvar=field.metadata.get("envvar")
    )
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=cli_type)


def config_command(
    config: type, defaults: Mapping[str, Any] | None = None, name: str = "config"
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Make a CLI function that takes `config=` into a typer command with one option per config setting.

    The function declares its inputs and outputs as usual and a `config` parameter; the command's options
    are those plus the config's settings (`--learning-rate`, with the field's help, default and choices).
    `defaults` replaces some of the config's defaults for this command (a benchmark's recipe); `name` is the
    parameter the function takes the config as.
    """
    hints = typing.get_type_hints(config)
    fields = settings_of(config)
    defaults = dict(defaults or {})

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for key, p in inspect.signature(function).parameters.items() if key != name]
        clash = {p.name for p in own} & {f.name for f in fields}
        if clash:
            raise TypeError(f"{function.__name__}: {', '.join(sorted(clash))} are settings of {config.__name__}")

        @functools.wraps(function)
        def command(**kwargs: Any) -> Any:
            values = {f.name: kwargs.pop(f.name) for f in fields}
            values = {key: v.value if isinstance(v, Enum) else v for key, v in values.items()}
            return function(**kwargs, **{name: config(**values)})

        parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        parameters += [_option(f, hints[f.name], defaults.get(f.name, f.default)) for f in fields]
        command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        return command

    return decorate
