"""The pytest plugin: every scenario file is a test item, so `pytest -k scenario` runs them all.

`ScenarioFile` (collected for `*.yaml` in a `scenarios/` directory) yields one `ScenarioItem` whose id is
`scenario[<backend>]` and whose keywords include the scenario's name (so `-k macvlan-bridge` selects it
even from a file named otherwise); running it runs the engine, a failure prints the domain report (who
could not reach whom, expected vs observed, the probe and its output) instead of a traceback, a missing
kernel feature is a skip with the feature named, and `reportinfo` points at the YAML. Scenarios whose
backend is a batch backend (vm, vagrant) run together in one boot per run, shared by every worker.

Under pytest-xdist every worker and the controller share one run id (`harness.runid.adopt` of the
`testrun_uid`), and every worker puts its worker id into every namespace name. The controller (or a
plain run) removes the run's batch directory at the end.

With `--kernels 6.1,6.12,host` (the conformance matrix) every scenario file yields one item per kernel,
`scenario[vm-6.12]`, `scenario[netns-host]` (host: this machine's kernel through the namespace backend),
so `-k "scenario and 6.12"` selects one kernel; each VM kernel is its own batch (one boot per kernel and
run), its guests spread over the CPUs as `harness run --kernels` does.

Options: `--backend` (default auto), `--kernels` and `--harness-profile`. Markers (declared here, and only here, so
an installed plugin needs no ini file): scenario, root, vm, bench, docker. Tests marked `root` skip when
not root. The plugin's state lives in `config.stash`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from backends.base import BATCH, backend_names
from harness import runid
from harness.docker.profiles import DEFAULT_PROFILE, PROFILES
from harness.errors import HarnessError
from harness.results import ERROR, FAIL, SKIP, ScenarioResult

if TYPE_CHECKING:
    from backends.batch import BatchCache
    from backends.select import BackendChooser
    from harness.model import Scenario

MARKERS = {
    "scenario": "a documented scenario run by the engine",
    "root": "needs root to create network namespaces",
    "vm": "boots a qemu VM with a full distro kernel",
    "bench": "runs the iperf3 throughput benchmark",
    "docker": "runs a real Docker engine",
}

# Plugin state, one per pytest run (config), never module globals: pytester and in-process runs share
# this module.
CHOOSER_KEY: pytest.StashKey[BackendChooser] = pytest.StashKey()  # made on first use
DOCKER_CHOOSER_KEY: pytest.StashKey[BackendChooser] = pytest.StashKey()  # the real engine's items
KERNEL_CHOOSERS_KEY: pytest.StashKey[dict[str, BackendChooser]] = pytest.StashKey()  # --kernels: kernel -> chooser
BATCHES_KEY: pytest.StashKey[dict[str, list[Scenario]]] = pytest.StashKey()  # batch key -> its scenarios
CACHES_KEY: pytest.StashKey[dict[str, BatchCache]] = pytest.StashKey()  # batch key -> its results cache

_WORKER_RUN_ID = "harness_run_id"  # the controller's run id, handed to each pytest-xdist worker


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "Docker macvlan/ipvlan scenarios")
    names = ["auto", *backend_names()]
    group.addoption("--backend", default="auto", choices=names,
                    help=f"backend for scenario items: {', '.join(names)} (default %(default)s)")
    group.addoption("--kernels", default=None, metavar="LIST",
                    help="the kernel matrix: one scenario item per kernel of LIST (e.g. 6.1,6.12,host), "
                         "ids scenario[vm-6.12] and scenario[netns-host]")
    group.addoption("--harness-profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES),
                    help="Docker behaviour to emulate (default %(default)s)")
    group.addoption("--no-docker-items", action="store_true",
                    help="no scenario[docker] items (by default every scenario also runs on a real Docker engine; "
                         "a skip names why when none can start)")
    group.addoption("--docker-vm", action="store_true",
                    help="scenario[docker] items that need 802.1q, ipvlan or dummy run on the real engine inside a "
                         "VM guest (slow under TCG: minutes per scenario); by default they skip naming the feature")


def pytest_configure(config: pytest.Config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # a pytest-xdist worker: the controller's run id
        runid.adopt(workerinput.get(_WORKER_RUN_ID) or workerinput.get("testrunuid"))
    else:  # the controller or a plain run; the controller adopts testrun_uid in pytest_configure_node
        runid.adopt(None)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """pytest-xdist's controller, before starting a worker: one run id, derived from testrun_uid."""
    node.workerinput[_WORKER_RUN_ID] = runid.adopt(node.workerinput.get("testrunuid"))


def pytest_collection_finish(session: pytest.Session) -> None:
    # Every worker collects the same items, so each knows the whole batch of the run.
    batches: dict[str, list[Scenario]] = {}
    for item in session.items:
        if isinstance(item, ScenarioItem) and item.backend.kind == BATCH:
            batches.setdefault(item.batch_key, []).append(item.scenario)
    session.config.stash[BATCHES_KEY] = batches


def pytest_unconfigure(config: pytest.Config) -> None:
    # The controller (or a plain run) removes the run's batch directory, which its workers may have
    # filled; only when this run could have chosen a batch backend, so that a dry-run or netns pytest
    # run nested in another one (pytester) never removes the outer run's directory.
    if getattr(config, "workerinput", None) is None and (_may_batch(config.getoption("--backend"))
                                                         or _vm_kernels(config) or config.getoption("--docker-vm")):
        import shutil

        from backends.batch import batch_dir

        shutil.rmtree(batch_dir(runid.run_id()), ignore_errors=True)


def _may_batch(name: str) -> bool:
    from backends.base import backend_class
    from backends.select import candidate_names

    return any(backend_class(n).kind == BATCH for n in candidate_names(name))


