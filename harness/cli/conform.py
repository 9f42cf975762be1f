"""`harness conform [PATHS]`: every scenario on the emulation and on a real Docker engine, fact by fact.

The real engine runs first; the emulation then runs pinned to the random choices the engine took (a
network's subnet order, read back from `docker network inspect`: `harness.conform.real_choices`), so both
sides are compared on the same choice. The emulation side runs where `--backend auto` would (netns on this kernel, the VM for VLAN, ipvlan and
dummy parents); the real side where `--backend docker` would (the engine on this kernel, else inside the
VM's guest). Each side records its facts (`harness.conform.record_facts`); `harness.conform.compare` pairs
them, applies the known, explained divergences (`conformance/divergences.yaml`) and the command prints a
table per scenario (every fact, emulated vs real, differences highlighted) and a summary. A scenario
that one side could not run is "not compared", with the reason, never "conforms".

Exit status: 0 every scenario compared and every difference explained; 1 an unexplained difference; 2 bad
input (scenarios, the divergences file, an unwritable --json); 3 no unexplained difference, but a scenario
was not compared. `--compare EMULATED.json REAL.json` diffs two `harness run --json` files instead of
running anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from backends.base import BATCH
from backends.select import BackendChooser
from harness.cli.common import (
    STATUS_STYLE,
    backend_options,
    new_console,
    safe,
    selected_scenarios,
    unwritable,
)
from harness.conform import (
    CONFORMS,
    DIFFERENT,
    DIVERGENCES_PATH,
    EQUAL,
    EXPLAINED,
    INFO,
    NOT_COMPARED,
    Comparison,
    DivergenceFileError,
    compare,
    describe_choices,
    exit_status,
    load_divergences,
    real_choices,
    version_of,
)
from harness.engine import Engine
from harness.keywords import keyword_filter
from harness.model import Scenario
from harness.results import SKIP, ScenarioResult

CONFORM_STYLE = {CONFORMS: "green", EXPLAINED: "cyan", DIFFERENT: "bold red", NOT_COMPARED: "yellow"}
ROW_STYLE = {EQUAL: "", INFO: "dim", "explained": "cyan"}


def add_arguments(p) -> None:
    p.add_argument("paths", nargs="*", help="scenario files or directories (default: scenarios/)")
    p.add_argument("--emulation", default="auto", metavar="BACKEND",
                   help="where the emulation runs (default auto: netns, or the VM where this kernel lacks a feature)")
    p.add_argument("--real", default="docker", metavar="BACKEND",
                   help="where the real engine runs (default docker: this kernel, or inside the VM's guest)")
    p.add_argument("--host-only", action="store_true",
                   help="never boot the VM: scenarios this kernel cannot run are reported as not compared")
    p.add_argument("--divergences", metavar="FILE", default=str(DIVERGENCES_PATH),
                   help="the known, explained divergences (default conformance/divergences.yaml)")
    p.add_argument("--compare", nargs=2, metavar=("EMULATED.json", "REAL.json"),
                   help="diff two `harness run --json` files instead of running the scenarios")
    p.add_argument("--json", metavar="FILE", help="write one JSON record per scenario (rows and both results)")
    p.add_argument("-k", metavar="EXPR", help="select scenarios by name (pytest-like keyword expression)")
    p.add_argument("--no-matrix", action="store_true", help="compare without the reachability matrix")
    p.add_argument("--differences", action="store_true", help="print only the rows that differ")
    p.add_argument("--kernel", metavar="KERNEL", help="vm backends: boot this kernel (as `harness run --kernel`)")
    p.add_argument("--kernel-modules", metavar="DIR", help="vm backends: the modules directory of --kernel")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")


def cmd_conform(args) -> int:
    err = new_console(True)
    problem = unwritable("json", args.json)
    if problem:
        err.print(f"error {problem}", markup=False)
        return 2
    try:
        divergences = load_divergences(args.divergences)
    except DivergenceFileError as exc:
        err.print(f"[red]invalid[/red] {safe(exc)}")
        return 2
    console = new_console()
    if args.compare:
        comparisons = _compare_files(*args.compare, divergences, args.k)
        if comparisons is None:
            return 2
    else:
        scenarios = selected_scenarios(args)
        if scenarios is None:
            return 2
        emulated, real, pinned = run_both(scenarios, args, console)
        comparisons = [compare(emulated.get(s.path), real.get(s.path), divergences,
                               describe_choices(pinned.get(s.path, ()))) for s in scenarios]
    if args.json:
        Path(args.json).write_text(json.dumps([c.to_dict() for c in comparisons], indent=2) + "\n")
    print_comparisons(comparisons, console, differences_only=args.differences)
    return exit_status(comparisons)


# -- running -----------------------------------------------------------------------------------------


def run_both(scenarios: Sequence[Scenario], args, console: Console) -> tuple[dict, dict, dict]:
    """Each scenario on the real engine, then on the emulation pinned to the random choices the engine
    took (`harness.conform.real_choices`): {path: ScenarioResult} per side, and {path: the choices pinned}."""
    options = backend_options(args)
    matrix = not args.no_matrix
    emulation = BackendChooser(args.emulation, args.profile, options=options)
    real_engine = BackendChooser(args.real, args.profile, options=options)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=args.quiet) as progress:
        task = progress.add_task("scenarios", total=2 * len(scenarios))

        def say(text: str) -> None:
            progress.update(task, description=safe(text))

        real = run_side("real", real_engine, scenarios, args.profile, matrix, args.host_only, say,
                        lambda: progress.advance(task))
        pinned = {s.path: real_choices(s, real.get(s.path), args.profile) for s in scenarios}
        followed = [replace(s, docker_choices=pinned[s.path]) if pinned[s.path] else s for s in scenarios]
        emulated = run_side("emulation", emulation, followed, args.profile, matrix, args.host_only, say,
                            lambda: progress.advance(task))
    return emulated, real, {path: choices for path, choices in pinned.items() if choices}


def run_side(label: str, chooser: BackendChooser, scenarios: Sequence[Scenario], profile: str, matrix: bool,
             host_only: bool, say: Callable[[str], None], advance: Callable[[], None]) -> dict[str, ScenarioResult]:
    by_path: dict[str, ScenarioResult] = {}
    batches: dict[str, list[Scenario]] = {}
    for s in scenarios:
        backend, why = chooser.explain(s)
        if backend.kind == BATCH:
            if host_only:
                by_path[s.path] = ScenarioResult(s.name, s.path, backend.name, "", SKIP, profile=profile,
                                                 source=s.source, reason=f"--host-only: {why}")
                advance()
            else:
                batches.setdefault(backend.name, []).append(s)
            continue
        engine = Engine(backend, profile=profile, matrix=matrix,
                        on_event=lambda name, phase, b=backend.name: say(f"{label}: {name} [{b}]: {phase}"))
        say(f"{label}: {s.name} [{backend.name}]")
        by_path[s.path] = engine.run(s)
        advance()
    for name, batch in batches.items():
        say(f"{label}: {len(batch)} scenarios in one {name} boot")
        for result in chooser.backend(name).run_batch(batch, profile, matrix=matrix):
            by_path[result.path] = result
            advance()
    return by_path


def _compare_files(emulated_path: str, real_path: str, divergences, k: str | None) -> list[Comparison] | None:
    err = new_console(True)
    sides = []
    for path in (emulated_path, real_path):
        try:
            records = json.loads(Path(path).read_text())
            sides.append([ScenarioResult.from_dict(r) for r in records])
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            err.print(f"error cannot read {path} as `harness run --json` results: {exc}", markup=False)
            return None
    emulated, real = sides
    keep = keyword_filter(k)
    real_by = {r.scenario: r for r in real}
    names = [r.scenario for r in emulated] + [r.scenario for r in real if r.scenario not in {e.scenario for e in emulated}]
    emulated_by = {r.scenario: r for r in emulated}
    return [compare(emulated_by.get(n), real_by.get(n), divergences) for n in names if keep(n)]


# -- printing ----------------------------------------------------------------------------------------


def _side(r: ScenarioResult | None) -> str:
    if r is None:
        return "not run"
    style = STATUS_STYLE.get(r.status, "white")
    version = version_of(r)
    where = f"{safe(version)} on {safe(r.backend)}" if version else safe(r.backend)
    kernel = f", kernel {safe(r.kernel)}" if r.kernel and r.kernel != "unknown" else ""
    return f"{where}{kernel}: [{style}]{safe(r.status)}[/{style}]"


def _cell(value: str | None) -> str:
    return "[dim]-[/dim]" if value is None else safe(value)


def print_comparisons(comparisons: Sequence[Comparison], console: Console, differences_only: bool = False) -> None:
    for c in comparisons:
        console.print()
        console.print(f"[bold]{safe(c.scenario)}[/bold] ({safe(c.path)})")
        console.print(f"  emulated: {_side(c.emulated)}")
        console.print(f"  real:     {_side(c.real)}")
        for choice in c.choices:
            console.print(f"  Docker's random choice, which the emulation followed: {safe(choice)}")
        if c.status == NOT_COMPARED:
            console.print(f"  [yellow]not compared[/yellow]: {safe(c.reason)}")
            continue
        shown = [r for r in c.rows if not (differences_only and r.status in (EQUAL, INFO))]
        if not shown:
            equal = sum(r.status == EQUAL for r in c.rows)
            console.print(f"  [{CONFORM_STYLE[c.status]}]{safe(c.status)}[/{CONFORM_STYLE[c.status]}]: "
                          f"every one of {equal} facts is equal")
            continue
        table = Table("fact", "node", "interface / peer", "emulated", "real", "", show_lines=False)
        notes: dict[str, int] = {}
        for row in shown:
            if row.divergence is not None:
                n = notes.setdefault(row.divergence.location, len(notes) + 1)
                verdict, style = f"explained [{n}]", "cyan"
            elif row.status in (EQUAL, INFO):
                verdict, style = ("=" if row.status == EQUAL else ""), ROW_STYLE[row.status]
            else:
                verdict, style = row.status.upper() if row.status != "differs" else "DIFFERS", "bold red"
            table.add_row(safe(row.kind), safe(row.node), safe(row.interface or ""), _cell(row.emulated),
                          _cell(row.real), safe(verdict), style=style or None)
        console.print(table)
        by_location = {r.divergence.location: r.divergence for r in c.rows if r.divergence is not None}
        for location, n in notes.items():
            console.print(f"  [{n}] {safe(location)}: {safe(by_location[location].explanation)}")
        style = CONFORM_STYLE[c.status]
        console.print(f"  [{style}]{safe(c.status)}[/{style}]" + (f": {safe(c.reason)}" if c.reason else ""))
    summary = Table("scenario", "emulated", "real", "docker", "facts", "differences", "unexplained", "conformance",
                    title="conformance: emulated vs real")
    for c in comparisons:
        style = CONFORM_STYLE[c.status]
        summary.add_row(
            safe(c.scenario),
            safe(f"{c.emulated.backend}: {c.emulated.status}") if c.emulated else "-",
            safe(f"{c.real.backend}: {c.real.status}") if c.real else "-",
            safe(version_of(c.real) or "-"),
            str(sum(r.status != INFO for r in c.rows)) if c.status != NOT_COMPARED else "-",
            str(len(c.differences)) if c.status != NOT_COMPARED else "-",
            str(len(c.unexplained)) if c.status != NOT_COMPARED else "-",
            f"[{style}]{safe(c.status)}[/{style}]" + (f": {safe(c.reason)}" if c.status == NOT_COMPARED else ""),
        )
    console.print()
    console.print(summary)
    counts = {s: sum(c.status == s for c in comparisons) for s in (CONFORMS, EXPLAINED, DIFFERENT, NOT_COMPARED)}
    unexplained = sum(len(c.unexplained) for c in comparisons)
    console.print(f"{counts[CONFORMS]} conform, {counts[EXPLAINED]} differ only as explained, {counts[DIFFERENT]} "
                  f"differ ({unexplained} unexplained difference(s)), {counts[NOT_COMPARED]} not compared")


__all__ = ["add_arguments", "cmd_conform", "print_comparisons", "run_both", "run_side"]
