from sqltune.components.train.component import train

__all__ = ["train"]
