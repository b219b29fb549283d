from sqltune.components.predict.component import predict

__all__ = ["predict"]
