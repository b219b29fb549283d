"""Publish an adapter version to S3: stage it locally with its model card and manifest, upload every file
verified, the manifest last, then optionally promote it.

A version is identified by the pipeline run id (`run-<id>`) or, without one, by its content (`sha-<hash>`),
so re-running the same publish is idempotent: it finds the complete version with identical files and returns
its URI, or completes a version an interrupted run left without a manifest. A complete version with
different content is never overwritten (the manifest is created with If-None-Match).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqltune import __version__
from sqltune.artifacts import MANIFEST, artifact_dir, file_entries, read_manifest, sha256_file, verify_artifact
from sqltune.errors import SqltuneError
from sqltune.log import get_logger, progress
from sqltune.models.adapter import read_adapter
from sqltune.publish.card import render_card
from sqltune.publish.config import PublishConfig
from sqltune.publish.registry import PromotionResult, Registry
from sqltune.publish.store import (
    MULTIPART_THRESHOLD,
    PART_SIZE,
    abort_stale_uploads,
    check_name,
    expected_checksum,
    get_json,
    list_keys,
    object_matches,
    upload_file,
)
from sqltune.s3 import describe, put_bytes

log = get_logger(__name__)

KIND = "published_adapter"
ADAPTER_CONFIG = "adapter_config.json"
EVAL_DIR = "eval"
_SKIP = {MANIFEST, "README.md"}  # our manifest and model card replace the inputs' own
_RUN_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


@dataclass(frozen=True)
class PublishResult:
    uri: str
    version: str
    existed: bool  # the version was already complete with identical content
    uploaded: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)  # already on S3 from an interrupted run, verified
    promotion: PromotionResult | None = None

    @property
    def promoted(self) -> bool:
        return bool(self.promotion and self.promotion.promoted)


def default_version(run_id: str | None, files: dict[str, dict[str, Any]]) -> str:
    """`run-<run id>` when the pipeline run id is known, else `sha-<12 hex>` of the files' sha256 list."""
    if run_id:
        return f"run-{run_id}" if _RUN_ID.match(run_id) else "run-" + hashlib.sha256(run_id.encode()).hexdigest()[:16]
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return f"sha-{digest[:12]}"


def _base_model(params: dict[str, Any], adapter_config: dict[str, Any]) -> tuple[str | None, str | None]:
    """Base model and revision: the train parameters' spec (`hf://org/name@rev`), else what PEFT recorded."""
    spec = str(params.get("base_model") or adapter_config.get("base_model_name_or_path") or "") or None
    revision = params.get("base_model_revision") or params.get("revision") or adapter_config.get("revision")
    if spec and "@" in spec:
        spec, _, from_spec = spec.partition("@")
        revision = revision or from_spec
    return spec, revision or None


