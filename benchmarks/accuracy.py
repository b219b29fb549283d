"""Accuracy benchmark: what the fine-tuning recipe buys on Spider, base model vs LoRA vs QLoRA (+ recipe variants).

Runs the recipe end to end with the step libraries: preprocess Spider train (train_spider + train_others) and
dev once per schema style, train one adapter per variant, predict the dev questions, evaluate EX/EM per
hardness, and write `<results>/accuracy-<name>.md` and `.json`. Every size is a flag; the defaults are the full
recipe for a GPU user (all 8659 training questions, the whole dev set). A CPU-scale run takes a seeded random
training subset and a seeded hardness-stratified dev subset of questions whose database exists, so every
variant is scored on the same questions and EX and EM count the same ones.

The training options are TrainConfig's own (`sqltune train --help` lists them; `--seed` also seeds the subsets),
with the benchmark's recipe defaults in RECIPE. Each variant is `NAME:key=value,...` over the TrainConfig
settings plus `schema_style`, `schema_filter` and `schema_values` (PreprocessConfig's: how the records' schema is
written, filtered and given cell values; target modules joined with `+`) and `candidates` (PredictConfig's: SQL
candidates per question, executed and voted on) and `rl_steps` / `rl_learning_rate` (the pipeline's: a GRPO stage of
that many steps after SFT, rewarded on the training questions' databases, with TrainConfig's GRPO settings), e.g.
`--variant qlora:method=qlora --variant lora-ddl:schema_style=ddl --variant lora-c4:method=lora,candidates=4
--variant lora-grpo:method=lora,rl_steps=50 --variant lora-filter:method=lora,schema_filter=lexical`: an override of
the command's TrainConfig, validated by it. Variants that differ only in `candidates` share one adapter, and a GRPO
variant starts from the SFT adapter of its settings without the GRPO ones. A variant with a schema filter or values
is paired with the run of otherwise the same settings without them (questions only one gets right), and every run
reports the recall of its prompts after the token budget: the gold SQL's tables and columns (sqlglot) that the
prompts the model saw still show. `--base-candidates 1 --base-candidates 4` scores the base
model twice. Work artifacts live under `--work`, keyed by a hash of everything they depend on, so a rerun of
the same command picks up finished steps.

    .venv/bin/python benchmarks/accuracy.py --name full                   # the full recipe (GPU)
    .venv/bin/python benchmarks/accuracy.py --name cpu --train-size 400 --dev-size 100 ...   # see the results
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, fields, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

os.environ.setdefault("SQLTUNE_PROGRESS", "0")

import typer

from sqltune.artifacts import atomic_write_json, atomic_write_text, read_jsonl, write_jsonl
from sqltune.errors import SqltuneError
from sqltune.log import get_logger
from sqltune.preprocess.schema_text import DEFAULT_STYLE, SchemaStyle
from sqltune.settings import config_command
from sqltune.sql.hardness import HARDNESS_LEVELS
from sqltune.train import TrainConfig, TrainInputs
from sqltune.train.config import GRPO_SETTINGS, Stages, plan_stages
from sqltune.train.run import run_stages

log = get_logger("sqltune.bench.accuracy")

HERE = Path(__file__).resolve().parent
SPIDER = HERE.parents[1] / "shared" / "data" / "spider"
BASE = "base"
DEFAULT_VARIANTS = ("lora:method=lora", "qlora:method=qlora")
RL_KEYS = {"rl_steps": int, "rl_learning_rate": float}  # the pipeline's names for the GRPO stage
TRAIN_SETTINGS = {f.name for f in fields(TrainConfig)}
# PreprocessConfig's schema filter settings; a variant names them only when it sets them, so runs without them keep
# the work-directory keys (and so the adapters and predictions) they had before these settings existed.
FILTER_KEYS = {"schema_filter": str, "schema_values": int}
_DEFAULTS_HELP = " ".join(DEFAULT_VARIANTS)
WORK = Path.home() / ".cache" / "sqltune" / "bench-accuracy"
PACKAGES = ("sqltune", "torch", "transformers", "peft", "bitsandbytes", "accelerate")


# The recipe's training defaults where they differ from TrainConfig's: DB-GPT-Hub's (3 epochs, effective batch
# 16) with the chat template, which SmolLM2-Instruct was tuned on.
RECIPE = {"num_epochs": 3.0, "gradient_accumulation_steps": 4, "prompt_template": "chat"}


@dataclass
class Bench:
    """One invocation: what to run it on and with, and the TrainConfig every variant overrides."""

    name: str
    spider: Path
    base_model: str
    train_size: int
    dev_size: int
    schema_style: str
    max_new_tokens: int
    predict_batch_size: int
    variants: list[str]
    no_base: bool
    base_candidates: list[int]
    results: Path
    work: Path
    train: TrainConfig

    @property
    def seed(self) -> int:
        return self.train.seed


@config_command(TrainConfig, defaults=RECIPE)
def command(
    name: str = typer.Option("full", help="Config name: results go to accuracy-<name>.md/.json."),
    spider: Path = typer.Option(SPIDER, help="Spider release (dev.json, train_*.json, database/)."),
    base_model: str = typer.Option("smollm2-135m", help="Any spec sqltune.models.resolve_base_model takes."),
    train_size: int = typer.Option(0, help="Seeded random training subset; 0 = all questions."),
    dev_size: int = typer.Option(0, help="Seeded hardness-stratified dev subset; 0 = all."),
    schema_style: SchemaStyle = typer.Option(DEFAULT_STYLE, help="Schema style of every variant unless it sets one."),
    max_new_tokens: int = typer.Option(128, help="PredictConfig.max_new_tokens."),
    predict_batch_size: int = typer.Option(16, help="PredictConfig.batch_size (named as the pipeline names it)."),
    variant: list[str] = typer.Option(None, help=f"NAME:key=value,... (repeatable); default: {_DEFAULTS_HELP}"),
    no_base: bool = typer.Option(False, "--no-base", help="Skip scoring the base model without an adapter."),
    base_candidates: list[int] = typer.Option(
        None, help="PredictConfig.candidates of the base model's rows, one row per value (repeatable); default: 1."
    ),
    results: Path = typer.Option(HERE / "results", help="Where accuracy-<name>.md/.json go."),
    work: Path = typer.Option(WORK, help="Where finished steps are kept for reuse."),
    *,
    config: TrainConfig,
) -> Bench:
    """Fine-tune on Spider and score base vs adapters on EX/EM per hardness; writes the results tables."""
    return Bench(
        name, spider, base_model, train_size, dev_size, schema_style.value, max_new_tokens, predict_batch_size,
        list(variant or DEFAULT_VARIANTS), no_base, list(base_candidates or [1]), results, work, config,
    )  # fmt: skip


def parse_variant(spec: str, bench: Bench) -> tuple[str, dict[str, Any]]:
    """`NAME:key=value,...` -> (name, {"schema_style": ..., "candidates": ..., **TrainConfig settings}) over the
    command's config."""
    name, _, body = spec.partition(":")
    if not name or name == BASE or name.startswith(f"{BASE}-c"):
        raise SqltuneError(f"variant {spec!r} needs a name other than {BASE!r} or {BASE}-cN (the base model's rows)")
    types = {f.name: type(getattr(bench.train, f.name)) for f in fields(TrainConfig)}
    schema_style, candidates, overrides, rl, schema = bench.schema_style, 1, {}, {}, {}
    for item in filter(None, body.split(",")):
        key, eq, value = item.partition("=")
        if not eq or (key not in types and key not in ("schema_style", "candidates", *RL_KEYS, *FILTER_KEYS)):
            raise SqltuneError(
                f"variant {spec!r}: {item!r} is not key=value over TrainConfig settings, schema_style, schema_filter, "
                "schema_values, candidates, rl_steps or rl_learning_rate"
            )
        if key in RL_KEYS:
            rl[key] = RL_KEYS[key](value)
        elif key in FILTER_KEYS:
            schema[key] = _filter_setting(key, value, spec)
        elif key == "schema_style":
            schema_style = value
        elif key == "candidates":
            candidates = _candidates(value, spec)
        elif key == "target_modules":
            overrides[key] = value.replace("+", ",")
        elif types[key] is bool:
            overrides[key] = value.lower() in ("1", "true", "yes")
        else:
            overrides[key] = types[key](value)
    train = replace(bench.train, **overrides, checkpoint_every=0)
    settings = {"schema_style": schema_style, "candidates": candidates, **train.to_dict()}
    if rl:
        rl = {"rl_steps": rl.get("rl_steps", 0), "rl_learning_rate": rl.get("rl_learning_rate", 1e-5)}
        if rl["rl_steps"] < 1:
            raise SqltuneError(f"rl_steps={rl['rl_steps']} is invalid: expected >= 1 (leave it out for no GRPO stage)")
        stages_of({**settings, **rl})  # the GRPO stage validated as it will run
    schema = {k: v for k, v in schema.items() if v != getattr(_preprocess_defaults(), k)}  # defaults: as before
    return name, {**settings, **schema, **rl}


