"""The pytest plugin, run by pytest itself (pytester) over a temporary `scenarios/` directory, no root.

`--backend dry-run` renders the plan and observes nothing, so a scenario item that ran through the
engine ends as a skip saying so; a failing scenario is replaced by a fake engine returning a failed
result, to see the report the user gets.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.results import FAIL, Check, ScenarioResult

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
BRIDGE = (REPO / "scenarios" / "macvlan-bridge.yaml").read_text()
DRY_RUN_SKIP = "backend dry-run observes nothing"
MARKERS = ("scenario", "root", "vm", "bench", "docker")


def plugin_args() -> list[str]:
    # pytest-benchmark warns inside an xdist worker; the inner runs have no use for it (nor for a cache).
    # The scenario[docker] items (a real engine) have tests of their own below; the others leave them out.
    args = ["-p", "no:benchmark", "-p", "no:cacheprovider", "--no-docker-items"]
    # The plugin is found through its pytest11 entry point; load it by hand when autoloading is off.
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        args += ["-p", "harness.pytest_plugin"]
    return args


def scenario(pytester: pytest.Pytester, file: str, name: str | None = None, text: str = BRIDGE) -> Path:
    """A scenario file in pytester's `scenarios/`, optionally renamed (its `name:` field)."""
    directory = pytester.path / "scenarios"
    directory.mkdir(exist_ok=True)
    if name is not None:
        text = re.sub(r"(?m)^name: .*$", f"name: {name}", text, count=1)
    path = directory / file
    path.write_text(text)
    return path


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*plugin_args(), "--backend", "dry-run", *args)


def item_ids(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if "::" in line and " " not in line]


def test_one_item_per_scenario_file(pytester):
    scenario(pytester, "macvlan-bridge.yaml")
    scenario(pytester, "second.yml", name="macvlan-bridge-again")
    pytester.makefile(".yaml", not_a_scenario="name: outside scenarios/, so not collected\n")

    items, _ = pytester.inline_genitems(*plugin_args(), "--backend", "dry-run")

    assert [i.nodeid for i in items] == ["scenarios/macvlan-bridge.yaml::scenario[dry-run]",
                                         "scenarios/second.yml::scenario[dry-run]"]
    assert [i.scenario.name for i in items] == ["macvlan-bridge", "macvlan-bridge-again"]
    assert all(i.backend.name == "dry-run" and i.get_closest_marker("scenario") for i in items)
    path, line, description = items[0].reportinfo()
    assert (Path(path).name, line, description) == ("macvlan-bridge.yaml", 0,
                                                    "scenario macvlan-bridge [dry-run]")


def test_every_scenario_also_gets_a_real_engine_item_selectable_with_k(pytester):
    scenario(pytester, "macvlan-bridge.yaml")
    args = [a for a in plugin_args() if a != "--no-docker-items"]

    items, _ = pytester.inline_genitems(*args, "--backend", "dry-run")
    assert [i.nodeid.split("::")[1] for i in items] == ["scenario[dry-run]", "scenario[docker]"]
    assert items[1].backend.name == "docker"

    selected = pytester.runpytest(*args, "--backend", "dry-run", "--collect-only", "-q", "-k", "scenario and docker")
    assert item_ids(selected) == ["scenarios/macvlan-bridge.yaml::scenario[docker]"]


def test_a_dry_run_item_runs_through_the_engine_and_skips_saying_why(pytester):
    scenario(pytester, "macvlan-bridge.yaml")

    result = run(pytester, "-rs")

    result.assert_outcomes(skipped=1)
    # -rs names the scenario file, not the plugin line that raised the skip
    result.stdout.fnmatch_lines([f"SKIPPED [[]1[]] scenarios/macvlan-bridge.yaml:1: {DRY_RUN_SKIP}*"])


def test_a_schema_error_is_a_collection_error_naming_file_and_line(pytester):
    scenario(pytester, "macvlan-bridge.yaml")
    text = BRIDGE.replace("  router: [172.16.86.1/24]\n", "  router: [172.16.86.1/24]\n  bogus: 1\n")
    line = text.splitlines().index("  bogus: 1") + 1
    scenario(pytester, "broken.yaml", text=text)

    result = run(pytester)

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ERROR collecting scenarios/broken.yaml*",
                                 f"*scenarios/broken.yaml:{line}: topology: unknown key*'bogus'*"])
    assert "Traceback" not in result.stdout.str() and "pytest_plugin.py" not in result.stdout.str()


