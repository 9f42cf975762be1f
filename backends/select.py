"""`--backend auto` and friends: which backend runs which scenario, and why.

`BackendChooser` keeps one instance per backend name (each caches its capability probe) and answers,
per scenario, with the backend to use: the named one, or for `auto` the first of `AUTO_ORDER` whose
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

__all__ = ["AUTO_ORDER", "BackendChooser", "cannot_run"]


class BackendChooser:
    """`auto`: per scenario, the first backend in AUTO_ORDER that can run it; else the first's reason."""

    def __init__(self, name: str, profile: str = DEFAULT_PROFILE, options: dict[str, dict] | None = None):
        self.name = name
        self.profile = profile
        self.options = options or {}  # backend name -> constructor options (vm: kernel, modules)
        self._backends: dict[str, Backend] = {}

    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            self._backends[name] = get_backend(name, **self.options.get(name, {}))
        return self._backends[name]

    def features(self, scenario: Scenario) -> Sequence[str]:
        return compile_scenario(scenario, self.profile).plan.required_features()

    def choose(self, scenario: Scenario) -> Backend:
        return self.explain(scenario)[0]

    def explain(self, scenario: Scenario) -> tuple[Backend, str]:
        """(backend, why): the backend for this scenario and, in words, why not the ones before it."""
        if self.name != "auto":
            return self.backend(self.name), f"--backend {self.name}"
        candidates = [n for n in AUTO_ORDER if n in backend_names()]
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
