"""Scale: 200 containers on one macvlan bridge network, judged with the full matrix, pass on the namespace backend.

The scenario comes from tools/make_big_scenario.py (the harness's own stress topology). The full matrix is
about 40,000 probes; the test prints the wall time, the number of probes and how they were run (waves,
rounds, processes), and checks that the verdict is a pass with every check judged.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from harness.engine import Engine
from harness.loader import load_scenario
from harness.results import PASS

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

from make_big_scenario import big_scenario  # noqa: E402

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def netns():
    from backends.netns import NetnsBackend

    backend = NetnsBackend()
    if backend.available():
        pytest.skip(backend.available())
    return backend


@pytest.mark.parametrize("containers", [200])
def test_big_macvlan_bridge_matrix_passes(netns, tmp_path, containers, record_property):
    path = tmp_path / f"stress-{containers}.yaml"
    path.write_text(big_scenario(containers))
    scenario = load_scenario(path)
    engine = Engine(netns)
    start = time.perf_counter()
    result = engine.run(scenario)
    wall = time.perf_counter() - start
    stats = engine.probe_stats
    line = (f"{containers} containers: {result.status} in {wall:.1f} s (setup {result.durations['setup']:.1f} s, "
            f"checks {result.durations['checks']:.1f} s), {len(result.checks)} checks, {stats.probes} probes "
            f"({stats.sent} run in {stats.waves} waves over {stats.rounds} round(s), {stats.processes} processes, "
            f"{'prober' if stats.prober else 'ping'}; prober phases "
            f"{', '.join(f'{k} {v / 1000:.1f} s' for k, v in stats.phases_ms.items())})")
    print(line)
    record_property("scale", line)
    assert result.status == PASS, result.failure_report()[:5000]
    matrix = [c for c in result.checks if c.origin == "matrix"]
    # Every container reaches the 199 others and the gateway; host and containers are isolated both ways.
    assert len(matrix) == containers * containers + 2 * containers + 1
    assert stats.probes >= len(matrix)


SCENARIOS = ROOT / "scenarios"


@pytest.mark.parametrize("name", ["macvlan-bridge", "macvlan-private", "macvlan-mcv0-dual-stack", "macvlan-vepa"])
def test_documented_scenarios_pass_when_probed_by_the_prober_in_waves(netns, monkeypatch, name):
    """The scale path on small scenarios: one prober per source, tiny waves (neighbour flushes between
    them), observations in bounded chunks; the verdicts must be those of the ping path."""
    from harness import observe

    monkeypatch.setattr(observe, "max_concurrent", lambda: 4)
    monkeypatch.setattr(observe, "NEIGH_BUDGET", 8)
    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    engine = Engine(netns)
    result = engine.run(scenario)
    assert result.status == PASS, result.failure_report()
    stats = engine.probe_stats
    assert stats.prober and stats.waves > 1
    probes = [c for c in result.checks if c.kind in ("reach", "isolate") and c.origin != "command"]
    assert probes and all("prober.py" in c.evidence for c in probes)
    if name == "macvlan-mcv0-dual-stack":
        assert any("ICMP socket" in c.evidence and ":" in c.subject.split("->")[1] for c in probes)  # IPv6 too
