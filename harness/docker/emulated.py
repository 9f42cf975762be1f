"""The emulated Docker: libnetwork's semantics compiled to plan operations, applied through a session.

`compile_scenario(scenario, profile)` runs the `DockerEmulator` (one per Docker host: a `FleetEmulator`
when the scenario has several) over every step once, assuming each
succeeds on the kernel, and returns a `CompiledScenario`: the backend-neutral `Plan` (what `harness plan`
prints, whose `required_features` choose the backend), the VLAN of every subnet Docker creates (the
switch must carry them before any command runs), and the emulator's end state. It is cached per scenario
object and profile, so choosing a backend, building the world and executing share one compile.
`alternatives(scenario, profile)` compiles it under every order Docker's random choices can take
(`harness.docker.choices`).
`EmulatedDocker` executes those compiled steps in a session. When the kernel refuses an operation
Docker would have reported (a passthru parent already taken, a missing ipvlan module), it undoes the
command's partial work in reverse, as Docker does, answers with Docker's message, and from then on
compiles live from the state Docker would really have.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, replace

from harness.docker.base import DockerState, StepOutcome
from harness.docker.choices import check_pinned
from harness.docker.driver import DockerEmulator
from harness.docker.fleet import FleetEmulator, as_fleet, make_emulator
from harness.docker.profiles import DEFAULT_PROFILE
from harness.errors import HarnessError, KernelError
from harness.model import NOWHERE, IPNetwork, Scenario, Step
from harness.plan import AddLink, CompiledStep, Op, Plan, inverse, render
from harness.world import World


@dataclass(frozen=True)
class CompiledScenario:
    scenario: Scenario
    plan: Plan
    vlans: tuple[tuple[IPNetwork, int | None], ...]  # each created subnet and the VLAN its parent tags
    emulator: DockerEmulator | FleetEmulator  # the end state if every step succeeds; read it, never mutate it


MAX_ALTERNATIVES = 120  # 5! orders of one network's subnets; more is not a documented example
_cache: dict[tuple[int, str], CompiledScenario] = {}
_cache_lock = threading.Lock()


def compile_scenario(scenario: Scenario, profile: str = DEFAULT_PROFILE) -> CompiledScenario:
    key = (id(scenario), profile)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and hit.scenario is scenario:
            return hit
    emulator = make_emulator(scenario, profile)
    steps: list[CompiledStep] = []
    seen: dict[tuple[str, str], list] = {}
    for step in scenario.steps:
        steps.append(emulator.compile(step))
        # A network Docker refuses never puts its VLAN on the switch; a hand-made parent
        # (`ip link add ... name foo type vlan id 40`) counts with its own VLAN id.
        for host, state in as_fleet(emulator).hosts.items():
            for net in state.networks.values():
                if (host, net.id) not in seen:
                    vlan = state.vlan_of(net.parent)
                    seen[(host, net.id)] = [(pool.subnet, vlan) for pool in net.pools]
    check_pinned(scenario, choice_points_of(emulator))
    vlans = tuple(entry for entries in seen.values() for entry in entries)
    world = World.for_scenario(scenario, vlans)
    compiled = CompiledScenario(scenario, Plan(scenario.name, emulator.profile.name, world.ops(), tuple(steps),
                                               tuple(dict.fromkeys(emulator.notes))),
                                vlans, emulator)
    with _cache_lock:
        if len(_cache) > 4096:
            _cache.clear()
        _cache[key] = compiled
    return compiled


def choice_points_of(emulator) -> dict:
    """Docker's random choices met by the daemon of every host (a network name on two hosts is one key:
    a pin orders both)."""
    return {key: point for state in as_fleet(emulator).hosts.values()
            for key, point in getattr(state, "choice_points", {}).items()}


def alternatives(scenario: Scenario, profile: str = DEFAULT_PROFILE, limit: int = MAX_ALTERNATIVES
                 ) -> list[CompiledScenario]:
    """The scenario compiled under every combination of Docker's random choices (the command-line order
    first), at most `limit` of them. A choice that only appears under another choice's outcome is found by
    compiling again until no new one appears."""
    points = choice_points_of(compile_scenario(scenario, profile).emulator)
    while True:
        keys = sorted(points)
        combos = itertools.islice(itertools.product(*(itertools.permutations(points[k].options) for k in keys)),
                                  limit)
        out = []
        for combo in combos:
            pinned = tuple((k, order, NOWHERE) for k, order in zip(keys, combo))
            out.append(compile_scenario(replace(scenario, docker_choices=pinned), profile))
        found = {k: p for c in out for k, p in choice_points_of(c.emulator).items() if k not in points}
        if not found:
            return out
        points.update(found)


def format_kernel_error(op: Op, error: KernelError) -> str:
    """A kernel refusal in Docker's words where Docker has them, else as `ip` would say it."""
    if isinstance(op, AddLink) and op.error_format:
        return op.error_format.format(name=op.name, error=error.go_message, strerror=error.strerror)
    return f"{'; '.join(render(op))}: {error.strerror}"


class EmulatedDocker:
    """Docker as the emulation predicts it, applied to real kernel state through a backend session."""

    def __init__(self, compiled: CompiledScenario, session):
        self.compiled = compiled
        self.session = session
        self.name = f"emulated {compiled.plan.profile}"
        self._next = 0  # index of the next step in scenario.steps
        self._refused: list[int] = []  # steps the kernel refused (their effects undone)
        self._live: DockerEmulator | FleetEmulator | None = None  # once a step diverged from the compile
        self._pending: dict[int, CompiledStep] = {}

    @property
    def state(self) -> DockerState:
        return self._live if self._live is not None else self.compiled.emulator

    def execute(self, step: Step) -> StepOutcome:
        position = self.compiled.scenario.steps.index(step)
        if position != self._next:
            raise HarnessError(f"steps must run in order: expected command {self._next + 1}, got {step.index}")
        self._next += 1
        compiled = self._live.compile(step) if self._live is not None else self.compiled.plan.steps[position]
        applied: list[Op] = []
        for op in compiled.ops:
            try:
                self.session.apply(op)
            except KernelError as exc:
                self._undo(applied)
                message = format_kernel_error(op, exc)
                if not isinstance(op, AddLink) or op.error_format is None:
                    # Not a refusal Docker would report (a harness or environment problem): an error.
                    raise HarnessError(f"command {step.index} `{step.text}`: {message}") from None
                self._diverge(position)
                return StepOutcome(step, error=message)
            applied.append(op)
        self._pending[step.index] = compiled
        return StepOutcome(step, error=compiled.error, reach=compiled.check)

    def finish(self, outcome: StepOutcome) -> None:
        compiled = self._pending.pop(outcome.step.index, None)
        for op in compiled.cleanup if compiled else ():
            self.session.apply(op)

    def _undo(self, applied: list[Op]) -> None:
        # Docker undoes a failed command's partial work; so do we, in reverse.
        for done in reversed(applied):
            undo = inverse(done)
            if undo is not None:
                try:
                    self.session.apply(undo)
                except KernelError:
                    pass  # already gone with its namespace

    def _diverge(self, position: int) -> None:
        """Docker's state is now what it was before this step: recompile everything that took effect."""
        self._refused.append(position)
        live = make_emulator(self.compiled.scenario, self.compiled.plan.profile)
        for i, step in enumerate(self.compiled.scenario.steps[:position]):
            if i not in self._refused:
                live.compile(step)
        self._live = live
