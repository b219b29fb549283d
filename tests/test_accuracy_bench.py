"""The accuracy benchmark's plumbing: subsets, variants, and one end-to-end run with the tiny model."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from sqltune.errors import SqltuneError
from sqltune.sample_data import write_sample_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("accuracy_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


def test_dev_subset_is_stratified_seeded_and_only_where_the_database_exists(bench, spider_dir):
    from sqltune.datasets import read_json

    records = [
        {"id": str(i), "db_id": q["db_id"], "hardness": None} for i, q in enumerate(read_json(spider_dir / "dev.json"))
    ]
    for i, level in enumerate(["easy", "medium", "hard", "extra"] * (len(records) // 4 + 1)):
        if i < len(records):
            records[i]["hardness"] = level
    db_dir = spider_dir / "database"
    everything = bench.dev_ids(records, 0, 1, db_dir)
    assert len(everything) == 972  # wta_1's 62 questions have no database
    chosen = bench.dev_ids(records, 100, 7, db_dir)
    assert len(chosen) == 100 and chosen == bench.dev_ids(records, 100, 7, db_dir)
    assert chosen != bench.dev_ids(records, 100, 8, db_dir)
    by_id = {r["id"]: r for r in records}
    assert all(by_id[i]["db_id"] != "wta_1" for i in chosen)
    levels = Counter(by_id[i]["hardness"] for i in chosen)
    assert all(abs(levels[lv] - 25) <= 1 for lv in ("easy", "medium", "hard", "extra")), levels
    assert [int(i) for i in chosen] == sorted(int(i) for i in chosen)


def test_variant_flags_override_the_defaults_and_bad_ones_name_the_variant(bench):
    args = bench.parse_args(["--schema-style", "dbgpt", "--learning-rate", "1e-4", "--epochs", "2"])
    assert (args.train.num_epochs, args.train.gradient_accumulation_steps) == (2.0, 4)  # flag, then the recipe
    name, settings = bench.parse_variant("qv-ddl:target_modules=q_proj+v_proj,schema_style=ddl,lora_rank=8", args)
    assert name == "qv-ddl"
    assert settings["target_modules"] == ["q_proj", "v_proj"] and settings["schema_style"] == "ddl"
    assert settings["lora_rank"] == 8 and settings["learning_rate"] == 1e-4 and settings["method"] == "lora"
    with pytest.raises(SqltuneError, match="bogus"):
        bench.parse_variant("x:bogus=1", args)
    with pytest.raises(SqltuneError, match="name"):
        bench.parse_variant(":method=qlora", args)
    with pytest.raises(SqltuneError, match="train parameter lora_rank=0 is invalid"):  # TrainConfig validates it
        bench.parse_variant("zero:lora_rank=0", args)
    assert bench.parse_variant("c4:candidates=4", args)[1]["candidates"] == 4  # a PredictConfig setting
    with pytest.raises(SqltuneError, match="predict parameter candidates=0 is invalid"):
        bench.parse_variant("c0:candidates=0", args)
    with pytest.raises(SqltuneError, match="base-c4"):
        bench.parse_variant("base-c4:method=lora", args)
    grpo = bench.parse_variant("rl:rl_steps=20,num_generations=8", args)[1]
    assert (grpo["rl_steps"], grpo["rl_learning_rate"], grpo["num_generations"]) == (20, 1e-5, 8)
    with pytest.raises(SqltuneError, match="rl_steps=0 is invalid"):
        bench.parse_variant("rl0:rl_steps=0", args)


def test_schema_filter_variants_keep_the_unfiltered_runs_keys(bench):
    """A variant names schema_filter / schema_values only when it sets them to something else than the default: the
    unfiltered runs' settings, and so their work-directory keys, are what they were before the settings existed."""
    args = bench.parse_args([])
    plain = bench.parse_variant("lora:method=lora", args)[1]
    assert "schema_filter" not in plain and "schema_values" not in plain
    assert bench.parse_variant("lora:method=lora,schema_filter=none,schema_values=0", args)[1] == plain
    filtered = bench.parse_variant("f:method=lora,schema_filter=lexical,schema_values=2", args)[1]
    assert (filtered["schema_filter"], filtered["schema_values"]) == ("lexical", 2)
    assert {k: v for k, v in filtered.items() if k not in bench.FILTER_KEYS} == plain
    assert bench.schema_of(filtered) == ("ddl", "lexical", 2) and bench.schema_of(plain) == ("ddl", "none", 0)
    with pytest.raises(SqltuneError, match="schema_filter='bm25' is invalid"):
        bench.parse_variant("x:schema_filter=bm25", args)
    with pytest.raises(SqltuneError, match="schema_values='many' is not a int"):
        bench.parse_variant("x:schema_values=many", args)


