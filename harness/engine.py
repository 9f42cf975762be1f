"""The engine: plan -> apply -> observe -> judge -> teardown, for one scenario on one backend.

`Engine.run(scenario)` checks the backend can run the scenario (a missing kernel feature is a skip
whose reason names it), opens a session, builds the world, then feeds each documented command to the
`DockerEmulator` and applies its operations; when the kernel refuses one, the command's partial work is
undone and the failure becomes Docker's error message, as Docker would report it. It then observes
every node, runs all probes at once and judges. The engine sees backends only through the Session
protocol: it imports neither pyroute2 nor subprocess nor a backend module.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import replace

from harness.checks import Judge, describe_ping, error_matches
from harness.driver import DockerEmulator
from harness.errors import BackendUnavailable, HarnessError, KernelError
from harness.model import Scenario
from harness.observe import (
    PING_TIMEOUT,
    PingJob,
    isolation_retry_wait,
    observation_jobs,
    parse_observations,
    parse_pings,
    ping_commands,
    ping_many,
)
from harness.oracle import HOST, Oracle
from harness.plan import FEATURES, AddLink, CompiledStep, Op, inverse, render
from harness.profiles import DEFAULT_PROFILE
from harness.results import ERROR, FAIL, PASS, SKIP, Check, ScenarioResult, StepRecord
from harness.world import World, compile_plan


def skip_reason(backend, scenario: Scenario, profile: str = DEFAULT_PROFILE) -> str | None:
    """Why `backend` cannot run `scenario` (a missing kernel feature, named), or None."""
    unavailable = backend.available()
    if unavailable:
        return unavailable
    plan, _ = compile_plan(scenario, profile)
    caps = backend.capabilities()
    missing = [f for f in plan.required_features() if not (caps.get(f) and caps[f].available)]
    if not missing:
        return None
    return "; ".join(f"kernel lacks {FEATURES[f]}" for f in missing) + f" (backend {backend.name}, kernel {backend.kernel_release()})"


def format_kernel_error(op: Op, error: KernelError) -> str:
    template = getattr(op, "error_format", None)
    if template:
        return template.format(name=getattr(op, "name", ""), error=error.go_message, strerror=error.strerror)
    return f"{'; '.join(render(op))}: {error.strerror}"


class Engine:
    def __init__(self, backend, profile: str = DEFAULT_PROFILE, matrix: bool = True,
                 on_event: Callable[[str, str], None] | None = None):
        self.backend = backend
        self.profile = profile
        self.matrix = matrix
        self.on_event = on_event or (lambda scenario, what: None)

    def run(self, scenario: Scenario) -> ScenarioResult:
        result = ScenarioResult(scenario.name, scenario.path, self.backend.name, self.backend.kernel_release(), PASS,
                                profile=self.profile, source=scenario.source)
        try:
            reason = skip_reason(self.backend, scenario, self.profile)
        except BackendUnavailable as exc:
            reason = str(exc)
        if reason:
            result.status, result.reason = SKIP, reason
            return result
        t0 = time.perf_counter()
        marks: dict[str, float] = {}
        try:
            with self.backend.session(scenario.name) as session:
                result.kernel = getattr(session, "kernel", result.kernel)
                self._execute(scenario, session, result, marks)
                marks["teardown"] = time.perf_counter()
        except BackendUnavailable as exc:
            result.status, result.reason = SKIP, str(exc)
        except HarnessError as exc:
            result.status, result.reason = ERROR, str(exc)
        except Exception:  # a bug in the harness: keep the traceback, it is for us
            result.status, result.reason = ERROR, "harness bug:\n" + traceback.format_exc()
        end = time.perf_counter()
        setup_end = marks.get("setup", end)
        checks_end = marks.get("checks", setup_end)
        result.durations = {
            "setup": setup_end - t0,
            "checks": checks_end - setup_end,
            "teardown": end - marks.get("teardown", checks_end),
        }
        if result.status == PASS and result.failures:
            result.status = FAIL
            result.reason = f"{len(result.failures)} of {len(result.checks)} checks failed"
        return result

    # -- phases ---------------------------------------------------------------------------------------

    def _execute(self, scenario: Scenario, session, result: ScenarioResult, marks: dict[str, float]) -> None:
        world = World.of(scenario, self.profile)
        self.on_event(scenario.name, "setup")
        for op in world.ops():
            try:
                session.apply(op)
            except KernelError as exc:
                raise HarnessError(f"building the emulated network failed: {format_kernel_error(op, exc)}") from None
        emulator = DockerEmulator(scenario, self.profile)
        for step in scenario.steps:
            compiled, error = self._step(emulator, session, step)
            result.steps.append(StepRecord(step.index, step.text, error, step.expect_error))
            result.checks.append(self._error_check(step, error))
            if compiled.check is not None and error is None:
                check = compiled.check
                job = PingJob(check.src, check.dst, True, check.family)
                # The transient container pings now, while it exists, then is removed.
                res = ping_many(session, [job])[0] if getattr(session, "observes", True) else None
                for op in compiled.cleanup:
                    session.apply(op)
                if res is not None:
                    result.checks.append(Check(
                        "reach", f"{check.src} -> {check.dst} (`{check.command}`)", "reachable", describe_ping(res),
                        res.reached and not res.probe_error, evidence=res.evidence, location=str(step.location),
                        origin="command"))
        marks["setup"] = time.perf_counter()
        if not getattr(session, "observes", True):
            result.status, result.reason = SKIP, f"backend {self.backend.name} observes nothing (plan rendered only)"
            marks["checks"] = time.perf_counter()
            return
        self.on_event(scenario.name, "checks")
        self._judge(scenario, session, emulator, world, result)
        marks["checks"] = time.perf_counter()
        self.on_event(scenario.name, "teardown")

    def _step(self, emulator: DockerEmulator, session, step) -> tuple[CompiledStep, str | None]:
        snapshot = emulator.snapshot()
        compiled = emulator.compile(step)
        applied: list[Op] = []
        for op in compiled.ops:
            try:
                session.apply(op)
                applied.append(op)
            except KernelError as exc:
                # Docker undoes a failed command's partial work; so do we, in reverse.
                for done in reversed(applied):
                    undo = inverse(done)
                    if undo is not None:
                        try:
                            session.apply(undo)
                        except KernelError:
                            pass  # already gone with its namespace
                emulator.restore(snapshot)
                message = format_kernel_error(op, exc)
                if not isinstance(op, AddLink) or op.error_format is None:
                    # Not a refusal Docker would report (a harness or environment problem): an error.
                    raise HarnessError(f"command {step.index} `{step.text}`: {message}") from None
                return CompiledStep(step, error=message), message
        return compiled, compiled.error

    @staticmethod
    def _error_check(step, error: str | None) -> Check:
        subject = f"command {step.index} `{step.text}`"
        if step.expect_error is not None:
            return Check("error", subject, f"Docker error {step.expect_error!r}",
                         f"error {error!r}" if error else "success", error_matches(step.expect_error, error),
                         location=str(step.location), origin="command")
        return Check("error", subject, "success", f"Docker error {error!r}" if error else "success", error is None,
                     location=str(step.location), origin="command")

    def _judge(self, scenario: Scenario, session, emulator: DockerEmulator, world: World, result: ScenarioResult):
        oracle = Oracle(emulator, world)
        nodes = [HOST, *sorted(emulator.containers)]
        judge = Judge(scenario, oracle, {})
        explicit, unprobeable = judge.explicit_probe_jobs()
        matrix = oracle.matrix() if (self.matrix and scenario.expect.matrix) else []
        jobs: dict[tuple, PingJob] = {}
        for _, want, job, _ in explicit:
            jobs.setdefault((job.src, job.dst, want), job)
        for exp in matrix:
            jobs.setdefault((exp.src.owner, str(exp.dst.ip), exp.reachable),
                            PingJob(exp.src.owner, str(exp.dst.ip), exp.reachable, exp.dst.ip.version))
        keys = sorted(jobs)
        # Observations and every probe run at once: the expectations come from the model, not from
        # what is observed, so nothing here waits for anything else.
        observe = observation_jobs(nodes)
        pings = [jobs[k] for k in keys]
        done = session.run_many(observe + ping_commands(pings), timeout=PING_TIMEOUT)
        judge.views = parse_observations(nodes, done[: len(observe)])
        for view in judge.views.values():
            for err in view.errors:
                raise HarnessError(f"observing {view.node} failed: {err}")
        results = dict(zip(keys, parse_pings(pings, done[len(observe):])))
        wait = isolation_retry_wait(list(results.values()))
        if wait is not None:
            # Replies were slow in this batch: a silent isolation probe is only trusted with more time.
            silent = [k for k in keys if k[2] is False and not results[k].reached and not results[k].probe_error]
            again = [replace(jobs[k], isolation_wait=wait) for k in silent]
            results.update(zip(silent, ping_many(session, again)))
        result.checks += unprobeable
        result.checks += judge.probe_checks(explicit, matrix, results)
        result.checks += judge.state_checks()
        result.checks += judge.model_checks()

