"""The publish step and the model registry against a real S3 server (SeaweedFS on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.config import Config
from safetensors.numpy import save_file

from sqltune.artifacts import artifact_dir, sha256_file, verify_artifact
from sqltune.errors import SqltuneError
from sqltune.locals3 import LocalS3, local_s3
from sqltune.publish import PublishConfig, Registry, publish
from sqltune.publish import registry as registry_module
from sqltune.uri import path_inside

SMALL = {"multipart_threshold": 8 << 20, "part_size": 5 << 20}  # S3's smallest legal part size
BASE = "hf://HuggingFaceTB/SmolLM2-135M-Instruct@0123abcd"


def make_adapter(root: Path, *, big: bool = False, seed: int = 0) -> Path:
    """A train-step artifact: PEFT config + safetensors weights, tokenizer files, train metrics, manifest."""
    data = root / "train_data"
    with artifact_dir(data, "records") as out:
        (out / "records.jsonl").write_text('{"id": "q1"}\n')
    rng = np.random.default_rng(seed)
    rows = 1400 if big else 8  # 1400 x 1024 float64 = 11 MiB: three 5 MiB parts
    params = {"base_model": BASE, "method": "lora", "lora_rank": 8, "learning_rate": 2e-4, "template": "alpaca"}
    with artifact_dir(root / "adapter", "adapter", parameters=params, inputs={"train_data": data}) as out:
        config = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "base_model_name_or_path": "SmolLM2-135M-Instruct"}
        (out / "adapter_config.json").write_text(json.dumps(config))
        save_file(
            {"base_model.model.q_proj.lora_A.weight": rng.standard_normal((rows, 1024))},
            out / "adapter_model.safetensors",
        )
        (out / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
        (out / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
        (out / "train_metrics.json").write_text(json.dumps({"train_loss": 0.7, "steps": 10}))
        (out / "README.md").write_text("PEFT's own card, replaced by ours\n")
    return root / "adapter"


def make_eval(root: Path, ex_all: float) -> Path:
    """An evaluate-step artifact shaped like `sqltune.evaluate.run.summarize` writes it, with its reports."""
    metrics = {
        "ex": {"easy": 0.9, "medium": 0.6, "hard": 0.4, "extra": 0.2, "all": ex_all},
        "em": {"easy": 0.8, "medium": 0.5, "hard": 0.3, "extra": 0.1, "all": ex_all - 0.1},
        "counts": {"ex": {"easy": 4, "medium": 8, "hard": 4, "extra": 4, "all": 20}, "em": {"hard": 3, "all": 19}},
        "levels": ["easy", "medium", "hard", "extra", "all"],
        "skipped": {"total": 0},
    }
    out_dir = root / f"eval-{ex_all}"
    with artifact_dir(out_dir, "evaluation", inputs={}) as out:
        (out / "metrics.json").write_text(json.dumps(metrics))
        (out / "report.md").write_text(f"# Evaluation\nEX {ex_all}\n")
        (out / "report.html").write_text(f"<html><body>EX {ex_all}</body></html>\n")
        (out / "results.jsonl").write_text('{"id": "q1", "ex": true, "em": false, "hardness": "easy"}\n')
    return out_dir


@pytest.fixture
def bucket(s3_env: LocalS3) -> str:
    """A fresh bucket; the server's credentials are in the standard environment variables (`s3_env`)."""
    name = f"pub-{uuid.uuid4().hex[:10]}"
    s3_env.create_bucket(name)
    return name


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    return make_adapter(tmp_path_factory.mktemp("adapter"))


