"""What every command shares: the console (untrusted text never becomes markup), loading scenarios, backend options."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from harness.errors import ScenarioError
from harness.loader import find_scenarios, load_scenario
from harness.model import Scenario
from harness.results import ERROR, FAIL, PASS, SKIP

DEFAULT_SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
STATUS_STYLE = {PASS: "green", FAIL: "bold red", SKIP: "yellow", ERROR: "bold magenta"}


def new_console(stderr: bool = False) -> Console:
    # CI logs are not terminals; give tables room there instead of rich's 80-column default.
    probe = Console(stderr=stderr)
    return Console(stderr=stderr, highlight=False, width=None if probe.is_terminal else 160)


def backend_options(args) -> dict[str, dict]:
    """Constructor options per backend name, from the command line (the VM's kernel)."""
    vm = {k: v for k, v in (("kernel", args.kernel), ("modules", args.kernel_modules)) if v}
    return {"vm": vm} if vm else {}


def load_scenarios(paths: Sequence[str]) -> tuple[list[Scenario], list[ScenarioError]]:
    scenarios, errors = [], []
    for path in find_scenarios(paths):
        try:
            scenarios.append(load_scenario(path))
        except ScenarioError as exc:
            errors.append(exc)
    seen: dict[str, str] = {}
    for s in scenarios:
        if s.name in seen:
            errors.append(ScenarioError(f"scenario name {s.name!r} is also used by {seen[s.name]}", s.path, 1))
        seen[s.name] = s.path
    return scenarios, errors


# -- commands ----------------------------------------------------------------------------------------
