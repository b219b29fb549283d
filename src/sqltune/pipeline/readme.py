"""Each component's README.md, generated from what the component is: its `metadata.yaml`, its signature and
docstring, and the settings its parameters set (type, default and help from the step's config). `sqltune compile`
writes them beside the components and a test compares each with a fresh render, so a page cannot drift from the
code it describes.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import re
import typing
from pathlib import Path
from typing import Any

from sqltune.artifacts import atomic_write_bytes
from sqltune.images import COMPONENTS, metadata
from sqltune.settings import OPTIONS, PARAM

README = "README.md"
_SECTION = re.compile(r"^(Args|Returns):\s*$", re.MULTILINE)
_ARG = re.compile(r"^    (\w+): (.*(?:\n {8}.*)*)", re.MULTILINE)


def _config_of(component: str) -> type | None:
    """The step config whose settings the component's parameters are (placement has none)."""
    configs = {
        "preprocess": "sqltune.preprocess.config:PreprocessConfig",
        "train": "sqltune.train.config:TrainConfig",
        "predict": "sqltune.predict.config:PredictConfig",
        "evaluate": "sqltune.evaluate.config:EvaluateConfig",
        "publish": "sqltune.publish.config:PublishConfig",
    }
    if component not in configs:
        return None
    module, name = configs[component].split(":")
    return getattr(importlib.import_module(module), name)


def _docstring(function: Any) -> tuple[str, dict[str, str], str]:
    """(the prose, {argument: description}, what it returns) of a Google-style docstring."""
    text = inspect.getdoc(function) or ""
    parts = _SECTION.split(text)
    prose, sections = parts[0].strip(), dict(zip(parts[1::2], parts[2::2], strict=True))
    args = {name: " ".join(body.split()) for name, body in _ARG.findall(sections.get("Args", ""))}
    return prose, args, " ".join(sections.get("Returns", "").split())


def _type_name(annotation: Any) -> str:
    if hasattr(annotation, "schema_title"):  # a KFP artifact type
        return annotation.schema_title.removeprefix("system.")
    options = [a for a in typing.get_args(annotation) if a is not type(None)]
    if options:  # X | None, str | list[str]
        names = " or ".join(_type_name(option) for option in options)
        return names + (" (or unset)" if type(None) in typing.get_args(annotation) else "")
    names = {str: "String", int: "Integer", float: "Float", bool: "Boolean", dict: "Dict", list: "List"}
    return names.get(typing.get_origin(annotation) or annotation, str(annotation))


def _settings(config: type | None) -> tuple[dict[str, dataclasses.Field], dict[str, Any]]:
    if config is None:
        return {}, {}
    return {f.name: f for f in dataclasses.fields(config)}, typing.get_type_hints(config)


def _default(field: dataclasses.Field) -> str:
    if field.default is dataclasses.MISSING:
        return "required"
    return f"`{json.dumps(field.default)}`"


def _row(*cells: str) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def render(component: str) -> str:
    """The README of `components/<component>/`."""
    meta = metadata(component)
    task = getattr(importlib.import_module(f"sqltune.components.{component}"), component)
    prose, described, returns = _docstring(task.python_func)
    config = _config_of(component)
    fields, hints = _settings(config)
    signature = inspect.signature(task.python_func)

    parameters, artifacts = [], []
    for name, parameter in signature.parameters.items():
        annotation = parameter.annotation
        origin = typing.get_origin(annotation)
        if origin is not None and hasattr(annotation, "__metadata__"):  # Input[X] / Output[X]
            kind = "output" if "Output" in str(annotation) else "input"
            artifact = typing.get_args(annotation)[0]
            artifacts.append(_row(f"`{name}`", kind, _type_name(artifact), described.get(name, "")))
            continue
        field = fields.get(name)
        help_text = described.get(name) or (field.metadata["help"] if field else "")
        if name == f"{component}_options":
            help_text = f"The rarely changed settings, as a dict: see [{name}](#{name})."
        parameters.append(_row(f"`{name}`", _type_name(annotation), help_text))

    lines = [f"# {component}", "", " ".join(meta["description"].split()), "", prose, ""]
    lines += ["## Parameters", "", _row("Name", "Type", "Description"), "|---|---|---|", *parameters, ""]
    if artifacts:
        lines += ["## Artifacts", "", _row("Name", "In/out", "Type", "Description"), "|---|---|---|---|"]
        lines += [*artifacts, ""]
    if returns:
        lines += ["## Returns", "", returns, ""]
    options = [f for f in fields.values() if f.metadata.get("pipeline", PARAM) == OPTIONS]
    if options:
        lines += [f"## {component}_options", "", "Keys of the dict, each a setting of the step (`sqltune "
                  f"{component} --help` has the same ones as flags); a wrong key, type or value stops the run "
                  "before any step starts.", ""]  # fmt: skip
        lines += [_row("Key", "Type", "Default", "Description"), "|---|---|---|---|"]
        lines += [_row(f"`{f.name}`", _type_name(hints[f.name]), _default(f), f.metadata["help"]) for f in options]
        lines.append("")
    image = meta["image"]
    lines += ["## Image", "", f"`{image['name']}`"]
    if "dockerfile" in image:
        lines[-1] += f", built from `{image['dockerfile']}` with the sqltune extras `{','.join(image['extras'])}`"
    lines += ["", "## Dependencies", ""]
    lines += [f"- Kubeflow {d['name']} {d['version']}" for d in meta["dependencies"]["kubeflow"]]
    lines += [f"- {service['name']}" for service in meta["dependencies"].get("external_services") or []]
    lines += ["", f"Version {meta['version']}, {meta['stability']}; tags: {', '.join(meta['tags'])}.", ""]
    header = f"<!-- Generated by `sqltune compile` from components/{component}/: edit the code, not this page. -->"
    return header + "\n" + "\n".join(lines)


def write_readmes(root: Path) -> list[Path]:
    """Write every component's README.md under `root` (the components folder); returns the files."""
    written = []
    for component in COMPONENTS:
        path = root / component / README
        atomic_write_bytes(path, render(component).encode("utf-8"))
        written.append(path)
    return written
