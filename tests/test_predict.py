"""The predict step on CPU with tiny random models built offline (sqltune.models) and adapters made with peft."""

from __future__ import annotations

import itertools
import json
import sqlite3
from pathlib import Path

import pytest

from sqltune.artifacts import read_jsonl, verify_artifact, write_jsonl
from sqltune.errors import SqltuneError
from sqltune.predict import NO_SQL, PredictConfig, extract_sql, predict
from sqltune.predict.generate import common_prefix_length, generate_hf, length_sorted_batches, prefix_batches

TABLES = ["singer", "concert", "stadium", "student", "course", "teacher", "department", "city"]


def _record(i: int) -> dict:
    """Spider-shaped records whose schemas (hence prompts) differ in length, so batches need padding."""
    tables = TABLES[: 1 + i % len(TABLES)]
    schema = "\n".join(f"{t}: {t}_id (number, primary key), name (text), age (number)" for t in tables)
    return {
        "id": f"q{i}",
        "db_id": f"db{i % 3}",
        "question": f"How many {tables[-1]}s are older than {20 + i}?",
        "schema": schema,
        "sql": f"SELECT count(*) FROM {tables[-1]} WHERE age > {20 + i}",
        "hardness": "easy",
    }


@pytest.fixture(scope="module")
def base_dir() -> Path:
    from sqltune.models import resolve_base_model

    return resolve_base_model("tiny-random-llama")


@pytest.fixture(scope="module")
def tokenizer(base_dir):
    from sqltune.models import load_tokenizer

    return load_tokenizer(base_dir)


@pytest.fixture(scope="module")
def records_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "records.jsonl"
    write_jsonl(path, [_record(i) for i in range(7)])
    return path


@pytest.fixture(scope="module")
def adapter_dir(base_dir, tmp_path_factory) -> Path:
    """A LoRA adapter with non-zero weights (an untrained one would be a no-op), as peft saves it."""
    import torch
    from peft import LoraConfig, get_peft_model

    from sqltune.models import load_model

    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    model = get_peft_model(load_model(base_dir), config)
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    return out


def _predict(
    records_file: Path, out: Path, base_model="tiny-random-llama", adapter=None, db_dir=None, **settings
) -> dict:
    settings = {"max_seq_len": 384, "max_new_tokens": 12, **settings}
    return predict(records_file, base_model, adapter, out, config=PredictConfig(**settings), db_dir=db_dir)


def _untimed(predictions: Path) -> list[dict]:
    """The rows of a predictions artifact without their one varying field, the batch's wall time."""
    return [
        {k: v for k, v in row.items() if k != "batch_latency_s"}
        for row in read_jsonl(predictions / "predictions.jsonl")
    ]


def _databases(db_dir: Path, db_ids=("db0", "db1", "db2")) -> dict[Path, bytes]:
    """A real SQLite file per database of the `_record`s; returns each file's bytes."""
    for db_id in db_ids:
        path = db_dir / db_id / f"{db_id}.sqlite"
        path.parent.mkdir(parents=True)
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, age INTEGER)")
            db.execute("INSERT INTO singer VALUES (1, 'Joe', 52), (2, 'Ann', 29)")
    return {path: path.read_bytes() for path in db_dir.rglob("*.sqlite")}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("SELECT count(*) FROM singer", "SELECT count(*) FROM singer"),
        ("```sql\nSELECT name\nFROM singer;\n```\nThis query lists the names.", "SELECT name FROM singer"),
        ("SQL: SELECT name FROM singer WHERE age > 20;", "SELECT name FROM singer WHERE age > 20"),
        ("SELECT name FROM singer; SELECT 1", "SELECT name FROM singer"),
        ("SELECT name FROM singer\n\nExplanation: names.", "SELECT name FROM singer"),
        (
            "select name\n  from singer\n  Order by age desc\nThis sorts them.",
            "select name from singer Order by age desc",
        ),
        ("Here is the query with a join:\nSELECT a FROM t\n### Instruction:\nmore", "SELECT a FROM t"),
        ("SELECT a FROM t ### Response: x", "SELECT a FROM t"),
        ("SELECT * FROM t WHERE name = 'a;b' ;", "SELECT * FROM t WHERE name = 'a;b'"),
        ("The answer is: SELECT T1.name FROM singer AS T1", "SELECT T1.name FROM singer AS T1"),
        ("WITH x AS (SELECT 1) SELECT * FROM x;", "WITH x AS (SELECT 1) SELECT * FROM x"),
        ("", NO_SQL),
        ("I cannot answer that with the schema given.", NO_SQL),
        ("@ptname ECTSELECT garbage", NO_SQL),
    ],
)
def test_extract_sql_from_messy_outputs(raw, expected):
    assert extract_sql(raw) == expected


