import json
import os
import stat

import pytest

from sqltune.artifacts import (
    artifact_dir,
    atomic_write_json,
    read_jsonl,
    read_manifest,
    sha256_file,
    verify_artifact,
    write_jsonl,
)
from sqltune.errors import SqltuneError


def test_artifact_dir_writes_manifest_with_checksums_and_lineage(tmp_path):
    with artifact_dir(tmp_path / "upstream", "dataset") as up:
        (up / "a.txt").write_text("x")
    with artifact_dir(tmp_path / "out", "records", parameters={"k": 1}, inputs={"source": tmp_path / "upstream"}) as d:
        (d / "sub").mkdir()
        (d / "sub" / "b.txt").write_text("hello")
    manifest = verify_artifact(tmp_path / "out")
    assert manifest["kind"] == "records"
    assert manifest["parameters"] == {"k": 1}
    assert manifest["files"]["sub/b.txt"]["size"] == 5
    assert manifest["inputs"]["source"] == "sha256:" + sha256_file(tmp_path / "upstream" / "manifest.json")


def test_failed_artifact_leaves_previous_output_untouched(tmp_path):
    out = tmp_path / "out"
    with artifact_dir(out, "records") as d:
        (d / "good.txt").write_text("v1")
    with pytest.raises(RuntimeError), artifact_dir(out, "records") as d:
        (d / "half.txt").write_text("partial")
        raise RuntimeError("crash midway")
    assert sorted(p.name for p in out.iterdir()) == ["good.txt", "manifest.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp directory left behind


def test_verify_detects_tampering(tmp_path):
    with artifact_dir(tmp_path / "out", "records") as d:
        (d / "f.txt").write_text("original")
    (tmp_path / "out" / "f.txt").write_text("tampered")
    with pytest.raises(SqltuneError, match=r"f\.txt"):
        verify_artifact(tmp_path / "out")


def test_missing_manifest_is_incomplete(tmp_path):
    with pytest.raises(SqltuneError, match=r"manifest\.json is missing"):
        read_manifest(tmp_path)


def test_jsonl_round_trip_and_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "r.jsonl"
    assert write_jsonl(path, [{"a": 1}, {"b": "é"}]) == 2
    assert read_jsonl(path) == [{"a": 1}, {"b": "é"}]
    path.write_text(json.dumps({"a": 1}) + "\n{broken\n")
    with pytest.raises(SqltuneError, match=r"r\.jsonl:2"):
        read_jsonl(path)


def test_lineage_names_inputs_by_content_never_by_path(tmp_path):
    with artifact_dir(tmp_path / "records", "records") as d:
        (d / "records.jsonl").write_text("{}\n")
    plain = tmp_path / "plain.txt"
    plain.write_text("gold")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "a.sqlite").write_bytes(b"db")
    inputs = {
        "artifact": tmp_path / "records",
        "inside": tmp_path / "records" / "records.jsonl",
        "file": plain,
        "folder": tmp_path / "folder",
        "remote": "s3://bucket/data",
    }
    with artifact_dir(tmp_path / "out", "evaluation", inputs=inputs):
        pass
    recorded = read_manifest(tmp_path / "out")["inputs"]
    by_manifest = "sha256:" + sha256_file(tmp_path / "records" / "manifest.json")
    assert recorded["artifact"] == recorded["inside"] == by_manifest
    assert recorded["file"] == "sha256:" + sha256_file(plain)
    assert recorded["folder"].startswith("tree-sha256:")
    assert recorded["remote"] == "s3://bucket/data"
    assert not any(str(tmp_path) in value for value in recorded.values())


def test_artifact_files_and_directories_are_group_readable(tmp_path):
    """mkstemp/mkdtemp make 0600/0700; KFP steps of one run may be different users of one group."""
    old = os.umask(0o022)
    try:
        with artifact_dir(tmp_path / "out", "records") as d:
            atomic_write_json(d / "metrics.json", {"a": 1})
            (d / "weights").mkdir(mode=0o700)
            os.close(os.open(d / "weights" / "model.safetensors", os.O_CREAT | os.O_WRONLY, 0o600))  # as safetensors
    finally:
        os.umask(old)
    out = tmp_path / "out"
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE((out / "weights").stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "metrics.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((out / "weights" / "model.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE((out / "manifest.json").stat().st_mode) == 0o644


def test_only_sqltune_artifacts_are_replaced_without_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text('{"something": "else"}')  # somebody's manifest, not ours
    with pytest.raises(SqltuneError, match="not an sqltune artifact"), artifact_dir(out, "records"):
        pass
    assert [p.name for p in out.iterdir()] == ["manifest.json"]
    with artifact_dir(out, "records", overwrite=True) as d:
        (d / "new.txt").write_text("v2")
    with artifact_dir(out, "records") as d:  # now ours: replaced without asking
        (d / "v3.txt").write_text("v3")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "v3.txt"]


def test_an_input_inside_the_output_is_refused_even_with_overwrite(tmp_path):
    with artifact_dir(tmp_path / "out", "records") as d:
        (d / "records.jsonl").write_text("{}\n")
    with (
        pytest.raises(SqltuneError, match=r"--out .*out overlaps the input .*records\.jsonl"),
        artifact_dir(tmp_path / "out", "evaluation", inputs={"gold": tmp_path / "out/records.jsonl"}, overwrite=True),
    ):
        pass
    verify_artifact(tmp_path / "out")
