"""Unit tests of harness.bench.document: the machine metadata and the schema the document names."""

from __future__ import annotations

import json

from harness.bench.document import SCHEMA_ID, SCHEMA_PATH, cpu_model, git_commit


def test_the_schema_id_is_the_schema_files():
    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["$id"] == SCHEMA_ID == schema["properties"]["schema"]["const"]


def test_cpu_model_and_git_commit(tmp_path):
    assert cpu_model("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n") == "Intel(R) Xeon(R) Processor"
    assert cpu_model("") is None
    git = tmp_path / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    assert git_commit(tmp_path / "sub") is None  # a branch without commits
    (git / "packed-refs").write_text("# pack-refs\n" + "a" * 40 + " refs/heads/main\n")
    assert git_commit(tmp_path) == "a" * 40
    (git / "refs" / "heads" / "main").write_text("b" * 40 + "\n")
    assert git_commit(tmp_path) == "b" * 40
