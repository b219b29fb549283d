"""Start runs and recurring runs of the compiled pipeline on a KFP cluster, through `kfp.Client`.

The compiled YAML is sent as the run's pipeline spec (no upload step, so a run always uses exactly the
checked-in file); parameters are checked against its declared types first (`sqltune.pipeline.params`).
Auth is what kfp.Client supports: a bearer token (`--token` / KF_PIPELINES_TOKEN), or, without a host,
the kube config (in-cluster service account or ~/.kube/config through the API server proxy).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqltune.errors import SqltuneError
from sqltune.log import get_logger
from sqltune.pipeline import PIPELINE_FILE
from sqltune.pipeline.cron import validate_cron
from sqltune.pipeline.params import coerce_params, load_pipeline_spec
from sqltune.settings import setting

log = get_logger(__name__)

DEFAULT_EXPERIMENT = "sqltune"


@dataclass(frozen=True)
class Connection:
    """Where the KFP API is and how to authenticate; host None means "from the kube config"."""

    host: str | None = setting(
        None,
        "KFP API URL, e.g. http://localhost:8080 after `kubectl port-forward svc/ml-pipeline-ui`. Without it, "
        "kfp.Client finds the cluster from the kube config.",
        envvar="KF_PIPELINES_ENDPOINT",
    )
    namespace: str | None = setting(None, "Profile namespace (multi-user KFP).", aliases=("-n",))
    token: str | None = setting(None, "Bearer token for the KFP API.", envvar="KF_PIPELINES_TOKEN")

    def client(self) -> Any:
        import kfp

        class Client(kfp.Client):
            def _load_config(self, *args: Any, **kwargs: Any) -> Any:
                config = super()._load_config(*args, **kwargs)
                _keep_proxy_path(config)  # before the constructor's first request (healthz)
                return config

        try:
            # kfp.Client's own default namespace is 'kubeflow', which it treats as "not set".
            return Client(host=self.host, namespace=self.namespace or "kubeflow", existing_token=self.token)
        except _api_exceptions() as exc:  # it calls /healthz when no namespace is set
            raise _api_error(self, "connect", exc) from exc


def _keep_proxy_path(config: Any) -> None:
    """Keep kfp.Client on the API server's service proxy when it authenticates from a kube config.

    kfp appends `api/v1/namespaces/<ns>/services/ml-pipeline:http/proxy/` to the API server's URL, but the
    kubernetes loader's token refresh hook, run before every request, writes the bare server URL back, so
    requests miss the proxy (kubeflow/pipelines#8313, still so in kfp 2.17.0 with kubernetes 30). Put the
    proxied URL back after the hook (without kfp's trailing slash, which made `proxy//apis/...`).
    """
    hook, proxied = config.refresh_api_key_hook, config.host.rstrip("/")
    if hook is None or "/services/ml-pipeline:http/proxy" not in proxied:
        return  # a given host, in-cluster, or client-certificate auth: nothing rewrites the URL

    def refresh(configuration: Any) -> None:
        hook(configuration)
        configuration.refresh_api_key_hook = refresh  # the loader's hook re-registers itself on each call
        configuration.host = proxied

    config.refresh_api_key_hook = refresh
    config.host = proxied


@dataclass(frozen=True)
class Submitted:
    """What the cluster answered: the run (or recurring run) id and the experiment it went into."""

    id: str
    experiment_id: str
    url: str | None


def _api_exceptions() -> tuple[type[Exception], ...]:
    """What kfp.Client raises for an unreachable or refusing server (ValueError: experiment look-ups,
    TimeoutError: /healthz failing five times)."""
    import kfp_server_api
    import urllib3

    return kfp_server_api.ApiException, urllib3.exceptions.HTTPError, ValueError, TimeoutError


def _api_error(conn: Connection, action: str, exc: Exception) -> SqltuneError:
    where = conn.host or "the cluster from the kube config"
    status = getattr(exc, "status", None)
    if status is not None:
        body = (getattr(exc, "body", None) or "").strip()[:500]
        return SqltuneError(f"KFP API at {where} refused to {action}: HTTP {status} {exc.reason}: {body}")
    return SqltuneError(f"cannot {action} at the KFP API at {where}: {exc}")


def _checked(pipeline_file: str | Path, params: Mapping[str, Any]) -> dict[str, Any]:
    return coerce_params(params, load_pipeline_spec(pipeline_file))


def _experiment_id(client: Any, conn: Connection, experiment: str) -> str:
    """The id of the experiment named `experiment`, created when it does not exist yet."""
    return client.create_experiment(name=experiment, namespace=conn.namespace).experiment_id


def _url(conn: Connection, kind: str, resource_id: str) -> str | None:
    return f"{conn.host.rstrip('/')}/#/{kind}/details/{resource_id}" if conn.host else None


def submit_run(
    conn: Connection,
    params: Mapping[str, Any],
    *,
    pipeline_file: str | Path = PIPELINE_FILE,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    service_account: str | None = None,
) -> Submitted:
    """Start one run of the compiled pipeline with `params` (checked against its declared types)."""
    arguments = _checked(pipeline_file, params)
    client = conn.client()
    try:
        experiment_id = _experiment_id(client, conn, experiment)
        result = client.create_run_from_pipeline_package(
            pipeline_file=str(pipeline_file),
            arguments=arguments,
            run_name=run_name,
            experiment_id=experiment_id,
            namespace=conn.namespace,
            service_account=service_account,
        )
    except _api_exceptions() as exc:
        raise _api_error(conn, "start the run", exc) from exc
    log.info("run %s started in experiment %s", result.run_id, experiment)
    return Submitted(result.run_id, experiment_id, _url(conn, "runs", result.run_id))


def schedule_run(
    conn: Connection,
    params: Mapping[str, Any],
    cron: str,
    *,
    name: str,
    pipeline_file: str | Path = PIPELINE_FILE,
    experiment: str = DEFAULT_EXPERIMENT,
    max_concurrency: int = 1,
    catchup: bool = False,
    service_account: str | None = None,
) -> Submitted:
    """Create a recurring run on a six-field KFP cron; by default missed runs are not backfilled (no catchup)."""
    cron = validate_cron(cron)
    if max_concurrency < 1:
        raise SqltuneError(f"max_concurrency must be at least 1, got {max_concurrency}")
    arguments = _checked(pipeline_file, params)
    client = conn.client()
    try:
        experiment_id = _experiment_id(client, conn, experiment)
        recurring = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=name,
            cron_expression=cron,
            max_concurrency=max_concurrency,
            no_catchup=not catchup,
            params=arguments,
            pipeline_package_path=str(pipeline_file),
            service_account=service_account,
        )
    except _api_exceptions() as exc:
        raise _api_error(conn, "create the recurring run", exc) from exc
    log.info("recurring run %s (%s) created in experiment %s", recurring.recurring_run_id, cron, experiment)
    return Submitted(recurring.recurring_run_id, experiment_id, _url(conn, "recurringrun", recurring.recurring_run_id))
