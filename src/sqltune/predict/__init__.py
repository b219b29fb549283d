"""The predict step: greedy batched SQL generation (transformers, or vLLM on GPU images) for eval records."""

from sqltune.predict.core import predict
from sqltune.predict.extract import NO_SQL, extract_sql

__all__ = ["NO_SQL", "extract_sql", "predict"]
