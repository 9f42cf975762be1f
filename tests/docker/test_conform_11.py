"""Issue #11 on a real Docker 20.10 engine: the scenarios that encode Docker 20.10's corrections (each observed
on this engine first) pass on it, verbatim, as they pass in the emulation.

docker-20.10-errors: gateway wrap, the `does was` typo, the CLI's and daemon's subnet/gateway texts, `--ip`
family, a /31, the client's 404 wrap, a failed start leaving a Created container that holds its name, the same
subnet twice with --ip-range. docker-20.10-internal-pools: `--internal -o parent=eth0` keeps eth0, a parentless
network routes by its gateway, default pools rotate. docker-connect-disconnect: eth1 -> eth2 after a reconnect,
the default route by libnetwork's endpoint order. macvlan-host-shim and docker-multi-network: the matrix
with the host's macvlan shim and with a container on two networks. docker-stop-start-restart: a daemon
restart of the real engine. docker-hostname: `--hostname` read in the container's UTS namespace.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main

pytestmark = [pytest.mark.docker, pytest.mark.root]
ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ("docker-20.10-errors.yaml", "docker-20.10-internal-pools.yaml", "docker-connect-disconnect.yaml",
             "docker-connect-refusals.yaml", "macvlan-two-nics.yaml", "macvlan-host-shim.yaml",
             "docker-multi-network.yaml", "docker-stop-start-restart.yaml", "docker-hostname.yaml")



@pytest.mark.parametrize("name", SCENARIOS)
def test_the_issue_11_scenario_passes_on_the_real_engine(docker_backend, name, tmp_path, capsys):
    out_json = tmp_path / "run.json"
    code = main(["run", "--backend", "docker", "-q", "--json", str(out_json), str(ROOT / "scenarios" / name)])
    out, err = capsys.readouterr()
    [record] = json.loads(out_json.read_text())
    assert code == 0 and record["status"] == "pass", out + err
    assert record["backend"].startswith("docker")
