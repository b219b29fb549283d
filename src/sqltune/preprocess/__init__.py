"""The preprocess step: Spider / BIRD / CoSQL / SParC into instruction records with the schema spelled out."""

from sqltune.preprocess.config import PreprocessConfig
from sqltune.preprocess.run import preprocess

__all__ = ["PreprocessConfig", "preprocess"]