def test_no_sql_placeholder_is_a_query_that_runs_and_honestly_fails():
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE singer (name TEXT)")
    db.execute("INSERT INTO singer VALUES ('Joe')")
    assert db.execute(NO_SQL).fetchall() == [("sqltune: no SQL in model output",)]
    assert db.execute(NO_SQL).fetchall() != db.execute("SELECT name FROM singer").fetchall()


def test_length_sorted_batches_group_similar_lengths_longest_first():
    batches = length_sorted_batches([3, 9, 1, 9, 5], batch_size=2)
    assert batches == [[1, 3], [4, 0], [2]]
    with pytest.raises(ValueError):
        length_sorted_batches([1], batch_size=0)


def test_prefix_batches_keep_one_schema_per_batch_and_pool_the_rest():
    schema_a, schema_b = list(range(100, 140)), list(range(200, 230))
    prompts = [
        *(schema_a + [1] * (1 + i % 3) for i in range(5)),  # 5 questions on database A: two batches of their own
        *(schema_b + [2] * (1 + i) for i in range(4)),  # 4 on database B: one batch
        [7, 8, 9],  # two unrelated prompts: pooled, batched by length
        list(range(300, 320)),
    ]
    batches = prefix_batches(prompts, batch_size=4)
    assert sorted(i for batch in batches for i in batch) == list(range(len(prompts)))
    groups = [{0, 1, 2, 3, 4}, {5, 6, 7, 8}, {9, 10}]
    assert sorted(len(b) for b in batches) == [2, 2, 3, 4]  # A evenly split, not 4 + 1
    assert all(any(set(batch) <= group for group in groups) for batch in batches)
    assert [len(prompts[b[0]]) for b in batches] == sorted((len(prompts[b[0]]) for b in batches), reverse=True)
    assert all(len(prompts[a]) >= len(prompts[b]) for batch in batches for a, b in itertools.pairwise(batch))
    assert common_prefix_length([prompts[i] for i in batches[0]]) >= 40
    with pytest.raises(ValueError):
        prefix_batches(prompts, batch_size=0)


def test_batched_generation_equals_one_at_a_time(base_dir, tokenizer):
    from sqltune.models import load_model
    from sqltune.prompt import encode_prompt

    model = load_model(base_dir).eval()
    prompts = [encode_prompt(tokenizer, _record(i)["schema"] + _record(i)["question"], "alpaca") for i in range(6)]
    assert len({len(p) for p in prompts}) > 3  # really different lengths: left padding is exercised
    batched, _ = generate_hf(model, tokenizer, prompts, batch_size=4, max_new_tokens=16)
    single, _ = generate_hf(model, tokenizer, prompts, batch_size=1, max_new_tokens=16)
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.new_tokens for g in batched] == [g.new_tokens for g in single]
    assert [g.prompt_tokens for g in batched] == [len(p) for p in prompts]
    assert all(g.new_tokens > 0 for g in batched)


