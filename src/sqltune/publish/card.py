"""The README.md model card of a published adapter. Deterministic (no timestamps, no version), so republishing
the same adapter produces the same bytes and the version's content hash stays stable."""

from __future__ import annotations

import json
from typing import Any

LEVELS = ("easy", "medium", "hard", "extra")  # Spider hardness; BIRD levels and "all" follow


def _score(value: Any) -> str:
    return f"{100 * value:.1f}" if isinstance(value, int | float) else "–"


def metrics_table(metrics: dict[str, Any]) -> str:
    """EX/EM per hardness level (Spider) or difficulty (BIRD), in the order the evaluate step lists them."""
    ex, em, counts = metrics.get("ex", {}), metrics.get("em", {}), metrics.get("counts", {})
    others = sorted(set(ex) - {*LEVELS, "all"})
    levels = metrics.get("levels") or [*(lv for lv in LEVELS if lv in ex), *others, "all"]
    rows = ["| level | questions (EX / EM) | EX (%) | EM (%) |", "|---|---:|---:|---:|"]
    rows += [
        f"| {level} | {counts.get('ex', {}).get(level, '–')} / {counts.get('em', {}).get(level, '–')} "
        f"| {_score(ex.get(level))} | {_score(em.get(level))} |"
        for level in levels
    ]
    return "\n".join(rows)


def render_card(
    model_name: str, lineage: dict[str, Any], metrics: dict[str, Any], adapter_config: dict[str, Any]
) -> str:
    base = str(lineage.get("base_model") or "unknown").removeprefix("hf://")
    revision = lineage.get("base_model_revision") or "unpinned"
    pinned = lineage.get("base_model_revision")
    py_revision = f', revision="{pinned}"' if pinned else ""
    cli_revision = f" --revision {pinned}" if pinned else ""
    params = lineage.get("training_parameters", {})
    method = str(params.get("method", adapter_config.get("peft_type", "lora"))).upper()
    rank = adapter_config.get("r", params.get("lora_rank", "?"))
    hyper = "\n".join(
        f"| `{key}` | `{json.dumps(value)}` |"
        for key, value in sorted(params.items())
        if isinstance(value, str | int | float | bool | list) or value is None
    )
    datasets = "\n".join(f"- `{name}`: `{ref}`" for name, ref in sorted(lineage.get("datasets", {}).items()))
    skipped = metrics.get("skipped")
    return f"""# {model_name}

A {method} adapter (rank {rank}) for Text2SQL on top of `{base}` (revision `{revision}`), trained and
evaluated by sqltune {lineage.get("sqltune_version", "")}.

## Evaluation

Execution accuracy (EX) and exact-set match (EM) per SQL hardness level:

{metrics_table(metrics)}

Skipped: `{json.dumps(skipped, sort_keys=True)}`. The full report is in `eval/report.md` and `eval/report.html`.

## Training

Base model: `{base}` at revision `{revision}`. Method: {method}.

| parameter | value |
|---|---|
{hyper}

Data (each input artifact by the sha256 of its manifest, else its path):
{datasets or "- (not recorded)"}

Pipeline run: `{lineage.get("pipeline_run_id") or "(none)"}`. Every file's sha256 and the full lineage are in
`manifest.json`.

## Use

Download and verify it with `sqltune registry pull ... --dest ./{model_name}`, then with PEFT:

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{base}"{py_revision})
model = PeftModel.from_pretrained(base, "./{model_name}")
tokenizer = AutoTokenizer.from_pretrained("./{model_name}")
```

or serve it with vLLM:

```bash
vllm serve {base}{cli_revision} --enable-lora --max-lora-rank {rank} \\
  --lora-modules {model_name}=./{model_name}
```
"""
