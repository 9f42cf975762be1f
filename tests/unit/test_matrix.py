"""The conformance matrix (`harness.matrix`), `harness run --kernels` and `harness report` on run results:
no root, no VM (each kernel's run is replaced by recorded results)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

import harness.cli.matrix as cli_matrix
from harness.cli import main
from harness.matrix import (
    build_matrix,
    column_of,
    exit_status,
    first_difference,
    is_run_results,
    load_run_results,
    render_html,
    render_markdown,
)
from harness.results import ERROR, FAIL, PASS, SKIP, Check, ScenarioResult

REPO = Path(__file__).resolve().parents[2]


def check(subject: str, ok: bool, observed: str = "", kind: str = "reach", expected: str = "reachable",
          location: str = "") -> Check:
    return Check(kind, subject, expected, observed or (expected if ok else "no reply (0/2 replies)"), ok,
                 location=location)


def result(scenario: str, backend: str, kernel: str, status: str, checks=(), reason: str = "") -> ScenarioResult:
    return ScenarioResult(scenario, f"scenarios/{scenario}.yaml", backend, kernel, status, reason=reason,
                          checks=list(checks))


HOST, VM61, VM612 = ("netns", "6.18.44"), ("vm", "6.1.0-57-amd64"), ("vm", "6.12.117+deb12-amd64")
LACKS_IPVLAN = "kernel lacks ipvlan (CONFIG_IPVLAN) (backend netns, kernel 6.18.44)"


def records() -> list[dict]:
    """A small matrix: one pass everywhere, one skip on the host, one whose verdict differs by a fact, and
    a deliberately failing one (a wrong expectation: fails on every kernel)."""
    ok = [check("c1 -> c2", True), check("c2 -> gateway", True)]
    differs = [check("c1 -> c2", True), check("c2 -> gateway", False, "got no reply (0/2 replies)")]
    wrong = [check("c1 -> c2", True), check("c2 -> c1", False, "reachable (2/2 replies)", kind="isolate",
                                            expected="isolated", location="scenarios/bad.yaml:20")]
    out = []
    for backend, kernel in (HOST, VM61, VM612):
        out.append(result("macvlan-bridge", backend, kernel, PASS, ok))
        out.append(result("ipvlan-l2", backend, kernel, SKIP, reason=LACKS_IPVLAN) if backend == "netns"
                   else result("ipvlan-l2", backend, kernel, PASS, ok))
        out.append(result("changes", backend, kernel, FAIL, differs) if kernel == VM612[1]
                   else result("changes", backend, kernel, PASS, ok))
        out.append(result("deliberately-failing", backend, kernel, FAIL, wrong))
    return [r.to_dict() for r in out]


def test_columns_are_host_first_then_by_release():
    m = build_matrix(records())
    assert m.columns == ["host 6.18.44", "vm 6.1.0-57-amd64", "vm 6.12.117+deb12-amd64"]
    assert [r.scenario for r in m.rows] == ["macvlan-bridge", "ipvlan-l2", "changes", "deliberately-failing"]
    assert column_of({"backend": "netns", "kernel": "6.18.44"}) == "host 6.18.44"


def test_the_first_differing_fact():
    rows = {r.scenario: r for r in build_matrix(records()).rows}
    assert rows["macvlan-bridge"].difference == ""
    # a skip: the missing feature, named
    assert rows["ipvlan-l2"].difference == f"host 6.18.44: skip: {LACKS_IPVLAN}"
    # verdicts differ: the first fact whose outcome differs, with what each kernel showed
    fact = rows["changes"].difference
    assert fact.startswith("c2 -> gateway: expected reachable;")
    assert "vm 6.12.117+deb12-amd64: got got no reply (0/2 replies)" in fact
    assert "vm 6.1.0-57-amd64: got reachable (ok)" in fact


def test_a_deliberately_failing_scenario_shows_its_fact_on_every_kernel():
    m = build_matrix(records())
    row = next(r for r in m.rows if r.scenario == "deliberately-failing")
    assert [row.status(c) for c in m.columns] == [FAIL, FAIL, FAIL]
    assert row.difference == ("c2 -> c1: expected isolated, got reachable (2/2 replies) "
                              "[scenarios/bad.yaml:20] (every kernel)")
    assert exit_status(m) == 1
    md = render_markdown(m)
    assert "| deliberately-failing | **fail** | **fail** | **fail** | c2 -> c1: expected isolated" in md
    assert f"- ipvlan-l2 on host 6.18.44: {LACKS_IPVLAN}" in md
    page = render_html(m)
    assert "<td class='fail'" in page and "expected isolated, got reachable" in page
    assert page.count("<tr><th title=") == 4


def test_an_error_and_a_skip_everywhere_and_a_missing_cell():
    cells = {"host x": result("a", "netns", "x", SKIP, reason="kernel lacks dummy").to_dict(),
             "vm y": result("a", "vm", "y", SKIP, reason="kernel lacks dummy").to_dict()}
    assert first_difference(cells) == "skip on every kernel: kernel lacks dummy"
    cells["vm y"] = result("a", "vm", "y", ERROR, reason="the VM failed: boot timed out\nconsole...").to_dict()
    assert first_difference(cells) == "vm y: error: the VM failed: boot timed out"  # an error before a skip
    m = build_matrix([result("a", "netns", "x", PASS).to_dict(), result("b", "vm", "y", PASS).to_dict()])
    assert "| a | pass | – |" in render_markdown(m)
    assert exit_status(m) == 0


def test_run_results_are_told_from_a_bench_document(tmp_path):
    assert is_run_results(records()) and is_run_results([])
    assert not is_run_results({"schema": "bench"}) and not is_run_results([{"id": 1}])
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"schema": "x"}))
    with pytest.raises(ValueError, match="not the JSON of `harness run --json`"):
        load_run_results([bench])


def per_kernel_files(tmp_path: Path) -> list[Path]:
    """What a CI job matrix leaves: one `harness run --json` file per kernel."""
    files = []
    for column in (HOST, VM61, VM612):
        path = tmp_path / f"conformance-{column[1]}.json"
        path.write_text(json.dumps([r for r in records() if (r["backend"], r["kernel"]) == column]))
        files.append(path)
    return files


def test_harness_report_renders_the_matrix_of_several_files(tmp_path, capsys):
    files = per_kernel_files(tmp_path)
    html, md, js = tmp_path / "m.html", tmp_path / "m.md", tmp_path / "m.json"
    rc = main(["report", *map(str, files), "--html", str(html), "--markdown", str(md), "--json-out", str(js)])
    assert rc == 1  # the deliberately failing scenario
    out = capsys.readouterr().out
    assert "## harness conformance matrix" in out and "4 scenarios on 3 kernels" in out
    assert md.read_text() == out
    assert "harness conformance matrix" in html.read_text()
    data = json.loads(js.read_text())
    assert data["columns"][0] == "host 6.18.44"
    assert data["rows"][3]["status"]["vm 6.1.0-57-amd64"] == FAIL


def test_harness_report_on_passing_results_exits_0(tmp_path, capsys):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps([r for r in records() if r["status"] != FAIL]))
    assert main(["report", str(path)]) == 0
    assert "nothing failed" in capsys.readouterr().out


def test_a_bench_report_refuses_more_than_two_files(tmp_path, capsys):
    bench = REPO / "bench" / "baselines" / "netns-6.18-2vcpu.json"
    assert main(["report", str(bench), str(bench), str(bench)]) == 2
    assert "at most one BASELINE" in capsys.readouterr().err


# -- harness run --kernels -------------------------------------------------------------------------------


def test_parse_kernels_and_the_cpu_share():
    assert cli_matrix.parse_kernels(" 6.1, 6.12,host,6.1,") == ["6.1", "6.12", "host"]
    with pytest.raises(Exception, match="names no kernel"):
        cli_matrix.parse_kernels(",")
    assert cli_matrix.vm_slots(2, cpus=2) == (1, 2)  # two kernels at once, one guest each
    assert cli_matrix.vm_slots(1, cpus=2) == (2, 1)  # one kernel, two guests
    assert cli_matrix.vm_slots(3, cpus=2) == (1, 2)  # never more guests than CPUs
    assert cli_matrix.vm_slots(0, cpus=4) == (4, 1)


def test_a_kernel_chooser_is_netns_for_host_and_the_named_vm_otherwise():
    host = cli_matrix.kernel_chooser("host", "docker-20.10")
    assert host.name == "netns"
    vm = cli_matrix.kernel_chooser("6.12", "docker-20.10", parallel=1)
    assert vm.name == "vm" and vm.options == {"vm": {"kernel": "6.12", "parallel": 1}}
    backend = vm.backend("vm")
    assert backend.kernel_name == "6.12" and backend.kernel_path is None and backend.parallel == 1


def test_run_kernels_writes_every_kernels_records_and_the_matrix(tmp_path, monkeypatch, capsys):
    recorded = {(r["backend"], r["kernel"]): [] for r in records()}
    for r in records():
        recorded[(r["backend"], r["kernel"])].append(ScenarioResult.from_dict(r))
    by_kernel = {"host": recorded[HOST], "6.1": recorded[VM61], "6.12": recorded[VM612]}
    calls = []

    def fake_host(scenarios, args):
        calls.append("host")
        assert scenarios  # the scenarios selected, the same for every kernel
        return by_kernel["host"], 1.0

    def fake_vms(vms, scenarios, args):
        calls.append(tuple(vms))
        return {k: (by_kernel[k], 2.0) for k in vms}

    monkeypatch.setattr(cli_matrix, "_run_host", fake_host)
    monkeypatch.setattr(cli_matrix, "_run_vms", fake_vms)
    out, junit = tmp_path / "run.json", tmp_path / "run.xml"
    rc = main(["run", "--kernels", "6.1,6.12,host", str(REPO / "scenarios" / "macvlan-bridge.yaml"),
               "--json", str(out), "--junit", str(junit), "-q"])
    assert rc == 1
    assert calls == ["host", ("6.1", "6.12")]  # the host first, then the VM kernels
    data = json.loads(out.read_text())
    assert {(r["backend"], r["kernel"]) for r in data} == {HOST, VM61, VM612}
    assert len(data) == 12
    text = junit.read_text()
    assert 'classname="scenario.vm-6.12"' in text and 'classname="scenario.netns-host"' in text
    printed = capsys.readouterr().out
    assert "conformance matrix" in printed and "expected isolated" in printed


def test_run_kernels_refuses_backend_and_kernel(capsys):
    args = argparse.Namespace(kernels="host", backend="vm", kernel=None)
    assert cli_matrix.cmd_run_matrix(args) == 2
    assert "--kernels chooses the backend" in capsys.readouterr().err


def test_an_unprepared_kernel_is_a_column_of_skips_named_by_the_kernel(tmp_path, monkeypatch):
    """Each VM kernel runs as its own `harness run --backend vm --kernel K`; nothing prepared: skips."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "empty-cache"))
    from harness.loader import load_scenario

    scenario = load_scenario(REPO / "scenarios" / "macvlan-bridge.yaml")
    args = argparse.Namespace(profile="docker-20.10", no_matrix=False)
    results = cli_matrix._run_vms(["6.12"], [scenario], args)
    (got,), _ = results["6.12"]
    assert got.status == SKIP and got.kernel == "6.12" and got.path == scenario.path
    assert "prepare --backend vm --kernel 6.12" in got.reason or "qemu" in got.reason
    assert not (tmp_path / "empty-cache").exists()  # choosing downloads nothing


def test_a_kernel_run_that_writes_nothing_is_an_error_per_scenario(tmp_path):
    from harness.loader import load_scenario
    from harness.proc import CommandResult

    scenario = load_scenario(REPO / "scenarios" / "macvlan-bridge.yaml")
    done = CommandResult("vm 6.12", ("python3",), 2, "", "error VM kernel x (--kernel) does not exist")
    (got,) = cli_matrix._vm_results("6.12", [scenario], done, tmp_path / "none.json")
    assert got.status == ERROR and "exit 2" in got.reason and "does not exist" in got.reason
