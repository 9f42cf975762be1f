"""The quick bench end to end, for real: namespaces built by the netns backend, iperf3 and the probe
running inside them, then `harness report` on the results (against itself, and against a baseline
that is 50 % faster). Needs root and iperf3; skipped with the reason otherwise."""

from __future__ import annotations

import argparse
import json
import os
import shutil

import pytest

from harness import bench
from harness.bench import report
from harness.bench.document import validate_document

pytestmark = [
    pytest.mark.root,
    pytest.mark.bench,
    pytest.mark.skipif(os.geteuid() != 0, reason="the bench creates network namespaces: needs root"),
    pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 is not installed (Debian package iperf3)"),
]


def _parse(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    status = bench.main(_parse(bench, ["--quick", "--quiet", "--json", out]))
    assert status == 0, "the quick bench failed; its error is in the captured stderr"
    return out, json.loads(out.read_text())


def test_quick_bench_measures_every_runnable_topology(quick_run):
    _, doc = quick_run
    validate_document(doc)
    status = {t["name"]: t for t in doc["topologies"]}
    ran = [n for n, t in status.items() if t["status"] == "ran"]
    assert {"macvlan", "bridge", "veth"} <= set(ran)
    for name, t in status.items():
        if t["status"] != "ran":
            assert t["reason"], f"{name} was not run and no reason was recorded"
    assert doc["stop"]["total_rounds"] >= 2
    full = [r for r in doc["rounds"] if r["tests"] == ["tcp", "udp", "rr"]]
    assert len(full) == 1 and set(full[0]["order"]) == set(ran)  # one full round, then macvlan/bridge pairs
    assert all(r["tests"] == ["tcp"] and sorted(r["order"]) == ["bridge", "macvlan"] for r in doc["rounds"] if r not in full)
    for name in ran:
        for test in ("tcp", "udp", "rr"):
            samples = [s for s in doc["samples"] if s["topology"] == name and s["test"] == test]
            pairs = len(doc["rounds"]) - 1 if name in ("macvlan", "bridge") and test == "tcp" else 0
            assert len(samples) == 1 + pairs, (name, test)
        assert all(s["gbps"] > 0 for s in doc["samples"] if s["topology"] == name and s["test"] == "tcp")
        assert all(0 < s["p50_us"] <= s["p99_us"] for s in doc["samples"] if s["topology"] == name and s["test"] == "rr")
    ids = {m["id"]: m for m in doc["stats"]["metrics"]}
    primary = ids["tcp.gbps[macvlan/bridge]"]
    assert primary["n"] == len(doc["rounds"]) and primary["median"] > 0
    if primary["n"] >= 6:  # enough pairs in 25 s: an interval with its standard error
        assert primary["ci_low"] <= primary["median"] <= primary["ci_high"] and primary["se_log"] > 0
    else:  # a machine too busy for six pairs: no interval rather than one that means nothing
        assert primary["ci_low"] is None and doc["stop"]["detectable_change_pct"] is None
    for ratio in ("macvlan/veth", "bridge/veth"):
        m = ids[f"tcp.gbps[{ratio}]"]
        # one round is too few for a 95 % interval: an estimate, and no interval
        assert m["n"] == 1 and m["median"] > 0 and m["ci_low"] is None and m["half_width_pct"] is None
    assert doc["machine"]["iperf3_version"] and doc["machine"]["cpu_count"] >= 1
    assert doc["rr_floor"]["p50_us"] > 0
    assert doc["parameters"]["quick"] and doc["parameters"]["budget"] == 25.0


def test_report_against_itself_passes_and_against_a_faster_baseline_fails(quick_run, tmp_path, capsys):
    path, doc = quick_run
    html_out = tmp_path / "report.html"
    assert report.main(_parse(report, [path, path, "--html", html_out])) == 0
    assert "No regression beyond tolerance." in capsys.readouterr().out
    assert html_out.read_text().count("data:image/png;base64,") == 3

    faster = json.loads(json.dumps(doc))
    for s in faster["samples"]:
        if s["test"] == "tcp":
            s["gbps"] *= 1.5
            s["sender_gbps"] *= 1.5
    for m in faster["stats"]["metrics"]:
        if m["kind"] == "topology" and m["test"] == "tcp" and m["quantity"] == "gbps":
            for key in ("median", "ci_low", "ci_high", "mean", "stdev", "min", "max"):
                m[key] = None if m[key] is None else m[key] * 1.5
            m["values"] = [v * 1.5 for v in m["values"]]
    baseline = tmp_path / "faster.json"
    baseline.write_text(json.dumps(faster))
    md = tmp_path / "report.md"
    assert report.main(_parse(report, [path, baseline, "--markdown", md])) == 1
    text = md.read_text()
    assert "regression(s) beyond tolerance" in text
    assert "| `tcp.gbps[macvlan/bridge]` |" in text and "**REGRESSION**" in text
