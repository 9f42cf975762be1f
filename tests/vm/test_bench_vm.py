"""`harness bench --backend vm`: the bench runs inside the guest, where ipvlan exists."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest

from backends.base import get_backend
from harness import bench
from harness.bench.document import validate_document

pytestmark = [pytest.mark.vm, pytest.mark.bench]


def test_ipvlan_is_measured_in_the_vm(tmp_path):
    unavailable = get_backend("vm").available()  # no qemu, no kernel, ...: the reason, never a failure
    if unavailable:
        pytest.skip(unavailable)
    if not shutil.which("iperf3"):
        pytest.skip("iperf3 is not installed (Debian package iperf3); the guest image copies the host's")
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "vm.json"
    args = parser.parse_args(["--backend", "vm", "--quick", "--topologies", "ipvlan,bridge", "--tests", "tcp",
                              "--json", str(out), "-q"])
    assert bench.main(args) == 0
    doc = json.loads(out.read_text())
    validate_document(doc)
    assert doc["backend"] == "vm"
    assert doc["machine"]["kernel"] != __import__("platform").release()  # Debian's kernel, not the host's
    ran = {t["name"]: t["status"] for t in doc["topologies"]}
    assert ran == {"ipvlan": "ran", "bridge": "ran"}
    gbps = [s["gbps"] for s in doc["samples"] if s["test"] == "tcp" and s["topology"] == "ipvlan"]
    assert gbps and all(g > 0 for g in gbps)
    assert any(m["id"] == "tcp.gbps[ipvlan/bridge]" for m in doc["stats"]["metrics"])
    assert "TCG" in doc["stop"]["reason"]  # the document says what its absolute figures are worth