def _vm_kernels(config: pytest.Config) -> list[str]:
    text = config.getoption("--kernels", None)
    if not text:  # harness.cli (rich and the CLI's modules) only for a matrix run: 65 ms a process
        return []
    from harness.cli.matrix import HOST, parse_kernels

    return [k for k in parse_kernels(text) if k != HOST]


def kernel_choosers(config: pytest.Config) -> dict[str, BackendChooser]:
    """--kernels: one chooser per kernel (host: netns; the others: the VM booting that kernel), each VM
    kernel with its share of the CPUs."""
    found = config.stash.get(KERNEL_CHOOSERS_KEY, None)
    if found is None:
        from harness.cli.matrix import kernel_chooser, parse_kernels, vm_slots

        per_kernel, _ = vm_slots(len(_vm_kernels(config)))
        profile = config.getoption("--harness-profile")
        found = config.stash[KERNEL_CHOOSERS_KEY] = {
            k: kernel_chooser(k, profile, per_kernel) for k in parse_kernels(config.getoption("--kernels"))}
    return found


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and os.geteuid() != 0:
        pytest.skip("needs root: it creates network namespaces")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    # A skipped scenario points at its YAML (`-rs`: "scenarios/x.yaml:1: kernel lacks ..."), not at this plugin.
    if isinstance(item, ScenarioItem) and report.skipped and isinstance(report.longrepr, tuple):
        report.longrepr = (str(item.path), 1, report.longrepr[2])


def pytest_collect_file(parent: pytest.Collector, file_path: Path):
    if file_path.suffix in (".yaml", ".yml") and file_path.parent.name == "scenarios":
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


def chooser(config: pytest.Config) -> BackendChooser:
    """The run's BackendChooser (one per run: it caches backends and their capability probes)."""
    found = config.stash.get(CHOOSER_KEY, None)
    if found is None:
        from backends.select import BackendChooser

        found = config.stash[CHOOSER_KEY] = BackendChooser(config.getoption("--backend"),
                                                            config.getoption("--harness-profile"))
    return found


def docker_chooser(config: pytest.Config) -> BackendChooser:
    """The chooser of the scenario[docker] items: the real engine, on this kernel or where it must run."""
    found = config.stash.get(DOCKER_CHOOSER_KEY, None)
    if found is None:
        from backends.select import BackendChooser

        found = config.stash[DOCKER_CHOOSER_KEY] = BackendChooser("docker", config.getoption("--harness-profile"))
    return found


class ScenarioFile(pytest.File):
    def collect(self):
        from harness.loader import load_scenario

        try:
            scenario = load_scenario(self.path)  # ScenarioError: file:line and what is wrong
            if self.config.getoption("--kernels", None):
                chosen = [(k, c.choose(scenario)) for k, c in kernel_choosers(self.config).items()]
            else:
                chosen = [(None, chooser(self.config).choose(scenario))]
                if chosen[0][1].name != "docker" and not self.config.getoption("--no-docker-items"):
                    # The same scenario on a real Docker engine: `pytest -k "scenario and docker"`. On this
                    # kernel unless --docker-vm: the guest engine costs minutes a scenario under TCG.
                    docker = docker_chooser(self.config)
                    engine = docker.choose(scenario)
                    if engine.kind == BATCH and not self.config.getoption("--docker-vm"):
                        engine = docker.backend("docker")  # skips, naming the missing kernel feature
                    chosen.append((None, engine))
        except HarnessError as exc:
            raise self.CollectError(str(exc)) from None
        profile = self.config.getoption("--harness-profile")
        for kernel, backend in chosen:
            label = backend.name if kernel is None else f"{backend.name}-{kernel}"
            yield ScenarioItem.from_parent(self, name=f"scenario[{label}]", scenario=scenario, backend=backend,
                                           profile=profile, batch_key=label)


class ScenarioFailed(Exception):
    def __init__(self, result: ScenarioResult):
        self.result = result
        super().__init__(result.reason)


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario, backend, profile, batch_key: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.scenario = scenario
        self.backend = backend
        self.profile = profile
        self.batch_key = batch_key or backend.name  # the backend, or per kernel of a matrix: vm-6.12
        self.add_marker(pytest.mark.scenario)
        self.extra_keyword_matches.add(scenario.name)  # -k by scenario name, whatever the file is called
        self.result: ScenarioResult | None = None

    def runtest(self) -> None:
        if self.backend.kind == BATCH:
            self.result = result = self._batch_result()  # one boot serves every scenario of its batch
        else:
            from harness.engine import Engine

            self.result = result = Engine(self.backend, profile=self.profile).run(self.scenario)
        if result.status == SKIP:
            pytest.skip(result.reason)
        if result.status in (FAIL, ERROR):
            raise ScenarioFailed(result)

    def _batch_result(self) -> ScenarioResult:
        from backends.batch import BatchCache

        caches = self.config.stash.setdefault(CACHES_KEY, {})
        cache = caches.get(self.batch_key)
        if cache is None:
            cache = caches[self.batch_key] = BatchCache(self.backend, runid.run_id(), key=self.batch_key)
        batch = self.config.stash.get(BATCHES_KEY, {}).get(self.batch_key) or [self.scenario]
        return cache.result(self.scenario, batch, self.profile)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, ScenarioFailed):
            r = excinfo.value.result
            return (f"{r.scenario} ({r.path}) on backend {r.backend}, kernel {r.kernel}: {r.status}\n"
                    f"{r.failure_report()}")
        if isinstance(excinfo.value, HarnessError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, 0, f"scenario {self.scenario.name} [{self.batch_key}]"
