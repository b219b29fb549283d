"""The HTTP API: OpenAI-compatible models, chat and text completions (with streaming), /v1/sql, and the probes.

- `GET /v1/models`, `GET /v1/models/{id}`: the one model this server answers as (the registry's model name).
- `POST /v1/chat/completions`, `POST /v1/completions`: OpenAI's request and answer shapes. `temperature` defaults to
  0 (greedy, as predict decodes) rather than OpenAI's 1; `n` is 1. With `stream`, server-sent events in OpenAI's
  chunk format carry the text as it decodes, token by token, from inside the batch the request is part of.
- `POST /v1/sql` `{"question", "db_id", "evidence"?}`: the prompt training and predict build from the database's
  schema, answered with `{"sql", "adapter_version", ...}`; with `--candidates` > 1 the execution-checked candidates.
- `GET /health` (the process answers), `GET /ready` (an adapter is loaded and the backend runs), `GET /metrics`.

Every answer carries `X-Sqltune-Adapter-Version`: the version that answered (for a request that generated, the one
it was bound to when it arrived). Errors use OpenAI's shape `{"error": {"message", "type", "param", "code"}}`: 400 for
bad JSON, bad parameters, a prompt over the context or `max_tokens` over `--max-tokens-limit`; 401 without the API
key; 404 for an unknown route, model or db_id; 413 for a body over `--max-request-bytes`; 500 when generation
fails; 503 before an adapter is loaded. With `--api-key` (or SQLTUNE_API_KEY), every /v1 route needs
`Authorization: Bearer <key>`; the probes and /metrics stay open, as kubelet and Prometheus send no token.
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.background import BackgroundTask
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sqltune import __version__
from sqltune.errors import SqltuneError
from sqltune.log import get_logger
from sqltune.prompt import encode_prompt, prompt_functions
from sqltune.serve.engine import Completion, Failed, Finished, Job, Served
from sqltune.serve.service import APIError, Service

log = get_logger(__name__)
VERSION_HEADER = "X-Sqltune-Adapter-Version"
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/sql", "/v1/models", "/health", "/ready", "/metrics")
MAX_STOP_SEQUENCES = 4  # as OpenAI's API
Body = TypeVar("Body", bound=BaseModel)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send fields this server does not use (user, metadata, ...)


class ChatMessage(_Body):
    role: str
    content: str | list[dict[str, Any]] | None = None


class _Generation(_Body):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = 1
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    seed: int | None = None


class ChatRequest(_Generation):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(_Generation):
    prompt: str | list[str] | list[int]
    echo: bool | None = False
    best_of: int | None = None
    logprobs: int | None = None
    suffix: str | None = None


class SqlRequest(_Body):
    question: str = Field(min_length=1)
    db_id: str = Field(min_length=1)
    evidence: str | None = None
    model: str | None = None


async def read_json(request: Request, limit: int) -> Any:
    """The request body as JSON, refused when over `limit` bytes (by its declared length, or as it streams in)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"request body is over the limit of {limit} bytes", code="request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise APIError(413, f"request body is over the limit of {limit} bytes", code="request_too_large")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None


def parse(model: type[Body], data: Any) -> Body:
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or None
        raise APIError(400, f"{where}: {first['msg']}" if where else first["msg"], param=where) from None


def _stop(stop: str | list[str] | None) -> tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOP_SEQUENCES or not all(stops):
        raise APIError(400, f"stop takes up to {MAX_STOP_SEQUENCES} non-empty sequences", param="stop")
    return tuple(stops)


def _text(message: ChatMessage, index: int) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    parts = []
    for part in message.content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise APIError(400, "only text content parts are supported", param=f"messages.{index}.content")
        parts.append(part["text"])
    return "".join(parts)


