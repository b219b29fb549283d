"""The per-GPU memory estimate against numbers derived by hand for Qwen2.5-72B, and the error that names the fix."""

from __future__ import annotations

import re

import pytest

from sqltune.errors import SqltuneError
from sqltune.train import TrainConfig
from sqltune.train.memory import GIB, NF4_BYTES, check_fits, estimate, model_shape

# Qwen2.5-72B's config.json: 80 layers, hidden 8192, MLP 29568, 64 query / 8 key-value heads of 128, vocab 152064.
H, F, L, V, KV = 8192, 29568, 80, 152064, 8 * 128
ATTENTION = 2 * H * H + 2 * H * KV + (H + 2 * KV)  # q and o, k and v, biases of q, k, v
MLP = 3 * H * F
LAYER = ATTENTION + MLP + 2 * H  # two RMSNorms
PARAMS = L * LAYER + 2 * V * H + H  # embeddings and the untied head, the final norm
LINEAR = L * (2 * H * H + 2 * H * KV + MLP)  # quantizable: every linear weight but the head
LORA_16 = 16 * L * (2 * (H + H) + 2 * (H + KV) + 2 * (H + F) + (F + H))  # r·(in+out) for q,o,k,v,gate,up,down


@pytest.fixture(scope="module")
def qwen72b(tmp_path_factory):
    from transformers import AutoConfig

    path = tmp_path_factory.mktemp("qwen2.5-72b")
    AutoConfig.for_model(
        "qwen2", vocab_size=V, hidden_size=H, intermediate_size=F, num_hidden_layers=L, num_attention_heads=64,
        num_key_value_heads=8, tie_word_embeddings=False,
    ).save_pretrained(path)  # fmt: skip
    return path


def settings(**overrides) -> TrainConfig:
    return TrainConfig(**{"lora_rank": 16, "batch_size": 1, "max_seq_len": 1024, **overrides})


def test_the_model_is_counted_without_its_weights(qwen72b):
    shape = model_shape(qwen72b, settings())
    assert (shape.params, shape.quantizable, shape.lora, shape.largest_layer) == (PARAMS, LINEAR, LORA_16, LAYER)
    assert 72.0e9 < PARAMS < 73.5e9  # the published size, 72.7B


def test_the_estimate_adds_up_the_derived_terms(qwen72b):
    shape = model_shape(qwen72b, settings())
    tokens = 1024
    ddp = estimate(shape, settings(), world_size=8, bf16=True)
    assert ddp.weights == PARAMS * 2 and ddp.lora_state == LORA_16 * 16 and ddp.gathered == 0
    # checkpointing: each layer's bf16 input, one layer's activations, logits in bf16 + fp32 + fp32 gradient
    assert ddp.activations == L * tokens * H * 2 + 34 * tokens * H + tokens * V * 10
    assert 140 < ddp.total / GIB < 150  # "~145 GiB per GPU under ddp"
    fsdp = estimate(shape, settings(parallelism="fsdp"), world_size=8, bf16=True)
    assert fsdp.weights == PARAMS * 2 / 8 and fsdp.lora_state == LORA_16 * 16 / 8
    assert fsdp.gathered == 2 * LAYER * 2 and fsdp.activations == ddp.activations
    assert 18 < fsdp.total / GIB < 25
    qlora = estimate(shape, settings(method="qlora"), world_size=1, bf16=True)
    assert qlora.weights == LINEAR * NF4_BYTES + (PARAMS - LINEAR) * 2
    no_checkpointing = estimate(shape, settings(gradient_checkpointing=False), world_size=1, bf16=True)
    assert no_checkpointing.activations == L * 34 * tokens * H + tokens * V * 10


def test_a_run_that_cannot_fit_names_the_option_that_would(qwen72b):
    shape = model_shape(qwen72b, settings())
    h100 = 80 * GIB
    with pytest.raises(SqltuneError) as error:
        check_fits(shape, settings(), 8, 8, True, h100, "Qwen2.5-72B")
    message = str(error.value)
    assert message.startswith("Qwen2.5-72B lora needs ~14") and "GiB per GPU under ddp on 8 GPUs" in message
    # 135.4 / 8 weights + 3.1 / 8 LoRA state + 3.0 activations + 2 gathered layers of 0.87B bf16 (3.3 GiB)
    assert message.endswith("with --parallelism fsdp on 8 GPUs ~24 GiB"), message
    with pytest.raises(SqltuneError, match=r"with --parallelism fsdp --num-nodes 2 \(2 nodes of 1 GPUs\)"):
        check_fits(shape, settings(method="qlora", max_seq_len=4096, batch_size=4), 1, 1, True, h100, "72B")
    fits = check_fits(shape, settings(parallelism="fsdp"), 8, 8, True, h100, "Qwen2.5-72B")
    assert fits.total < 0.9 * h100


def test_in_a_pipeline_the_advice_names_pipeline_parameters(qwen72b, monkeypatch):
    from sqltune.settings import FROM_PIPELINE_ENV

    monkeypatch.setenv(FROM_PIPELINE_ENV, "1")  # what a component's build_config sets
    shape = model_shape(qwen72b, settings())
    expected = 'with pipeline parameter parallelism="fsdp" and pipeline parameter num_nodes=2 (2 nodes of 1 GPUs)'
    with pytest.raises(SqltuneError, match=re.escape(expected)):
        check_fits(shape, settings(method="qlora", max_seq_len=4096, batch_size=4), 1, 1, True, 80 * GIB, "72B")
