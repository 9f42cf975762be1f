"""The pytest plugin: every scenario file is a test item, so `pytest -k scenario` runs them all.

`ScenarioFile` (collected for `*.yaml` in a `scenarios/` directory) yields one `ScenarioItem` whose id is
`scenario[<backend>]`; running it runs the engine, a failure prints the domain report (who could not
reach whom, expected vs observed, the probe and its output) instead of a traceback, a missing kernel
feature is a skip with the feature named, and `reportinfo` points at the YAML. Under pytest-xdist every
worker shares the run id (from `testrun_uid`) and puts its worker id into every namespace name.
Options: `--backend` (default auto) and `--harness-profile`. Tests marked `root` skip when not root.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from harness.errors import HarnessError, ScenarioError
from harness.profiles import DEFAULT_PROFILE, PROFILES
from harness.results import ERROR, FAIL, SKIP, ScenarioResult


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "Docker macvlan/ipvlan scenarios")
    group.addoption("--backend", default="auto", help="backend for scenario items: auto (default), netns, vm, dry-run")
    group.addoption("--harness-profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES),
                    help="Docker behaviour to emulate (default %(default)s)")


def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    uid = workerinput.get("testrunuid") if workerinput else None
    # One run id for the controller and every worker, so names show which run made them.
    if "HARNESS_RUN_ID" not in os.environ:
        rid = (uid or "")[:4].lower()
        os.environ["HARNESS_RUN_ID"] = rid if len(rid) == 4 and all(c in "0123456789abcdef" for c in rid) \
            else secrets.token_hex(2)
    config.addinivalue_line("markers", "scenario: a documented scenario run by the engine")
    config.addinivalue_line("markers", "root: needs root to create network namespaces")
    config.addinivalue_line("markers", "vm: boots a qemu VM with a full distro kernel")
    config.addinivalue_line("markers", "bench: runs the iperf3 throughput benchmark")


def pytest_collection_finish(session: pytest.Session) -> None:
    # Every worker sees the same selected items, so each knows the whole VM batch of the run.
    session.config._harness_vm_batch = [i.scenario for i in session.items
                                        if isinstance(i, ScenarioItem) and getattr(i.backend, "batch", False)]


def pytest_unconfigure(config: pytest.Config) -> None:
    if getattr(config, "workerinput", None) is None:  # the controller (or a plain run) cleans up
        import shutil
        import tempfile

        shutil.rmtree(Path(tempfile.gettempdir()) / f"hxvm-batch-{os.environ.get('HARNESS_RUN_ID', '')}",
                      ignore_errors=True)


_BATCHES: dict[str, object] = {}


def _batch_result(item: ScenarioItem) -> ScenarioResult:
    from backends.vm import BatchCache

    cache = _BATCHES.get(item.backend.name)
    if cache is None:
        cache = _BATCHES[item.backend.name] = BatchCache(item.backend, os.environ["HARNESS_RUN_ID"])
    batch = getattr(item.config, "_harness_vm_batch", None) or [item.scenario]
    return cache.result(item.scenario, batch, item.profile)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and os.geteuid() != 0:
        pytest.skip("needs root: it creates network namespaces")


def pytest_collect_file(parent: pytest.Collector, file_path: Path):
    if file_path.suffix in (".yaml", ".yml") and file_path.parent.name == "scenarios":
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    def collect(self):
        from harness.loader import load_scenario

        try:
            scenario = load_scenario(self.path)
        except ScenarioError as exc:
            raise self.CollectError(str(exc)) from None
        profile = self.config.getoption("--harness-profile")
        backend = _chooser(self.config).choose(scenario)
        yield ScenarioItem.from_parent(self, name=f"scenario[{backend.name}]", scenario=scenario,
                                       backend=backend, profile=profile)


def _chooser(config: pytest.Config):
    """One BackendChooser per run (it caches backends and their capability probes)."""
    chooser = getattr(config, "_harness_chooser", None)
    if chooser is None:
        from harness.cli import BackendChooser

        chooser = config._harness_chooser = BackendChooser(config.getoption("--backend"),
                                                           config.getoption("--harness-profile"))
    return chooser


class ScenarioFailed(Exception):
    def __init__(self, result: ScenarioResult):
        self.result = result
        super().__init__(result.reason)


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario, backend, profile, **kwargs):
        super().__init__(**kwargs)
        self.scenario = scenario
        self.backend = backend
        self.profile = profile
        self.add_marker(pytest.mark.scenario)
        self.result: ScenarioResult | None = None

    def runtest(self) -> None:
        from harness.engine import Engine

        if getattr(self.backend, "batch", False):
            self.result = result = _batch_result(self)  # one VM boot serves every VM scenario of the run
        else:
            self.result = result = Engine(self.backend, profile=self.profile).run(self.scenario)
        if result.status == SKIP:
            pytest.skip(result.reason)
        if result.status in (FAIL, ERROR):
            raise ScenarioFailed(result)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, ScenarioFailed):
            r = excinfo.value.result
            return (f"{r.scenario} ({r.path}) on backend {r.backend}, kernel {r.kernel}: {r.status}\n"
                    f"{r.failure_report()}")
        if isinstance(excinfo.value, HarnessError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, 0, f"scenario {self.scenario.name} [{self.backend.name}]"