def test_new_tokens_count_what_the_model_generated(base_dir, tokenizer):
    """The EOS that ends an output was generated (vLLM and an OpenAI usage count it) but is no text; padding after a
    stop is not generated, also where the pad token is the EOS token (SmolLM2's)."""
    from sqltune.models import load_model
    from sqltune.predict.generate import _generate_batch, _generated_length
    from sqltune.prompt import encode_prompt

    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    stop = tokenizer.encode("SELECT 1;", add_special_tokens=False)
    prose = tokenizer.encode("SELECT 1", add_special_tokens=False)
    assert _generated_length([*prose, eos, pad, pad], {eos}, pad, tokenizer) == (len(prose) + 1, len(prose))
    assert _generated_length([*stop, pad, pad], {eos}, pad, tokenizer) == (len(stop), len(stop))
    assert _generated_length([*stop, eos, eos], {eos}, eos, tokenizer) == (len(stop), len(stop))  # pad is EOS
    assert _generated_length([*prose, eos, eos], {eos}, eos, tokenizer) == (len(prose) + 1, len(prose))
    assert _generated_length(prose, {eos}, pad, tokenizer) == (len(prose), len(prose))  # max_new_tokens reached

    model = load_model(base_dir).eval()
    prompt = encode_prompt(tokenizer, _record(1)["schema"] + _record(1)["question"], "alpaca")
    free, _ = generate_hf(model, tokenizer, [prompt], batch_size=1, max_new_tokens=12)
    [ids], _ = _generate_batch(model, tokenizer, [prompt], False, 12, {eos})
    stopper = next(i for i in range(3, len(ids)) if ids[i] not in ids[:i])  # a token first generated at step i
    model.generation_config.eos_token_id = ids[stopper]  # the model now stops by generating it
    stopped, _ = generate_hf(model, tokenizer, [prompt], batch_size=1, max_new_tokens=12)
    assert stopped[0].new_tokens == stopper + 1 and free[0].text.startswith(stopped[0].text)


def test_shared_prefix_generation_equals_whole_prompts_one_at_a_time(base_dir, tokenizer):
    from sqltune.models import load_model
    from sqltune.prompt import encode_prompt

    model = load_model(base_dir).eval()
    schemas = [_record(7)["schema"], _record(3)["schema"]]
    questions = ["How many singers?", "Name every teacher older than 30 and their department.", "Count cities."]
    prompts = [encode_prompt(tokenizer, f"{s}\nQuestion: {q}", "alpaca") for s in schemas for q in questions]
    assert common_prefix_length(prompts[:3]) > 30 and len({len(p) for p in prompts[:3]}) == 3
    shared, _ = generate_hf(model, tokenizer, prompts, batch_size=3, max_new_tokens=16)
    whole, _ = generate_hf(model, tokenizer, prompts, batch_size=1, max_new_tokens=16, share_prefixes=False)
    assert [g.text for g in shared] == [g.text for g in whole]
    assert [g.new_tokens for g in shared] == [g.new_tokens for g in whole]
    assert all(g.new_tokens > 0 for g in shared)


