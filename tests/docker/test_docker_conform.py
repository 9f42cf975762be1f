"""`harness conform` against a real Docker 20.10 engine: the documented bridge example conforms.

The emulation runs on this machine's kernel (netns) and the real engine in its private dockerd; every fact
both record (commands, network, subnet, each container's interface, link, MAC, address, gateway and route,
the reachability matrix) must be equal, or explained in conformance/divergences.yaml.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.conform import CONFORMS, EXPLAINED

pytestmark = [pytest.mark.docker, pytest.mark.root]
ROOT = Path(__file__).resolve().parents[2]



def test_the_documented_bridge_example_conforms_on_the_real_engine(docker_backend, tmp_path, capsys):
    out_json = tmp_path / "conform.json"
    code = main(["conform", "--host-only", "-q", "--json", str(out_json), str(ROOT / "scenarios" / "macvlan-bridge.yaml")])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    [record] = json.loads(out_json.read_text())
    assert record["status"] in (CONFORMS, EXPLAINED), out
    assert record["unexplained"] == 0
    assert record["emulated"]["backend"] == "netns" and record["real"]["backend"] == "docker"
    assert record["real"]["docker"].startswith("20.10"), record["real"]
    assert record["emulated"]["docker"] == "docker-20.10 (emulated)"
    rows = {(r["kind"], r["node"], r["interface"]): r for r in record["rows"]}
    # The facts were really compared, on both sides: the documented MAC, the transient ping, the matrix.
    assert rows[("mac", "c1", "eth0")]["real"] == "02:42:ac:10:56:0a" == rows[("mac", "c1", "eth0")]["emulated"]
    assert rows[("ping", "command 4", "c3 -> 172.16.86.10")]["real"] == "reachable"
    assert rows[("reach", "c1", "-> host (172.16.86.250)")]["real"] == "isolated"
    assert sum(r["kind"] == "reach" for r in record["rows"]) >= 8
    assert "conforms" in out and "20.10" in out
