"""`predict`: the library entry of the predict step (the CLI and the KFP component both call it).

Every prompt is rebuilt from the record's fields with the shared `build_prompt`, the template and token
budget of training, and this model's tokenizer: the record's stored `prompt` may have been made for
another model. A prompt that does not fit even with its whole schema dropped is not generated: its
prediction is the `NO_SQL` placeholder and it is counted, so the evaluation still covers every question.

With `candidates` > 1, every question gets the greedy answer and `candidates - 1` sampled ones; each is checked
and run against the question's database (`sqltune.predict.candidates`) and the one most candidates agree with
by result becomes the prediction. `candidates` = 1 is the plain greedy path, its output unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqltune.artifacts import artifact_dir, atomic_write_json, check_output, read_jsonl, write_jsonl
from sqltune.errors import SqltuneError
from sqltune.log import get_logger
from sqltune.models.adapter import Adapter, check_base_name, check_shapes, read_adapter
from sqltune.predict.candidates import CandidateChecker, check_candidates, choose
from sqltune.predict.config import PredictConfig
from sqltune.predict.generate import Generation, Sampling, generate_candidates_hf, generate_hf
from sqltune.predict.vllm_backend import generate_vllm, vllm_available
from sqltune.prompt import build_prompt, left_out_kinds
from sqltune.settings import how_to_set
from sqltune.sql.extract import NO_SQL, extract_sql
from sqltune.sql.location import Databases
from sqltune.uri import localize

log = get_logger(__name__)

RECORDS = "records.jsonl"
PREDICTIONS = "predictions.jsonl"
PREDICTIONS_TXT = "predictions.txt"
METRICS = "predict_metrics.json"
_REQUIRED = ("id", "db_id", "question", "schema")


def load_records(data: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Eval records from a JSONL file or a preprocess artifact directory; every record must be usable."""
    path = localize(data, "eval data")
    if path.is_dir():
        path = path / RECORDS
    if not path.is_file():
        raise SqltuneError(f"eval data not found: {path}")
    records = read_jsonl(path)[:limit] if limit is not None else read_jsonl(path)
    seen: set[str] = set()
    for line, record in enumerate(records, 1):
        missing = [field for field in _REQUIRED if field not in record]
        if missing:
            raise SqltuneError(f"{path}: record {record.get('id', f'on line {line}')} lacks {', '.join(missing)}")
        if str(record["id"]) in seen:
            raise SqltuneError(f"{path}: record id {record['id']!r} appears twice; predictions are matched by id")
        seen.add(str(record["id"]))
    if not records:
        raise SqltuneError(f"{path}: no records to predict")
    return records


def choose_backend(backend: str) -> str:
    """`auto` means vLLM where it is installed (GPU images), else transformers; the choice is logged."""
    if backend == "vllm" and not vllm_available():
        raise SqltuneError("backend 'vllm' needs the vllm package (pip install 'sqltune[vllm]' on a GPU image)")
    chosen = "vllm" if backend == "vllm" or (backend == "auto" and vllm_available()) else "hf"
    reason = {"auto": " (auto: vllm is not installed)" if chosen == "hf" else " (auto: vllm is installed)"}
    log.info("predict backend: %s%s", chosen, reason.get(backend, ""))
    return chosen


@dataclass(frozen=True)
class PromptPlan:
    """What will be fed to the model: token ids per record, and which records could not fit at all."""

    ids: list[list[int]]
    fits: list[bool]
    schema_lines_dropped: list[int]
    left_out: list[tuple[str, ...]]  # per record: the schema units the budget left out (records with schema_units)


def plan_prompts(records: Sequence[dict[str, Any]], tokenizer: Any, template: str, max_tokens: int) -> PromptPlan:
    """Rebuild every prompt with this tokenizer's budget, trimming the schema as training did."""
    from sqltune.prompt import encode_prompt, prompt_functions

    count_tokens, chat_render = prompt_functions(tokenizer, template)
    ids, fits, dropped, left_out = [], [], [], []
    for record in records:
        prompt = build_prompt(
            record, template, max_tokens=max_tokens, count_tokens=count_tokens, chat_render=chat_render
        )
        ids.append(encode_prompt(tokenizer, prompt.text, template))
        fits.append(prompt.fits)
        dropped.append(prompt.schema_lines_dropped)
        left_out.append(prompt.left_out)
    return PromptPlan(ids, fits, dropped, left_out)