def all_objects(client: Any, bucket: str) -> dict[str, bytes]:
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def test_publish_and_pull_round_trip_with_checksums(s3_server, bucket, tmp_path) -> None:
    adapter = make_adapter(tmp_path, big=True)
    evaluation = make_eval(tmp_path, 0.55)
    result = publish(
        adapter,
        evaluation,
        config=PublishConfig(bucket=bucket, prefix="team/text2sql", model_name="smol-sql"),
        run_id="run-42",
        **SMALL,
    )
    assert result.uri == f"s3://{bucket}/team/text2sql/smol-sql/run-run-42/" and not result.existed

    client = s3_server.client()
    prefix = "team/text2sql/smol-sql/run-run-42/"
    keys = {k[len(prefix) :] for k in all_objects(client, bucket)}
    assert keys == {
        "README.md", "manifest.json", "adapter_config.json", "adapter_model.safetensors", "tokenizer.json",
        "tokenizer_config.json", "train_metrics.json",
        "eval/metrics.json", "eval/report.md", "eval/report.html", "eval/results.jsonl",
    }  # fmt: skip
    weights = client.head_object(Bucket=bucket, Key=prefix + "adapter_model.safetensors", ChecksumMode="ENABLED")
    assert weights["ChecksumSHA256"].endswith("-3"), "an 11 MiB file goes up in three verified parts"

    manifest = json.loads(client.get_object(Bucket=bucket, Key=prefix + "manifest.json")["Body"].read())
    assert manifest["files"]["adapter_model.safetensors"] == {
        "sha256": sha256_file(adapter / "adapter_model.safetensors"),
        "size": (adapter / "adapter_model.safetensors").stat().st_size,
    }
    lineage = manifest["lineage"]
    assert lineage["base_model"] == "hf://HuggingFaceTB/SmolLM2-135M-Instruct"
    assert lineage["base_model_revision"] == "0123abcd"
    assert lineage["datasets"]["train_data"] == "sha256:" + sha256_file(tmp_path / "train_data" / "manifest.json")
    assert lineage["training_parameters"]["lora_rank"] == 8
    assert lineage["pipeline_run_id"] == "run-42" and lineage["sqltune_version"]
    assert manifest["metrics"]["ex"]["all"] == 0.55

    pulled = Registry(bucket, "team/text2sql", "smol-sql").pull(result.version, tmp_path / "pulled")
    assert verify_artifact(pulled)["version"] == "run-run-42"
    assert (pulled / "adapter_model.safetensors").read_bytes() == (adapter / "adapter_model.safetensors").read_bytes()
    assert (pulled / "eval" / "report.html").read_bytes() == (evaluation / "report.html").read_bytes()
    card = (pulled / "README.md").read_text()
    assert "| hard | 4 / 3 | 40.0 | 30.0 |" in card and "| all | 20 / 19 | 55.0 | 45.0 |" in card
    assert "PeftModel.from_pretrained" in card and "vllm serve HuggingFaceTB/SmolLM2-135M-Instruct" in card
    assert "--revision 0123abcd" in card and "PEFT's own card" not in card


def test_pull_detects_a_corrupted_object(s3_server, bucket, adapter, tmp_path) -> None:
    result = publish(adapter, make_eval(tmp_path, 0.5), config=PublishConfig(bucket=bucket, prefix="", model_name="m"))
    assert result.version.startswith("sha-"), "without a run id the version is a content hash"
    s3_server.client().put_object(Bucket=bucket, Key=f"m/{result.version}/tokenizer.json", Body=b"{}")
    with pytest.raises(SqltuneError, match=r"tokenizer.json does not match its sha256"):
        Registry(bucket, "", "m").pull(result.version, tmp_path / "pulled")
    assert not (tmp_path / "pulled").exists(), "a failed pull leaves nothing behind"


def test_rerun_is_idempotent_and_a_different_adapter_is_never_written_over(
    s3_server, bucket, adapter, tmp_path
) -> None:
    evaluation = make_eval(tmp_path, 0.5)
    first = publish(adapter, evaluation, config=PublishConfig(bucket=bucket, prefix="p", model_name="m"), run_id="abc")
    key = f"p/m/{first.version}/manifest.json"
    before = s3_server.client().head_object(Bucket=bucket, Key=key)["ETag"]

    again = publish(adapter, evaluation, config=PublishConfig(bucket=bucket, prefix="p", model_name="m"), run_id="abc")
    assert (again.uri, again.existed, again.uploaded) == (first.uri, True, [])
    assert (
        publish(adapter, evaluation, config=PublishConfig(bucket=bucket, prefix="p", model_name="m")).version
        == publish(adapter, evaluation, config=PublishConfig(bucket=bucket, prefix="p", model_name="m")).version
    )

    with pytest.raises(SqltuneError, match=r"already exists with different content.*eval/metrics.json"):
        publish(
            adapter,
            make_eval(tmp_path, 0.7),
            config=PublishConfig(bucket=bucket, prefix="p", model_name="m"),
            run_id="abc",
        )
    assert s3_server.client().head_object(Bucket=bucket, Key=key)["ETag"] == before
    assert Registry(bucket, "p", "m").manifest(first.version)["metrics"]["ex"]["all"] == 0.5


