"""Base models and their adapters: resolve a spec to a local directory (`resolve`), the built-ins (`builtin`), loading
(`load`), and reading a LoRA adapter and checking it fits (`adapter`)."""

from sqltune.models.builtin import BUILTINS
from sqltune.models.load import load_model, load_tokenizer
from sqltune.models.resolve import resolve_base_model

__all__ = ["BUILTINS", "load_model", "load_tokenizer", "resolve_base_model"]
