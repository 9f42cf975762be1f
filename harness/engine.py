"""The engine: world -> Docker executes the commands -> observe -> judge -> teardown, per scenario.

`Engine(backend).run(scenario)` compiles the scenario once (`harness.docker.emulated.compile_scenario`:
the plan, the VLANs the switch must carry, the emulation's end state), checks the backend can run it (a
missing kernel feature is a skip whose reason names it), opens a session, builds the emulated physical
network (`harness.world.World`), and hands each documented command to the Docker under test
(`harness.docker.base.DockerUnderTest`: the emulation by default, a real engine with the docker
backend). Docker's answers are judged against the expected errors; a transient container's documented
ping is probed while it exists. The engine then observes every node and runs every probe (all at once
for a documented scenario; in bounded waves, re-asking isolation probes that replies do not back, for a
big matrix: `harness.observe.probe_all`; with several Docker hosts, the ARP view of the switch first:
`harness/arpscan.py` on its monitor port; for a node with several interfaces, the kernel's own routing
decision, `ip route get`; a container's hostname, in its UTS namespace), and the `Judge` compares what it
saw with the scenario's explicit expectations and the `Oracle`'s derived facts. Last, it records what Docker built and what was seen in the result's `facts`, the form
`harness conform` compares between the emulation and a real engine (`harness.conform.record_facts`).

The engine sees backends only through their protocols (backends.base): it imports neither pyroute2 nor
subprocess nor a backend module.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.checks import Judge, describe_ping, error_matches
from harness.conform import record_facts
from harness.docker.base import DockerUnderTest
from harness.docker.emulated import CompiledScenario, compile_scenario
from harness.docker.profiles import DEFAULT_PROFILE
from harness.errors import BackendUnavailable, HarnessError, KernelError
from harness.model import Scenario, Step
from harness.observe import (
    SCAN_TIMEOUT,
    PingJob,
    ProbeStats,
    hostname_jobs,
    observe_and_probe,
    parse_scan,
    path_jobs,
    probe_now,
    scan_argv,
)
from harness.oracle import HostSetup, Oracle
from harness.plan import cannot_run, render
from harness.results import ERROR, FAIL, PASS, SKIP, Check, ScenarioResult, StepRecord
from harness.world import ROUTER, SWITCH, World

DockerFactory = Callable[[CompiledScenario, object], DockerUnderTest]


@dataclass
class _Clock:
    """When each phase ended, for the durations a result reports."""

    start: float = field(default_factory=time.perf_counter)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, phase: str) -> None:
        self.marks[phase] = time.perf_counter()

    def durations(self) -> dict[str, float]:
        end = time.perf_counter()
        setup_end = self.marks.get("setup", end)
        checks_end = self.marks.get("checks", setup_end)
        return {"setup": setup_end - self.start, "checks": checks_end - setup_end,
                "teardown": end - self.marks.get("teardown", checks_end)}


class Engine:
    def __init__(self, backend, profile: str = DEFAULT_PROFILE, matrix: bool = True,
                 on_event: Callable[[str, str], None] | None = None, docker: DockerFactory | None = None):
        self.backend = backend
        self.profile = profile
        self.matrix = matrix
        # Which Docker executes the commands: the backend's own (the emulation, or a real engine), unless
        # the caller names one (`harness conform` runs the emulation against a real engine's results).
        self.docker = docker or backend.docker
        self.on_event = on_event or (lambda scenario, what: None)

    def run(self, scenario: Scenario) -> ScenarioResult:
        result = ScenarioResult(scenario.name, scenario.path, self.backend.name, self.backend.kernel_release(), PASS,
                                profile=self.profile, source=scenario.source)
        clock = _Clock()
        try:
            compiled = compile_scenario(scenario, self.profile)
            reason = cannot_run(self.backend, compiled.plan.required_features())
        except BackendUnavailable as exc:
            reason = str(exc)
        if reason:
            result.status, result.reason = SKIP, reason
            return result
        try:
            with self.backend.session(scenario.name) as session:
                result.kernel = session.kernel
                self._execute(compiled, session, result, clock)
                clock.mark("teardown")
        except BackendUnavailable as exc:
            result.status, result.reason = SKIP, str(exc)
        except HarnessError as exc:
            result.status, result.reason = ERROR, str(exc)
        except Exception:  # a bug in the harness: keep the traceback, it is for us
            result.status, result.reason = ERROR, "harness bug:\n" + traceback.format_exc()
        result.durations = clock.durations()
        return _conclude(result)

    # -- phases ---------------------------------------------------------------------------------------

    def _execute(self, compiled: CompiledScenario, session, result: ScenarioResult, clock: _Clock) -> None:
        scenario = compiled.scenario
        world = World.for_scenario(scenario, compiled.vlans)
        self.on_event(scenario.name, "setup")
        for op in world.ops():
            try:
                session.apply(op)
            except KernelError as exc:
                raise HarnessError(f"building the emulated network failed: {'; '.join(render(op))}: "
                                   f"{exc.strerror}") from None
        docker = self.docker(compiled, session)
        done = []  # (step, error): what each host's own `ip` commands configured, for the oracle
        for step in scenario.steps:
            outcome = docker.execute(step)
            done.append((step, outcome.error))
            result.steps.append(StepRecord(step.index, step.text, outcome.error, step.expect_error))
            result.checks.append(_error_check(step, outcome.error))
            if outcome.reach is not None and outcome.error is None:
                check = outcome.reach
                # The transient container pings now, while it exists, then is removed.
                res = probe_now(session, [PingJob(check.src, check.dst, True, check.family)])[0] \
                    if session.observes else None
                docker.finish(outcome)
                if res is not None:
                    result.checks.append(Check(
                        "reach", f"{check.src} -> {check.dst} (`{check.command}`)", "reachable", describe_ping(res),
                        res.reached and not res.probe_error, evidence=res.evidence, location=str(step.location),
                        origin="command"))
        clock.mark("setup")
        oracle = Oracle(docker.state, world, HostSetup.by_host(done))
        if not session.observes:
            result.status, result.reason = SKIP, f"backend {self.backend.name} observes nothing (plan rendered only)"
            result.facts = record_facts(docker, oracle, result, scenario.steps)
            clock.mark("checks")
            return
        self.on_event(scenario.name, "checks")
        probes = self._judge(scenario, session, oracle, result)
        # What Docker built and what was seen, in the form `harness conform` compares across Dockers.
        result.facts = record_facts(docker, oracle, result, scenario.steps, probes)
        clock.mark("checks")
        self.on_event(scenario.name, "teardown")

    def _judge(self, scenario: Scenario, session, oracle: Oracle, result: ScenarioResult) -> dict:
        """Observe, probe and judge; returns what each probe saw, by (source node, destination address)."""
        nodes = [*oracle.host_names, *sorted(oracle.fleet.containers)]
        judge = Judge(scenario, oracle, {})
        explicit, unprobeable = judge.explicit_probe_jobs()
        matrix = oracle.matrix() if (self.matrix and scenario.expect.matrix) else []
        # Which interface and source address a node with several of them uses (the kernel's own
        # decision, `ip route get`), for the destinations the matrix probes.
        paths = oracle.paths() if matrix else []
        # A container's hostname, read inside its UTS namespace (every host's containers).
        containers = oracle.fleet.containers
        named = [f for c in sorted(containers) for f in oracle.expected_state(containers[c]) if f.kind == "hostname"]
        # The ARP view of the switch first (before the probes fill the neighbour tables): who answers for
        # every address on the wire, from the monitor port of its segment (several hosts, or a conflict
        # the scenario expects).
        scan = self._scan(session, oracle) if oracle.world.monitor else {}
        jobs: dict[tuple, PingJob] = {}
        for _, want, job, _ in explicit:
            jobs.setdefault((job.src, job.dst, want), job)
        for exp in matrix:
            jobs.setdefault((exp.src.owner, str(exp.dst.ip), exp.reachable),
                            PingJob(exp.src.owner, str(exp.dst.ip), exp.reachable, exp.dst.ip.version))
        # None (a probe without a verdict) sorts after the verdicts of the same pair.
        keys = sorted(jobs, key=lambda k: (k[0], k[1], {False: 0, True: 1, None: 2}[k[2]]))
        # Observations and every probe start together (one window for a small scenario); a big matrix is
        # probed in waves of bounded size, with isolation verdicts re-asked until replies back them
        # (`harness.observe.probe_all` states the rules).
        owners = {str(a.ip): (ROUTER if a.owner == "gateway" else a.owner) for a in oracle.addresses()}
        self.probe_stats = ProbeStats()
        judge.views, found, extra = observe_and_probe(session, nodes, [jobs[k] for k in keys], owners,
                                                      self.probe_stats, path_jobs(paths) + hostname_jobs(named))
        judge.hostnames = dict(zip((f.node for f in named), extra[len(paths):]))
        for view in judge.views.values():
            for err in view.errors:
                raise HarnessError(f"observing {view.node} failed: {err}")
        results = dict(zip(keys, found))
        result.checks += unprobeable
        result.checks += judge.probe_checks(explicit, matrix, results)
        result.checks += judge.state_checks()
        result.checks += judge.model_checks()
        result.checks += judge.path_checks(paths, extra[:len(paths)])
        result.checks += judge.conflict_checks(scan)
        if judge.conflicts:
            # A finding of its own, whatever the verdict: which address, who holds it, on which hosts.
            result.reason = "address conflict: " + "; ".join(c.label for c in judge.conflicts)
        return {(src, dst): res for (src, dst, _want), res in results.items()}

    @staticmethod
    def _scan(session, oracle: Oracle) -> dict:
        """Ask the wire who holds each address (harness/arpscan.py in the switch node)."""
        targets = []
        for a in oracle.addresses():
            kind, vlan, *rest = a.segment
            if kind == "wire":
                targets.append((oracle.world.monitor_iface(rest[0] if rest else "", vlan), str(a.ip)))
        targets = sorted(set(targets))
        if not targets:
            return {}
        res = session.run(SWITCH, scan_argv(targets), timeout=SCAN_TIMEOUT)
        return parse_scan(targets, res)


def _error_check(step: Step, error: str | None) -> Check:
    subject = f"command {step.index} `{step.text}`"
    if step.expect_error is not None:
        return Check("error", subject, f"Docker error {step.expect_error!r}",
                     f"error {error!r}" if error else "success", error_matches(step.expect_error, error),
                     location=str(step.location), origin="command")
    return Check("error", subject, "success", f"Docker error {error!r}" if error else "success", error is None,
                 location=str(step.location), origin="command")


def _conclude(result: ScenarioResult) -> ScenarioResult:
    if result.status == PASS and result.failures:
        result.status = FAIL
        result.reason = f"{len(result.failures)} of {len(result.checks)} checks failed"
    return result