def test_promotion_needs_a_better_ex_and_rollback_walks_back(bucket, adapter, tmp_path) -> None:
    def release(version: str, ex: float, **promotion: Any):
        config = PublishConfig(bucket, "m", "p", version, promote_channel="production", **promotion)
        return publish(adapter, make_eval(tmp_path, ex), config=config)

    registry = Registry(bucket, "p", "m")
    assert release("v1", 0.50).promoted, "the first version on a channel is promoted"
    worse = release("v2", 0.40)
    assert not worse.promoted and "does not beat v1" in worse.promotion.reason
    assert not release("v3", 0.52, promote_margin=0.05).promoted, "+0.02 is below the margin"
    assert registry.resolve(channel="production") == "v1"
    better = release("v4", 0.60, promote_margin=0.05)
    assert better.promoted and better.promotion.previous == "v1"
    assert registry.promote("v2", "production", force=True).promoted, "force promotes a worse version"

    assert [e["version"] for e in registry.history("production")] == ["v1", "v4", "v2"]
    assert registry.rollback("production").version == "v4"
    assert registry.rollback("production").version == "v1"
    with pytest.raises(SqltuneError, match="no earlier version"):
        registry.rollback("production")
    assert [e["action"] for e in registry.history("production")] == ["promote"] * 3 + ["rollback"] * 2
    assert registry.channels() == {"production": "v1"}
    listed = {info.version: info for info in registry.list_versions()}
    assert set(listed) == {"v1", "v2", "v3", "v4"} and listed["v1"].channels == ("production",)
    assert listed["v4"].ex_all == 0.60 and all(info.complete for info in listed.values())


@pytest.mark.parametrize("first_on_channel", [True, False])
def test_concurrent_promotions_never_overwrite_each_other(bucket, adapter, tmp_path, first_on_channel) -> None:
    """Two promoters read the same channel state; the second to write loses with a clear error, not silently."""
    for version, ex in (("v1", 0.50), ("v2", 0.60), ("v3", 0.70)):
        publish(
            adapter,
            make_eval(tmp_path, ex),
            config=PublishConfig(bucket=bucket, prefix="p", model_name="m", version=version),
        )
    ours, theirs = Registry(bucket, "p", "m"), Registry(bucket, "p", "m")
    if not first_on_channel:
        ours.promote("v1", "production")
    read_pointer = ours.pointer

    def pointer_then_lose_the_race(channel: str):
        seen = read_pointer(channel)
        theirs.promote("v3", channel)  # lands between our read and our conditional write
        return seen

    ours.pointer = pointer_then_lose_the_race
    with pytest.raises(SqltuneError, match="changed while promoting v2; run the promotion again"):
        ours.promote("v2", "production")
    assert theirs.channels() == {"production": "v3"}
    assert [e["version"] for e in theirs.history("production")] == ([] if first_on_channel else ["v1"]) + ["v3"]