def _read_inputs(adapter: Path, eval_dir: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The verified train and evaluate artifacts: their manifests, the PEFT config and the metrics."""
    train = verify_artifact(adapter)
    evaluation = verify_artifact(eval_dir)
    read_adapter(adapter)  # a LoRA adapter whose config and weights can be read, not only files that match
    metrics_path = eval_dir / "metrics.json"
    if not metrics_path.is_file():
        raise SqltuneError(f"evaluation {eval_dir}: metrics.json is missing")
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    if not isinstance(metrics.get("ex", {}).get("all"), int | float):
        raise SqltuneError(f"{metrics_path}: ex.all must be a number (the EX used for promotion)")
    adapter_config = json.loads((adapter / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    return train, evaluation | {"metrics": metrics}, adapter_config


def _lineage(train: dict[str, Any], evaluation: dict[str, Any], adapter: Path, eval_dir: Path, run_id: str | None,
             adapter_config: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    base, revision = _base_model(train.get("parameters", {}), adapter_config)
    return {
        "base_model": base,
        "base_model_revision": revision,
        "datasets": train.get("inputs", {}),
        "evaluation_inputs": evaluation.get("inputs", {}),
        "training_parameters": train.get("parameters", {}),
        "train_manifest_sha256": sha256_file(adapter / MANIFEST),
        "eval_manifest_sha256": sha256_file(eval_dir / MANIFEST),
        "pipeline_run_id": run_id,
        "sqltune_version": __version__,
    }


def _copy_tree(src: Path, dest: Path) -> None:
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src)
        if rel.as_posix() in _SKIP:
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest / rel)


def stage(
    adapter: Path, eval_dir: Path, model_name: str, staging: Path, version: str | None, run_id: str | None
) -> dict[str, Any]:
    """Build the version locally: adapter + tokenizer files, eval/, README.md, manifest.json; returns the manifest."""
    train, evaluation, adapter_config = _read_inputs(adapter, eval_dir)
    lineage = _lineage(train, evaluation, adapter, eval_dir, run_id, adapter_config)
    metrics = evaluation["metrics"]
    extra: dict[str, Any] = {"model_name": model_name, "lineage": lineage, "metrics": metrics}
    with artifact_dir(
        staging,
        KIND,
        parameters=train.get("parameters", {}),
        inputs={"adapter": adapter, "eval": eval_dir},
        extra=extra,
    ) as tmp:
        _copy_tree(adapter, tmp)
        _copy_tree(eval_dir, tmp / EVAL_DIR)
        (tmp / "README.md").write_text(render_card(model_name, lineage, metrics, adapter_config), encoding="utf-8")
        extra["version"] = check_name(version or default_version(run_id, file_entries(tmp)), "version")
    return read_manifest(staging)


def publish(
    adapter: str | Path,
    eval_dir: str | Path,
    *,
    config: PublishConfig,
    endpoint_url: str | None = None,
    run_id: str | None = None,
    multipart_threshold: int = MULTIPART_THRESHOLD,
    part_size: int = PART_SIZE,
) -> PublishResult:
    """Publish the train step's adapter dir and the evaluate step's dir as `s3://bucket/prefix/model_name/<version>/`.

    Credentials come from boto3's standard chain; `endpoint_url` (else AWS_ENDPOINT_URL) selects the server.
    With `promote_channel`, the channel moves to this version when its EX beats the current one's by
    `promote_margin`. `run_id` (the pipeline run) names the version and goes into its lineage.
    """
    adapter, eval_dir = Path(adapter), Path(eval_dir)
    registry = Registry(config.bucket, config.prefix, config.model_name, endpoint_url)
    with tempfile.TemporaryDirectory(prefix="sqltune-publish-") as tmp:
        staged = Path(tmp) / "version"
        manifest = stage(adapter, eval_dir, config.model_name, staged, config.version, run_id)
        result = _upload(registry, staged, manifest, multipart_threshold, part_size)
    if config.promote_channel:
        promotion = registry.promote(
            result.version, config.promote_channel, margin=config.promote_margin, force=config.force
        )
        result = PublishResult(result.uri, result.version, result.existed, result.uploaded, result.reused, promotion)
    return result


def _upload(
    registry: Registry, staged: Path, manifest: dict[str, Any], multipart_threshold: int, part_size: int
) -> PublishResult:
    loc, client, bucket = registry.loc, registry.client, registry.bucket
    version = manifest["version"]
    uri = loc.uri(version) + "/"
    manifest_key = loc.version_key(version, MANIFEST)
    files = manifest["files"]
    uploaded: list[str] = []
    reused: list[str] = []
    with registry.errors(f"reading {uri}"):
        existing = get_json(client, bucket, manifest_key)
    if existing is not None:
        return _existing(existing[0], manifest, uri)
    current = "(listing the version)"
    try:
        if abort_stale_uploads(client, bucket, loc.version_key(version)):
            log.info("aborted multipart uploads an interrupted publish of %s left behind", uri)
        for key in list_keys(client, bucket, loc.version_key(version)):
            if key[len(loc.version_key(version)) :] not in files:
                client.delete_object(Bucket=bucket, Key=key)  # left by an interrupted run with other content
        for rel, entry in progress(sorted(files.items()), desc="publish", unit="file"):
            current = rel
            path, key = staged / rel, loc.version_key(version, rel)
            checksum = expected_checksum(path, entry["size"], entry["sha256"], multipart_threshold, part_size)
            if object_matches(client, bucket, key, entry["size"], entry["sha256"], checksum):
                reused.append(rel)
                continue
            upload_file(client, bucket, key, path, entry["sha256"], multipart_threshold, part_size)
            if not object_matches(client, bucket, key, entry["size"], entry["sha256"], checksum):
                raise SqltuneError(f"{uri}{rel}: the stored object does not match its sha256 after upload")
            uploaded.append(rel)
        current = MANIFEST
        written = put_bytes(client, bucket, manifest_key, (staged / MANIFEST).read_bytes())
    except Exception as exc:
        from botocore.exceptions import BotoCoreError, ClientError

        if not isinstance(exc, BotoCoreError | ClientError | SqltuneError):
            raise
        reason = str(exc) if isinstance(exc, SqltuneError) else describe(exc, bucket, client.meta.endpoint_url)
        done = set(uploaded) | set(reused)
        missing = [rel for rel in sorted(files) if rel not in done]
        raise SqltuneError(
            f"publishing {uri} failed at {current}: {reason}. On S3 and verified: {sorted(done) or 'nothing'}; "
            f"not uploaded: {missing}; {MANIFEST} was not written, so the version is incomplete and every reader "
            "ignores it. Run the same publish again to complete it."
        ) from None
    if not written:  # another run completed this version between our check and our manifest write
        with registry.errors(f"reading {uri}"):
            found = get_json(client, bucket, manifest_key)
        return _existing(found[0] if found else {}, manifest, uri)
    log.info("published %s (%d files uploaded, %d already there)", uri, len(uploaded), len(reused))
    return PublishResult(uri, version, existed=False, uploaded=uploaded, reused=reused)


def _existing(stored: dict[str, Any], manifest: dict[str, Any], uri: str) -> PublishResult:
    """A complete version already exists: the same content makes this run a no-op, other content is refused."""
    if stored.get("files") != manifest["files"]:
        differ = sorted(
            rel for rel in set(stored.get("files", {})) | set(manifest["files"])
            if stored.get("files", {}).get(rel) != manifest["files"].get(rel)
        )  # fmt: skip
        raise SqltuneError(
            f"{uri} already exists with different content (differing files: {differ}); published versions are "
            "never overwritten: choose another version"
        )
    log.info("%s is already published with identical content", uri)
    return PublishResult(uri, manifest["version"], existed=True, reused=sorted(manifest["files"]))