def test_k_selects_by_scenario_name_not_only_by_file_name(pytester):
    scenario(pytester, "first.yaml", name="macvlan-bridge")
    scenario(pytester, "second.yaml", name="macvlan-elsewhere")

    result = run(pytester, "-k", "bridge", "-v")

    result.assert_outcomes(skipped=1, deselected=1)
    result.stdout.fnmatch_lines(["scenarios/first.yaml::scenario[[]dry-run[]] SKIPPED*"])
    run(pytester, "-k", "not elsewhere and dry-run").assert_outcomes(skipped=1, deselected=1)
    run(pytester, "-k", "macvlan").assert_outcomes(skipped=2)


@pytest.mark.parametrize("with_our_pyproject", [False, True], ids=["plugin-alone", "with-pyproject"])
def test_markers_are_declared_once(pytester, with_our_pyproject):
    if with_our_pyproject:  # this repository's own ini section must not declare them again
        shutil.copyfile(REPO / "pyproject.toml", pytester.path / "pyproject.toml")

    result = pytester.runpytest(*plugin_args(), "--markers")

    assert result.ret == 0
    for marker in MARKERS:
        declared = [line for line in result.outlines if line.startswith(f"@pytest.mark.{marker}:")]
        assert len(declared) == 1, (marker, declared)
    result.stdout.fnmatch_lines(["@pytest.mark.docker: runs a real Docker engine"])


def test_backend_option_lists_the_real_backends(pytester):
    from backends.base import backend_names

    result = pytester.runpytest(*plugin_args(), "--help")

    text = " ".join(result.stdout.str().split())
    assert f"auto, {', '.join(backend_names())}" in text
    bad = pytester.runpytest(*plugin_args(), "--backend", "nope")
    assert bad.ret != 0
    assert "invalid choice: 'nope'" in bad.stderr.str()


def test_under_xdist_workers_collect_the_same_items_and_share_the_run_id(pytester):
    pytest.importorskip("xdist")
    for name in ("macvlan-bridge", "alpha", "beta", "gamma"):
        scenario(pytester, f"{name}.yaml", name=name)
    record = pytester.path / "run-ids"
    record.mkdir()
    # Each process (controller, gw0, gw1) writes down the run id it ended with.
    pytester.makeconftest(f"""
        import os

        from harness import runid

        def pytest_unconfigure(config):
            workerinput = getattr(config, "workerinput", None)
            who = workerinput["workerid"] if workerinput else "controller"
            with open(os.path.join({str(record)!r}, who), "w") as f:
                f.write(runid.run_id())
    """)
    expected = item_ids(run(pytester, "--collect-only", "-q"))
    assert len(expected) == 4

    # A subprocess: the controller adopts testrun_uid, which must not leak into this process.
    result = pytester.runpytest_subprocess(*plugin_args(), "-p", "xdist", "-n", "2", "--backend", "dry-run",
                                           "-v", "-rs")

    # xdist itself fails the run ("Different tests were collected between gw0 and gw1") unless every
    # worker collected the same ids in the same order.
    result.assert_outcomes(skipped=4)
    ran = sorted(re.search(r"(scenarios/\S+::scenario\[dry-run\])", line).group(1)
                 for line in result.outlines if "SKIPPED" in line and "::" in line)
    assert ran == sorted(expected)
    ids = {p.name: p.read_text() for p in record.iterdir()}
    assert set(ids) == {"controller", "gw0", "gw1"}
    assert len(set(ids.values())) == 1 and re.fullmatch(r"[0-9a-f]{4}", ids["controller"]), ids