def _preprocess_defaults() -> Any:
    from sqltune.preprocess import PreprocessConfig

    return PreprocessConfig(dataset="spider", split="dev")


def _filter_setting(key: str, value: str, spec: str) -> str | int:
    """A schema_filter / schema_values value, validated by PreprocessConfig."""
    from sqltune.preprocess import PreprocessConfig

    try:
        typed = FILTER_KEYS[key](value)
    except ValueError:
        raise SqltuneError(f"variant {spec!r}: {key}={value!r} is not a {FILTER_KEYS[key].__name__}") from None
    PreprocessConfig(dataset="spider", split="dev", **{key: typed})  # raises a SettingError naming it
    return typed


def schema_of(settings: dict[str, Any]) -> tuple[str, str, int]:
    """(schema style, schema filter, schema values) of a variant's records."""
    defaults = _preprocess_defaults()
    return (
        settings["schema_style"],
        settings.get("schema_filter", defaults.schema_filter),
        settings.get("schema_values", defaults.schema_values),
    )


def stages_of(settings: dict[str, Any]) -> Stages:
    """A variant's stage plan, as the pipeline's: SFT with its settings but the GRPO ones (variants that differ only
    in those share the SFT adapter), then, with rl_steps, the GRPO stage with them."""
    sft = TrainConfig(**{k: v for k, v in sft_settings(settings).items() if k in TRAIN_SETTINGS})
    rl_steps, rl_learning_rate = settings.get("rl_steps", 0), settings.get("rl_learning_rate", 1e-5)
    return plan_stages(sft, rl_steps, rl_learning_rate, **{key: settings[key] for key in GRPO_SETTINGS})


