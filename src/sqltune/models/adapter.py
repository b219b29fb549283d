"""A LoRA adapter directory as predict, the GRPO stage and publish read it: intact, its training parameters, and a
check that it fits the base model.

The train step saves its parameters in the adapter's `manifest.json` (`prompt_template`, `max_seq_len`,
`base_model`); a plain PEFT directory without a manifest works too. An adapter applied to a different base
model either fails deep inside PEFT with a tensor-size error or, worse, loads and generates garbage, so
both the base model's name and every adapter tensor's shape are checked before anything is generated.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqltune.artifacts import MANIFEST, verify_artifact
from sqltune.errors import SqltuneError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?:embedding_)?(?P<part>[AB])(?:\.weight)?$")


@dataclass(frozen=True)
class Adapter:
    path: Path
    rank: int
    base_names: tuple[str, ...]
    parameters: dict[str, Any]


def read_adapter(path: str | Path) -> Adapter:
    """Read the adapter's PEFT config and (when present) the train step's manifest parameters, once its files are
    intact: every file its manifest lists matches its sha256 (a plain PEFT directory has none), the config is a
    LoRA config and the weights file holds readable tensors. Anything else is an error naming the adapter."""
    path = Path(path)
    config_file = path / ADAPTER_CONFIG
    if not config_file.is_file() or not (path / ADAPTER_WEIGHTS).is_file():
        raise SqltuneError(f"adapter {path}: expected a PEFT adapter with {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}")
    parameters = verify_artifact(path).get("parameters", {}) if (path / MANIFEST).is_file() else {}
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        rank = int(config["r"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise SqltuneError(f"adapter {path}: {ADAPTER_CONFIG} is corrupt ({type(exc).__name__}: {exc})") from None
    if config.get("peft_type", "LORA") != "LORA":
        raise SqltuneError(f"adapter {path}: peft_type {config.get('peft_type')!r} is not LORA")
    _check_weights(path)
    names = (config.get("base_model_name_or_path"), parameters.get("base_model"))
    return Adapter(path, rank, tuple(str(n) for n in names if n), parameters)


def _check_weights(path: Path) -> None:
    """The weights file must be whole safetensors holding LoRA tensors: its header (8 bytes of length, then JSON)
    must parse and its tensors must cover the rest of the file exactly, as a truncated or overwritten file does not.
    Read by hand so that images without safetensors (publish) check it too."""
    weights = path / ADAPTER_WEIGHTS
    size = weights.stat().st_size
    try:
        with open(weights, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if not 2 <= length <= size - 8:
                raise ValueError(f"a header of {length} bytes in a file of {size}")
            header = json.loads(handle.read(length))
        tensors = {key: entry for key, entry in header.items() if key != "__metadata__"}
        covered = max((entry["data_offsets"][1] for entry in tensors.values()), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:  # JSONDecodeError is a ValueError
        raise SqltuneError(f"adapter {path}: {ADAPTER_WEIGHTS} is corrupt ({exc})") from None
    if covered != size - 8 - length:
        raise SqltuneError(
            f"adapter {path}: {ADAPTER_WEIGHTS} is corrupt (its tensors take {covered} bytes, the file holds "
            f"{size - 8 - length}: truncated or overwritten)"
        )
    if not any("lora_" in key for key in tensors):
        raise SqltuneError(f"adapter {path}: {ADAPTER_WEIGHTS} holds no LoRA weights")


def model_name(spec: str) -> str:
    """What two specs of the same model have in common: the last path part, without `hf://` or `@revision`."""
    spec = spec.strip().removeprefix("hf://").split("@", 1)[0].rstrip("/")
    return spec.rsplit("/", 1)[-1]


def check_base_name(adapter: Adapter, base_spec: str, base_dir: Path, turn_off: str | None = None) -> None:
    """The adapter must name the base model it is applied to (by spec or by resolved directory); `turn_off` is how
    the caller's user turns the check off, when they can."""
    if not adapter.base_names:
        return
    ours = {model_name(base_spec), model_name(str(base_dir))}
    if not ours & {model_name(name) for name in adapter.base_names}:
        escape = f", or {turn_off} if this is the same model under another name" if turn_off else ""
        raise SqltuneError(
            f"adapter {adapter.path} was trained on {' / '.join(adapter.base_names)}, not on base model "
            f"{base_spec!r} ({base_dir}); pass the base model it was trained on{escape}"
        )


def _features(module: Any) -> tuple[int, int] | None:
    """(input, output) size of a Linear- or Embedding-like module; None for modules LoRA does not adapt."""
    if hasattr(module, "in_features"):
        return module.in_features, module.out_features
    if hasattr(module, "num_embeddings"):
        return module.num_embeddings, module.embedding_dim
    return None


def check_shapes(adapter: Adapter, model: Any) -> None:
    """Every adapter tensor must fit the module it adapts (hidden size, vocabulary, layer count)."""
    from safetensors import safe_open

    problems: list[str] = []
    with safe_open(str(adapter.path / ADAPTER_WEIGHTS), framework="pt") as tensors:
        for key in tensors.keys():  # noqa: SIM118 (safe_open is not a mapping)
            shape = tuple(tensors.get_slice(key).get_shape())
            name = key.removeprefix(_PEFT_PREFIX)
            lora = _LORA_KEY.match(name)
            if lora is None and "lora_" in name:
                continue  # DoRA magnitudes and the like follow from the A/B shapes checked below
            target = lora.group("module") if lora else name
            try:
                found = model.get_submodule(target) if lora else model.get_parameter(target)
            except AttributeError:
                problems.append(f"{target} does not exist in the base model")
                continue
            if lora is None:
                if tuple(found.shape) != shape:
                    problems.append(f"{target} is {list(found.shape)} in the base model, {list(shape)} in the adapter")
                continue
            features = _features(found)
            if features is None:
                problems.append(f"{target} is a {type(found).__name__}, which this adapter cannot adapt")
                continue
            expected = features[0] if lora.group("part") == "A" else features[1]
            actual = shape[1] if lora.group("part") == "A" else shape[0]
            if expected != actual:
                problems.append(f"{key} has size {actual} where the base model's {target} has {expected}")
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise SqltuneError(f"adapter {adapter.path} does not fit this base model: {shown}")