def test_prediction_files_are_what_the_evaluator_reads(tmp_path):
    from sqltune.evaluate.inputs import load_gold, load_predictions

    too_long = {**_record(7), "id": "long", "question": "How many singers? " * 40}
    lines = _record(6)["schema"].split("\n")  # the same schema as units, the first table the most relevant
    units = [{"kind": "table", "table": line.split(":")[0], "text": line, "drop": len(lines) - 1 - n}
             for n, line in enumerate(lines)]  # fmt: skip
    filtered = {**_record(6), "id": "units", "schema_units": units}
    records = [*(_record(i) for i in range(7)), too_long, filtered]
    write_jsonl(tmp_path / "records.jsonl", records)
    out = tmp_path / "pred"
    metrics = _predict(tmp_path / "records.jsonl", out, batch_size=3, max_seq_len=300)
    rows = read_jsonl(out / "predictions.jsonl")
    assert [r["id"] for r in rows] == [r["id"] for r in records]
    gold = load_gold(tmp_path / "records.jsonl")
    assert load_predictions(out / "predictions.jsonl", gold) == [r["sql"] for r in rows]
    assert load_predictions(out / "predictions.txt", gold) == [r["sql"] for r in rows]
    # Prompts are rebuilt to this model's budget (300 - 12 new tokens): long schemas are trimmed and counted;
    # a question that cannot fit at all is not generated but still gets its (failing) prediction.
    trimmed = [r for r in rows if r["schema_lines_dropped"]]
    assert len(trimmed) == metrics["trimmed_prompts"] >= 4
    assert all(r["prompt_tokens"] <= 288 and r["new_tokens"] > 0 for r in rows[:7] + rows[8:])
    assert (rows[7]["prompt_fits"], rows[7]["sql"], rows[7]["raw"]) == (False, NO_SQL, "")
    assert (metrics["prompts"], metrics["generated_prompts"], metrics["prompts_over_context"]) == (9, 8, 1)
    # A record with schema units loses whole tables, least relevant (last) first, and its row names them.
    assert rows[8]["schema_left_out"] == [f"table {u['table']}" for u in units[::-1][: rows[8]["schema_lines_dropped"]]]
    assert rows[8]["schema_left_out"] and metrics["schema_units_left_out"] == {"table": len(rows[8]["schema_left_out"])}
    assert all("schema_left_out" not in r for r in rows[:8])
    assert metrics["generated_tokens"] == sum(r["new_tokens"] for r in rows) and metrics["prompts_per_s"] > 0
    assert json.loads((out / "predict_metrics.json").read_text()) == metrics
    assert verify_artifact(out)["kind"] == "predictions"


def test_adapter_is_merged_and_changes_the_output(records_file, tmp_path, adapter_dir, base_dir, tokenizer):
    from peft import PeftModel

    from sqltune.models import load_model
    from sqltune.predict.run import plan_prompts

    metrics = _predict(records_file, tmp_path / "a", adapter=adapter_dir, limit=4, batch_size=4)
    assert metrics["merged"] is True
    with_adapter = [r["raw"] for r in read_jsonl(tmp_path / "a" / "predictions.jsonl")]
    _predict(records_file, tmp_path / "b", limit=4, batch_size=4)
    base_only = [r["raw"] for r in read_jsonl(tmp_path / "b" / "predictions.jsonl")]
    assert with_adapter != base_only

    # The merged weights generate what the unmerged adapter generates.
    unmerged = PeftModel.from_pretrained(load_model(base_dir), str(adapter_dir)).eval()
    plan = plan_prompts(read_jsonl(records_file)[:4], tokenizer, "alpaca", 384 - 12)
    expected, _ = generate_hf(unmerged, tokenizer, plan.ids, batch_size=1, max_new_tokens=12)
    assert with_adapter == [g.text for g in expected]


def test_template_and_context_come_from_the_adapters_training_parameters(records_file, tmp_path, adapter_dir):
    import shutil

    from sqltune.artifacts import write_manifest

    trained = tmp_path / "trained"
    shutil.copytree(adapter_dir, trained)
    for name in ("prompt_template", "template"):  # `template`: what adapters trained before the rename record
        write_manifest(trained, "adapter", parameters={name: "chat", "max_seq_len": 300})
        config = PredictConfig(max_new_tokens=8, limit=2)
        metrics = predict(records_file, "tiny-random-llama", trained, tmp_path / name, config=config)
        assert (metrics["prompt_template"], metrics["context_len"]) == ("chat", 300)


def test_adapter_for_another_base_model_is_refused_before_generating(records_file, tmp_path, adapter_dir):
    with pytest.raises(SqltuneError, match=r"trained on .*tiny-random-llama.* not on base model 'tiny-random-qwen2'"):
        _predict(records_file, tmp_path / "out", base_model="tiny-random-qwen2", adapter=adapter_dir)
    assert not (tmp_path / "out").exists()


