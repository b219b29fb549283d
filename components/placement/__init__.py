from sqltune.components.placement.component import placement

__all__ = ["placement"]
