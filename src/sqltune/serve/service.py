"""The server's state: which version answers, how a new one is taken in or refused, and what /v1/sql asks the model.

Versions come from a registry channel (`ChannelSource`, followed) or from one fixed adapter (`FixedSource`). A new
version is pulled beside the serving one with the registry's own verified pull (every file's sha256 against the
manifest), read and checked as predict checks an adapter (its base model's name, every tensor's shape), loaded into
the backend, and made current: requests that arrive from then on use it, requests bound to the previous version
finish on it, and the previous one is unloaded after its last request. A version that fails any of this is refused
(logged, counted in /metrics) and the current one keeps serving; it is tried again when the channel's pointer is
written again (a new promotion or a rollback), or after `RETRY_REFUSED_S` (an S3 outage during the pull heals). At
start, when the version the channel points at cannot be served, the versions it pointed at before are tried, newest
first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqltune.artifacts import MANIFEST, read_manifest, verify_artifact
from sqltune.errors import SqltuneError
from sqltune.log import get_logger
from sqltune.serve.config import ServeConfig
from sqltune.serve.engine import Backend, Completion, Job, Served
from sqltune.serve.metrics import Metrics
from sqltune.sql.location import Databases

if TYPE_CHECKING:
    from sqltune.preprocess.schema_units import QuestionSchemas
    from sqltune.sql.schema import DatabaseSchema

log = get_logger(__name__)
RETRY_REFUSED_S = 300.0  # a refused version is tried again after this long (or at once when the pointer moves)
CONCURRENT_CHECKS = 2  # candidate checks (each a pool of SQL worker processes) running at once


@dataclass
class APIError(Exception):
    """An answer in OpenAI's error shape: {"error": {"message", "type", "param", "code"}} with its HTTP status."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class ChannelSource:
    """The versions a registry channel points at, pulled and verified into `versions_dir/<version>/`."""

    def __init__(self, registry: Any, channel: str, versions_dir: Path) -> None:
        self.registry, self.channel, self.versions_dir = registry, channel, versions_dir
        self.pulled: set[str] = set()

    def describe(self) -> str:
        return f"channel {self.channel!r} of {self.registry.loc.uri()}"

    def pointer(self) -> tuple[str, str] | None:
        """(version, ETag of the pointer) the channel points at now; None before its first promotion."""
        found = self.registry.pointer(self.channel)
        return (found[0]["version"], found[1]) if found else None

    def first_versions(self) -> list[str]:
        """What to try first at start: the version the channel points at."""
        found = self.pointer()
        if found is None:
            raise SqltuneError(f"{self.describe()} points at no version yet: promote one first")
        return [found[0]]

    def earlier_versions(self) -> list[str]:
        """What to try next at start: the versions the channel pointed at before, newest first."""
        versions: list[str] = []
        for event in reversed(self.registry.history(self.channel)):
            if event.get("version") and event["version"] not in versions:
                versions.append(event["version"])
        return versions

    def fetch(self, version: str) -> Path:
        """A local copy of `version` whose every file matches the registry's manifest (an earlier pull is reused
        when it still verifies against the same manifest)."""
        manifest = self.registry.manifest(version)
        dest = self.versions_dir / version
        try:
            if read_manifest(dest) == manifest and verify_artifact(dest):
                return dest
        except (SqltuneError, OSError, json.JSONDecodeError):
            pass  # absent, partial or different: pulled again
        self.pulled.add(version)
        return self.registry.pull(version, dest, overwrite=True)

    def keep(self, versions: set[str]) -> None:
        """Delete the pulled copies of versions other than `versions` (the serving one and the one before it)."""
        for version in sorted(self.pulled - versions):
            shutil.rmtree(self.versions_dir / version, ignore_errors=True)
            self.pulled.discard(version)


class FixedSource:
    """One adapter, a directory or an s3:// prefix, served as it is."""

    def __init__(self, adapter: str, endpoint_url: str | None) -> None:
        self.adapter, self.endpoint_url = adapter, endpoint_url

    def describe(self) -> str:
        return f"adapter {self.adapter}"

    def earlier_versions(self) -> list[str]:
        return []

    def first_versions(self) -> list[str]:
        from sqltune.uri import localize

        path = localize(self.adapter, "adapter", self.endpoint_url)
        manifest = path / MANIFEST
        version = json.loads(manifest.read_text(encoding="utf-8")).get("version") if manifest.is_file() else None
        self.path = path
        return [str(version or path.resolve().name)]

    def fetch(self, version: str) -> Path:
        return self.path