def test_adapter_whose_shapes_do_not_fit_is_refused(records_file, tmp_path, adapter_dir, base_dir, tokenizer):
    """Same name, different hidden size: the name check passes, the shape check names the tensor."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base_dir)
    config.hidden_size, config.num_attention_heads, config.num_key_value_heads = 32, 2, 1
    other = tmp_path / base_dir.name
    AutoModelForCausalLM.from_config(config).save_pretrained(other)
    tokenizer.save_pretrained(other)
    with pytest.raises(SqltuneError, match=r"does not fit this base model: .*q_proj.* has size 64 .* has 32"):
        _predict(records_file, tmp_path / "out", base_model=str(other), adapter=adapter_dir)


def test_vllm_backend_without_vllm_is_a_clear_error(records_file, tmp_path):
    with pytest.raises(SqltuneError, match="needs the vllm package"):
        _predict(records_file, tmp_path / "out", backend="vllm")
    with pytest.raises(SqltuneError, match="predict parameter backend='tgi' is invalid: expected one of auto, hf"):
        _predict(records_file, tmp_path / "out", backend="tgi")


def test_bad_records_are_named(tmp_path):
    bad = tmp_path / "records.jsonl"
    write_jsonl(bad, [_record(0), {k: v for k, v in _record(1).items() if k != "question"}])
    with pytest.raises(SqltuneError, match="record q1 lacks question"):
        _predict(bad, tmp_path / "out")
    write_jsonl(bad, [_record(0), _record(0)])
    with pytest.raises(SqltuneError, match="record id 'q0' appears twice"):
        _predict(bad, tmp_path / "out")


def test_cli_predicts_and_prints_metrics(records_file, tmp_path):
    from typer.testing import CliRunner

    from sqltune.cli import app

    out = tmp_path / "cli"
    args = ["predict", "--data", str(records_file), "--base-model", "tiny-random-llama", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--backend", "hf", "--limit", "2", "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["prompts"] == 2
    assert len((out / "predictions.txt").read_text().splitlines()) == 2


def test_candidates_are_greedy_then_seeded_samples_with_their_log_likelihood(base_dir, tokenizer):
    import torch

    from sqltune.models import load_model
    from sqltune.predict.generate import Sampling, generate_candidates_hf
    from sqltune.prompt import encode_prompt

    model = load_model(base_dir).eval()
    prompts = [encode_prompt(tokenizer, _record(i)["schema"] + _record(i)["question"], "alpaca") for i in range(5)]
    sampling = Sampling(candidates=3, temperature=1.0, top_p=0.9, seed=7)
    outputs, _ = generate_candidates_hf(model, tokenizer, prompts, sampling, batch_size=6, max_new_tokens=10)
    greedy, _ = generate_hf(model, tokenizer, prompts, batch_size=1, max_new_tokens=10)
    assert [len(candidates) for candidates in outputs] == [3] * 5
    assert [candidates[0].text for candidates in outputs] == [g.text for g in greedy]
    assert any(c.text != candidates[0].text for candidates in outputs for c in candidates[1:])
    again, _ = generate_candidates_hf(model, tokenizer, prompts, sampling, batch_size=6, max_new_tokens=10)
    assert [[c.text for c in cs] for cs in again] == [[c.text for c in cs] for cs in outputs]
    other_seed = Sampling(candidates=3, temperature=1.0, top_p=0.9, seed=8)
    other, _ = generate_candidates_hf(model, tokenizer, prompts, other_seed, batch_size=6, max_new_tokens=10)
    assert [[c.text for c in cs] for cs in other] != [[c.text for c in cs] for cs in outputs]
    # The recorded log-likelihood is the model's (untempered) one of the tokens generated: for the greedy candidate,
    # the sum over the most likely token at each step, recomputed here with whole forward passes.
    for prompt, candidates in zip(prompts, outputs, strict=True):
        ids, expected = list(prompt), 0.0
        for _ in range(candidates[0].new_tokens):
            with torch.inference_mode():
                log_probs = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)
            ids.append(int(log_probs.argmax()))
            expected += log_probs[ids[-1]].item()
        assert tokenizer.decode(ids[len(prompt) :], skip_special_tokens=True) == candidates[0].text
        assert candidates[0].log_prob == pytest.approx(expected, abs=1e-3)
        assert all(c.log_prob < 0 for c in candidates)


def test_predict_with_candidates_runs_and_chooses_them(records_file, tmp_path):
    from typer.testing import CliRunner

    from sqltune.cli import app

    db_dir = tmp_path / "database"
    databases = _databases(db_dir)
    out = tmp_path / "c3"
    args = ["predict", "--data", str(records_file), "--base-model", "tiny-random-llama", "--out", str(out)]
    args += ["--backend", "hf", "--limit", "4", "--max-seq-len", "384", "--max-new-tokens", "12", "--batch-size", "6"]
    result = CliRunner().invoke(app, [*args, "--candidates", "3", "--db-dir", str(db_dir), "--temperature", "1.0"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    rows = read_jsonl(out / "predictions.jsonl")
    assert len(rows) == 4
    for row in rows:
        assert len(row["candidates"]) == 3 and row["sql"] == row["candidates"][row["chosen"]]["sql"]
        assert row["raw"] == row["candidates"][row["chosen"]]["raw"]
        assert row["new_tokens"] == sum(c["new_tokens"] for c in row["candidates"]) > 0
        for candidate in row["candidates"]:
            assert set(candidate) == {"sql", "raw", "log_prob", "new_tokens", "ran", "error", "digest", "rows"}
            assert candidate["ran"] == (candidate["digest"] is not None) == (candidate["error"] is None)
    # A random model writes no runnable SQL: nothing runs, the greedy answer stays, and every candidate says why.
    errors = [c["error"] for row in rows for c in row["candidates"]]
    assert errors.count("no SQL in the model's output") >= 6 and all(errors)
    assert all(row["chosen"] == 0 for row in rows)
    assert len({c["raw"] for row in rows for c in row["candidates"]}) > 4  # the sampled candidates differ
    assert (metrics["candidates"], metrics["candidates_generated"], metrics["candidates_ran"]) == (3, 12, 0)
    assert metrics["candidates_failed"] == 12 and metrics["questions_without_runnable_candidate"] == 4
    assert metrics["chosen_differs_from_greedy"] == 0 and metrics["candidates_per_s"] > 0
    assert metrics["check_s"] >= 0 and metrics["generated_tokens"] == sum(r["new_tokens"] for r in rows)
    assert verify_artifact(out)["inputs"].keys() >= {"data", "db_dir"}

    # Seeded: a rerun writes the same predictions; the greedy candidate is what --candidates 1 predicts.
    config = {"limit": 4, "batch_size": 6, "temperature": 1.0}
    _predict(records_file, tmp_path / "again", db_dir=db_dir, candidates=3, **config)
    assert _untimed(tmp_path / "again") == _untimed(out)
    _predict(records_file, tmp_path / "greedy", limit=4, batch_size=2)
    greedy = read_jsonl(tmp_path / "greedy" / "predictions.jsonl")
    assert [r["candidates"][0]["raw"] for r in rows] == [r["raw"] for r in greedy]
    assert {path: path.read_bytes() for path in databases} == databases


def test_one_candidate_is_the_greedy_path_unchanged(records_file, tmp_path, base_dir, tokenizer):
    """`--candidates 1` writes today's rows (no candidate fields) from plain greedy generation, needing no database."""
    from sqltune.models import load_model
    from sqltune.predict.run import plan_prompts

    _predict(records_file, tmp_path / "one", candidates=1, batch_size=3, temperature=1.5, seed=3)
    _predict(records_file, tmp_path / "default", batch_size=3)
    assert _untimed(tmp_path / "one") == _untimed(tmp_path / "default")
    rows = read_jsonl(tmp_path / "one" / "predictions.jsonl")
    fields = {"id", "db_id", "sql", "raw", "prompt_tokens", "new_tokens", "batch_latency_s"}
    assert all(set(row) == fields | {"schema_lines_dropped", "prompt_fits"} for row in rows)
    plan = plan_prompts(read_jsonl(records_file), tokenizer, "alpaca", 384 - 12)
    model = load_model(base_dir).eval()
    expected, _ = generate_hf(model, tokenizer, plan.ids, batch_size=1, max_new_tokens=12, share_prefixes=False)
    assert [row["raw"] for row in rows] == [g.text for g in expected]
    assert [row["sql"] for row in rows] == [extract_sql(g.text) for g in expected]


