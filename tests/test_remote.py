"""`sqltune submit` / `sqltune schedule` against a local HTTP server that speaks the KFP v2beta1 REST paths
kfp.Client 2.17 calls (healthz, experiments list/create, runs create, recurringruns create).

No `from __future__ import annotations` here: the test pipeline's component needs real annotations.
"""

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from typer.testing import CliRunner

from sqltune.cli import app
from sqltune.errors import SqltuneError
from sqltune.pipeline import PIPELINE_FILE
from sqltune.pipeline.remote import Connection, submit_run

REPO = Path(__file__).resolve().parents[1]
TEXT2SQL = PIPELINE_FILE
API = "/apis/v2beta1"
KUBE_PROXY = re.compile(r"/api/v1/namespaces/(?P<namespace>[^/]+)/services/ml-pipeline:http/proxy")
pytestmark = pytest.mark.filterwarnings("ignore:This client only works:FutureWarning")


class FakeKfpApi(ThreadingHTTPServer):
    """Records every request; answers like the KFP API server (ids made up, bodies echoed)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.experiments: list[dict[str, Any]] = []
        self.fail: dict[str, int] = {}  # "POST /apis/v2beta1/runs" -> HTTP status to answer with
        self.proxy_only = False  # act as a Kubernetes API server: KFP only behind the service proxy

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def calls(self, method: str, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method and r["path"] == API + path]


class _Handler(BaseHTTPRequestHandler):
    server: FakeKfpApi

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        # With a kube config, kfp.Client goes through the API server's service proxy to ml-pipeline.
        proxied = KUBE_PROXY.match(url.path)
        if proxied:
            url = url._replace(path=url.path[proxied.end() :])
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.server.requests.append(
            {
                "method": method,
                "path": url.path,
                "query": query,
                "body": body,
                "auth": self.headers["Authorization"],
                "proxy_namespace": proxied and proxied["namespace"],
            }
        )
        if self.server.proxy_only and not proxied:
            return self._answer(404, {"kind": "Status", "message": "the server could not find the requested resource"})
        if status := self.server.fail.get(f"{method} {url.path}"):
            return self._answer(status, {"error_message": "rejected by test", "code": 3})
        route = (method, url.path.removeprefix(API))
        if route == ("GET", "/healthz"):
            return self._answer(200, {"multi_user": False})
        if route == ("GET", "/experiments"):
            wanted = json.loads(query["filter"])["predicates"][0]["stringValue"]
            found = [e for e in self.server.experiments if e["display_name"] == wanted]
            return self._answer(200, {"experiments": found, "total_size": len(found)} if found else {})
        if route == ("POST", "/experiments"):
            experiment = {**body, "experiment_id": f"exp-{len(self.server.experiments) + 1}"}
            self.server.experiments.append(experiment)
            return self._answer(200, experiment)
        if route == ("POST", "/runs"):
            return self._answer(200, {**body, "run_id": "run-1", "state": "PENDING"})
        if route == ("POST", "/recurringruns"):
            return self._answer(200, {**body, "recurring_run_id": "rr-1", "status": "ENABLED"})
        return self._answer(404, {"error_message": f"no route {method} {url.path}", "code": 5})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")


@pytest.fixture
def kfp_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeKfpApi]:
    from kfp.client.client import Client

    # kfp.Client reads (and may write) ~/.config/kfp/context.json: keep the user's out of the test.
    monkeypatch.setattr(Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    for var in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_TOKEN", "KF_PIPELINES_DEFAULT_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)
    server = FakeKfpApi()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trivial one-component pipeline compiled here, independent of the real one."""
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
    def echo(text: str, times: int) -> str:
        return text * times

    @dsl.pipeline(name="tiny")
    def tiny(text: str = "hi", times: int = 2, ratio: float = 0.5, loud: bool = False, flags: dict = {"a": 1}):  # noqa: B006
        echo(text=text, times=times)

    path = tmp_path_factory.mktemp("tiny") / "tiny.yaml"
    compiler.Compiler().compile(tiny, str(path))
    return path


