from sqltune.components.publish.component import publish

__all__ = ["publish"]