class _Observe:
    """Counts and times every request for /metrics and stamps answers with the served version (when the handler did
    not name the version it was bound to)."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics, started, status = self.service.metrics, time.perf_counter(), 500

        async def send_stamped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                if VERSION_HEADER not in headers and self.service.current is not None:
                    headers[VERSION_HEADER] = self.service.current.version
            await send(message)

        metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_stamped)
        finally:
            metrics.in_flight.dec()
            path = scope["path"].rstrip("/")
            endpoint = path if path in ENDPOINTS else "/v1/models" if path.startswith("/v1/models/") else "other"
            metrics.observe(endpoint, status, time.perf_counter() - started)


def build_app(service: Service) -> FastAPI:
    """The ASGI app of `service` (its lifespan loads the first version before the port answers)."""
    config = service.config
    app = FastAPI(
        title="sqltune serve", version=__version__, lifespan=service.lifespan, docs_url=None, redoc_url=None,
        openapi_url=None,
    )  # fmt: skip
    app.add_middleware(_Observe, service=service)
    started = int(time.time())

    @app.exception_handler(APIError)
    async def api_error(_request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else None
        return JSONResponse(APIError(exc.status_code, str(exc.detail), code=code).body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def server_error(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        error = APIError(500, f"internal error: {type(exc).__name__}", "server_error")
        return JSONResponse(error.body(), status_code=500)

    def authorized(request: Request) -> None:
        if config.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), config.api_key.encode()):
            raise APIError(401, "missing or wrong API key (Authorization: Bearer <key>)", code="invalid_api_key")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorized)])

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        if not service.ready:
            return JSONResponse({"status": "not ready"}, status_code=503)
        assert service.current is not None
        return JSONResponse({"status": "ready", "adapter_version": service.current.version, "model": service.model_id})

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)

    def model_card() -> dict[str, Any]:
        current = service.current
        return {
            "id": service.model_id, "object": "model", "created": started, "owned_by": "sqltune",
            "adapter_version": current.version if current else None, "base_model": service.base_spec,
        }  # fmt: skip

    @v1.get("/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @v1.get("/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        check_model(model_id)
        return model_card()

    def check_model(name: str | None) -> None:
        if name is not None and name != service.model_id:
            raise APIError(404, f"model {name!r} is not served here; this server serves {service.model_id!r}",
                           param="model", code="model_not_found")  # fmt: skip

    def generation_job(request: _Generation, prompt_ids: list[int], served: Served, requested: int | None) -> Job:
        if request.n not in (None, 1):
            raise APIError(400, "n must be 1", param="n")
        limit = config.max_tokens_limit
        if requested is not None and requested > limit:
            raise APIError(400, f"max_tokens {requested} is over this server's limit of {limit}", param="max_tokens",
                           code="max_tokens_too_large")  # fmt: skip
        room = served.model_context - len(prompt_ids)
        max_tokens = requested or min(limit, room)
        if max_tokens > room or room < 1:
            raise APIError(
                400,
                f"this model's context is {served.model_context} tokens; the prompt has {len(prompt_ids)} and "
                f"{max_tokens} more were asked for",
                param="messages" if isinstance(request, ChatRequest) else "prompt",
                code="context_length_exceeded",
            )
        return Job(
            prompt_ids,
            max_tokens,
            temperature=request.temperature or 0.0,
            top_p=request.top_p or 1.0,
            seed=request.seed,
            stop=_stop(request.stop),
            stream=bool(request.stream),
        )

    async def completions_of(served: Served, job: Job) -> list[Completion]:
        async for event in service.backend.generate(served, job):
            if isinstance(event, Finished):
                return event.completions
            if isinstance(event, Failed):
                raise APIError(500, event.message, "server_error")
        raise APIError(500, "generation ended without an answer", "server_error")

    async def answer(served: Served, job: Job, build: Callable[[Completion], dict[str, Any]]) -> JSONResponse:
        try:
            (completion,) = await completions_of(served, job)
        finally:
            service.release(served)
        service.metrics.tokens(completion.prompt_tokens, completion.new_tokens)
        return JSONResponse(build(completion), headers={VERSION_HEADER: served.version})

    def usage(completion: Completion) -> dict[str, int]:
        total = completion.prompt_tokens + completion.new_tokens
        return {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.new_tokens,
                "total_tokens": total}  # fmt: skip

    Chunk = Callable[[dict[str, Any]], dict[str, Any]]

    def stream(
        served: Served, job: Job, chunk: Chunk, delta: Callable[..., dict[str, Any]], include_usage: bool
    ) -> StreamingResponse:
        released = False

        def release() -> None:  # once: at the end of the stream, or after a response whose stream never started
            nonlocal released
            if not released:
                released = True
                job.cancelled = True
                service.release(served)

        async def events() -> AsyncIterator[str]:
            try:
                opening = delta(None, None)
                if opening:
                    yield _sse(chunk({"choices": [opening]}))
                async for event in service.backend.generate(served, job):
                    if isinstance(event, Failed):
                        yield _sse(APIError(500, event.message, "server_error").body())
                        return
                    if isinstance(event, Finished):
                        (completion,) = event.completions
                        service.metrics.tokens(completion.prompt_tokens, completion.new_tokens)
                        yield _sse(chunk({"choices": [delta("", completion.finish_reason)]}))
                        if include_usage:
                            yield _sse(chunk({"choices": [], "usage": usage(completion)}))
                        yield "data: [DONE]\n\n"
                        return
                    yield _sse(chunk({"choices": [delta(event.text, None)]}))
            finally:
                release()

        headers = {VERSION_HEADER: served.version, "Cache-Control": "no-cache"}
        return StreamingResponse(
            events(), media_type="text/event-stream", headers=headers, background=BackgroundTask(release)
        )

    @v1.post("/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Response:
        body = parse(ChatRequest, await read_json(request, config.max_request_bytes))
        check_model(body.model)
        served = service.acquire()
        try:
            messages = [{"role": m.role, "content": _text(m, i)} for i, m in enumerate(body.messages)]
            try:
                _, render = prompt_functions(served.tokenizer, "chat")
                prompt_ids = encode_prompt(served.tokenizer, render(messages), "chat")  # type: ignore[misc]
            except SqltuneError as exc:
                raise APIError(400, f"{exc}; use /v1/completions", param="messages") from None
            job = generation_job(body, prompt_ids, served, body.max_completion_tokens or body.max_tokens)
        except BaseException:
            service.release(served)
            raise
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": ident, "created": created, "model": service.model_id, "system_fingerprint": served.version}
        if job.stream:

            def chat_delta(text: str | None, finish: str | None) -> dict[str, Any]:
                content = {"role": "assistant", "content": ""} if text is None else {"content": text} if text else {}
                return {"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}

            return stream(
                served, job, lambda extra: {**head, "object": "chat.completion.chunk", **extra}, chat_delta,
                bool((body.stream_options or {}).get("include_usage")),
            )  # fmt: skip

        def chat_answer(completion: Completion) -> dict[str, Any]:
            message = {"role": "assistant", "content": completion.text}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": completion.finish_reason}
            return {**head, "object": "chat.completion", "choices": [choice], "usage": usage(completion)}

        return await answer(served, job, chat_answer)

    @v1.post("/completions", response_model=None)
    async def completions(request: Request) -> Response:
        body = parse(CompletionRequest, await read_json(request, config.max_request_bytes))
        check_model(body.model)
        unsupported = {"echo": bool(body.echo), "best_of": body.best_of not in (None, 1),
                       "logprobs": body.logprobs is not None, "suffix": bool(body.suffix)}  # fmt: skip
        for name in (name for name, used in unsupported.items() if used):
            raise APIError(400, f"{name} is not supported by this server", param=name)
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            if len(prompt) != 1:
                raise APIError(400, "one prompt per request", param="prompt")
            prompt = prompt[0]
        served = service.acquire()
        try:
            if isinstance(prompt, str):
                prompt_ids = served.tokenizer(prompt)["input_ids"]
            else:
                prompt_ids = list(prompt)  # type: ignore[arg-type]
                if not prompt_ids or not all(0 <= t < len(served.tokenizer) for t in prompt_ids):
                    raise APIError(400, "prompt token ids must be in the vocabulary", param="prompt")
            if not prompt_ids:
                raise APIError(400, "the prompt is empty", param="prompt")
            job = generation_job(body, prompt_ids, served, body.max_tokens)
        except BaseException:
            service.release(served)
            raise
        ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": ident, "object": "text_completion", "created": created, "model": service.model_id,
                "system_fingerprint": served.version}  # fmt: skip
        if job.stream:

            def text_delta(text: str | None, finish: str | None) -> dict[str, Any]:
                if text is None:
                    return {}
                return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

            return stream(
                served, job, lambda extra: {**head, **extra}, text_delta,
                bool((body.stream_options or {}).get("include_usage")),
            )  # fmt: skip

        def text_answer(completion: Completion) -> dict[str, Any]:
            choice = {"index": 0, "text": completion.text, "logprobs": None, "finish_reason": completion.finish_reason}
            return {**head, "choices": [choice], "usage": usage(completion)}

        return await answer(served, job, text_answer)

    @v1.post("/sql")
    async def sql(request: Request) -> JSONResponse:
        body = parse(SqlRequest, await read_json(request, config.max_request_bytes))
        check_model(body.model)
        served = service.acquire()
        try:
            job, dropped = service.sql_job(served, body.question, body.db_id, body.evidence)
            completions = await completions_of(served, job)
        finally:
            service.release(served)
        result = await service.sql_answer(body.db_id, completions)
        prompt_tokens, new_tokens = completions[0].prompt_tokens, sum(c.new_tokens for c in completions)
        service.metrics.tokens(prompt_tokens, new_tokens)
        answer = {
            **result, "adapter_version": served.version, "db_id": body.db_id, "model": service.model_id,
            "prompt_tokens": prompt_tokens, "completion_tokens": new_tokens, "schema_lines_dropped": dropped,
        }  # fmt: skip
        return JSONResponse(answer, headers={VERSION_HEADER: served.version})

    app.include_router(v1)
    return app


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj)}\n\n"