def _numbers_as_float(value: Any) -> Any:
    """The client round-trips the spec through protobuf, where every JSON number is a double."""
    if isinstance(value, dict):
        return {k: _numbers_as_float(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers_as_float(v) for v in value]
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _expected_spec(path: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    spec = docs[0] if len(docs) == 1 else {"pipeline_spec": docs[0], "platform_spec": docs[1]}
    return _numbers_as_float(spec)


def _sqltune(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=True)


def test_submit_sends_spec_typed_params_experiment_and_token(kfp_api: FakeKfpApi) -> None:
    result = _sqltune(
        "submit", "--host", kfp_api.url, "--token", "s3cr3t", "--experiment", "nightly", "--run-name", "smoke",
        "--param", "base_model=s3://models/qwen", "--param", "lora_rank=8", "--param", "learning_rate=1e-4",
        "--param", 'gpu_node_selector={"pool": "a100"}',
        "--param", 'gpu_tolerations=[{"key": "gpu", "operator": "Exists"}]',
        "--pipeline-file", str(TEXT2SQL), "--service-account", "sqltune-pipeline-runner",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"run run-1 started: {kfp_api.url}/#/runs/details/run-1" in result.output

    created = kfp_api.calls("POST", "/experiments")
    assert [c["body"]["display_name"] for c in created] == ["nightly"]
    (run,) = kfp_api.calls("POST", "/runs")
    assert run["auth"] == "Bearer s3cr3t"
    body = run["body"]
    assert body["experiment_id"] == "exp-1"
    assert body["display_name"] == "smoke"
    assert body["service_account"] == "sqltune-pipeline-runner"
    assert body["runtime_config"]["parameters"] == {
        "base_model": "s3://models/qwen",
        "lora_rank": 8,
        "learning_rate": 1e-4,
        "gpu_node_selector": {"pool": "a100"},
        "gpu_tolerations": [{"key": "gpu", "operator": "Exists"}],
    }
    assert _numbers_as_float(body["pipeline_spec"]) == _expected_spec(TEXT2SQL)
    assert "platform_spec" in body["pipeline_spec"], "node selectors/secrets (kfp-kubernetes) travel with the run"


def test_submit_reuses_an_existing_experiment(kfp_api: FakeKfpApi, tiny_pipeline: Path) -> None:
    kfp_api.experiments.append({"experiment_id": "exp-42", "display_name": "sqltune"})
    run = submit_run(Connection(kfp_api.url), {"times": 3, "ratio": 2}, pipeline_file=tiny_pipeline)
    assert (run.id, run.experiment_id) == ("run-1", "exp-42")
    assert kfp_api.calls("POST", "/experiments") == []
    (request,) = kfp_api.calls("POST", "/runs")
    assert request["auth"] is None
    assert request["body"]["runtime_config"]["parameters"] == {"times": 3, "ratio": 2.0}
    assert _numbers_as_float(request["body"]["pipeline_spec"]) == _expected_spec(tiny_pipeline)


def test_schedule_sends_cron_and_schedule_settings(kfp_api: FakeKfpApi, tiny_pipeline: Path) -> None:
    result = _sqltune(
        "schedule", "--cron", "0 0 2 * * 0", "--name", "weekly-retrain", "--host", kfp_api.url,
        "--namespace", "team-ml", "--experiment", "retraining", "--param", "text=yo", "--param", "loud=true",
        "--max-concurrency", "2",
        "--pipeline-file", str(tiny_pipeline),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "recurring run rr-1 created (0 0 2 * * 0)" in result.output
    (lookup,) = kfp_api.calls("GET", "/experiments")
    assert lookup["query"]["namespace"] == "team-ml"
    (experiment,) = kfp_api.calls("POST", "/experiments")
    assert experiment["body"] == {"display_name": "retraining", "namespace": "team-ml"}
    (request,) = kfp_api.calls("POST", "/recurringruns")
    body = request["body"]
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 2 * * 0"}}
    assert (body["display_name"], body["mode"], body["max_concurrency"]) == ("weekly-retrain", "ENABLE", 2)
    assert body["no_catchup"] is True
    assert body["experiment_id"] == "exp-1"
    assert body["runtime_config"]["parameters"] == {"text": "yo", "loud": True}
    assert _numbers_as_float(body["pipeline_spec"]) == _expected_spec(tiny_pipeline)


def test_five_field_cron_is_rejected_with_the_six_field_form(kfp_api: FakeKfpApi, tiny_pipeline: Path) -> None:
    result = _sqltune("schedule", "--cron", "0 2 * * 0", "--host", kfp_api.url, "--pipeline-file", str(tiny_pipeline))
    assert result.exit_code != 0
    message = str(result.exception)
    assert isinstance(result.exception, SqltuneError)
    assert "5 fields" in message and "seconds first" in message and "'0 0 2 * * 0'" in message
    assert kfp_api.requests == [], "nothing is sent for a bad cron"


@pytest.mark.parametrize(
    ("cron", "complaint"),
    [("0 0 24 * * *", "hour value '24'"), ("0 0 2 * 13 0", "month value '13'"), ("@fortnightly", "descriptor")],
)
def test_bad_cron_fields_are_named(cron: str, complaint: str) -> None:
    from sqltune.pipeline.cron import validate_cron

    with pytest.raises(SqltuneError, match=complaint):
        validate_cron(cron)


def test_unknown_or_mistyped_param_lists_valid_ones(kfp_api: FakeKfpApi, tiny_pipeline: Path) -> None:
    result = _sqltune("submit", "--host", kfp_api.url, "--pipeline-file", str(tiny_pipeline), "--param", "tmes=3")
    assert "unknown pipeline parameter 'tmes'; valid parameters: flags, loud, ratio, text, times" in str(
        result.exception
    )
    result = _sqltune("submit", "--host", kfp_api.url, "--pipeline-file", str(tiny_pipeline), "--param", "times=x")
    assert "times" in str(result.exception) and "NUMBER_INTEGER" in str(result.exception)
    assert kfp_api.requests == []


def test_server_refusal_is_a_clear_error(kfp_api: FakeKfpApi, tiny_pipeline: Path) -> None:
    kfp_api.fail[f"POST {API}/runs"] = 400
    with pytest.raises(SqltuneError, match=r"refused to start the run: HTTP 400 .*rejected by test"):
        submit_run(Connection(kfp_api.url), {}, pipeline_file=tiny_pipeline)


def test_unreachable_host_is_a_clear_error(tiny_pipeline: Path, tmp_path: Path, monkeypatch) -> None:
    from kfp.client.client import Client

    monkeypatch.setattr(Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    with FakeKfpApi() as closed:  # bound, then closed: nothing listens on its port
        url = closed.url
    with pytest.raises(SqltuneError, match=f"KFP API at {url}"):
        submit_run(Connection(url, namespace="team-ml"), {}, pipeline_file=tiny_pipeline)


def test_submit_without_host_uses_the_kube_config(
    kfp_api: FakeKfpApi, tiny_pipeline: Path, tmp_path: Path, monkeypatch
) -> None:
    from kubernetes.config import kube_config

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": kfp_api.url}}],
                "users": [{"name": "u", "user": {"token": "kube-token"}}],
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "ctx",
            }
        )
    )
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod
    kfp_api.proxy_only = True
    run = submit_run(Connection(), {"times": 1}, pipeline_file=tiny_pipeline)
    assert run.url is None
    assert [r["path"] for r in kfp_api.requests] == [
        f"{API}/healthz",
        f"{API}/experiments",
        f"{API}/experiments",
        f"{API}/runs",
    ]
    assert {(r["proxy_namespace"], r["auth"]) for r in kfp_api.requests} == {("kubeflow", "Bearer kube-token")}
    (request,) = kfp_api.calls("POST", "/runs")
    assert request["body"]["runtime_config"]["parameters"] == {"times": 1}
