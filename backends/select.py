"""`--backend auto` and friends: which backend runs which scenario, and why.

`BackendChooser` keeps one instance per backend name (each caches its capability probe) and answers,
per scenario, with the backend to use: the named one, or for `auto` the first of `AUTO_ORDER` (for
`docker` the first of `DOCKER_ORDER`: the engine on this kernel, else in the VM) whose
kernel has every feature the scenario's plan needs (else the first's reason, reported as a skip).
`cannot_run(backend, features)` is that test in words. Choosing is cheap and side-effect free: it asks
`available()` and `capabilities()`, never `prepare()`.
"""

from __future__ import annotations

from collections.abc import Sequence

from backends.base import Backend, backend_names, get_backend
from harness.docker.emulated import compile_scenario
from harness.docker.profiles import DEFAULT_PROFILE
from harness.model import Scenario
from harness.plan import cannot_run

AUTO_ORDER = ("netns", "vm")
# `--backend docker` is the real engine's `auto`: on this machine's kernel where it can, else inside the
# VM's guest (`vm-docker`: backends.vm.backend.VMDockerBackend, results marked `docker (vm)`).
DOCKER_ORDER = ("docker", "vm-docker")
ORDERS = {"auto": AUTO_ORDER, "docker": DOCKER_ORDER}
# Backends whose command-line options (--kernel, --kernel-modules) are another backend's.
_OPTIONS_OF = {"vm-docker": "vm"}

__all__ = ["AUTO_ORDER", "DOCKER_ORDER", "ORDERS", "BackendChooser", "cannot_run", "candidate_names"]


def candidate_names(name: str) -> list[str]:
    """The backends `--backend name` may choose from, in order (one for a plain backend name)."""
    order = ORDERS.get(name)
    if order is None:
        return [name]
    return [n for n in order if n in backend_names()]


class BackendChooser:
    """`auto`: per scenario, the first backend in AUTO_ORDER that can run it; else the first's reason."""

    def __init__(self, name: str, profile: str = DEFAULT_PROFILE, options: dict[str, dict] | None = None):
        self.name = name
        self.profile = profile
        self.options = options or {}  # backend name -> constructor options (vm: kernel, modules)
        self._backends: dict[str, Backend] = {}

    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            options = self.options.get(name) or self.options.get(_OPTIONS_OF.get(name, ""), {})
            self._backends[name] = get_backend(name, **options)
        return self._backends[name]

    def features(self, scenario: Scenario) -> Sequence[str]:
        return compile_scenario(scenario, self.profile).plan.required_features()

    def choose(self, scenario: Scenario) -> Backend:
        return self.explain(scenario)[0]

    def explain(self, scenario: Scenario) -> tuple[Backend, str]:
        """(backend, why): the backend for this scenario and, in words, why not the ones before it."""
        if self.name not in ORDERS:
            return self.backend(self.name), f"--backend {self.name}"
        candidates = candidate_names(self.name)
        passed_over = []
        features = self.features(scenario)
        for name in candidates:
            backend = self.backend(name)
            reason = cannot_run(backend, features)
            if reason is None:
                why = "; ".join(passed_over) or f"{name} has every kernel feature it needs"
                return backend, why
            passed_over.append(f"not {name}: {reason}")
        return self.backend(candidates[0]), "; ".join(passed_over)  # none can: reported as a skip
