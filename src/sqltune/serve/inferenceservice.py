"""`sqltune serve --print-inferenceservice`: the KServe InferenceService (`serving.kserve.io/v1beta1`) that runs the
same `sqltune serve` in the cluster.

Written as a plain dict, not with the kserve SDK (about 68 packages for a handful of fields): the predictor is a
Kubernetes pod spec plus KServe's deployment fields, and tests check the pod spec against Kubernetes' own schema
(`kubernetes-validate --strict`) and the rest against the fields KServe's v1beta1 API defines. It runs in the predict
image (torch, vLLM on GPU images) on a node and with resources like the pipeline's predict step, reads S3 credentials
from the Secret the pipeline uses, and the API key from an optional Secret; kubelet probes /ready and /health
(open without the key) and Prometheus scrapes /metrics. KServe's Standard deployment mode (a Deployment, no Knative):
the server follows the channel itself, so the pipeline's promote step is the deployment.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from sqltune.errors import SqltuneError
from sqltune.serve.config import API_KEY_ENV, ServeConfig
from sqltune.settings import config_args

PORT = 8080
CACHE = "/cache"
NAMESPACE = "sqltune"
API_KEY_SECRET = "sqltune-serve"  # optional: a Secret whose SQLTUNE_API_KEY turns on bearer auth
CPU, MEMORY = "8", "64Gi"  # the pipeline's predict step's requests and limits
USER_ID = 10001  # the images' non-root user
# KServe's deployment fields beside the pod spec in a predictor (ComponentExtensionSpec in its v1beta1 API).
KSERVE_COMPONENT_FIELDS = frozenset(
    {"minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "containerConcurrency", "timeout",
     "canaryTrafficPercent", "logger", "batcher", "labels", "annotations", "deploymentStrategy"}
)  # fmt: skip
_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


def service_name(model_name: str) -> str:
    """An InferenceService name from a model name: lower case, other characters as '-', starting with a letter."""
    name = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")
    return name if name[:1].isalpha() else f"sqltune-{name}".rstrip("-")


def _secret_env(name: str, secret: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name, "optional": True}}}


def build_inferenceservice(
    config: ServeConfig,
    source_args: list[str],
    *,
    name: str,
    image: str | None = None,
    namespace: str = NAMESPACE,
    gpu_count: int = 1,
    gpu_resource: str = "nvidia.com/gpu",
    s3_secret: str = "sqltune-s3",
    hf_token_secret: str = "sqltune-hf-token",
    endpoint_url: str | None = None,
) -> dict[str, Any]:
    """The InferenceService running `sqltune serve <source_args> <config>` (listening on all addresses of the pod).

    `source_args` say what it serves: `--bucket ... --model-name ...` (a channel) or `--adapter s3://...`.
    """
    from sqltune.images import image_for
    from sqltune.train.trainjob import GPU_NODE_SELECTOR, GPU_TOLERATIONS, S3_SECRET_KEYS

    if not _NAME.fullmatch(name):
        raise SqltuneError(f"--name {name!r} is not a valid InferenceService name (a-z, 0-9, '-', a letter first)")
    if gpu_count < 0:
        raise SqltuneError(f"--gpu-count {gpu_count} is invalid: expected >= 0")
    in_pod = replace(config, host="0.0.0.0", port=PORT, api_key=None, versions_dir=f"{CACHE}/versions")
    args = ["serve", *source_args, *config_args(in_pod), *(["--endpoint-url", endpoint_url] if endpoint_url else [])]
    resources = {"cpu": CPU, "memory": MEMORY, **({gpu_resource: str(gpu_count)} if gpu_count else {})}
    env = [
        {"name": "SQLTUNE_CACHE", "value": CACHE},
        {"name": "HF_HOME", "value": f"{CACHE}/huggingface"},
        {"name": "SQLTUNE_PROGRESS", "value": "0"},
        *(_secret_env(key, s3_secret) for key in S3_SECRET_KEYS),
        _secret_env("HF_TOKEN", hf_token_secret),
        _secret_env(API_KEY_ENV, API_KEY_SECRET),
    ]

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": PORT}, "periodSeconds": period, "failureThreshold": failures}

    container = {
        "name": "kserve-container",
        "image": image or image_for("predict"),
        "command": ["sqltune"],
        "args": args,
        "ports": [{"name": "http1", "containerPort": PORT, "protocol": "TCP"}],
        "env": env,
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        # Loading the base model (downloading it on a fresh node) comes before the port answers: 15 minutes.
        "startupProbe": probe("/health", 10, 90),
        "livenessProbe": probe("/health", 20, 3),
        "readinessProbe": probe("/ready", 10, 3),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "cache", "mountPath": CACHE}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    predictor: dict[str, Any] = {
        "minReplicas": 1,
        "maxReplicas": 1,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 60,  # requests in flight finish (uvicorn's graceful shutdown: 30 s)
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": 0,
            "fsGroup": USER_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if gpu_count:
        predictor.update(nodeSelector=dict(GPU_NODE_SELECTOR), tolerations=[dict(t) for t in GPU_TOLERATIONS])
    predictor.update(
        containers=[container], volumes=[{"name": "cache", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
    )
    port = str(PORT)
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "sqltune", "app.kubernetes.io/component": "serve"},
            "annotations": {
                "serving.kserve.io/deploymentMode": "Standard",
                "serving.kserve.io/enable-prometheus-scraping": "true",
                "prometheus.kserve.io/port": port,
                "prometheus.kserve.io/path": "/metrics",
                "prometheus.io/scrape": "true",
                "prometheus.io/port": port,
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": {"predictor": predictor},
    }


def to_yaml(resource: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(resource, sort_keys=False, width=120)