def test_a_question_whose_database_is_missing_keeps_its_greedy_answer(records_file, tmp_path, caplog):
    """Spider's dev set names a database it does not ship (wta_1): the run goes on and says which questions keep
    their greedy answer (a candidate on such a database fails with the reason: test_candidates)."""
    db_dir = tmp_path / "database"
    _databases(db_dir, db_ids=("db0", "db2"))
    (db_dir / "db1").mkdir()
    (db_dir / "db1" / "db1.sqlite").write_text("not a database")
    _predict(records_file, tmp_path / "out", candidates=2, db_dir=db_dir, limit=6, batch_size=4, max_new_tokens=8)
    rows = read_jsonl(tmp_path / "out" / "predictions.jsonl")
    assert len(rows) == 6 and {row["db_id"] for row in rows} == {"db0", "db1", "db2"}
    assert all(row["chosen"] == 0 for row in rows if row["db_id"] == "db1")
    assert "2 questions keep their greedy answer, their database cannot be read: " in caplog.text
    assert "db1.sqlite is not a SQLite database" in caplog.text


def test_candidates_without_their_databases_are_refused_before_generating(records_file, tmp_path):
    with pytest.raises(SqltuneError, match="candidates > 1 needs --db-dir"):
        _predict(records_file, tmp_path / "out", candidates=2)
    db_dir = tmp_path / "database"
    for db_id in ("db0", "db1", "db2"):  # no database of the records can be read: the wrong directory
        (db_dir / db_id / f"{db_id}.sqlite").mkdir(parents=True)
    with pytest.raises(SqltuneError, match=r"no database of the records can be read \(.*db0.sqlite is a directory"):
        _predict(records_file, tmp_path / "out", candidates=2, db_dir=db_dir)
    assert not (tmp_path / "out").exists()
    for bad, message in (({"candidates": 0}, "candidates=0"), ({"temperature": 0.0}, "temperature=0.0"),
                         ({"top_p": 1.5}, "top_p=1.5")):  # fmt: skip
        with pytest.raises(SqltuneError, match=f"predict parameter {message} is invalid"):
            PredictConfig(**bad)


def test_a_corrupt_adapter_is_an_error_naming_it(records_file, adapter_dir, tmp_path):
    """Truncated weights, or a PEFT config that is no JSON: `sqltune predict` exits 2 with one line naming the
    adapter, before any model loads; a plain PEFT directory without a manifest is checked as well."""
    import shutil
    import subprocess
    import sys

    truncated, not_json = tmp_path / "truncated", tmp_path / "not-json"
    for broken in (truncated, not_json):
        shutil.copytree(adapter_dir, broken)
    weights = truncated / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (not_json / "adapter_config.json").write_text('{"r": 4,')
    sqltune = str(Path(sys.executable).parent / "sqltune")
    for broken, problem in (
        (truncated, "adapter_model.safetensors is corrupt"),
        (not_json, "adapter_config.json is corrupt"),
    ):
        args = ["predict", "--data", str(records_file), "--base-model", "tiny-random-llama", "--adapter", str(broken)]
        done = subprocess.run([sqltune, *args, "--out", str(tmp_path / "out")], capture_output=True, text=True)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert f"error: adapter {broken}: {problem}" in done.stderr
    assert not (tmp_path / "out").exists()