def test_end_to_end_with_the_tiny_model_writes_the_tables(bench, tmp_path):
    source = tmp_path / "sample"
    write_sample_dataset(source)
    argv = [
        "--name", "smoke", "--spider", str(source), "--base-model", "tiny-random-llama",
        "--train-size", "16", "--dev-size", "8", "--max-steps", "2", "--batch-size", "4", "--grad-accum", "1",
        "--max-seq-len", "384", "--max-new-tokens", "8", "--predict-batch-size", "8", "--template", "alpaca",
        "--variant", "qlora:method=qlora", "--variant", "qlora-c2:method=qlora,candidates=2",
        "--variant", "qlora-grpo:method=qlora,rl_steps=2,num_generations=2,max_completion_length=8",
        "--variant", "qlora-dbgpt:method=qlora,schema_style=dbgpt",
        "--variant", "qlora-filter:method=qlora,schema_filter=lexical,schema_values=2",
        "--variant", "qlora-filter-c2:method=qlora,schema_filter=lexical,schema_values=2,candidates=2",
        "--base-candidates", "1", "--base-candidates", "2",
        "--results", str(tmp_path / "results"), "--work", str(tmp_path / "work"),
    ]  # fmt: skip
    bench.main(argv)
    result = json.loads((tmp_path / "results" / "accuracy-smoke.json").read_text())
    assert list(result["runs"]) == [
        "base", "base-c2", "qlora", "qlora-c2", "qlora-dbgpt", "qlora-filter", "qlora-filter-c2", "qlora-grpo",
    ]  # fmt: skip
    assert result["train_questions"] == 16 and result["dev_questions"] == 8
    assert sum(result["dev_hardness"].values()) == 8
    for name, run in result["runs"].items():
        assert run["evaluation"]["counts"]["ex"]["all"] == 8, name
        assert run["predict"]["prompts"] == 8
    assert result["runs"]["qlora"]["train"]["steps"] == 2
    # The runs with candidates predicted with them, and are paired with the greedy run of the same adapter.
    # qlora and qlora-c2 share one adapter; qlora-grpo continues it with 2 GRPO steps; qlora-dbgpt has its own, and
    # so have the two filtered runs (one).
    assert len(list((tmp_path / "work" / "adapters").iterdir())) == 4
    assert result["runs"]["qlora-c2"]["train"] == result["runs"]["qlora"]["train"]
    grpo = result["runs"]["qlora-grpo"]
    assert grpo["sft"] == result["runs"]["qlora"]["train"]
    assert grpo["train"]["method"] == "grpo" and grpo["train"]["steps"] == 2
    assert grpo["versus_sft"]["sft"] == "qlora" and "versus_greedy" not in grpo
    assert grpo["versus_sft"]["only_with_grpo"] - grpo["versus_sft"]["only_sft"] == round(
        8 * (grpo["evaluation"]["ex"]["all"] - result["runs"]["qlora"]["evaluation"]["ex"]["all"])
    )
    for name, greedy in (("qlora-c2", "qlora"), ("base-c2", "base")):
        run = result["runs"][name]
        assert run["predict"]["candidates"] == 2 and run["predict"]["candidates_generated"] == 16
        versus = run["versus_greedy"]
        assert versus["greedy"] == greedy and versus["time_ratio"] > 0
        assert versus["only_with_candidates"] - versus["only_greedy"] == round(
            8 * (run["evaluation"]["ex"]["all"] - result["runs"][greedy]["evaluation"]["ex"]["all"])
        )
    assert "versus_greedy" not in result["runs"]["qlora"]
    # A schema style other than the benchmark's (ddl) is paired with the ddl run of otherwise the same settings.
    dbgpt = result["runs"]["qlora-dbgpt"]
    assert dbgpt["versus_schema"]["other"] == "qlora" and "versus_schema" not in result["runs"]["qlora"]
    assert dbgpt["versus_schema"]["only_this_style"] - dbgpt["versus_schema"]["only_other_style"] == round(
        8 * (dbgpt["evaluation"]["ex"]["all"] - result["runs"]["qlora"]["evaluation"]["ex"]["all"])
    )
    # A run with a schema filter or values is paired with the run of otherwise the same settings without them.
    for name, other in (("qlora-filter", "qlora"), ("qlora-filter-c2", "qlora-c2")):
        run = result["runs"][name]
        versus = run["versus_unfiltered"]
        assert versus["other"] == other
        assert versus["only_filtered"] - versus["only_unfiltered"] == round(
            8 * (run["evaluation"]["ex"]["all"] - result["runs"][other]["evaluation"]["ex"]["all"])
        )
    assert result["runs"]["qlora-filter-c2"]["versus_greedy"]["greedy"] == "qlora-filter"
    for name in ("qlora", "qlora-filter"):  # recall of the prompts after the budget: the sample's gold all parse
        recall = result["runs"][name]["recall"]
        assert recall["questions"] == 8 and 0 < recall["tables"] <= 1 and 0 < recall["columns"] <= 1
    assert result["runs"]["qlora-dbgpt"]["recall"] is None  # dbgpt lines are not tables: it cannot be told
    assert "schema_units_left_out" in result["runs"]["qlora-filter"]["predict"]
    assert "schema_units_left_out" not in result["runs"]["qlora"]["predict"]
    markdown = (tmp_path / "results" / "accuracy-smoke.md").read_text()
    assert "## Schema filter and values against the unfiltered default" in markdown
    assert "| qlora-filter | ddl, lexical, 2 values | qlora | ddl | 1 |" in markdown
    assert "## What the prompts show of what the gold SQL reads" in markdown
    assert "## Schema styles against each other" in markdown and "| qlora-dbgpt | dbgpt | qlora | ddl |" in markdown
    assert "| qlora | qlora | ddl | 1 |" in markdown and "| qlora-c2 | qlora | ddl | 2 |" in markdown
    assert "| base-c2 | base |" in markdown and "--train-size 16" in markdown
    assert "## SFT + GRPO against SFT" in markdown and "| qlora-grpo | qlora |" in markdown
    assert result["versions"]["torch"] and result["versions"]["peft"]

    # A rerun of the same command reuses every finished step: the adapters are not trained again.
    adapter = next((tmp_path / "work" / "adapters").iterdir()) / "manifest.json"
    before = adapter.stat().st_mtime_ns
    bench.main(argv)
    assert adapter.stat().st_mtime_ns == before
