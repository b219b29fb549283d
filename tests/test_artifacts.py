import json

import pytest

from sqltune.artifacts import (
    artifact_dir,
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