def test_wrong_credentials_and_missing_bucket_are_clear_errors(
    s3_server, bucket, adapter, tmp_path, monkeypatch
) -> None:
    evaluation = make_eval(tmp_path, 0.5)
    with pytest.raises(SqltuneError, match=rf"bucket 'no-such-bucket' at {s3_server.endpoint_url} does not exist"):
        publish(adapter, evaluation, config=PublishConfig(bucket="no-such-bucket", prefix="p", model_name="m"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
    with pytest.raises(SqltuneError, match=r"access denied to bucket .* check the S3 credentials") as denied:
        publish(adapter, evaluation, config=PublishConfig(bucket=bucket, prefix="p", model_name="m"))
    assert "wrong-secret-value" not in str(denied.value)
    assert all_objects(s3_server.client(), bucket) == {}


def test_bad_inputs_name_the_file(bucket, adapter, tmp_path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "adapter_config.json").write_text("{}")
    with pytest.raises(SqltuneError, match=rf"{plain} is not a complete sqltune artifact"):
        publish(plain, make_eval(tmp_path, 0.5), config=PublishConfig(bucket=bucket, prefix="p", model_name="m"))
    with artifact_dir(tmp_path / "bad-eval", "evaluation") as out:
        (out / "metrics.json").write_text(json.dumps({"ex": {"easy": 1.0}}))
    with pytest.raises(SqltuneError, match=r"bad-eval/metrics.json: ex.all must be a number"):
        publish(adapter, tmp_path / "bad-eval", config=PublishConfig(bucket=bucket, prefix="p", model_name="m"))
    with pytest.raises(SqltuneError, match=r"version '../x' is invalid"):
        publish(
            adapter,
            make_eval(tmp_path, 0.5),
            config=PublishConfig(bucket=bucket, prefix="p", model_name="m", version="../x"),
        )
    with pytest.raises(SqltuneError, match=r"version 'channels' is reserved"):
        publish(
            adapter,
            make_eval(tmp_path, 0.5),
            config=PublishConfig(bucket=bucket, prefix="p", model_name="m", version="channels"),
        )


def test_server_stopped_mid_upload_leaves_no_manifest_and_a_rerun_completes(tmp_path, monkeypatch) -> None:
    adapter = make_adapter(tmp_path, big=True)
    evaluation = make_eval(tmp_path, 0.5)
    with local_s3(tmp_path / "s3", buckets=["models"]) as server:
        monkeypatch.setattr(registry_module, "s3_client", lambda endpoint_url=None: crashing_client(server))
        with pytest.raises(SqltuneError) as failed:
            publish(
                adapter,
                evaluation,
                config=PublishConfig(bucket="models", prefix="p", model_name="m", version="v1"),
                endpoint_url=server.endpoint_url,
                **SMALL,
            )
        message = str(failed.value)
        assert "failed at adapter_model.safetensors" in message
        assert "On S3 and verified: ['README.md', 'adapter_config.json']" in message
        assert "not uploaded: ['adapter_model.safetensors', 'eval/metrics.json'" in message

        server.start()  # same ports and data
        client = server.client()
        assert client.list_multipart_uploads(Bucket="models", Prefix="p/m/v1/").get("Uploads"), "left by the crash"
        registry = Registry("models", "p", "m", endpoint_url=server.endpoint_url)
        monkeypatch.setattr(registry_module, "s3_client", lambda endpoint_url=None: client)
        assert [(i.version, i.complete) for i in registry.list_versions()] == [("v1", False)]
        for read in (lambda: registry.manifest("v1"), lambda: registry.pull("v1", tmp_path / "x")):
            with pytest.raises(SqltuneError, match=r"v1 is incomplete \(no manifest.json\)"):
                read()
        with pytest.raises(SqltuneError, match="incomplete"):
            registry.promote("v1", "production")

        done = publish(
            adapter,
            evaluation,
            config=PublishConfig(bucket="models", prefix="p", model_name="m", version="v1"),
            endpoint_url=server.endpoint_url,
            **SMALL,
        )
        assert done.reused == ["README.md", "adapter_config.json"] and "adapter_model.safetensors" in done.uploaded
        assert not client.list_multipart_uploads(Bucket="models", Prefix="p/m/v1/").get("Uploads")
        verify_artifact(registry.pull("v1", tmp_path / "pulled"))


def crashing_client(server: LocalS3) -> Any:
    """A client without retries whose server stops right after the first multipart part is stored."""
    client = server.client(config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10))

    def stop_server(**_: Any) -> None:
        if server.process is not None:
            server.stop()

    client.meta.events.register("after-call.s3.UploadPart", stop_server)
    return client


def test_no_secret_in_logs_outputs_errors_or_published_objects(
    s3_server, bucket, adapter, tmp_path, caplog, monkeypatch
) -> None:
    from typer.testing import CliRunner

    from sqltune.cli import app

    monkeypatch.setenv("SQLTUNE_LOG_LEVEL", "DEBUG")  # botocore's request-level debug logging included
    caplog.set_level(logging.DEBUG)
    evaluation = make_eval(tmp_path, 0.5)
    common = ["--bucket", bucket, "--prefix", "p", "--model-name", "m"]
    runner = CliRunner()
    results = []
    for args in (
        ["publish", "--adapter", str(adapter), "--eval", str(evaluation), *common, "--promote", "production"],
        ["registry", "list", *common],
        ["registry", "show", "--channel", "production", *common],
        ["registry", "pull", "--channel", "production", "--dest", str(tmp_path / "pulled"), *common],
        ["registry", "history", "--channel", "production", *common],
        ["models", "list", *common],  # the registry's old name, still working until 0.3
    ):
        results.append(runner.invoke(app, args))
        assert results[-1].exit_code == 0, (args, results[-1].output, results[-1].exception)
    assert results[0].stdout.strip().startswith(f"s3://{bucket}/p/m/sha-"), "publish prints the version URI"
    assert "promoted to production" in results[0].stderr
    assert results[-1].stdout == results[1].stdout and "Use `sqltune registry`" in results[-1].stderr
    outputs = [result.output for result in results]

    wrong = {**os.environ, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key[::-1]}
    failed = subprocess.run(
        [sys.executable, "-c", "from sqltune.cli import main; main()", "registry", "list", *common],
        env=wrong,
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 2 and "access denied" in failed.stderr

    secret = s3_server.secret_key
    texts = [caplog.text, *outputs, failed.stdout, failed.stderr]
    texts += [p.read_text(errors="replace") for p in (tmp_path / "pulled").rglob("*") if p.is_file()]
    assert "DEBUG" in caplog.text and all(secret not in text and secret[::-1] not in text for text in texts)
    assert all(secret.encode() not in body for body in all_objects(s3_server.client(), bucket).values())


def test_publish_never_imports_torch(s3_server, bucket, adapter, tmp_path) -> None:
    """The publish image has no torch: the whole publish must run without importing it."""
    script = (
        "import sys, atexit\n"
        "atexit.register(lambda: print('heavy:', sorted({'torch', 'transformers', 'peft'} & set(sys.modules))))\n"
        "from sqltune.cli import main\n"
        "main()\n"
    )
    args = ["publish", "--adapter", str(adapter), "--eval", str(make_eval(tmp_path, 0.5)), "--bucket", bucket]
    args += ["--model-name", "m", "--run-id", "no-torch"]
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    assert f"s3://{bucket}/m/run-no-torch/" in done.stdout and "heavy: []" in done.stdout


def publish_manifest(client: Any, bucket: str, version: str, files: dict[str, bytes], *, object_keys: bool) -> None:
    """Write a version by hand, as anyone with write access to the bucket could: files (when `object_keys`, at
    the keys pull asks for) and a manifest listing them with their true sha256 and size."""
    entries = {}
    for rel, body in files.items():
        entries[rel] = {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
        if object_keys:
            client.put_object(Bucket=bucket, Key=f"m/{version}/{rel.lstrip('/')}", Body=body)
    manifest = {"kind": "published_adapter", "sqltune_version": "0.1.0", "version": version, "files": entries}
    client.put_object(Bucket=bucket, Key=f"m/{version}/manifest.json", Body=json.dumps(manifest).encode())


@pytest.mark.parametrize("escape", ["absolute", "dotdot", "nested-dotdot"])
def test_pull_writes_only_inside_dest(s3_server, bucket, tmp_path, escape) -> None:
    """A manifest naming files outside the destination is refused; nothing is written there or in dest."""
    outside = tmp_path / "outside" / "PWNED.txt"
    rel = {"absolute": str(outside), "dotdot": "../../outside/PWNED.txt", "nested-dotdot": "a/../../../outside/x"}
    # SeaweedFS refuses object keys with `..` (AWS S3 stores them), so only the absolute name has its object.
    publish_manifest(s3_server.client(), bucket, "v1", {rel[escape]: b"pwned\n"}, object_keys=escape == "absolute")
    dest = tmp_path / "work" / "dest"
    dest.mkdir(parents=True)
    (dest / "mine.txt").write_text("kept")

    with pytest.raises(SqltuneError, match=rf"s3://{bucket}/m/v1/manifest.json: refusing to write '{rel[escape]}'"):
        Registry(bucket, "", "m").pull("v1", dest, overwrite=True)  # even then, a failed pull keeps dest
    assert not (tmp_path / "outside").exists()
    assert [p.name for p in dest.iterdir()] == ["mine.txt"] and (dest / "mine.txt").read_text() == "kept"
    assert [p.name for p in dest.parent.iterdir()] == ["dest"], "no temp dir left beside dest"


@pytest.mark.parametrize("key", ["/tmp/x/PWNED.txt", "../../x", "a/../../x", "a//b", "./a", "a/.", "a/\0b", ""])
def test_download_keys_must_stay_inside_the_root(tmp_path, key) -> None:
    """The names `uri.download_dir` and pull take from S3 listings and manifests (AWS S3 stores any of these keys)."""
    with pytest.raises(SqltuneError, match=r"s3://bkt/prefix: refusing to write"):
        path_inside(tmp_path, key, "s3://bkt/prefix")


def test_download_keys_may_not_escape_through_a_symlink(tmp_path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SqltuneError, match=r"'link/x': it resolves outside"):
        path_inside(tmp_path / "root", "link/x", "s3://bkt/prefix")
    assert path_inside(tmp_path / "root", "eval/report.md", "s3://bkt/p") == tmp_path / "root" / "eval" / "report.md"


def test_one_corrupt_manifest_or_pointer_does_not_break_the_registry(s3_server, bucket, adapter, tmp_path) -> None:
    from typer.testing import CliRunner

    from sqltune.cli import app

    for version, ex, channel in (("v1", 0.5, "production"), ("v2", 0.6, "production"), ("v3", 0.7, None),
                                 ("v4", 0.4, "staging"), ("v5", 0.8, None)):  # fmt: skip
        publish(
            adapter,
            make_eval(tmp_path, ex),
            config=PublishConfig(bucket=bucket, prefix="", model_name="m", version=version, promote_channel=channel),
        )
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="m/v3/manifest.json", Body=b'{"version": "v3", "files": ')  # cut short
    client.copy_object(Bucket=bucket, Key="m/v5/manifest.json", CopySource=f"{bucket}/m/v1/manifest.json")
    client.put_object(Bucket=bucket, Key="m/channels/staging.json", Body=b"<html>proxy error</html>")
    registry = Registry(bucket, "", "m")

    listed = {info.version: info for info in registry.list_versions()}
    assert listed["v3"].corrupt.startswith("not valid JSON") and listed["v3"].ex_all is None
    assert listed["v5"].corrupt == "it is the manifest of version 'v1'"
    assert [v for v, info in listed.items() if not info.corrupt] == ["v1", "v2", "v4"]
    assert listed["v2"].channels == ("production",) and listed["v2"].ex_all == 0.6
    assert registry.channels() == {"production": "v2"}
    assert registry.corrupt_channels() == {
        "staging": f"s3://{bucket}/m/channels/staging.json is corrupt: not valid JSON (Expecting value: line 1 "
        "column 1 (char 0))"
    }
    common = ["--bucket", bucket, "--model-name", "m"]
    shown = CliRunner().invoke(app, ["models", "list", *common])
    assert shown.exit_code == 0 and "v3\tCORRUPT (not valid JSON" in shown.stdout and "v2\tcomplete" in shown.stdout
    assert "warning: channel staging: " in shown.stderr and "is corrupt" in shown.stderr

    for use in (lambda: registry.manifest("v3"), lambda: registry.pull("v3", tmp_path / "pulled"),
                lambda: registry.promote("v3", "production", force=True)):  # fmt: skip
        with pytest.raises(SqltuneError, match=rf"s3://{bucket}/m/v3/manifest.json is corrupt: not valid JSON"):
            use()
    assert registry.manifest("v2")["metrics"]["ex"]["all"] == 0.6, "the other versions still work"
    assert not registry.promote("v1", "production").promoted and registry.resolve(channel="production") == "v2"

    with pytest.raises(SqltuneError, match=r"staging.json is corrupt: .*unknown; pass force to point 'staging' at v2"):
        registry.promote("v2", "staging")
    with pytest.raises(SqltuneError, match=r"staging.json is corrupt"):
        registry.resolve(channel="staging")
    assert registry.promote("v2", "staging", force=True).promoted
    assert registry.resolve(channel="staging") == "v2" and registry.corrupt_channels() == {}

    client.put_object(Bucket=bucket, Key="m/channels/production.json", Body=b'{"version": "../v1"}')
    with pytest.raises(SqltuneError, match=r"production.json is corrupt: no valid version .*explicit version"):
        registry.rollback("production")
    assert registry.rollback("production", to="v1").reason == "rollback over a corrupt pointer"
    assert registry.channels() == {"production": "v1", "staging": "v2"}
    assert [e["version"] for e in registry.history("production")] == ["v1", "v2", "v1"]


def test_terminated_publish_removes_its_staging_copy(adapter, tmp_path) -> None:
    """SIGTERM (a cancelled pipeline pod, `kill`) while publish waits on S3: its local copy of the adapter goes."""
    import signal
    import socket
    import time

    temp = tmp_path / "tmp"
    temp.mkdir()
    with socket.socket() as silent:  # accepts connections and never answers: publish waits after staging
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        env = {**os.environ, "TMPDIR": str(temp), "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
        args = ["publish", "--adapter", str(adapter), "--eval", str(make_eval(tmp_path, 0.5)), "--bucket", "models"]
        args += ["--model-name", "m", "--endpoint-url", f"http://127.0.0.1:{silent.getsockname()[1]}"]
        cli = [sys.executable, "-c", "from sqltune.cli import main; main()"]
        process = subprocess.Popen([*cli, *args], env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not list(temp.glob("sqltune-publish-*/version/manifest.json")) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert list(temp.glob("sqltune-publish-*/version/adapter_model.safetensors")), "publish staged the adapter"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 128 + signal.SIGTERM
    assert list(temp.iterdir()) == []


def test_pull_keeps_a_directory_sqltune_did_not_write(s3_server, bucket, tmp_path) -> None:
    publish_manifest(s3_server.client(), bucket, "v1", {"adapter_config.json": b"{}"}, object_keys=True)
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("kept")
    with pytest.raises(SqltuneError, match=r"--dest .*mine is not empty and is not an sqltune artifact"):
        Registry(bucket, "", "m").pull("v1", dest)
    assert (dest / "notes.txt").read_text() == "kept"
    Registry(bucket, "", "m").pull("v1", dest, overwrite=True)
    assert sorted(p.name for p in dest.iterdir()) == ["adapter_config.json", "manifest.json"]
    Registry(bucket, "", "m").pull("v1", dest)  # an earlier pull is an artifact: replaced without asking


def test_a_corrupt_adapter_is_refused_by_name_before_anything_is_uploaded(s3_server, bucket, tmp_path) -> None:
    """Weights overwritten after training (the manifest catches it) or written broken with a manifest to match
    (the weights check catches it); a PEFT config that is no JSON: exit 2 naming the adapter, nothing published."""
    from sqltune.artifacts import atomic_write_json, file_entries, read_manifest
    from sqltune.publish.store import list_keys

    def rehash(adapter: Path) -> None:  # as a buggy writer would: a manifest that matches the broken files
        atomic_write_json(adapter / "manifest.json", read_manifest(adapter) | {"files": file_entries(adapter)})

    config = PublishConfig(bucket=bucket, prefix="corrupt", model_name="m")
    evaluation = make_eval(tmp_path, 0.5)
    changed = make_adapter(tmp_path / "changed")
    (changed / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(SqltuneError, match=rf"{changed}: adapter_model.safetensors does not match its sha256"):
        publish(changed, evaluation, config=config)
    broken = make_adapter(tmp_path / "broken")
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    rehash(broken)
    with pytest.raises(SqltuneError, match=rf"adapter {broken}: adapter_model.safetensors is corrupt .*truncated"):
        publish(broken, evaluation, config=config)
    not_json = make_adapter(tmp_path / "not-json")
    (not_json / "adapter_config.json").write_text("{r: 8")
    rehash(not_json)
    with pytest.raises(SqltuneError, match=rf"adapter {not_json}: adapter_config.json is corrupt"):
        publish(not_json, evaluation, config=config)
    assert not list_keys(s3_server.client(), bucket, "corrupt/")
