"""`sqltune serve`: the promoted adapter behind an OpenAI-compatible HTTP API that follows its registry channel.

`config.py` (ServeConfig), `cli.py` (the command), `run.py` (starts uvicorn), `app.py` (the HTTP API),
`service.py` (the served versions, the channel watcher, /v1/sql), `engine.py` (what a backend is asked),
`hf.py` / `vllm_engine.py` (the backends), `metrics.py` (Prometheus), `inferenceservice.py` (KServe).
"""

from sqltune.serve.config import ServeConfig

__all__ = ["ServeConfig"]
