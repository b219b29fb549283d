"""Will it fit? A per-GPU memory estimate made before the base model loads, so a run that cannot fit fails in
seconds with the option that would fit, instead of running out of memory an hour in.

The model is built on PyTorch's meta device (no memory, no weights read) to count its parameters, its LoRA
targets and its largest decoder layer. Per GPU:

- base weights: 2 bytes a parameter in bf16 (4 in fp32); QLoRA's NF4 with double quantization ~0.52 bytes a
  parameter of the quantized linear layers (4 bits + the absmax constants), the rest in the compute dtype;
- LoRA: fp32 weights, gradients and AdamW's two moments: 16 bytes a LoRA parameter;
- activations for batch x sequence length: 34·h bytes a token and layer in 16 bits (Korthikanti et al., 2022,
  with a fused attention kernel); with gradient checkpointing only each layer's input (h values) is kept, and
  one layer's activations at a time; plus the logits and their gradient in fp32 (vocabulary x 8 bytes a token);
- fsdp divides the weights and the LoRA state by the number of workers and adds two decoder layers gathered
  whole (the one computing and the one prefetched); activations are not sharded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqltune.errors import SqltuneError
from sqltune.settings import how_to_set, setting_name
from sqltune.train.config import TrainConfig

GIB = 2**30
NF4_BYTES = 0.5 + 0.127 / 8  # 4 bits, plus double-quantized absmax constants (~0.127 bits a parameter)
LORA_BYTES = 4 + 4 + 8  # fp32 weight, its gradient, AdamW's exp_avg and exp_avg_sq
ACTIVATION_FACTOR = 34  # bytes a token, layer and hidden unit in 16 bits (no attention-score matrix stored)
USABLE = 0.9  # of a GPU's memory: the CUDA context and the allocator's fragmentation take the rest


@dataclass(frozen=True)
class Shape:
    """What the estimate needs to know of a model, counted on the meta device."""

    params: int  # every parameter
    quantizable: int  # parameters of the linear layers QLoRA quantizes (all but the output head)
    lora: int  # LoRA parameters for the configured rank and targets
    largest_layer: int  # parameters of the largest decoder layer (what FSDP gathers at once)
    layers: int
    hidden: int
    vocab: int


@dataclass(frozen=True)
class Estimate:
    weights: float  # bytes per GPU
    lora_state: float
    activations: float
    gathered: float

    @property
    def total(self) -> float:
        return self.weights + self.lora_state + self.activations + self.gathered


def model_shape(model_dir: str | Path, config: TrainConfig) -> Shape:
    """Count the model in `model_dir` (its config.json only) for `config`'s LoRA rank and target modules."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model_config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    head = model.get_output_embeddings()
    linear = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not head]
    if config.target_modules == "all-linear":
        targets = [m for _, m in linear]
    else:
        targets = [m for n, m in linear if any(n == t or n.endswith("." + t) for t in config.target_modules)]
    layer_types = set(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in layer_types]
    return Shape(
        params=sum(p.numel() for p in model.parameters()),
        quantizable=sum(m.weight.numel() for _, m in linear),
        lora=sum(config.lora_rank * (m.in_features + m.out_features) for m in targets),
        largest_layer=max((sum(p.numel() for p in layer.parameters()) for layer in layers), default=0),
        layers=model_config.num_hidden_layers,
        hidden=model_config.hidden_size,
        vocab=model_config.vocab_size,
    )


def estimate(shape: Shape, config: TrainConfig, world_size: int, bf16: bool) -> Estimate:
    """Bytes per GPU for `config` on `world_size` workers (see the module docstring for each term)."""
    dtype_bytes = 2 if bf16 else 4
    if config.method == "qlora":
        weights = shape.quantizable * NF4_BYTES + (shape.params - shape.quantizable) * dtype_bytes
    else:
        weights = shape.params * dtype_bytes
    lora_state = shape.lora * LORA_BYTES
    tokens = config.batch_size * config.max_seq_len
    per_layer = ACTIVATION_FACTOR * tokens * shape.hidden * dtype_bytes / 2
    if config.gradient_checkpointing:
        activations = shape.layers * tokens * shape.hidden * dtype_bytes + per_layer
    else:
        activations = shape.layers * per_layer
    activations += tokens * shape.vocab * (dtype_bytes + 8)  # logits, then fp32 logits and their gradient
    gathered = 0.0
    if config.parallelism == "fsdp" and world_size > 1:
        weights /= world_size
        lora_state /= world_size
        gathered = 2 * shape.largest_layer * dtype_bytes
    return Estimate(weights, lora_state, activations, gathered)


def check_fits(
    shape: Shape, config: TrainConfig, world_size: int, gpus_per_node: int, bf16: bool, gpu_bytes: int, model: str
) -> Estimate:
    """The estimate, when it fits in `gpu_bytes`; otherwise a SqltuneError naming the option that would fit."""
    found = estimate(shape, config, world_size, bf16)
    if found.total <= USABLE * gpu_bytes:
        return found
    where = f"under {config.parallelism} on {world_size} GPU{'s' if world_size > 1 else ''}"
    need = (
        f"{model} {config.method} needs ~{found.total / GIB:.0f} GiB per GPU {where} (weights "
        f"{found.weights / GIB:.1f}, LoRA + AdamW {found.lora_state / GIB:.1f}, activations "
        f"{found.activations / GIB:.1f}, gathered layers {found.gathered / GIB:.1f} GiB); this GPU has "
        f"{gpu_bytes / GIB:.0f} GiB"
    )
    for option, changed, workers in _options(config, world_size, gpus_per_node):
        fit = estimate(shape, changed, workers, bf16)
        if fit.total <= USABLE * gpu_bytes:
            raise SqltuneError(f"{need}: with {option} ~{fit.total / GIB:.0f} GiB")
    raise SqltuneError(
        f"{need}, and no option fits (fsdp on up to 64 nodes, qlora, gradient checkpointing, batch 1): "
        f"use a smaller model or a shorter {setting_name(TrainConfig, 'max_seq_len')}"
    )


def _options(config: TrainConfig, world_size: int, gpus_per_node: int) -> list[tuple[str, TrainConfig, int]]:
    """Changes that lower the memory per GPU, the least disruptive first."""
    from dataclasses import replace

    options = []
    fsdp = replace(config, parallelism="fsdp")
    if config.parallelism != "fsdp" and world_size > 1:
        options.append((f"{how_to_set(TrainConfig, parallelism='fsdp')} on {world_size} GPUs", fsdp, world_size))
    for nodes in (2, 4, 8, 16, 32, 64):
        workers = nodes * gpus_per_node
        if workers > world_size:
            where = how_to_set(TrainConfig, parallelism="fsdp", num_nodes=nodes)
            options.append((f"{where} ({nodes} nodes of {gpus_per_node} GPUs)", fsdp, workers))
    if config.method == "lora":
        options.append((how_to_set(TrainConfig, method="qlora"), replace(config, method="qlora"), world_size))
    if not config.gradient_checkpointing:
        checkpointing = replace(config, gradient_checkpointing=True)
        options.append((how_to_set(TrainConfig, gradient_checkpointing=True), checkpointing, world_size))
    if config.batch_size > 1:
        ga = config.gradient_accumulation_steps * config.batch_size
        smaller = replace(config, batch_size=1, gradient_accumulation_steps=ga)
        options.append((how_to_set(TrainConfig, batch_size=1, gradient_accumulation_steps=ga), smaller, world_size))
    return options
