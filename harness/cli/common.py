"""What every command shares: the console (untrusted text never becomes markup), loading scenarios, backend options.

Names, paths and messages come from scenario files and may hold `[...]`; `safe()` escapes them before they
join a markup string, so `[/x]` prints as itself instead of raising rich's MarkupError or vanishing.
`load_scenarios` reports every file it cannot use (one bad file never hides the others) and, through
`docker_errors`, every command the emulated Docker refuses when the scenario does not expect it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.errors import MarkupError
from rich.markup import escape

from harness.checks import error_matches
from harness.docker.emulated import compile_scenario
from harness.docker.profiles import DEFAULT_PROFILE
from harness.errors import ScenarioError
from harness.keywords import keyword_filter
from harness.loader import find_scenarios, load_scenario
from harness.model import Scenario
from harness.results import ERROR, FAIL, PASS, SKIP

DEFAULT_SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
STATUS_STYLE = {PASS: "green", FAIL: "bold red", SKIP: "yellow", ERROR: "bold magenta"}


class _Console(Console):
    """A rich console that never dies of markup: a string that is not valid markup prints as plain text.

    The safety net under `safe()`: a message built elsewhere without escaping still reaches the user,
    and a run's verdicts are never lost to a `MarkupError`.
    """

    def print(self, *objects, **kwargs) -> None:
        try:
            super().print(*objects, **kwargs)
        except MarkupError:
            super().print(*objects, **{**kwargs, "markup": False})


def new_console(stderr: bool = False) -> Console:
    # CI logs are not terminals; give tables room there instead of rich's 80-column default.
    probe = Console(stderr=stderr)
    return _Console(stderr=stderr, highlight=False, width=None if probe.is_terminal else 160)


def safe(text: object) -> str:
    """Untrusted text for a rich markup string: printed as it is, never read as markup."""
    return escape(str(text))


def print_invalid(errors: Sequence[ScenarioError], console: Console | None = None) -> None:
    console = console or new_console(True)
    for e in errors:
        console.print(f"[red]invalid[/red] {safe(e)}", soft_wrap=True)


def backend_options(args) -> dict[str, dict]:
    """Constructor options per backend name, from the command line (the VM's kernel)."""
    vm = {k: v for k, v in (("kernel", args.kernel), ("modules", args.kernel_modules)) if v}
    return {"vm": vm} if vm else {}


def docker_errors(scenario: Scenario, profile: str = DEFAULT_PROFILE) -> list[ScenarioError]:
    """Each command the emulated Docker answers with an error the scenario does not expect, at its line.

    Errors only the kernel can cause (a passthru parent already taken) are not known here; they are
    judged when the scenario runs.
    """
    out = []
    for compiled in compile_scenario(scenario, profile).plan.steps:
        step = compiled.step
        if compiled.error is None or (step.expect_error is not None and error_matches(step.expect_error, compiled.error)):
            continue
        expected = f"; the scenario expects {step.expect_error!r}" if step.expect_error is not None else ""
        out.append(ScenarioError(f"Docker answers `{step.text}` with: {compiled.error.strip()}{expected}",
                                 step.location.file, step.location.line))
    return out


def load_scenarios(paths: Sequence[str], profile: str | None = DEFAULT_PROFILE) -> tuple[list[Scenario], list[ScenarioError]]:
    """The scenarios of `paths` that load, and an error for each that does not (the others still load).

    With a `profile`, a scenario whose commands Docker would refuse unexpectedly is an error too.
    """
    scenarios, errors = [], []
    try:
        files = find_scenarios(paths)
    except ScenarioError as exc:  # a missing path, a symlink loop: reported like any bad file
        return [], [exc]
    for path in files:
        try:
            scenario = load_scenario(path)
            # compiling it may find a mistake only Docker's emulation sees (a pinned choice it never meets)
            refused = docker_errors(scenario, profile) if profile else []
        except ScenarioError as exc:
            errors.append(exc)
            continue
        if refused:
            errors.extend(refused)
        else:
            scenarios.append(scenario)
    seen: dict[str, str] = {}
    for s in scenarios:
        if s.name in seen:
            errors.append(ScenarioError(f"scenario name {s.name!r} is also used by {seen[s.name]}", s.path, 1))
        seen[s.name] = s.path
    return scenarios, errors


# -- commands ----------------------------------------------------------------------------------------


def unwritable(option: str, path: str | None) -> str | None:
    """Why `--OPTION PATH` cannot be written, tried now: a run must not end in a traceback after all its work."""
    if not path:
        return None
    try:
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if os.path.exists(path):
            with open(path, "a"):  # opened for writing, not changed
                pass
        else:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            os.unlink(path)
    except OSError as exc:
        return f"cannot write --{option} {path}: {exc.strerror or exc}"
    return None


def selected_scenarios(args) -> list[Scenario] | None:
    """The scenarios of `args.paths` (default: the shipped ones) that `-k` selects; None (after saying why,
    on stderr) when a file is invalid or nothing is selected."""
    scenarios, errors = load_scenarios(args.paths or [str(DEFAULT_SCENARIOS)], args.profile)
    print_invalid(errors)
    if errors:
        return None
    keep = keyword_filter(args.k)
    scenarios = [s for s in scenarios if keep(s.name)]
    if not scenarios:
        new_console(True).print("no scenario selected")
        return None
    return scenarios
