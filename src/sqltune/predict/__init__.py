"""The predict step: greedy batched SQL generation (transformers, or vLLM on GPU images) for eval records."""

from sqltune.predict.config import PredictConfig
from sqltune.predict.run import predict
from sqltune.sql.extract import NO_SQL, extract_sql

__all__ = ["NO_SQL", "PredictConfig", "extract_sql", "predict"]