def test_batch_scenarios_run_in_one_batch_shared_by_the_workers(pytester):
    # A fake batch backend (kind BATCH) stands in for the VM: every worker needs its results, one runs it.
    pytest.importorskip("xdist")
    for name in ("alpha", "beta", "bad"):
        scenario(pytester, f"{name}.yaml", name=name)
    calls, run_ids = pytester.path / "calls", pytester.path / "run-id"
    pytester.makeconftest(f"""
        import os

        from backends.base import BATCH
        from backends.batch import batch_dir
        from backends.select import BackendChooser
        from harness import runid
        from harness.results import FAIL, PASS, ScenarioResult


        class FakeBatch:
            name, kind, description = "fakebatch", BATCH, "a fake batch backend"

            def available(self):
                return None

            def capabilities(self):
                return {{}}

            def kernel_release(self):
                return "6.1.0-fake"

            def prepare(self):
                return "ready"

            def run_batch(self, scenarios, profile, matrix=True):
                assert batch_dir(runid.run_id()).is_dir()
                with open({str(calls)!r}, "a") as f:
                    f.write(" ".join(s.name for s in scenarios) + "\\n")
                return [ScenarioResult(s.name, s.path, self.name, "6.1.0-fake", FAIL if s.name == "bad" else PASS,
                                       reason="bad by design" if s.name == "bad" else "") for s in scenarios]


        FAKE = FakeBatch()
        BackendChooser.choose = lambda self, scenario: FAKE


        def pytest_unconfigure(config):
            if getattr(config, "workerinput", None) is None:
                with open({str(run_ids)!r}, "w") as f:
                    f.write(runid.run_id())
    """)

    result = pytester.runpytest_subprocess(*plugin_args(), "-p", "xdist", "-n", "2", "--backend", "auto", "-v")

    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*PASSED scenarios/alpha.yaml::scenario[[]fakebatch[]]*",
                                 "bad (*bad.yaml) on backend fakebatch, kernel 6.1.0-fake: fail", "bad by design"],
                                consecutive=False)
    assert calls.read_text().splitlines() == ["alpha bad beta"]  # once, the whole batch, by path
    from backends.batch import batch_dir

    assert not batch_dir(run_ids.read_text()).exists()  # the controller removed it


# -- a failing scenario reports in domain words ------------------------------------------------------


class _FailingEngine:
    """Stands in for harness.engine.Engine: the scenario 'ran' and one isolation check failed."""

    def __init__(self, backend, profile=None, **_):
        self.backend = backend

    def run(self, scenario):
        check = Check("isolate", "c1 (172.16.86.10) -> host (172.16.86.250)", "isolated", "reachable",
                      ok=False, evidence="ping -c 1 172.16.86.250: 1 packets transmitted, 1 received",
                      location=f"{scenario.path}:21")
        passed = Check("reach", "c2 -> c1", "reachable", "reachable", ok=True)
        return ScenarioResult(scenario.name, scenario.path, self.backend.name, "6.1.0-fake", FAIL,
                              reason="1 of 2 checks failed", checks=[check, passed])


class _BrokenEngine:
    def __init__(self, backend, profile=None, **_):
        pass

    def run(self, scenario):
        raise HarnessError("the kernel refused: RTNETLINK answers: Operation not supported")


def test_a_failing_scenario_reports_the_domain_report_not_a_traceback(pytester, monkeypatch):
    import harness.engine

    monkeypatch.setattr(harness.engine, "Engine", _FailingEngine)
    path = scenario(pytester, "macvlan-bridge.yaml")

    result = run(pytester)

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"macvlan-bridge ({path}) on backend dry-run, kernel 6.1.0-fake: fail",
        "1 of 2 checks failed",
        f"- c1 (172.16.86.10) -> host (172.16.86.250): expected isolated, got reachable [{path}:21]",
        "    ping -c 1 172.16.86.250: 1 packets transmitted, 1 received",
    ])
    out = result.stdout.str()
    assert "Traceback" not in out and "ScenarioFailed" not in out and "c2 -> c1" not in out


def test_a_harness_error_is_its_message_not_a_traceback(pytester, monkeypatch):
    import harness.engine

    monkeypatch.setattr(harness.engine, "Engine", _BrokenEngine)
    scenario(pytester, "macvlan-bridge.yaml")

    result = run(pytester)

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["the kernel refused: RTNETLINK answers: Operation not supported"])
    assert "Traceback" not in result.stdout.str() and "raise HarnessError" not in result.stdout.str()
