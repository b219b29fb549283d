"""Base-model resolution and the tokenizer helpers that train and predict share."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sqltune.artifacts import sha256_file
from sqltune.errors import SqltuneError
from sqltune.models import load_model, load_tokenizer, resolve_base_model
from sqltune.prompt import build_prompt, encode_prompt, prompt_functions

RECORD = {
    "question": "How many singers are older than 30?",
    "schema": "\n".join(f"table_{i}: id (number, primary key), name (text), age (number)" for i in range(40)),
}


@pytest.mark.parametrize("name, model_type", [("tiny-random-llama", "llama"), ("tiny-random-qwen2", "qwen2")])
def test_tiny_models_are_built_deterministically_and_cached(tmp_path, monkeypatch, name, model_type):
    built = []
    for run in ("a", "b"):
        monkeypatch.setenv("SQLTUNE_CACHE", str(tmp_path / run))
        path = resolve_base_model(name)
        assert path.is_relative_to(tmp_path / run)
        built.append({f: sha256_file(path / f) for f in ("model.safetensors", "tokenizer.json", "config.json")})
        mtime = (path / "model.safetensors").stat().st_mtime_ns
        assert resolve_base_model(name) == path  # second call reuses the cache
        assert (path / "model.safetensors").stat().st_mtime_ns == mtime
    assert built[0] == built[1]
    assert json.loads((path / "config.json").read_text())["model_type"] == model_type
    assert not list(path.parent.glob(".*.tmp"))  # no temp build left behind

    tokenizer = load_tokenizer(path)
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token_id not in (None, tokenizer.eos_token_id)
    sql = "SELECT count(*) FROM singer WHERE age > 30"
    assert tokenizer.decode(tokenizer(sql)["input_ids"]) == sql
    model = load_model(path)
    assert model.config.vocab_size == len(tokenizer)


def test_prompt_functions_count_the_tokens_the_model_sees_and_trim_the_schema(tmp_path, monkeypatch):
    monkeypatch.setenv("SQLTUNE_CACHE", str(tmp_path))
    tokenizer = load_tokenizer(resolve_base_model("tiny-random-llama"))
    count_tokens, chat_render = prompt_functions(tokenizer, "chat")
    prompt = build_prompt(RECORD, "chat", max_tokens=300, count_tokens=count_tokens, chat_render=chat_render)
    assert prompt.fits and prompt.schema_lines_dropped > 0
    assert prompt.text.startswith("<|im_start|>system\n") and prompt.text.endswith("<|im_start|>assistant\n")
    assert RECORD["question"] in prompt.text
    ids = encode_prompt(tokenizer, prompt.text, "chat")
    assert count_tokens(prompt.text) == len(ids) <= 300
    assert tokenizer.convert_ids_to_tokens(ids[0]) == "<|im_start|>"  # special tokens parsed, not spelled out

    count_alpaca, render_alpaca = prompt_functions(tokenizer, "alpaca")
    assert render_alpaca is None
    assert build_prompt(RECORD, "alpaca", max_tokens=10_000, count_tokens=count_alpaca).schema_lines_dropped == 0


def test_bad_specs_fail_clearly(tmp_path):
    with pytest.raises(SqltuneError, match=r"base model not found: .*no-such-model"):
        resolve_base_model(str(tmp_path / "no-such-model"))
    with pytest.raises(SqltuneError, match=r"has no config\.json"):
        resolve_base_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SqltuneError, match="has no weights"):
        resolve_base_model(str(tmp_path))
    with pytest.raises(SqltuneError, match="hf://org/name"):
        resolve_base_model("hf://just-a-name")
    # No hub here (and this repository does not exist anywhere): one clear error, not a traceback.
    with pytest.raises(SqltuneError, match="could not fetch base model hf://sqltune-test/no-such-model@main"):
        resolve_base_model("hf://sqltune-test/no-such-model@main")


def test_chat_template_is_required_for_the_chat_template(tmp_path, monkeypatch):
    monkeypatch.setenv("SQLTUNE_CACHE", str(tmp_path))
    tokenizer = load_tokenizer(resolve_base_model("tiny-random-qwen2"))
    tokenizer.chat_template = None
    with pytest.raises(SqltuneError, match="chat template"):
        prompt_functions(tokenizer, "chat")
    with pytest.raises(SqltuneError, match="unknown prompt template 'json'"):
        prompt_functions(tokenizer, "json")


@pytest.mark.slow
def test_smollm2_is_converted_from_the_wheels_gguf():
    """The real SmolLM2-135M-Instruct (first run converts the GGUF, ~1 min; later runs read the cache)."""
    path = resolve_base_model("smollm2-135m")
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert "quantization_config" not in config
    tokenizer = load_tokenizer(path)
    assert len(tokenizer) == 49152 and tokenizer.eos_token == "<|im_end|>"
    count_tokens, chat_render = prompt_functions(tokenizer, "chat")
    text = build_prompt(RECORD, "chat", max_tokens=256, count_tokens=count_tokens, chat_render=chat_render).text
    assert "<|im_start|>assistant\n" in text and count_tokens(text) <= 256
    assert Path(path, "model.safetensors").stat().st_size > 400e6  # fp32 weights, dequantized from Q4_1