def _candidates(value: str | int, what: str) -> int:
    """A PredictConfig.candidates value, validated by PredictConfig."""
    from sqltune.predict import PredictConfig

    try:
        return PredictConfig(candidates=int(value)).candidates
    except ValueError:
        raise SqltuneError(f"{what}: candidates={value!r} is not an integer") from None


def key_of(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def done(path: Path) -> bool:
    return (path / "manifest.json").is_file()


def preprocessed(args: Bench, split: str, schema: tuple[str, str, int]) -> Path:
    """The full split's records in one schema style, filter and values (subsets are taken by id afterwards)."""
    from sqltune.preprocess import PreprocessConfig, preprocess

    template = args.train.prompt_template
    out = args.work / "preprocess" / f"{split}-{_schema_name(schema)}-{template}-{key_of(str(args.spider))}"
    if not done(out):
        style, schema_filter, values = schema
        config = PreprocessConfig(
            dataset="spider", split=split, schema_style=style, prompt_template=template, schema_filter=schema_filter,
            schema_values=values,
        )  # fmt: skip
        preprocess(args.spider, out, config=config)
    return out / "records.jsonl"


def _schema_name(schema: tuple[str, str, int]) -> str:
    """`ddl` (no filter, no values: the name it always had), else e.g. `ddl-lexical-v2`."""
    style, schema_filter, values = schema
    defaults = _preprocess_defaults()
    if (schema_filter, values) == (defaults.schema_filter, defaults.schema_values):
        return style
    return f"{style}-{schema_filter}-v{values}"


def train_ids(records: list[dict[str, Any]], size: int, seed: int) -> list[str]:
    """A seeded random subset (all records when size is 0 or covers them), in file order."""
    ids = [r["id"] for r in records]
    if not size or size >= len(ids):
        return ids
    chosen = set(random.Random(seed).sample(ids, size))
    return [i for i in ids if i in chosen]


def dev_ids(records: list[dict[str, Any]], size: int, seed: int, db_dir: Path) -> list[str]:
    """Dev questions whose database exists, hardness-stratified (largest remainder) and seeded, in file order."""
    usable = [r for r in records if (db_dir / r["db_id"] / f"{r['db_id']}.sqlite").is_file()]
    if not size or size >= len(usable):
        return [r["id"] for r in usable]
    levels: dict[str, list[str]] = defaultdict(list)
    for r in usable:
        levels[str(r.get("hardness"))].append(r["id"])
    quotas = {level: size * len(ids) / len(usable) for level, ids in levels.items()}
    counts = {level: int(q) for level, q in quotas.items()}
    for level in sorted(quotas, key=lambda lv: counts[lv] - quotas[lv])[: size - sum(counts.values())]:
        counts[level] += 1
    rng = random.Random(seed)
    chosen = {i for level in sorted(levels) for i in rng.sample(levels[level], counts[level])}
    return [r["id"] for r in usable if r["id"] in chosen]


def subset(records_file: Path, ids: list[str], out: Path) -> Path:
    """`records_file` restricted to `ids` (same order), written once."""
    if not out.is_file():
        by_id = {r["id"]: r for r in read_jsonl(records_file)}
        write_jsonl(out, [by_id[i] for i in ids])
    return out


# Each stage trains in a fresh interpreter, so the peak RSS it reports is its own.
_TRAIN_CHILD = (
    "import json, sys; from sqltune.train import TrainConfig, TrainInputs; from sqltune.train.run import run_recipe; "
    "job = json.loads(sys.argv[1]); run_recipe(TrainInputs(**job['inputs']), TrainConfig(**job['config']))"
)


def base_name(candidates: int) -> str:
    """The base model's row: `base` for greedy prediction, `base-cN` with N candidates."""
    return BASE if candidates == 1 else f"{BASE}-c{candidates}"


def training_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """What an adapter depends on: a variant's settings without the prediction ones (variants share adapters)."""
    return {k: v for k, v in settings.items() if k != "candidates"}


def sft_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """What the SFT adapter depends on: the training settings without the GRPO stage's (SFT and SFT + GRPO
    variants share the SFT adapter)."""
    return {k: v for k, v in training_settings(settings).items() if k not in (*GRPO_SETTINGS, *RL_KEYS)}


def train_in_child(inputs: TrainInputs, config: TrainConfig) -> dict[str, Any]:
    """`run_stages`' stage runner: the recipe's run in a child process, unless its adapter is there from before."""
    out = Path(inputs.out)
    if not done(out):
        job = {"inputs": asdict(inputs), "config": config.to_dict()}
        if subprocess.run([sys.executable, "-c", _TRAIN_CHILD, json.dumps(job, default=str)], check=False).returncode:
            raise SqltuneError(f"training {out} failed; see its log above")
    return json.loads((out / "train_metrics.json").read_text())


def score(
    args: Bench, dev: Path, adapter: Path | None, out: Path, candidates: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Predict `dev` (with `candidates` SQL candidates per question) and evaluate; returns (predict metrics,
    evaluation metrics).

    QLoRA adapters too are merged into the full-precision base, as the pipeline's predict step and
    DB-GPT-Hub do: the 4-bit base is a training-memory device, not the served model.
    """
    from sqltune.evaluate.run import evaluate
    from sqltune.predict import PredictConfig, predict

    predictions, evaluation = out / "predictions", out / "evaluation"
    if not done(predictions):
        config = PredictConfig(
            batch_size=args.predict_batch_size, max_new_tokens=args.max_new_tokens,
            prompt_template=args.train.prompt_template, max_seq_len=args.train.max_seq_len, candidates=candidates,
        )  # fmt: skip
        predict(dev, args.base_model, adapter, predictions, config=config, db_dir=args.spider / "database")
    if not done(evaluation):
        evaluate(
            dev, predictions / "predictions.jsonl", args.spider / "database", args.spider / "tables.json", evaluation
        )
    return (
        json.loads((predictions / "predict_metrics.json").read_text()),
        json.loads((evaluation / "metrics.json").read_text()),
    )


def run(args: Bench, command: str) -> dict[str, Any]:
    started = time.perf_counter()
    variants = dict(parse_variant(spec, args) for spec in args.variants)
    bases = {} if args.no_base else {base_name(n): _candidates(n, "--base-candidates") for n in args.base_candidates}
    default_schema = schema_of({"schema_style": args.schema_style})
    schemas = sorted({schema_of(s) for s in variants.values()} | {default_schema})
    db_dir = args.spider / "database"
    subsets: dict[tuple[str, str, int], dict[str, Path]] = {}
    t_ids = d_ids = []
    for schema in schemas:
        train_all, dev_all = preprocessed(args, "train", schema), preprocessed(args, "dev", schema)
        t_ids = train_ids(read_jsonl(train_all), args.train_size, args.seed)
        d_ids = dev_ids(read_jsonl(dev_all), args.dev_size, args.seed, db_dir)
        name = f"{_schema_name(schema)}-{args.train.prompt_template}-{key_of(str(args.spider))}"
        root = args.work / "subsets" / name
        root.mkdir(parents=True, exist_ok=True)
        subsets[schema] = {
            "train": subset(train_all, t_ids, root / f"train-{key_of(t_ids)}.jsonl"),
            "dev": subset(dev_all, d_ids, root / f"dev-{key_of(d_ids)}.jsonl"),
        }
    dev_hardness = [r.get("hardness") for r in read_jsonl(subsets[default_schema]["dev"])]

    rows: dict[str, dict[str, Any]] = {}
    result = {
        "name": args.name,
        "command": command,
        "base_model": args.base_model,
        "versions": {pkg: _version(pkg) for pkg in PACKAGES},
        "python": sys.version.split()[0],
        "device": _device(),
        "seed": args.seed,
        "train_questions": len(t_ids),
        "train_size_flag": args.train_size,
        "dev_questions": len(d_ids),
        "dev_size_flag": args.dev_size,
        "dev_hardness": {lv: dev_hardness.count(lv) for lv in HARDNESS_LEVELS},
        "template": args.train.prompt_template,
        "max_seq_len": args.train.max_seq_len,
        "max_new_tokens": args.max_new_tokens,
        "runs": rows,
        "pending": list(bases) + list(variants),
    }

    def finished(name: str, row: dict[str, Any]) -> None:
        """Record a finished run and rewrite the results, so a run cut short still leaves what it measured."""
        rows[name] = row
        pair_runs(rows, args.schema_style)
        result["pending"].remove(name)
        result["total_wall_s"] = time.perf_counter() - started
        save(args.results, result)

    def adapter_dir(trained_with: dict[str, Any]) -> Path:
        """Where the adapter trained with these settings on these training questions is kept (and found again)."""
        return args.work / "adapters" / key_of(args.base_model, trained_with, t_ids, str(args.spider))

    scoring = (args.base_model, args.train.prompt_template, args.train.max_seq_len, args.max_new_tokens)
    for name, candidates in bases.items():
        data = subsets[default_schema]
        settings = {"schema_style": args.schema_style, "candidates": candidates}
        out = args.work / "runs" / f"{BASE}-{key_of(scoring, settings, d_ids, str(args.spider))}"
        tick = time.perf_counter()
        predict_metrics, evaluation = score(args, data["dev"], None, out, candidates)
        finished(name, {"settings": settings, "predict": predict_metrics, "evaluation": evaluation,
                        "recall": prompt_recall(args, data["dev"], out), "wall_s": time.perf_counter() - tick,
                        "work": str(out)})  # fmt: skip
    for name, settings in variants.items():
        data = subsets[schema_of(settings)]
        stages = stages_of(settings)
        sft_adapter = adapter_dir(sft_settings(settings))
        adapter = adapter_dir(training_settings(settings)) if stages.grpo is not None else sft_adapter  # no copy
        scored = settings if settings.get("rl_steps") else {k: v for k, v in settings.items() if k not in GRPO_SETTINGS}
        out = args.work / "runs" / f"{name}-{key_of(scoring, scored, t_ids, d_ids, str(args.spider))}"
        log.info("variant %s: %s", name, settings)
        tick = time.perf_counter()
        inputs = TrainInputs(data["train"], args.base_model, adapter)
        trained = run_stages(stages, inputs, sft_adapter, db_dir=lambda: db_dir, run_stage=train_in_child)
        row: dict[str, Any] = {"settings": settings, **({"sft": trained.sft} if trained.grpo is not None else {})}
        predict_metrics, evaluation = score(args, data["dev"], adapter, out, settings["candidates"])
        finished(name, {**row, "train": trained.final, "predict": predict_metrics, "evaluation": evaluation,
                        "recall": prompt_recall(args, data["dev"], out), "wall_s": time.perf_counter() - tick,
                        "work": str(out)})  # fmt: skip
    return result


def prompt_recall(args: Bench, dev: Path, out: Path) -> dict[str, Any] | None:
    """What the prompts the model was given (after the token budget, as predict trimmed them) show of what each gold
    query reads: the share of the gold tables and columns shown (every use counted), the share of questions shown
    all of theirs, and the tables shown per prompt. None when it cannot be told (`dbgpt` or `rich` without units)."""
    from sqltune.preprocess.schema_units import shown_names
    from sqltune.sql.schema import load_tables
    from sqltune.sql.usage import UnreadableQuery, used_names

    schemas = load_tables(args.spider / "tables.json")
    steps = {str(r["id"]): r["schema_lines_dropped"] for r in read_jsonl(out / "predictions" / "predictions.jsonl")}
    counts = {"tables": [0, 0], "columns": [0, 0]}
    complete = measured = shown_tables = 0
    for record in read_jsonl(dev):
        schema = schemas[record["db_id"]]
        shown = shown_names(record, steps[str(record["id"])], schema)
        if shown is None:
            return None
        try:
            usage = used_names(record["sql"], schema)
        except UnreadableQuery:
            continue
        measured += 1
        shown_tables += len(shown[0])
        complete += usage.tables <= shown[0] and usage.columns <= shown[1]
        for kind, used, kept in (("tables", usage.tables, shown[0]), ("columns", usage.columns, shown[1])):
            counts[kind][0] += len(used & kept)
            counts[kind][1] += len(used)
    return {
        "tables": counts["tables"][0] / counts["tables"][1],
        "columns": counts["columns"][0] / counts["columns"][1],
        "complete": complete / measured,
        "tables_shown": shown_tables / measured,
        "questions": measured,
    }


def prediction_s(row: dict[str, Any]) -> float:
    """Seconds a run spent predicting: generating, and checking and running candidates."""
    return row["predict"]["generation_s"] + row["predict"].get("check_s", 0.0)


def pair_runs(rows: dict[str, dict[str, Any]], default_style: str) -> None:
    """Pair runs on the same questions: each run with candidates with the greedy run of otherwise the same settings
    (the same adapter); each SFT + GRPO run with the SFT run it continued (same candidates); each greedy adapter of
    another schema style with the one of `default_style` and otherwise the same settings; each run with a schema
    filter or values with the run of otherwise the same settings without them (same candidates). Records the
    questions only one of the two gets right (EX), and the time ratio of what differs."""
    for row in rows.values():
        settings = row["settings"]
        if settings.get("rl_steps"):
            sft = _pair(rows, _sft_key, {**_sft_key(row), "rl_steps": None})
            if sft is not None:
                mine, theirs = _discordant(row, rows[sft])
                row["versus_sft"] = {"sft": sft, "only_with_grpo": mine, "only_sft": theirs}
        elif settings["candidates"] > 1:
            greedy = _pair(rows, _settings, {**settings, "candidates": 1})
            if greedy is not None:
                mine, theirs = _discordant(row, rows[greedy])
                row["versus_greedy"] = {
                    "greedy": greedy, "only_with_candidates": mine, "only_greedy": theirs,
                    "time_ratio": prediction_s(row) / max(prediction_s(rows[greedy]), 1e-9),
                }  # fmt: skip
        elif "method" in settings and settings["schema_style"] != default_style:
            other = _pair(rows, _settings, {**settings, "schema_style": default_style})
            if other is not None:
                mine, theirs = _discordant(row, rows[other])
                row["versus_schema"] = {"other": other, "only_this_style": mine, "only_other_style": theirs}
        if any(key in settings for key in FILTER_KEYS):
            plain = {k: v for k, v in settings.items() if k not in FILTER_KEYS}
            other = _pair(rows, _settings, plain)
            if other is not None:
                mine, theirs = _discordant(row, rows[other])
                row["versus_unfiltered"] = {"other": other, "only_filtered": mine, "only_unfiltered": theirs}


def _sft_key(row: dict[str, Any]) -> dict[str, Any]:
    """A run's settings as far as its SFT adapter and its prediction go, and whether it had a GRPO stage."""
    settings = row["settings"]
    kept = {k: v for k, v in settings.items() if k not in (*GRPO_SETTINGS, *RL_KEYS)}
    return {**kept, "rl_steps": settings.get("rl_steps")}


def _settings(row: dict[str, Any]) -> dict[str, Any]:
    return row["settings"]


def _pair(rows: dict[str, dict[str, Any]], key: Any, wanted: dict[str, Any]) -> str | None:
    """The first run whose `key(run)` is `wanted`."""
    return next((name for name, other in rows.items() if key(other) == wanted), None)


def _discordant(row: dict[str, Any], other: dict[str, Any]) -> tuple[int, int]:
    """(questions only `row` gets right, questions only `other` gets right) by EX."""
    mine, theirs = _ex_by_id(row), _ex_by_id(other)
    only_mine = sum(1 for i, ex in mine.items() if ex and not theirs[i])
    return only_mine, sum(1 for i, ex in mine.items() if theirs[i] and not ex)


def _ex_by_id(row: dict[str, Any]) -> dict[str, bool]:
    return {str(r["id"]): bool(r["ex"]) for r in read_jsonl(Path(row["work"]) / "evaluation" / "results.jsonl")}


def save(results: Path, result: dict[str, Any]) -> None:
    results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results / f"accuracy-{result['name']}.json", result)
    atomic_write_text(results / f"accuracy-{result['name']}.md", markdown(result))


def _version(package: str) -> str | None:
    try:
        return version(package)
    except Exception:  # not installed (bitsandbytes on a CPU-only image): recorded as absent
        return None


def _device() -> str:
    import platform

    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return (
        f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _num(value: float | None, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def markdown(result: dict[str, Any]) -> str:
    """DB-GPT-Hub style tables (EX, then EM, per hardness) plus cost, settings and provenance."""
    levels = [*HARDNESS_LEVELS, "all"]
    runs = result["runs"]
    counts = next(iter(runs.values()))["evaluation"].get("counts", {}) if runs else {}
    seed = result["seed"]
    lines = [f"# Accuracy: {result['name']} ({result['base_model']} on Spider dev)", ""]
    lines += [
        f"Every number below comes from this command, on {result['device']}:",
        "",
        f"    {result['command']}",
        "",
        "(A step whose inputs hash to an artifact already in the work directory is reused, with the timings of the "
        "invocation that made it.)",
        "",
        f"- training questions: {result['train_questions']} of Spider train_spider + train_others "
        f"({'all' if not result['train_size_flag'] else 'seeded random subset'}, seed {seed})",
        f"- dev questions: {result['dev_questions']} of Spider dev whose database exists "
        f"({'all' if not result['dev_size_flag'] else 'seeded hardness-stratified subset'}, seed {seed}): "
        + ", ".join(f"{lv} {n}" for lv, n in result["dev_hardness"].items()),
        f"- prompts: template `{result['template']}`, max_seq_len {result['max_seq_len']}, "
        f"max_new_tokens {result['max_new_tokens']}; every adapter (QLoRA too) merged into the full-precision base "
        "for prediction",
        "- candidates: 1 is greedy decoding; N > 1 adds N-1 sampled candidates (PredictConfig's temperature, top-p "
        "and seed), each checked against the schema and run on the question's database, and answers with the "
        "result most of them share",
        "",
    ]
    for metric, title in (("ex", "Execution accuracy (EX, %)"), ("em", "Exact-set match (EM, %)")):
        lines += [f"## {title}", "", "| variant | method | schema | candidates | " + " | ".join(levels) + " |"]
        lines.append("|---|---|---|---:|" + "---:|" * len(levels))
        for name, row in runs.items():
            settings = row["settings"]
            scores = row["evaluation"].get(metric, {})
            cells = " | ".join(_pct(scores.get(level)) for level in levels)
            lines.append(
                f"| {name} | {settings.get('method', 'none')} | {_schema_label(settings)} | "
                f"{settings.get('candidates', 1)} | {cells} |"
            )
        shown = counts.get(metric, {})
        if shown:
            lines.append("| *questions* | | | | " + " | ".join(str(shown.get(level, "-")) for level in levels) + " |")
        lines.append("")
    lines += _section(
        "Candidates against greedy (same adapter, same questions)",
        "| variant | greedy run | EX | greedy EX | right only with candidates | right only greedy "
        "| answer not greedy's "
        "| candidates run / rejected by schema / failed | prediction time (s) | greedy's (s) | time ratio |",
        [_versus_greedy(name, row, runs) for name, row in runs.items() if "versus_greedy" in row],
    )
    lines += _section(
        "SFT + GRPO against SFT (same questions)",
        "| variant | SFT run | EX | SFT EX | right only with GRPO | right only SFT | GRPO steps | prompts x group "
        "| reward first → last step | groups with a correct completion | GRPO time (s) |",
        [_versus_sft(name, row, runs) for name, row in runs.items() if "versus_sft" in row],
    )
    lines += _section(
        "Schema styles against each other (same training and dev questions, greedy)",
        "| variant | schema | other run | its schema | EX | other's EX | EM | other's EM | right only with this style "
        "| right only with the other | train time (s) | other's (s) |",
        [_versus_schema(name, row, runs) for name, row in runs.items() if "versus_schema" in row],
    )
    lines += _section(
        "Schema filter and values against the unfiltered default (same training and dev questions, same candidates)",
        "| variant | schema | other run | its schema | candidates | EX | other's EX | EM | other's EM "
        "| right only with the filter | right only without | prompt recall, tables / columns (%) | other's (%) "
        "| questions shown all they need (%) | other's (%) | train time (s) | other's (s) |",
        [_versus_unfiltered(name, row, runs) for name, row in runs.items() if "versus_unfiltered" in row],
    )
    lines += _section(
        "What the prompts show of what the gold SQL reads (after the token budget, as predict built them)",
        "| variant | schema | tables recall (%) | columns recall (%) | questions shown all they need (%) "
        "| tables shown per prompt | prompts trimmed | schema units left out by the budget |",
        [_recall_row(name, row) for name, row in runs.items() if row.get("recall")],
    )
    lines += ["## Cost", "", "| variant | train steps | train time (s) | train tokens/s | peak memory (GiB) | "
              "final loss | predict prompts/s | generated tokens/s | prediction time (s) |",
              "|---|" + "---:|" * 8]  # fmt: skip
    for name, row in runs.items():
        t, p = row.get("train", {}), row["predict"]
        lines.append(
            f"| {name} | {t.get('steps', '-')} | {_num(t.get('train_time_s'))} | {_num(t.get('tokens_per_s'))} | "
            f"{_num(t.get('peak_memory_gb'), '.2f')} | {_num(t.get('final_loss'), '.3f')} | "
            f"{_num(p.get('prompts_per_s'), '.2f')} | {_num(p.get('generated_tokens_per_s'))} | "
            f"{prediction_s(row):.0f} |"
        )
    lines += ["", "## Variants (training settings that differ from TrainConfig's defaults)", ""]
    defaults = TrainConfig().to_dict()
    for name, row in runs.items():
        if "method" in row["settings"]:  # a trained variant, not the base model
            changed = {k: v for k, v in row["settings"].items() if k not in defaults or defaults[k] != v}
            lines.append(f"- **{name}**: " + ", ".join(f"{k}={v}" for k, v in changed.items()))
    versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
    lines += ["", "## Versions", "", f"{versions}; python {result['python']}", ""]
    lines += [f"Wall time of this invocation: {result['total_wall_s'] / 60:.1f} min (reused steps cost it nothing)", ""]
    if result["pending"]:
        lines += [f"**Partial results: not run yet: {', '.join(result['pending'])}.**", ""]
    return "\n".join(lines)


def _section(title: str, header: str, rows: list[str]) -> list[str]:
    """A titled table of paired runs (name and run columns left-aligned, the rest numbers); nothing without rows."""
    if not rows:
        return []
    return [f"## {title}", "", header, "|---|---|" + "---:|" * (header.count("|") - 3), *rows, ""]


def _versus_greedy(name: str, row: dict[str, Any], runs: dict[str, dict[str, Any]]) -> str:
    versus, p = row["versus_greedy"], row["predict"]
    greedy = runs[versus["greedy"]]
    return (
        f"| {name} | {versus['greedy']} | {_pct(row['evaluation']['ex']['all'])} | "
        f"{_pct(greedy['evaluation']['ex']['all'])} | {versus['only_with_candidates']} | "
        f"{versus['only_greedy']} | {p['chosen_differs_from_greedy']} of {p['prompts']} | "
        f"{p['candidates_ran']} / {p['candidates_rejected_by_schema']} / {p['candidates_failed']} | "
        f"{prediction_s(row):.0f} | {prediction_s(greedy):.0f} | {versus['time_ratio']:.2f} |"
    )


def _versus_schema(name: str, row: dict[str, Any], runs: dict[str, dict[str, Any]]) -> str:
    versus = row["versus_schema"]
    other = runs[versus["other"]]
    return (
        f"| {name} | {row['settings']['schema_style']} | {versus['other']} | {other['settings']['schema_style']} | "
        f"{_pct(row['evaluation']['ex']['all'])} | {_pct(other['evaluation']['ex']['all'])} | "
        f"{_pct(row['evaluation']['em']['all'])} | {_pct(other['evaluation']['em']['all'])} | "
        f"{versus['only_this_style']} | {versus['only_other_style']} | "
        f"{_num(row['train'].get('train_time_s'), '.0f')} | {_num(other['train'].get('train_time_s'), '.0f')} |"
    )


def _schema_label(settings: dict[str, Any]) -> str:
    """`ddl`, or with a filter and values e.g. `ddl, lexical, 2 values`."""
    parts = [settings["schema_style"]]
    if settings.get("schema_filter"):
        parts.append(settings["schema_filter"])
    if settings.get("schema_values"):
        parts.append(f"{settings['schema_values']} values")
    return ", ".join(parts)


def _recall_cells(row: dict[str, Any]) -> tuple[str, str]:
    recall = row.get("recall")
    if not recall:
        return "-", "-"
    return f"{_pct(recall['tables'])} / {_pct(recall['columns'])}", _pct(recall["complete"])


def _versus_unfiltered(name: str, row: dict[str, Any], runs: dict[str, dict[str, Any]]) -> str:
    versus = row["versus_unfiltered"]
    other = runs[versus["other"]]
    (mine, mine_complete), (theirs, theirs_complete) = _recall_cells(row), _recall_cells(other)
    return (
        f"| {name} | {_schema_label(row['settings'])} | {versus['other']} | {_schema_label(other['settings'])} | "
        f"{row['settings'].get('candidates', 1)} | {_pct(row['evaluation']['ex']['all'])} | "
        f"{_pct(other['evaluation']['ex']['all'])} | {_pct(row['evaluation']['em']['all'])} | "
        f"{_pct(other['evaluation']['em']['all'])} | {versus['only_filtered']} | {versus['only_unfiltered']} | "
        f"{mine} | {theirs} | {mine_complete} | {theirs_complete} | "
        f"{_num(row.get('train', {}).get('train_time_s'), '.0f')} | "
        f"{_num(other.get('train', {}).get('train_time_s'), '.0f')} |"
    )


def _recall_row(name: str, row: dict[str, Any]) -> str:
    recall, p = row["recall"], row["predict"]
    left_out = p.get("schema_units_left_out")
    units = (
        ", ".join(f"{kind} {n}" for kind, n in left_out.items()) if left_out else ("none" if left_out == {} else "-")
    )
    return (
        f"| {name} | {_schema_label(row['settings'])} | {_pct(recall['tables'])} | {_pct(recall['columns'])} | "
        f"{_pct(recall['complete'])} | {recall['tables_shown']:.2f} | {p.get('trimmed_prompts', '-')} of "
        f"{p['prompts']} | {units} |"
    )


def _versus_sft(name: str, row: dict[str, Any], runs: dict[str, dict[str, Any]]) -> str:
    versus, t, settings = row["versus_sft"], row["train"], row["settings"]
    sft = runs[versus["sft"]]
    return (
        f"| {name} | {versus['sft']} | {_pct(row['evaluation']['ex']['all'])} | "
        f"{_pct(sft['evaluation']['ex']['all'])} | {versus['only_with_grpo']} | {versus['only_sft']} | "
        f"{t['steps']} | {settings['prompts_per_step']} x {settings['num_generations']} | "
        f"{_num(t.get('first_reward'), '.3f')} → {_num(t.get('final_reward'), '.3f')} | "
        f"{_pct(t.get('correct_groups'))}% | {_num(t.get('train_time_s'), '.0f')} |"
    )


def parse_args(argv: list[str]) -> Bench:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(command)
    return app(argv, standalone_mode=False)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        bench = parse_args(argv)
        if isinstance(bench, Bench):  # not --help
            print(markdown(run(bench, shlex.join(["python", "benchmarks/accuracy.py", *argv]))))
    except SqltuneError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
