"""`sqltune serve` over real HTTP: the `openai` client against a real uvicorn server, tiny real adapters made with
peft on `tiny-random-llama`, versions published with the project's own publish step to the real S3 server, and the
sample dataset's real SQLite databases."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
from test_publish import make_eval

from sqltune.artifacts import artifact_dir, read_jsonl, write_jsonl
from sqltune.locals3 import free_ports
from sqltune.predict import PredictConfig, predict
from sqltune.preprocess.run import db_file
from sqltune.preprocess.schema_text import serialize_schema
from sqltune.publish import PublishConfig, Registry, publish
from sqltune.sample_data import write_sample_dataset
from sqltune.serve.app import VERSION_HEADER, build_app
from sqltune.serve.config import ServeConfig
from sqltune.serve.service import FixedSource, Service
from sqltune.sql.schema import load_tables

BASE = "tiny-random-llama"
MAX_SEQ_LEN = 384
SQL_TOKENS = 24  # new tokens per /v1/sql question: enough to see the answers differ, quick on the CPU
API_KEY = "sk-sqltune-test"
POLL = 0.3


def tiny_adapter(root: Path, seed: int, base_model: str = BASE, **trained_with: Any) -> Path:
    """A train-step adapter artifact: a LoRA adapter with non-zero weights on tiny-random-llama, as peft saves it;
    `trained_with`: more of the training parameters its manifest records (the records' schema_filter, ...)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from sqltune.models import load_model, resolve_base_model

    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(load_model(resolve_base_model(BASE)), config)
    parameters = {"base_model": base_model, "prompt_template": "alpaca", "max_seq_len": MAX_SEQ_LEN, **trained_with}
    with artifact_dir(root / f"adapter-{seed}", "adapter", parameters=parameters) as out:
        model.save_pretrained(out)
        if base_model != BASE:  # PEFT recorded the model it was made on; say it was another
            config_file = out / "adapter_config.json"
            config = {**json.loads(config_file.read_text()), "base_model_name_or_path": base_model}
            config_file.write_text(json.dumps(config))
    return root / f"adapter-{seed}"


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """The sample dataset: tables.json and database/<db_id>/<db_id>.sqlite, real SQLite files."""
    out = tmp_path_factory.mktemp("sample") / "data"
    write_sample_dataset(out)
    return out


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    return tiny_adapter(tmp_path_factory.mktemp("adapters"), seed=1)


def _questions(sample: Path) -> list[dict[str, Any]]:
    """Sample dev questions of two databases, with the schema text /v1/sql builds for them (ddl, the default)."""
    tables = load_tables(sample / "tables.json")
    dev = [e for e in json.loads((sample / "dev.json").read_text()) if e["db_id"] in ("shop", "school")]
    chosen = dev[:3] + [e for e in dev if e["db_id"] == "school"][:3]
    return [
        {
            "id": f"q{i}",
            "db_id": e["db_id"],
            "question": e["question"],
            "schema": serialize_schema(tables[e["db_id"]], "ddl", db_file(sample / "database", e["db_id"])),
        }
        for i, e in enumerate(chosen)
    ]


@contextlib.contextmanager
def in_process(config: ServeConfig, source: Any, model_id: str) -> Iterator[str]:
    """A real uvicorn server in a thread of this process, on 127.0.0.1; yields its base URL."""
    import uvicorn

    service = Service(config, source, model_id=model_id)
    server = uvicorn.Server(uvicorn.Config(build_app(service), host="127.0.0.1", port=config.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        server.should_exit = True
        raise RuntimeError(f"the server did not start: {service.startup_error!r}")
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(60)


@pytest.fixture(scope="module")
def api(adapter, sample) -> Iterator[str]:
    """One adapter served with an API key, the sample databases, tight caps, and a wide batching window."""
    config = ServeConfig(
        port=free_ports(1)[0], api_key=API_KEY, tables=str(sample / "tables.json"), db_dir=str(sample / "database"),
        max_new_tokens=SQL_TOKENS, max_tokens_limit=64, max_request_bytes=32 << 10, batch_wait_ms=300, batch_size=8,
    )  # fmt: skip
    with in_process(config, FixedSource(str(adapter), None), model_id="tiny-sql") as url:
        yield url


def client(url: str, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)


def post(url: str, path: str, body: Any, key: str | None = API_KEY, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return requests.post(url + path, data=data, headers={"Content-Type": "application/json", **headers}, timeout=120,
                         **kwargs)  # fmt: skip


def metric(url: str, name: str, **labels: str) -> float:
    """A sample's value from /metrics (0 when absent)."""
    text = requests.get(url + "/metrics", timeout=30).text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + wanted + '}') if wanted else ''} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_openai_client_lists_the_model_and_completes_chat_streamed_or_not(api) -> None:
    openai_client = client(api)
    (model,) = openai_client.models.list().data
    assert model.id == "tiny-sql" and openai_client.models.retrieve("tiny-sql").id == "tiny-sql"

    messages = [{"role": "user", "content": "How many customers are there?"}]
    raw = openai_client.chat.completions.with_raw_response.create(model="tiny-sql", messages=messages, max_tokens=12)
    answer = raw.parse()
    assert raw.headers[VERSION_HEADER] == "adapter-1" == answer.system_fingerprint
    text = answer.choices[0].message.content
    assert text and answer.choices[0].finish_reason == "length" and answer.usage.completion_tokens == 12

    chunks = list(
        openai_client.chat.completions.create(
            model="tiny-sql", messages=messages, max_tokens=12, stream=True, stream_options={"include_usage": True}
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text, "greedy: the stream decodes exactly the answer"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1, "tokens arrive as they decode"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 12 and chunks[-1].usage.prompt_tokens == answer.usage.prompt_tokens

    # A stop sequence ends the text before it, streamed or not (the stream holds back what could become one).
    at = next(i for i in range(1, len(text) - 1) if "\ufffd" not in text[i : i + 2])
    stop = text[at : at + 2]
    stopped = openai_client.chat.completions.create(model="tiny-sql", messages=messages, max_tokens=12, stop=[stop])
    assert stopped.choices[0].message.content == text[: text.find(stop)]
    assert stopped.choices[0].finish_reason == "stop"
    stream = openai_client.chat.completions.create(
        model="tiny-sql", messages=messages, max_tokens=12, stop=stop, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text[: text.find(stop)]

    completion = openai_client.completions.create(model="tiny-sql", prompt="SELECT name FROM", max_tokens=5)
    assert completion.choices[0].text and completion.usage.completion_tokens == 5
    pieces = openai_client.completions.create(model="tiny-sql", prompt="SELECT name FROM", max_tokens=5, stream=True)
    assert "".join(c.choices[0].text for c in pieces) == completion.choices[0].text


def test_sql_is_what_predict_answers_and_concurrent_questions_share_a_batch(api, adapter, sample, tmp_path) -> None:
    questions = _questions(sample)
    write_jsonl(tmp_path / "records.jsonl", questions)
    settings = {"max_seq_len": MAX_SEQ_LEN, "max_new_tokens": SQL_TOKENS, "batch_size": 1}
    predict(tmp_path / "records.jsonl", BASE, adapter, tmp_path / "pred", config=PredictConfig(**settings))
    expected = read_jsonl(tmp_path / "pred" / "predictions.jsonl")

    batches_before = metric(api, "sqltune_serve_batch_sequences_count")
    with ThreadPoolExecutor(len(questions)) as pool:
        answers = list(pool.map(lambda q: post(api, "/v1/sql", {"question": q["question"], "db_id": q["db_id"]}),
                                questions))  # fmt: skip
    assert [a.status_code for a in answers] == [200] * len(questions), answers[0].text
    bodies = [a.json() for a in answers]
    assert [(b["raw"], b["sql"]) for b in bodies] == [(r["raw"], r["sql"]) for r in expected], "as predict answers"
    assert {b["adapter_version"] for b in bodies} == {a.headers[VERSION_HEADER] for a in answers} == {"adapter-1"}
    assert all(b["completion_tokens"] > 0 and b["prompt_tokens"] > 100 for b in bodies)
    batches = metric(api, "sqltune_serve_batch_sequences_count") - batches_before
    assert 1 <= batches < len(questions), "questions that arrive together are answered in shared generate() calls"

    one = post(api, "/v1/sql", {"question": questions[0]["question"], "db_id": questions[0]["db_id"]}).json()
    assert one["raw"] == expected[0]["raw"], "alone or in a batch, the same answer"
    first = {"question": questions[0]["question"], "db_id": questions[0]["db_id"]}
    hinted = post(api, "/v1/sql", {**first, "evidence": "customers are the people table"})
    assert hinted.json()["prompt_tokens"] > one["prompt_tokens"], "the evidence is in the prompt, as in training"


def test_sql_asks_a_filtered_adapter_with_the_filtered_schema_its_records_had(sample, tmp_path) -> None:
    """An adapter trained on schema_filter=lexical records with values (its manifest says so): /v1/sql builds each
    question's schema units with preprocess's own function, so its answers and prompt sizes are predict's on the
    preprocessed dev records, and not those of the whole schema (--schema-filter none --schema-values 0)."""
    from sqltune.preprocess import PreprocessConfig, preprocess

    filtered = {"schema_filter": "lexical", "schema_values": 2}
    adapter = tiny_adapter(tmp_path, seed=3, **filtered)
    config = PreprocessConfig(dataset="spider", split="dev", limit=6, **filtered)
    preprocess(sample, tmp_path / "dev", config=config)
    settings = {"max_seq_len": MAX_SEQ_LEN, "max_new_tokens": SQL_TOKENS, "batch_size": 1}
    predict(tmp_path / "dev", BASE, adapter, tmp_path / "pred", config=PredictConfig(**settings))
    expected = read_jsonl(tmp_path / "pred" / "predictions.jsonl")
    records = read_jsonl(tmp_path / "dev" / "records.jsonl")
    assert all(r.get("schema_units") for r in records)

    serve = ServeConfig(port=free_ports(1)[0], tables=str(sample / "tables.json"), db_dir=str(sample / "database"),
                        max_new_tokens=SQL_TOKENS)  # fmt: skip
    whole = ServeConfig(**{**serve.to_dict(), "port": free_ports(1)[0], "schema_filter": "none", "schema_values": 0})
    asks = [{"question": r["question"], "db_id": r["db_id"]} for r in records]
    with in_process(serve, FixedSource(str(adapter), None), model_id="tiny-sql") as url:
        bodies = [post(url, "/v1/sql", ask, key=None).json() for ask in asks]
    with in_process(whole, FixedSource(str(adapter), None), model_id="tiny-sql") as url:
        unfiltered = [post(url, "/v1/sql", ask, key=None).json() for ask in asks]
    assert [(b["raw"], b["prompt_tokens"]) for b in bodies] == [(r["raw"], r["prompt_tokens"]) for r in expected]
    assert [b["prompt_tokens"] for b in bodies] != [b["prompt_tokens"] for b in unfiltered]  # another prompt


def test_errors_are_openai_shaped_with_the_right_status(api) -> None:
    openai_client = client(api)
    messages = [{"role": "user", "content": "Hi"}]
    with pytest.raises(openai.BadRequestError) as too_many:
        openai_client.chat.completions.create(model="tiny-sql", messages=messages, max_tokens=65)
    assert (too_many.value.code, too_many.value.param) == ("max_tokens_too_large", "max_tokens")
    with pytest.raises(openai.BadRequestError) as too_long:
        openai_client.completions.create(model="tiny-sql", prompt=[5] * 2040, max_tokens=20)
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError) as unknown_model:
        openai_client.chat.completions.create(model="gpt-4o", messages=messages)
    assert unknown_model.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        openai_client.chat.completions.create(model="tiny-sql", messages=messages, n=2)
    with pytest.raises(openai.BadRequestError) as bad_value:
        openai_client.chat.completions.create(model="tiny-sql", messages=messages, temperature=7)
    assert bad_value.value.param == "temperature"
    with pytest.raises(openai.AuthenticationError):
        client(api, key="wrong").models.list()

    cases = {
        "bad JSON": (post(api, "/v1/sql", "{not json"), 400, "invalid_json"),
        "not an object": (post(api, "/v1/sql", "[1]"), 400, "invalid_json"),
        "unknown db_id": (post(api, "/v1/sql", {"question": "How many?", "db_id": "nope"}), 404, "db_not_found"),
        "question over the context": (
            post(api, "/v1/sql", {"question": "How many? " * 400, "db_id": "shop"}), 400, "context_length_exceeded"
        ),
        "no key": (post(api, "/v1/sql", {"question": "x", "db_id": "shop"}, key=None), 401, "invalid_api_key"),
        "body over the cap": (post(api, "/v1/sql", {"question": "x" * (40 << 10), "db_id": "shop"}), 413,
                              "request_too_large"),
        "unknown route": (post(api, "/v1/embeddings", {"input": "x"}), 404, "not_found"),
    }  # fmt: skip
    for what, (response, status, code) in cases.items():
        assert response.status_code == status, (what, response.text)
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, (what, error)
        assert response.headers[VERSION_HEADER] == "adapter-1", what

    for probe in ("/health", "/ready", "/metrics"):  # kubelet and Prometheus send no token
        assert requests.get(api + probe, timeout=30).status_code == 200, probe
    assert metric(api, "sqltune_serve_requests_total", endpoint="/v1/sql", status="404") >= 1
    assert metric(api, "sqltune_serve_adapter_version", version="adapter-1") == 1
    assert metric(api, "sqltune_serve_completion_tokens_total") > 0


def test_sql_candidates_are_run_in_the_sandbox_and_voted(adapter, sample) -> None:
    databases = {path: path.read_bytes() for path in (sample / "database").rglob("*.sqlite")}
    config = ServeConfig(
        port=free_ports(1)[0], tables=str(sample), db_dir=str(sample / "database"), max_new_tokens=SQL_TOKENS,
        candidates=3,
    )  # fmt: skip
    question = {"question": "How many customers are there?", "db_id": "shop"}
    with in_process(config, FixedSource(str(adapter), None), model_id="tiny-sql") as url:
        body = post(url, "/v1/sql", question, key=None).json()
    candidates = body["candidates"]
    assert len(candidates) == 3 and body["sql"] == candidates[body["chosen"]]["sql"]
    assert all(c["ran"] or c["error"] for c in candidates), "each candidate ran in the sandbox or says why not"
    assert all(isinstance(c["log_prob"], float) for c in candidates)
    assert {path: path.read_bytes() for path in databases} == databases, "no database was written"


# --- following a channel on the real S3 server, through the real CLI ---


class ChatLoop(threading.Thread):
    """Chat completions one after another until stopped: every answer's version, every failure."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.openai_client, self.versions, self.texts, self.failures = client(url, key="unused"), [], [], []
        self.halt = threading.Event()

    def run(self) -> None:
        messages = [{"role": "user", "content": "How many customers?"}]
        while not self.halt.is_set():
            try:
                raw = self.openai_client.chat.completions.with_raw_response.create(
                    model="smol-sql", messages=messages, max_tokens=8
                )
                self.texts.append(raw.parse().choices[0].message.content)
                self.versions.append(raw.headers[VERSION_HEADER])
            except Exception as exc:
                self.failures.append(repr(exc))

    def stop(self) -> None:
        self.halt.set()
        self.join(120)


def wait_for(condition: Any, what: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def published(s3_env, tmp_path) -> tuple[str, Registry]:
    """Versions v1, v2, v3 (EX 0.5, 0.6, 0.7) and v4 (made for another base model) of `smol-sql`; v1 in production."""
    bucket = f"serve-{time.monotonic_ns()}"
    s3_env.create_bucket(bucket)
    for number, seed in ((1, 11), (2, 12), (3, 13), (4, 14)):
        made = tiny_adapter(tmp_path, seed, base_model="tiny-random-qwen2" if number == 4 else BASE)
        config = PublishConfig(bucket=bucket, prefix="serve", model_name="smol-sql", version=f"v{number}")
        publish(made, make_eval(tmp_path, 0.4 + number / 10), config=config)
    registry = Registry(bucket, "serve", "smol-sql")
    registry.promote("v1", "production")
    return bucket, registry


def test_serve_follows_the_channel_with_no_failed_request_and_refuses_bad_versions(
    published, s3_env, sample, tmp_path
) -> None:
    bucket, registry = published
    port = free_ports(1)[0]
    url = f"http://127.0.0.1:{port}"
    versions_dir = tmp_path / "versions"
    command = [
        sys.executable, "-m", "sqltune.cli", "serve", "--bucket", bucket, "--prefix", "serve", "--model-name",
        "smol-sql", "--channel", "production", "--port", str(port), "--poll-seconds", str(POLL),
        "--versions-dir", str(versions_dir), "--tables", str(sample / "tables.json"),
        "--db-dir", str(sample / "database"), "--max-new-tokens", str(SQL_TOKENS),
    ]  # fmt: skip
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:

        def ready() -> bool:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            with contextlib.suppress(requests.ConnectionError):
                return requests.get(url + "/ready", timeout=5).status_code == 200
            return False

        def serving() -> str:
            return requests.get(url + "/ready", timeout=30).json()["adapter_version"]

        wait_for(ready, "the server", 180)
        raw = client(url, key="unused").chat.completions.with_raw_response.create(
            model="smol-sql", messages=[{"role": "user", "content": "How many customers?"}], max_tokens=4
        )
        assert raw.headers[VERSION_HEADER] == "v1" and raw.parse().choices[0].message.content
        sql = post(url, "/v1/sql", {"question": "How many customers are there?", "db_id": "shop"}, key=None)
        assert sql.status_code == 200 and sql.json()["adapter_version"] == sql.headers[VERSION_HEADER] == "v1"

        # Promotion is the rollout: v2 is served while a client keeps asking, and no request fails.
        loop = ChatLoop(url)
        loop.start()
        wait_for(lambda: len(loop.versions) >= 3, "answers from v1")
        registry.promote("v2", "production")
        wait_for(lambda: serving() == "v2", "v2 to be served")
        wait_for(lambda: loop.versions[-1:] == ["v2"] and loop.versions.count("v2") >= 3, "answers from v2")
        loop.stop()
        assert loop.failures == []
        switch = loop.versions.index("v2")
        assert set(loop.versions[:switch]) == {"v1"} and set(loop.versions[switch:]) == {"v2"}, loop.versions
        # The header names the adapter that answered: each version's greedy answer is its own, and they differ.
        assert len(set(loop.texts[:switch])) == len(set(loop.texts[switch:])) == 1, loop.texts
        assert loop.texts[0] != loop.texts[-1]

        # A version whose files do not match its manifest is refused; v2 keeps serving and the server stays ready.
        key = "serve/smol-sql/v3/adapter_model.safetensors"
        s3_env.client().put_object(Bucket=bucket, Key=key, Body=b"not the weights the manifest names")
        registry.promote("v3", "production")
        wait_for(lambda: metric(url, "sqltune_serve_refused_versions_total", version="v3") == 1, "v3 refused")
        # So is one made for another base model (it verifies, but does not fit what is served).
        registry.promote("v4", "production")
        wait_for(lambda: metric(url, "sqltune_serve_refused_versions_total", version="v4") == 1, "v4 refused")
        time.sleep(5 * POLL)
        assert requests.get(url + "/ready", timeout=30).status_code == 200 and serving() == "v2"
        again = post(url, "/v1/sql", {"question": "How many customers are there?", "db_id": "shop"}, key=None)
        assert again.status_code == 200 and again.json()["adapter_version"] == "v2"
        assert metric(url, "sqltune_serve_refused_versions_total", version="v3") == 1, "a refusal is not retried"

        # A rollback is the same move.
        registry.rollback("production", to="v1")
        wait_for(lambda: serving() == "v1", "the rollback to v1")
        assert metric(url, "sqltune_serve_adapter_switches_total") == 2
        assert metric(url, "sqltune_serve_adapter_version", version="v1") == 1
        assert metric(url, "sqltune_serve_adapter_version", version="v2") == 0
        assert sorted(p.name for p in versions_dir.iterdir()) == ["v1", "v2"], "only the last two versions are kept"
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    logged = (tmp_path / "server.log").read_text()
    # uvicorn finishes the requests in flight, shuts the app down, then exits by the signal it caught.
    assert server.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in logged, logged[-3000:]
    assert re.search(r"refused version v3 of channel 'production' .*sha256.*; v2 keeps serving", logged), logged
    assert re.search(r"refused version v4 .*trained on .*tiny-random-qwen2.*; v2 keeps serving", logged), logged


def test_cli_errors_are_one_line_and_the_inferenceservice_names_the_channel(adapter, tmp_path) -> None:
    def sqltune(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sqltune.cli", "serve", *args], capture_output=True, text=True,
                              timeout=120)  # fmt: skip

    both = sqltune("--adapter", str(tmp_path), "--bucket", "b", "--model-name", "m")
    assert both.returncode == 2 and "not both" in both.stderr and "Traceback" not in both.stderr
    candidates = sqltune("--adapter", str(tmp_path), "--candidates", "3")
    assert candidates.returncode == 2 and "--db-dir" in candidates.stderr
    missing = sqltune("--adapter", str(tmp_path / "absent"), "--port", str(free_ports(1)[0]))
    assert missing.returncode == 2 and "adapter not found" in missing.stderr, missing.stderr
    no_vllm = sqltune("--adapter", str(adapter), "--backend", "vllm", "--port", str(free_ports(1)[0]))
    assert no_vllm.returncode == 2 and "needs the vllm package" in no_vllm.stderr, no_vllm.stderr
    assert "refused" not in no_vllm.stderr, "a backend that cannot start is not the version's fault"
    for failed in (missing, no_vllm):
        assert "Traceback" not in failed.stderr and failed.stderr.strip().splitlines()[-1].startswith("error: ")

    printed = sqltune("--bucket", "models", "--model-name", "Smol_SQL", "--channel", "staging",
                      "--print-inferenceservice")  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    import yaml

    resource = yaml.safe_load(printed.stdout)
    assert resource["metadata"]["name"] == "smol-sql"
    args = resource["spec"]["predictor"]["containers"][0]["args"]
    assert args[:5] == ["serve", "--bucket", "models", "--model-name", "Smol_SQL"]
    assert args[args.index("--channel") + 1] == "staging" and args[args.index("--host") + 1] == "0.0.0.0"
    assert "--api-key" not in args, "the key comes from a Secret, never the manifest"


def test_a_server_started_on_a_bad_version_serves_the_one_before(published, s3_env, tmp_path) -> None:
    from sqltune.serve.service import ChannelSource

    bucket, registry = published
    registry.promote("v2", "production")
    s3_env.client().put_object(Bucket=bucket, Key="serve/smol-sql/v2/adapter_config.json", Body=b"{}")
    config = ServeConfig(port=free_ports(1)[0], poll_seconds=POLL)
    source = ChannelSource(registry, "production", tmp_path / "versions")
    with in_process(config, source, model_id="smol-sql") as url:
        assert requests.get(url + "/ready", timeout=30).json()["adapter_version"] == "v1"
        assert metric(url, "sqltune_serve_refused_versions_total", version="v2") == 1
        answer = client(url, key="unused").completions.with_raw_response.create(
            model="smol-sql", prompt="SELECT", max_tokens=2
        )
        assert answer.headers[VERSION_HEADER] == "v1"


def test_sql_on_a_live_database_reads_its_schema_and_runs_candidates_there(adapter, sample, postgres) -> None:
    """--database-url instead of --tables/--db-dir: the sample's `shop` copied into a real PostgreSQL; /v1/sql writes
    the schema read from the live database, and its candidates run there, through the sandbox that writes nothing."""
    from sqltune.sql.copy import copy_databases

    copy_databases(sample / "database", postgres, ["shop"], overwrite=True)
    config = ServeConfig(port=free_ports(1)[0], database_url=postgres, max_new_tokens=SQL_TOKENS, candidates=3)
    question = {"question": "How many customers are there?", "db_id": "shop"}
    with in_process(config, FixedSource(str(adapter), None), model_id="tiny-sql") as url:
        body = post(url, "/v1/sql", question, key=None).json()
        unknown = post(url, "/v1/sql", {**question, "db_id": "no_such_db"}, key=None)
    assert len(body["candidates"]) == 3 and all(c["ran"] or c["error"] for c in body["candidates"])
    schema = Service(config, FixedSource(str(adapter), None), model_id="tiny-sql").schema_text("shop", "ddl")
    assert schema.startswith("CREATE TABLE") and "customer" in schema.lower()  # read from the live database
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "db_not_found"
