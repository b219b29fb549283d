"""The train step: LoRA/QLoRA fine-tuning of a causal LM on preprocess records, producing a PEFT adapter."""

from sqltune.train.config import TrainConfig
from sqltune.train.io import TrainInputs
from sqltune.train.run import train

__all__ = ["TrainConfig", "TrainInputs", "train"]
