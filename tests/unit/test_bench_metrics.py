"""Unit tests of harness.bench.metrics: which ratios a run has, and ratios taken within rounds."""

from __future__ import annotations

import pytest

from harness.bench.metrics import compute_stats, primary_id, ratio_pairs
from harness.bench.parse import Sample, TcpResult


def test_ratio_pairs_and_primary():
    assert ratio_pairs(["macvlan", "bridge", "veth"]) == [("macvlan", "bridge"), ("macvlan", "veth"), ("bridge", "veth")]
    assert ratio_pairs(["macvlan", "bridge", "veth", "macvlan-vepa"])[3:] == [("macvlan-vepa", "bridge"), ("macvlan-vepa", "veth")]
    assert primary_id(["macvlan", "bridge", "veth"]) == "tcp.gbps[macvlan/bridge]"
    assert primary_id(["bridge", "veth"]) == "tcp.gbps[bridge/veth]"
    assert primary_id(["veth"]) is None


def _tcp(gbps):
    return TcpResult(gbps=gbps, sender_gbps=gbps, retransmits=0, cpu_sender_pct=90.0, cpu_receiver_pct=40.0,
                     seconds=2.0, streams=4, mss=1448)


def test_ratios_are_taken_within_rounds_despite_drift():
    # Raw throughput doubles over the run; macvlan is 10 % ahead of the bridge in every round.
    samples = []
    for r in range(6):
        base = 10.0 * (1 + r / 5)
        samples += [Sample(r, 0, "bridge", "tcp", 0, 1, _tcp(base)), Sample(r, 1, "macvlan", "tcp", 0, 1, _tcp(base * 1.1))]
    stats = {m.id: m for m in compute_stats(samples, ["macvlan", "bridge"], range(6))}
    ratio = stats["tcp.gbps[macvlan/bridge]"]
    assert ratio.summary.median == pytest.approx(1.1)
    assert ratio.interval.rel_half_width == pytest.approx(0.0, abs=1e-9)
    assert stats["tcp.gbps[bridge]"].interval.rel_half_width > 0.2  # the raw figure drifts
    # rounds left out of the statistics are left out of the ratios too
    assert compute_stats(samples, ["macvlan", "bridge"], [0, 1])[0].summary.n == 2
