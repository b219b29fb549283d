"""Prediction throughput: the predict step's batched greedy generation against one prompt at a time.

Default (CPU): SmolLM2-135M-Instruct, Spider-dev prompts rebuilt with the model's tokenizer (`chat`
template, as the predict step builds them), the first `--n` dev questions in file order (Spider dev
groups its ~50 questions per database, so this keeps the real set's shape), ~60 new tokens. Three ways,
same model and prompts: the predict step (batches sharing one schema prefix, run once per batch);
batching by length alone, every prompt run whole; and the baseline, what DB-GPT-Hub does: one
`generate()` call per question.

`--vllm` (GPU, vllm installed): a real-size architecture (Qwen2.5-7B shape) with random weights, all dev
prompts through vLLM against the HF backend's batched generation (on `--hf-n` of them; rates compare).

    .venv/bin/python benchmarks/bench_predict.py [--n 64] [--batch-size 16] [--max-new-tokens 60]
    python benchmarks/bench_predict.py --vllm [--hf-n 256]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("SQLTUNE_PROGRESS", "0")

from sqltune.artifacts import read_jsonl
from sqltune.models import load_model, load_tokenizer, resolve_base_model
from sqltune.predict.generate import Generation, generate_hf
from sqltune.predict.run import plan_prompts

# Qwen2.5-7B's shape (vocabulary from the tokenizer in use): what a real fine-tune serves.
QWEN_7B_SHAPE = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "max_position_embeddings": 4096,
}


def spider_dev_records(spider: Path, out: Path) -> list[dict[str, Any]]:
    """Real dev records through the preprocess step; synthetic Spider-like ones when Spider is absent."""
    if (spider / "dev.json").is_file():
        from sqltune.preprocess import PreprocessConfig, preprocess

        preprocess(spider, out, config=PreprocessConfig(dataset="spider", split="dev", schema_style="dbgpt"))
        return read_jsonl(out / "records.jsonl")
    print(f"Spider not found at {spider}: synthesizing 1034 Spider-shaped records with 8-60 schema lines")
    return [
        {
            "id": str(i),
            "db_id": f"db{i % 20}",
            "question": f"Which singers older than {i % 50} sang in a concert in {1990 + i % 30}?",
            "schema": "\n".join(
                f"table_{t}: id (number, primary key), name (text), year (number), capacity (number)"
                for t in range(8 + i % 53)
            ),
        }
        for i in range(1034)
    ]


def run(label: str, work) -> tuple[list[Generation], float]:
    started = time.perf_counter()
    generations, _ = work()
    seconds = time.perf_counter() - started
    tokens = sum(g.new_tokens for g in generations)
    print(
        f"{label:<34} {len(generations):5d} prompts {seconds:8.1f} s {len(generations) / seconds:8.2f} prompts/s "
        f"{tokens / seconds:9.1f} new tokens/s ({tokens / len(generations):.0f} per prompt)",
        flush=True,
    )
    return generations, seconds


def describe(prompt_ids: list[list[int]]) -> None:
    lengths = sorted(len(ids) for ids in prompt_ids)
    print(
        f"{len(lengths)} prompts, tokens: min {lengths[0]}, median {statistics.median(lengths):.0f}, "
        f"mean {statistics.mean(lengths):.0f}, max {lengths[-1]}",
        flush=True,
    )


def bench_cpu(args: argparse.Namespace, records: list[dict[str, Any]]) -> None:
    base = resolve_base_model(args.model)
    tokenizer, model = load_tokenizer(base), load_model(base).eval()
    import torch

    print(f"model {args.model}, {torch.get_num_threads()} CPU threads, max_new_tokens {args.max_new_tokens}")
    plan = plan_prompts(records[: args.n], tokenizer, args.template, args.context - args.max_new_tokens)
    describe(plan.ids)
    print(f"{len({r['db_id'] for r in records[: args.n]})} databases")

    def batched(share_prefixes: bool, batch_size: int = args.batch_size):
        return lambda: generate_hf(
            model,
            tokenizer,
            plan.ids,
            batch_size=batch_size,
            max_new_tokens=args.max_new_tokens,
            share_prefixes=share_prefixes,
        )

    step, step_s = run(f"predict step (batch size {args.batch_size})", batched(True))
    by_length, by_length_s = run(f"by length, whole prompts (batch {args.batch_size})", batched(False))
    single, single_s = run("one at a time (baseline)", batched(False, batch_size=1))
    print(f"speedup predict step / one at a time: {single_s / step_s:.2f}x (target >= 5x)")
    print(f"speedup by length alone / one at a time: {single_s / by_length_s:.2f}x")
    for label, outputs in (("predict step", step), ("by length", by_length)):
        same = sum(a.text == b.text for a, b in zip(outputs, single, strict=True))
        print(f"identical outputs, {label} vs one at a time: {same}/{len(single)}")


def random_weight_model(tokenizer_dir: Path, out: Path) -> Path:
    """A Qwen2.5-7B-shaped model with random bf16 weights and SmolLM2's tokenizer, saved for vLLM and HF."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = load_tokenizer(tokenizer_dir)
    config = AutoConfig.for_model(
        "qwen2",
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
        **QWEN_7B_SHAPE,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    return out


def hf_batched_on_gpu(base: Path, tokenizer: Any, prompt_ids: list[list[int]], args: argparse.Namespace) -> float:
    """The HF backend on the GPU; the model is freed when this returns, so vLLM gets the memory."""
    import torch

    model = load_model(base, dtype=torch.bfloat16, device_map="cuda").eval()
    _, seconds = run(
        f"HF batched (batch size {args.batch_size})",
        lambda: generate_hf(
            model, tokenizer, prompt_ids, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens
        ),
    )
    return seconds


def bench_vllm(args: argparse.Namespace, records: list[dict[str, Any]], work: Path) -> None:
    import torch

    from sqltune.predict.vllm_backend import generate_vllm

    base = random_weight_model(resolve_base_model("smollm2-135m"), work / "qwen7b-random")
    tokenizer = load_tokenizer(base)
    plan = plan_prompts(records, tokenizer, args.template, args.context - args.max_new_tokens)
    describe(plan.ids)
    subset = plan.ids[: args.hf_n]
    hf_s = hf_batched_on_gpu(base, tokenizer, subset, args)
    torch.cuda.empty_cache()
    _, vllm_s = run(
        "vLLM",
        lambda: generate_vllm(base, base, plan.ids, max_new_tokens=args.max_new_tokens, context_len=args.context),
    )
    ratio = (len(plan.ids) / vllm_s) / (len(subset) / hf_s)
    print(f"speedup vLLM / HF batched (prompts/s): {ratio:.2f}x (target >= 10x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spider", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/spider")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--template", default="chat", choices=["alpaca", "chat"])
    parser.add_argument("--n", type=int, default=64, help="first dev questions in the CPU comparison")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=60)
    parser.add_argument("--context", type=int, default=2048, help="context length the prompts are trimmed to")
    parser.add_argument("--vllm", action="store_true", help="GPU: vLLM against HF batched on a 7B-shaped model")
    parser.add_argument("--hf-n", type=int, default=256, help="prompts the HF side of --vllm generates")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        records = spider_dev_records(args.spider, Path(tmp) / "records")
        if args.vllm:
            bench_vllm(args, records, Path(tmp))
        else:
            bench_cpu(args, records)


if __name__ == "__main__":
    main()