def _setting(name: str, override: Any, adapter: Adapter | None, default: Any) -> Any:
    """An explicit value, else the adapter's training parameter, else the default (logged when not explicit).

    Adapters trained before the setting was renamed `prompt_template` record it as `template`.
    """
    if override is not None:
        return override
    parameters = adapter.parameters if adapter else {}
    trained = parameters.get(name, parameters.get("template") if name == "prompt_template" else None)
    value = trained if trained is not None else default
    log.info("%s: %s (%s)", name, value, "from the adapter's training parameters" if trained is not None else "default")
    return value


def _model_context(base_dir: Path) -> int:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(base_dir).max_position_embeddings


def _check_adapter_fits(base_dir: Path, lora: Adapter) -> None:
    """Check the adapter's shapes against the base architecture on the meta device: no weights are loaded."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base_dir))
    check_shapes(lora, skeleton)


def _load_hf(base_dir: Path, adapter: Adapter | None, quantize_4bit: bool) -> tuple[Any, bool]:
    """The model ready to generate; the adapter is merged into the weights unless the base is quantized."""
    import torch
    from peft import PeftModel

    from sqltune.models import load_model

    cuda = torch.cuda.is_available()
    model = load_model(
        base_dir,
        quantize_4bit=quantize_4bit,
        dtype=torch.bfloat16 if cuda else torch.float32,
        device_map="cuda" if cuda else None,
    )
    merged = False
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter.path))
        if not quantize_4bit:
            model = model.merge_and_unload()
            merged = True
    return model.eval(), merged


def _rows(
    records: Sequence[dict[str, Any]], plan: PromptPlan, outputs: dict[int, list[Generation]], candidates: bool
) -> list[dict[str, Any]]:
    """One row per record from its outputs (the greedy one first); with `candidates`, every output is listed."""
    rows = []
    for index, record in enumerate(records):
        generations = outputs.get(index, [])
        out = generations[0] if generations else None
        raw = out.text if out else ""
        row = {
            "id": record["id"],
            "db_id": record["db_id"],
            "sql": extract_sql(raw) if out else NO_SQL,
            "raw": raw,
            "prompt_tokens": out.prompt_tokens if out else len(plan.ids[index]),
            "new_tokens": sum(g.new_tokens for g in generations),
            "batch_latency_s": round(out.batch_latency_s, 4) if out else 0.0,
            "schema_lines_dropped": plan.schema_lines_dropped[index],
            "prompt_fits": plan.fits[index],
        }
        if record.get("schema_units"):  # what the budget left out of a filtered schema, unit by unit
            row["schema_left_out"] = list(plan.left_out[index])
        if candidates:
            row["candidates"] = [
                {
                    "sql": extract_sql(g.text),
                    "raw": g.text,
                    "log_prob": round(g.log_prob or 0.0, 4),
                    "new_tokens": g.new_tokens,
                }
                for g in generations
            ]
            row["chosen"] = None
        rows.append(row)
    return rows


def _databases(db_dir: str | Path | None, url: str | None, records: Sequence[dict[str, Any]]) -> Databases:
    """Where candidates run (`url`, else `db_dir`), once the records' databases are found and their schemas read
    (before the model loads).

    A question whose database is missing or unreadable (Spider's dev set names `wta_1`, which it does not ship)
    keeps its greedy answer: its candidates fail with the reason. When no record's database can be read, the
    directory (or URL) is wrong: an error.
    """
    if db_dir is None and url is None:
        raise SqltuneError(
            "predict parameter candidates > 1 needs --db-dir or --database-url (the databases to run candidates on)"
        )
    if url is None and not Path(str(db_dir)).is_dir():
        raise SqltuneError(f"--db-dir {db_dir} is not a directory")
    databases = Databases.of(db_dir, url)
    assert databases is not None
    checker, unusable = CandidateChecker(databases), {}
    try:
        for db_id in sorted({str(record["db_id"]) for record in records}):
            try:
                checker.schema(db_id)
            except SqltuneError as exc:
                unusable[db_id] = str(exc)
    finally:
        checker.close()
    option = "--database-url" if url else "--db-dir"
    if unusable and len(unusable) == len({str(record["db_id"]) for record in records}):
        raise SqltuneError(
            f"{option} {databases}: no database of the records can be read ({next(iter(unusable.values()))})"
        )
    for db_id, why in unusable.items():
        questions = sum(1 for record in records if str(record["db_id"]) == db_id)
        log.warning("%d questions keep their greedy answer, their database cannot be read: %s", questions, why)
    return databases


def _choose_answers(rows: list[dict[str, Any]], databases: Databases) -> float:
    """Check and run every distinct candidate, then make the chosen one each row's answer; returns the seconds."""
    started = time.perf_counter()
    outcomes = check_candidates(databases, [(row["db_id"], c["sql"]) for row in rows for c in row["candidates"]])
    for row in rows:
        checked = [outcomes[(row["db_id"], candidate["sql"])] for candidate in row["candidates"]]
        for candidate, outcome in zip(row["candidates"], checked, strict=True):
            candidate.update(ran=outcome.ran, error=outcome.error, digest=outcome.digest, rows=outcome.rows)
        if checked:
            chosen = choose(checked, [candidate["log_prob"] for candidate in row["candidates"]])
            row.update(sql=row["candidates"][chosen]["sql"], raw=row["candidates"][chosen]["raw"], chosen=chosen)
    return time.perf_counter() - started


def predict(
    data: str | Path,
    base_model: str,
    adapter: str | Path | None,
    out: str | Path,
    *,
    config: PredictConfig | None = None,
    endpoint_url: str | None = None,
    overwrite: bool = False,
    db_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Predict one SQL query per record into the artifact directory `out`; returns predict_metrics.

    `db_dir` holds `<db_id>/*.sqlite` (the databases artifact's `database/` folder): the candidates run there, or
    in the database `config.database_url` names.
    """
    from sqltune.models import load_tokenizer, resolve_base_model

    config = config or PredictConfig()
    if config.database_url:
        db_dir = None  # the URL names where candidates run
    check_output(out, inputs=[data, adapter, db_dir if config.candidates > 1 else None], overwrite=overwrite)
    chosen = choose_backend(config.backend)
    records = load_records(data, config.limit)
    sampling, databases = None, None
    if config.candidates > 1:
        sampling = Sampling(config.candidates, config.temperature, config.top_p, config.seed)
        databases = _databases(db_dir, config.database_url, records)
    lora = read_adapter(localize(adapter, "adapter", endpoint_url)) if adapter else None
    base_dir = resolve_base_model(base_model, endpoint_url)
    if lora and config.base_name_check:
        check_base_name(lora, base_model, base_dir, turn_off=how_to_set(PredictConfig, base_name_check=False))

    tokenizer_dir = lora.path if lora and (lora.path / "tokenizer_config.json").is_file() else base_dir
    tokenizer = load_tokenizer(tokenizer_dir)
    template = _setting("prompt_template", config.prompt_template, lora, "alpaca")
    model_context = _model_context(base_dir)
    context_len = min(_setting("max_seq_len", config.max_seq_len, lora, model_context), model_context)
    max_new_tokens = config.max_new_tokens
    if context_len <= max_new_tokens:
        raise SqltuneError(
            f"max_new_tokens {max_new_tokens} leaves no room for a prompt in a {context_len}-token context"
        )
    plan = plan_prompts(records, tokenizer, template, context_len - max_new_tokens)
    todo = [i for i, fits in enumerate(plan.fits) if fits]
    if len(todo) < len(records):
        log.warning(
            "%d prompts do not fit in %d tokens even without schema: predicted as NO_SQL",
            len(records) - len(todo),
            context_len,
        )

    if lora:
        _check_adapter_fits(base_dir, lora)
    merged = False
    todo_ids = [plan.ids[i] for i in todo]
    outputs: list[list[Generation]] = []
    seconds = 0.0
    if todo_ids and chosen == "vllm":
        outputs, seconds = generate_vllm(
            base_dir,
            tokenizer_dir,
            todo_ids,
            max_new_tokens=max_new_tokens,
            context_len=context_len,
            adapter_dir=lora.path if lora else None,
            adapter_rank=lora.rank if lora else 16,
            sampling=sampling,
        )
    elif todo_ids:
        model, merged = _load_hf(base_dir, lora, config.quantize_4bit)
        settings = {"batch_size": config.batch_size, "max_new_tokens": max_new_tokens}
        if sampling:
            outputs, seconds = generate_candidates_hf(model, tokenizer, todo_ids, sampling, **settings)
        else:
            greedy, seconds = generate_hf(model, tokenizer, todo_ids, **settings)
            outputs = [[generation] for generation in greedy]
    rows = _rows(records, plan, dict(zip(todo, outputs, strict=True)), candidates=sampling is not None)
    check_s = _choose_answers(rows, databases) if databases else 0.0
    metrics = _metrics(rows, seconds, backend=chosen, merged=merged, prompt_template=template, context_len=context_len)
    inputs = {"data": data, **({"adapter": lora.path} if lora else {})}
    if databases:
        metrics.update(_candidate_metrics(rows, seconds, check_s))
        if db_dir is not None:  # a database URL is recorded, without its password, among the parameters
            inputs["db_dir"] = db_dir
    parameters = {**config.to_dict(), "base_model": base_model, "prompt_template": template, "max_seq_len": context_len}
    with artifact_dir(
        out, "predictions", parameters=parameters, inputs=inputs, extra={"metrics": metrics}, overwrite=overwrite
    ) as tmp:
        write_jsonl(tmp / PREDICTIONS, rows)
        (tmp / PREDICTIONS_TXT).write_text("".join(row["sql"] + "\n" for row in rows), encoding="utf-8")
        atomic_write_json(tmp / METRICS, metrics)
    log.info(
        "predicted %d records in %.1f s: %.2f prompts/s, %.1f generated tokens/s, %d trimmed, %d without SQL",
        len(rows),
        seconds,
        metrics["prompts_per_s"],
        metrics["generated_tokens_per_s"],
        metrics["trimmed_prompts"],
        metrics["no_sql_outputs"],
    )
    if databases:
        log.info(
            "%d candidates (%.2f/s): %d ran, %d rejected by the schema check; checked in %.1f s; "
            "%d answers are not the greedy one",
            metrics["candidates_generated"],
            metrics["candidates_per_s"],
            metrics["candidates_ran"],
            metrics["candidates_rejected_by_schema"],
            check_s,
            metrics["chosen_differs_from_greedy"],
        )
    return metrics


def _candidate_metrics(rows: Sequence[dict[str, Any]], generation_s: float, check_s: float) -> dict[str, Any]:
    """How many candidates were made, how fast, what became of them, and how often the answer is not greedy's."""
    candidates = [c for row in rows for c in row["candidates"]]
    rejected = sum(1 for c in candidates if (c["error"] or "").startswith("schema check:"))
    ran = sum(1 for c in candidates if c["ran"])
    differs = sum(1 for row in rows if row["candidates"] and row["sql"] != row["candidates"][0]["sql"])
    with_candidates = sum(1 for row in rows if row["candidates"])
    return {
        "candidates": max((len(row["candidates"]) for row in rows), default=0),
        "candidates_generated": len(candidates),
        "candidates_per_s": round(len(candidates) / generation_s, 3) if generation_s else 0.0,
        "candidates_ran": ran,
        "candidates_rejected_by_schema": rejected,
        "candidates_failed": len(candidates) - ran - rejected,
        "questions_without_runnable_candidate": sum(
            1 for row in rows if row["candidates"] and not any(c["ran"] for c in row["candidates"])
        ),
        "chosen_differs_from_greedy": differs,
        "chosen_differs_from_greedy_rate": round(differs / with_candidates, 4) if with_candidates else 0.0,
        "check_s": round(check_s, 3),
    }


def _left_out(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Over the records with schema units: how many units of each kind the budget left out (none: no such record)."""
    kinds = left_out_kinds(unit for row in rows for unit in row.get("schema_left_out", ()))
    return {"schema_units_left_out": dict(sorted(kinds.items()))} if any("schema_left_out" in r for r in rows) else {}


def _metrics(rows: Sequence[dict[str, Any]], seconds: float, **settings: Any) -> dict[str, Any]:
    generated = [row for row in rows if row["prompt_fits"]]
    new_tokens = sum(row["new_tokens"] for row in generated)
    return {
        **settings,
        "prompts": len(rows),
        "generated_prompts": len(generated),
        "generation_s": round(seconds, 3),
        "prompts_per_s": round(len(generated) / seconds, 3) if seconds else 0.0,
        "generated_tokens": new_tokens,
        "generated_tokens_per_s": round(new_tokens / seconds, 2) if seconds else 0.0,
        "mean_prompt_tokens": round(sum(row["prompt_tokens"] for row in rows) / len(rows), 1),
        "trimmed_prompts": sum(1 for row in rows if row["schema_lines_dropped"]),
        **_left_out(rows),
        "prompts_over_context": len(rows) - len(generated),
        "no_sql_outputs": sum(1 for row in rows if row["sql"] == NO_SQL),
    }