def trained_on(path: Path, adapter: Any) -> str:
    """The base model an adapter names: the train step's `base_model` spec, else a published version's lineage,
    else what PEFT recorded."""
    spec = adapter.parameters.get("base_model")
    manifest = path / MANIFEST
    if not spec and manifest.is_file():
        lineage = json.loads(manifest.read_text(encoding="utf-8")).get("lineage") or {}
        spec = lineage.get("base_model")
        if spec and spec.startswith("hf://") and lineage.get("base_model_revision"):
            spec = f"{spec}@{lineage['base_model_revision']}"
    spec = spec or next(iter(adapter.base_names), None)
    if not spec:
        raise SqltuneError(f"adapter {path} names no base model: pass --base-model")
    return str(spec)


class Service:
    """The served versions, the backend generating with them, the channel watcher, and the /v1/sql databases."""

    def __init__(
        self,
        config: ServeConfig,
        source: ChannelSource | FixedSource,
        *,
        model_id: str,
        endpoint_url: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        from sqltune.sql.schema import load_tables
        from sqltune.uri import localize

        self.config, self.source, self.model_id, self.endpoint_url = config, source, model_id, endpoint_url
        self.metrics = metrics or Metrics()
        tables = localize(config.tables, "--tables", endpoint_url) if config.tables else None
        self.tables = load_tables(tables / "tables.json" if tables.is_dir() else tables) if tables else None
        self.db_dir = localize(config.db_dir, "--db-dir", endpoint_url) if config.db_dir else None
        if self.db_dir is not None and not self.db_dir.is_dir():
            raise SqltuneError(f"--db-dir {config.db_dir} is not a directory")
        # Where /v1/sql's candidates run: the database URL when one is given, else the SQLite files under --db-dir.
        self.databases = Databases.of(self.db_dir, config.database_url)
        self.schemas: dict[tuple[str, str], str] = {}  # (db_id, style) -> the whole schema's text
        self.database_schemas: dict[str, DatabaseSchema] = {}  # db_id -> its schema, once read
        self.question_schemas: dict[tuple[str, str, int], QuestionSchemas] = {}  # (style, filter, values)
        # Candidate checks start worker processes (the crash-safe pool): a bounded number at once, whatever the
        # number of concurrent /v1/sql requests; the others wait their turn.
        self._checks = asyncio.Semaphore(CONCURRENT_CHECKS)
        self.backend: Any = None
        self.current: Served | None = None
        self.base_spec: str | None = None
        self.base_dir: Path | None = None
        self.model_context = 0
        self.numbers = itertools.count(1)
        self.refused: tuple[str, float] | None = None  # (ETag of the pointer whose version was refused, when)
        self.watcher: asyncio.Task[None] | None = None
        self.unloading: set[asyncio.Task[None]] = set()
        self.startup_error: BaseException | None = None

    # --- lifecycle ---

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Any) -> AsyncIterator[None]:
        """The app's lifespan: start unless started already (`sqltune serve` starts before the port opens), and
        close when the server stops."""
        if self.current is None:
            try:
                await self.start()
            except BaseException as exc:
                self.startup_error = exc
                await self.close()
                raise
        try:
            yield
        finally:
            await self.close()

    async def start(self) -> None:
        """Serve the first version that verifies, loads and answers; then follow the channel."""
        tried: list[str] = []
        for versions in (self.source.first_versions, self.source.earlier_versions):
            for version in await asyncio.to_thread(versions):
                if version in tried:
                    continue
                served = await self._take_in(version)
                if served is not None:
                    self._serve(served)
                    break
                tried.append(version)
            if self.current is not None:
                break
        else:
            raise SqltuneError(f"no version of {self.source.describe()} could be served (tried {', '.join(tried)})")
        if isinstance(self.source, ChannelSource):
            self.watcher = asyncio.create_task(self._follow(), name="sqltune-serve-channel")

    async def close(self) -> None:
        if self.watcher is not None:
            self.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watcher
            self.watcher = None
        if self.backend is not None:
            await self.backend.close()
            self.backend = None

    @property
    def ready(self) -> bool:
        return self.current is not None and self.backend is not None and getattr(self.backend, "alive", True)

    # --- versions ---

    async def _take_in(self, version: str) -> Served | None:
        """`version` pulled, verified, checked and loaded beside the current one; None (logged, counted) if any of
        that fails. What is not the version's fault (the base model or the backend cannot start) is an error."""
        from sqltune.models.adapter import read_adapter

        try:
            path = await asyncio.to_thread(self.source.fetch, version)
            adapter = await asyncio.to_thread(read_adapter, path)
        except Exception as exc:
            return self._refuse(version, exc)
        if self.base_dir is None:
            await asyncio.to_thread(self._use_base, path, adapter)
        try:
            served = await asyncio.to_thread(self._prepare, version, path, adapter)
        except Exception as exc:
            return self._refuse(version, exc)
        if self.backend is None:
            self.backend = self._make_backend(served)
        try:
            await self.backend.load(served)
        except Exception as exc:
            return self._refuse(version, exc)
        log.info("version %s loaded (%s, %s template, %d-token /v1/sql context)", version, path, served.template,
                 served.context_len)  # fmt: skip
        return served

    def _refuse(self, version: str, exc: Exception) -> None:
        keeps = f"{self.current.version} keeps serving" if self.current else "nothing is served yet"
        log.error("refused version %s of %s: %s; %s", version, self.source.describe(), exc, keeps)
        self.metrics.refused.labels(version).inc()

    def _use_base(self, path: Path, adapter: Any) -> None:
        """The base model every version is served on: --base-model, else the one the first version names."""
        from sqltune.models import resolve_base_model
        from sqltune.predict.run import _model_context

        self.base_spec = self.config.base_model or trained_on(path, adapter)
        self.base_dir = resolve_base_model(self.base_spec, self.endpoint_url)
        self.model_context = _model_context(self.base_dir)
        log.info("base model %s (%s), context %d tokens", self.base_spec, self.base_dir, self.model_context)

    def _prepare(self, version: str, path: Path, adapter: Any) -> Served:
        """Check the adapter as predict does, and read the settings its requests use."""
        from sqltune.models import load_tokenizer
        from sqltune.models.adapter import check_base_name
        from sqltune.predict.run import _check_adapter_fits, _setting
        from sqltune.preprocess.schema_text import DEFAULT_STYLE
        from sqltune.preprocess.schema_units import DEFAULT_FILTER
        from sqltune.prompt import prompt_functions

        assert self.base_spec is not None and self.base_dir is not None
        if self.config.base_name_check:
            check_base_name(adapter, self.base_spec, self.base_dir)
        _check_adapter_fits(self.base_dir, adapter)
        tokenizer_dir = path if (path / "tokenizer_config.json").is_file() else self.base_dir
        tokenizer = load_tokenizer(tokenizer_dir)
        template = _setting("prompt_template", self.config.prompt_template, adapter, "alpaca")
        trained_len = _setting("max_seq_len", self.config.max_seq_len, adapter, self.model_context)
        context_len = min(int(trained_len), self.model_context)
        if context_len <= self.config.max_new_tokens:
            raise SqltuneError(
                f"max_new_tokens {self.config.max_new_tokens} leaves no room for a prompt in a {context_len}-token "
                "context"
            )
        prompt_functions(tokenizer, template)  # a chat template needs the tokenizer's own: a clear error here
        number = next(self.numbers)
        return Served(
            version=version,
            path=path,
            adapter=adapter,
            tokenizer=tokenizer,
            template=template,
            context_len=context_len,
            model_context=self.model_context,
            schema_style=_setting("schema_style", self.config.schema_style, adapter, DEFAULT_STYLE),
            schema_filter=_setting("schema_filter", self.config.schema_filter, adapter, DEFAULT_FILTER),
            schema_values=int(_setting("schema_values", self.config.schema_values, adapter, 0)),
            dialect=_setting("dialect", self.config.dialect, adapter, "sqlite"),
            name=f"v{number}",
            number=number,
            tokenizer_dir=tokenizer_dir,
        )

    def _make_backend(self, first: Served) -> Backend:
        from sqltune.predict.run import choose_backend

        assert self.base_dir is not None
        if choose_backend(self.config.backend) == "vllm":
            from sqltune.serve.vllm_engine import VLLMBackend

            return VLLMBackend(self.base_dir, first.tokenizer_dir, context_len=self.model_context,
                               lora_rank=first.adapter.rank)  # fmt: skip
        from sqltune.serve.hf import HFBackend

        return HFBackend(
            self.base_dir,
            batch_size=self.config.batch_size,
            batch_wait_s=self.config.batch_wait_ms / 1000,
            on_batch=self.metrics.batch_sequences.observe,
        )

    def _serve(self, served: Served) -> None:
        previous = self.current
        self.current = served
        self.metrics.serving(served.version, previous.version if previous else None)
        if previous is not None:
            log.info("now serving %s (was %s)", served.version, previous.version)
            previous.retired = True
            if previous.users == 0:
                self._unload(previous)
            if isinstance(self.source, ChannelSource):
                self.source.keep({served.version, previous.version})

    def _unload(self, served: Served) -> None:
        async def unload() -> None:
            try:
                if self.backend is not None:
                    await self.backend.unload(served)
            except Exception:
                log.exception("unloading version %s failed", served.version)

        task = asyncio.get_running_loop().create_task(unload())
        self.unloading.add(task)
        task.add_done_callback(self.unloading.discard)

    def acquire(self) -> Served:
        """The version a request is answered with; `release` it when the answer is sent."""
        if self.current is None:
            raise APIError(503, "no adapter is loaded yet", "server_error", code="not_ready")
        self.current.users += 1
        return self.current

    def release(self, served: Served) -> None:
        served.users -= 1
        if served.retired and served.users == 0:
            self._unload(served)

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_seconds)
            try:
                await self.check_channel()
            except Exception:
                log.exception("following %s failed; checking again in %.1f s", self.source.describe(),
                              self.config.poll_seconds)  # fmt: skip

    async def check_channel(self) -> None:
        """Switch to the version the channel points at, if it is new and was not refused at this pointer."""
        assert isinstance(self.source, ChannelSource) and self.current is not None
        try:
            found = await asyncio.to_thread(self.source.pointer)
        except SqltuneError as exc:
            self.metrics.channel_errors.inc()
            log.warning("reading %s failed: %s; %s keeps serving", self.source.describe(), exc, self.current.version)
            return
        if found is None or found[0] == self.current.version:
            return
        version, etag = found
        if self.refused and self.refused[0] == etag and time.monotonic() - self.refused[1] < RETRY_REFUSED_S:
            return
        log.info("%s now points at %s: taking it in beside %s", self.source.describe(), version, self.current.version)
        served = await self._take_in(version)
        if served is None:
            self.refused = (etag, time.monotonic())
            return
        self.refused = None
        self._serve(served)

    # --- /v1/sql ---

    def database_schema(
        self, db_id: str, samples: bool = False
    ) -> tuple[DatabaseSchema, dict[int, list[object]] | None]:
        """`db_id`'s schema from --tables, or read from the live database at --database-url (with `samples`, the
        `rich` style's sample values from it; None when they come from the SQLite file under --db-dir)."""
        from sqltune.preprocess.schema_text import SAMPLE_VALUES
        from sqltune.sql.live import read_live_schema

        if self.tables is not None:
            if db_id not in self.tables:
                raise APIError(404, f"unknown db_id {db_id!r}", param="db_id", code="db_not_found")
            return self.tables[db_id], None
        if self.databases is not None and self.databases.url is not None:
            try:
                return read_live_schema(self.databases.server(db_id), db_id, SAMPLE_VALUES if samples else 0)
            except SqltuneError as exc:
                raise APIError(404, f"db_id {db_id!r}: {exc}", param="db_id", code="db_not_found") from None
        raise APIError(404, "this server has no databases: start it with --tables or --database-url",
                       param="db_id", code="db_not_found")  # fmt: skip

    def database_file(self, db_id: str) -> Path | None:
        from sqltune.preprocess.run import db_file

        return db_file(self.db_dir, db_id) if self.db_dir else None

    def schema_text(self, db_id: str, style: str) -> str:
        """The schema of `db_id` as training wrote it; once per database and style."""
        from sqltune.preprocess.schema_text import serialize_schema

        if (db_id, style) not in self.schemas:
            schema, samples = self.database_schema(db_id, samples=style == "rich")
            if samples is None:
                text = serialize_schema(schema, style, self.database_file(db_id))
            else:
                text = serialize_schema(schema, style, samples=samples)
            self.schemas[(db_id, style)] = text
        return self.schemas[(db_id, style)]

    def schema_fields(self, served: Served, db_id: str, question: str, evidence: str | None) -> dict[str, Any]:
        """The record's schema fields for a question, as preprocess writes them: the database's schema text, or with
        a schema filter or values the question's own units (the same function preprocess uses)."""
        from sqltune.preprocess.schema_units import DEFAULT_FILTER, QuestionSchemas, ranking_words

        if served.schema_filter == DEFAULT_FILTER and not served.schema_values:
            return {"schema": self.schema_text(db_id, served.schema_style)}
        if db_id not in self.database_schemas:
            self.database_schemas[db_id] = self.database_schema(db_id)[0]
        key = (served.schema_style, served.schema_filter, served.schema_values)
        if key not in self.question_schemas:
            self.question_schemas[key] = QuestionSchemas(
                self.database_schemas, served.schema_style, self.database_file, schema_filter=served.schema_filter,
                values=served.schema_values, keep_gold=False,
            )  # fmt: skip
        filtered = self.question_schemas[key](db_id, ranking_words(question, evidence), None)
        return {"schema": filtered.text, "schema_units": filtered.units}

    def sql_job(self, served: Served, question: str, db_id: str, evidence: str | None) -> tuple[Job, int]:
        """The /v1/sql job: the prompt training and predict build for this question and database's schema (trimmed
        to fit as they trim it), decoded as predict decodes; and how many schema lines were dropped."""
        from sqltune.predict.run import plan_prompts

        config = self.config
        record = {
            "id": "request",
            "db_id": db_id,
            "question": question,
            **self.schema_fields(served, db_id, question, evidence),
        }
        if served.dialect != "sqlite":
            record["dialect"] = served.dialect
        if evidence:
            record["evidence"] = evidence
        if config.candidates > 1 and self.databases is not None and not self.databases.files(db_id):
            raise APIError(404, f"no SQLite file for database {db_id!r} under --db-dir", param="db_id",
                           code="db_not_found")  # fmt: skip
        plan = plan_prompts([record], served.tokenizer, served.template, served.context_len - config.max_new_tokens)
        if not plan.fits[0]:
            raise APIError(
                400,
                f"the question does not fit the adapter's {served.context_len}-token context even without its schema",
                param="question",
                code="context_length_exceeded",
            )
        sampled = config.candidates > 1
        job = Job(
            plan.ids[0],
            config.max_new_tokens,
            temperature=config.temperature if sampled else 0.0,
            top_p=config.top_p if sampled else 1.0,
            seed=config.seed,
            statement_end=True,
            candidates=config.candidates,
        )
        return job, plan.schema_lines_dropped[0]

    async def sql_answer(self, db_id: str, completions: list[Completion]) -> dict[str, Any]:
        """The SQL of the greedy completion, or with candidates, of the one the execution check chooses."""
        from sqltune.predict.candidates import check_candidates, choose
        from sqltune.sql.extract import extract_sql

        sqls = [extract_sql(completion.text) for completion in completions]
        if len(completions) == 1:
            return {"sql": sqls[0], "raw": completions[0].text}
        assert self.databases is not None
        async with self._checks:
            outcomes = await asyncio.to_thread(check_candidates, self.databases, [(db_id, sql) for sql in sqls])
        checked = [outcomes[(db_id, sql)] for sql in sqls]
        chosen = choose(checked, [completion.log_prob or 0.0 for completion in completions])
        candidates = [
            {"sql": sql, "ran": outcome.ran, "error": outcome.error, "rows": outcome.rows,
             "log_prob": round(completion.log_prob or 0.0, 4)}
            for sql, outcome, completion in zip(sqls, checked, completions, strict=True)
        ]  # fmt: skip
        return {"sql": sqls[chosen], "raw": completions[chosen].text, "chosen": chosen, "candidates": candidates}


def default_versions_dir(location: Any) -> Path:
    """Where a channel's pulled versions live by default: under the sqltune cache, one folder per registry location."""
    from sqltune.uri import cache_root

    where = f"{location.bucket}/{location.prefix}/{location.model_name}"
    return cache_root() / "serve" / hashlib.sha256(where.encode()).hexdigest()[:16]
