"""The predict step: greedy batched SQL generation (transformers, or vLLM on GPU images) for eval records."""

from sqltune.predict.config import PredictConfig
from sqltune.predict.extract import NO_SQL, extract_sql
from sqltune.predict.run import predict

__all__ = ["NO_SQL", "PredictConfig", "extract_sql", "predict"]
