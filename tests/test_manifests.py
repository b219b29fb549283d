"""manifests/: what `kubectl apply -k` would apply is schema-valid (kubernetes-validate --strict), least
privilege, non-root with requests/limits, secrets are placeholders only, the generated KFP Pipeline /
PipelineVersion resources match the checked-in compiled pipeline, and the serving InferenceService is what
`sqltune serve --print-inferenceservice` prints, its pod a valid Kubernetes pod."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sqltune.images import image_for
from sqltune.pipeline import MANIFEST_FILE, PIPELINE_FILE
from sqltune.pipeline.compile import version_name, write_pipeline_manifests

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
ENTRY_POINTS = (
    "base",
    "overlays/model-cache",
    "overlays/multi-node",
    "overlays/serving",
    "pipeline",
)  # what docs/cluster.md and the README tell users to apply
TEMPLATES = sorted(MANIFESTS.rglob("*.template.yaml"))  # applied by hand after filling in, never by -k
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
# Custom resources: kubernetes-validate has schemas for built-in kinds only.
CRD_GROUPS = {"pipelines.kubeflow.org", "serving.kserve.io"}
SERVING = MANIFESTS / "components" / "serving" / "inferenceservice.yaml"
SERVING_COMMAND = ["serve", "--bucket", "models", "--prefix", "text2sql", "--model-name", "text2sql"]


def _kustomize_files(directory: Path) -> list[Path]:
    """The resource files a kustomization (with its bases and components) pulls in, in order."""
    config = yaml.safe_load((directory / "kustomization.yaml").read_text())
    files: list[Path] = []
    for entry in [*config.get("resources", []), *config.get("components", [])]:
        target = (directory / entry).resolve()
        assert target.exists(), f"{directory / 'kustomization.yaml'}: {entry} does not exist"
        files += _kustomize_files(target) if target.is_dir() else [target]
    return files


def _documents(paths: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


def _built(entry: str) -> list[dict[str, Any]]:
    return [doc for _, doc in _documents(_kustomize_files(MANIFESTS / entry))]


def _is_builtin(doc: dict[str, Any]) -> bool:
    return doc["apiVersion"].split("/")[0] not in CRD_GROUPS


def test_every_manifest_is_reachable_from_an_entry_point() -> None:
    reachable = {path for entry in ENTRY_POINTS for path in _kustomize_files(MANIFESTS / entry)}
    resources = {p for p in MANIFESTS.rglob("*.yaml") if p.name != "kustomization.yaml" and p not in TEMPLATES}
    assert resources == reachable, f"not in any kustomization: {sorted(map(str, resources - reachable))}"
    assert not set(TEMPLATES) & reachable, "a template with placeholder values must not be applied by -k"


def test_kubernetes_validate_strict_passes_on_builtin_resources() -> None:
    reachable = {path for entry in ENTRY_POINTS for path in _kustomize_files(MANIFESTS / entry)}
    docs = _documents(sorted(reachable) + TEMPLATES)
    skipped = {doc["kind"] for _, doc in docs if not _is_builtin(doc)}
    assert skipped == {"Pipeline", "PipelineVersion", "InferenceService"}, "only KFP's and KServe's kinds are skipped"
    files = sorted({path for path, doc in docs if _is_builtin(doc)})
    assert not {path for path, doc in docs if not _is_builtin(doc)} & set(files), "a file mixes CRDs and built-ins"
    result = subprocess.run([str(VALIDATE), "--strict", *map(str, files)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed for resource") == sum(1 for _, doc in docs if _is_builtin(doc))


def test_kubernetes_validate_strict_rejects_unknown_fields(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\nautomountToken: true\n")
    result = subprocess.run([str(VALIDATE), "--strict", str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0


def test_containers_run_non_root_with_requests_and_limits() -> None:
    pods = [doc["spec"]["template"]["spec"] for doc in _built("overlays/model-cache") if doc["kind"] == "Job"]
    assert pods, "the model-cache overlay has a prefetch Job"
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]) <= set(container["resources"]["limits"])
            assert container["image"] == image_for("publish", env={}), "images come from sqltune.images"
    (limits,) = [doc for doc in _built("base") if doc["kind"] == "LimitRange"]
    assert {"default", "defaultRequest"} <= set(limits["spec"]["limits"][0])


def test_role_is_least_privilege_and_bound_to_the_runner() -> None:
    docs = {doc["kind"]: doc for doc in _built("base")}
    assert "ClusterRole" not in docs and "ClusterRoleBinding" not in docs
    rules = docs["Role"]["rules"]
    for rule in rules:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
    allowed = {(res, verb) for rule in rules for res in rule["resources"] for verb in rule["verbs"]}
    assert ("secrets", "get") in allowed and not {v for r, v in allowed if r == "secrets"} - {"get"}
    assert ("pods/log", "get") in allowed and ("pods/exec", "create") not in allowed
    binding = docs["RoleBinding"]
    assert binding["roleRef"]["name"] == docs["Role"]["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": docs["ServiceAccount"]["metadata"]["name"], "namespace": "sqltune"}
    ]


def test_secret_template_has_placeholders_the_pipeline_reads() -> None:
    compiled = list(yaml.safe_load_all((PIPELINE_FILE).read_text()))
    params = compiled[0]["root"]["inputDefinitions"]["parameters"]
    read_keys = set(re.findall(r"secretKey: (\w+)", yaml.safe_dump(compiled[1])))
    secrets = {doc["metadata"]["name"]: doc for _, doc in _documents(TEMPLATES) if doc["kind"] == "Secret"}
    names = ("s3_secret_name", "hf_token_secret_name", "database_secret_name")
    assert set(secrets) == {params[name]["defaultValue"] for name in names}
    assert read_keys == {key for secret in secrets.values() for key in secret["stringData"]}
    for secret in secrets.values():
        assert all(value.startswith("REPLACE_ME") for value in secret["stringData"].values()), "no real keys"


@pytest.fixture(scope="module")
def fresh_pipeline_manifests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pipeline_manifests(
        tmp_path_factory.mktemp("manifests") / "text2sql.yaml",
        compiled=PIPELINE_FILE,
    )


def test_pipeline_manifests_are_in_sync_with_the_pipeline(fresh_pipeline_manifests: Path) -> None:
    checked_in = REPO / MANIFEST_FILE
    assert fresh_pipeline_manifests.read_bytes() == checked_in.read_bytes(), "stale: run `make manifests`"


def test_pipeline_version_carries_the_compiled_pipeline() -> None:
    compiled_file = PIPELINE_FILE
    compiled = list(yaml.safe_load_all(compiled_file.read_text()))
    pipeline, version = yaml.safe_load_all((REPO / MANIFEST_FILE).read_text())
    assert (pipeline["kind"], version["kind"]) == ("Pipeline", "PipelineVersion")
    assert version["spec"]["pipelineName"] == pipeline["metadata"]["name"] == compiled[0]["pipelineInfo"]["name"]
    assert version["metadata"]["name"] == version_name(compiled_file)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", version["metadata"]["name"])
    assert version["spec"]["pipelineSpec"] == compiled[0]
    assert version["spec"]["platformSpec"] == compiled[1]


def test_multi_node_grants_exactly_what_the_trainjob_step_uses() -> None:
    """Only the multi-node overlay reaches beyond the namespace: reading ClusterTrainingRuntimes, nothing else."""
    docs = _built("overlays/multi-node")
    grants = {
        (doc["kind"], group, resource, verb)
        for doc in docs
        if doc["kind"] in ("Role", "ClusterRole") and doc["metadata"]["name"] != "sqltune-pipeline-runner"
        for rule in doc["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    trainer = "trainer.kubeflow.org"
    assert grants == {
        ("Role", trainer, "trainjobs", "create"), ("Role", trainer, "trainjobs", "get"),
        ("Role", trainer, "trainingruntimes", "get"), ("Role", trainer, "trainingruntimes", "list"),
        ("Role", "", "pods", "list"), ("Role", "", "events", "list"),
        ("ClusterRole", trainer, "clustertrainingruntimes", "get"),
        ("ClusterRole", trainer, "clustertrainingruntimes", "list"),
    }  # fmt: skip
    runner = next(doc for doc in docs if doc["kind"] == "ServiceAccount")["metadata"]["name"]
    for binding in (doc for doc in docs if doc["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": runner, "namespace": "sqltune"}]


def _print_inferenceservice(args: list[str], monkeypatch: pytest.MonkeyPatch) -> str:
    from typer.testing import CliRunner

    from sqltune.cli import app

    for name in ("SQLTUNE_IMAGE_REGISTRY", "SQLTUNE_IMAGE_TAG", "SQLTUNE_IMAGE_PREDICT", "SQLTUNE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, [*args, "--print-inferenceservice"])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_serving_manifest_is_what_serve_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    printed = _print_inferenceservice(SERVING_COMMAND, monkeypatch)
    assert printed == SERVING.read_text(), "stale: run `make manifests`"
    # Its container's arguments are a complete `sqltune serve` command line: parsed again, they print it again.
    container = yaml.safe_load(printed)["spec"]["predictor"]["containers"][0]
    assert container["command"] == ["sqltune"]
    assert _print_inferenceservice(container["args"], monkeypatch) == printed


def test_inferenceservice_predictor_is_a_valid_pod_and_kserve_fields(tmp_path: Path) -> None:
    from sqltune.serve.inferenceservice import KSERVE_COMPONENT_FIELDS

    resource = yaml.safe_load(SERVING.read_text())
    assert (resource["apiVersion"], resource["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert set(resource) == {"apiVersion", "kind", "metadata", "spec"} and set(resource["spec"]) == {"predictor"}
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", resource["metadata"]["name"])
    predictor = resource["spec"]["predictor"]
    assert {k: predictor[k] for k in predictor if k in KSERVE_COMPONENT_FIELDS} == {"minReplicas": 1, "maxReplicas": 1}
    # The rest of a predictor is a pod spec (KServe inlines corev1.PodSpec): Kubernetes' own schema, strictly.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": resource["metadata"]["name"], "namespace": resource["metadata"]["namespace"]},
        "spec": {k: v for k, v in predictor.items() if k not in KSERVE_COMPONENT_FIELDS},
    }
    (tmp_path / "pod.yaml").write_text(yaml.safe_dump(pod))
    result = subprocess.run(
        [str(VALIDATE), "--strict", str(tmp_path / "pod.yaml")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "passed for resource" in result.stdout, result.stdout + result.stderr
    (container,) = pod["spec"]["containers"]
    assert container["name"] == "kserve-container", "the container name KServe expects in a custom predictor"


def test_inferenceservice_runs_the_server_where_the_predict_step_runs() -> None:
    from sqltune.images import RECIPES
    from sqltune.serve.app import build_app
    from sqltune.serve.config import ServeConfig
    from sqltune.serve.service import FixedSource, Service
    from sqltune.train.trainjob import GPU_NODE_SELECTOR, GPU_TOLERATIONS

    resource = yaml.safe_load(SERVING.read_text())
    predictor = resource["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["image"] == image_for("predict", env={}) and "serve" in RECIPES["predict"].extras
    assert (predictor["nodeSelector"], predictor["tolerations"]) == (GPU_NODE_SELECTOR, GPU_TOLERATIONS)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert predictor["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True

    compiled = list(yaml.safe_load_all(PIPELINE_FILE.read_text()))
    s3_secret = compiled[0]["root"]["inputDefinitions"]["parameters"]["s3_secret_name"]["defaultValue"]
    from_secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert {k for k, v in from_secrets.items() if v == s3_secret} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert "--api-key" not in container["args"] and from_secrets["SQLTUNE_API_KEY"] == "sqltune-serve"

    # The probes and the scrape path are routes the server answers without a key.
    app = build_app(Service(ServeConfig(), FixedSource("-", None), model_id="m"))
    routes = {getattr(route, "path", None) for route in app.routes}  # the probes are the app's own, not /v1's
    probes = {container[probe]["httpGet"]["path"] for probe in ("startupProbe", "livenessProbe", "readinessProbe")}
    annotations = resource["metadata"]["annotations"]
    assert probes == {"/health", "/ready"} and probes | {annotations["prometheus.kserve.io/path"]} <= routes
    port, args = str(container["ports"][0]["containerPort"]), container["args"]
    assert annotations["prometheus.kserve.io/port"] == port == args[args.index("--port") + 1]
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
