"""`harness run`: every selected scenario on its backend, the verdict table, JSON and JUnit."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from backends.base import BATCH
from backends.select import BackendChooser
from harness.cli.common import (
    DEFAULT_SCENARIOS,
    STATUS_STYLE,
    backend_options,
    load_scenarios,
    new_console,
    print_invalid,
    safe,
    selected_scenarios,
    unwritable,
)
from harness.cli.matrix import cmd_run_matrix
from harness.engine import Engine
from harness.errors import ScenarioError
from harness.keywords import keyword_filter
from harness.loader import find_scenarios
from harness.model import Scenario
from harness.results import ERROR, FAIL, PASS, SKIP, ScenarioResult, mark, write_json, write_junit


def _unwritable_outputs(args) -> str | None:
    return unwritable("json", args.json) or unwritable("junit", args.junit)


def claim(directory: str, path: str) -> bool:
    """Whether this run takes the scenario file `path`: the first run to make its directory in `directory`
    does (mkdir is atomic, also through the 9p share two guests see)."""
    try:
        os.mkdir(os.path.join(directory, os.path.basename(path)))
    except FileExistsError:
        return False
    return True


def claimed_scenarios(args, files: list, invalid: list) -> Iterator[Scenario]:
    """`--claim-dir`: each file, in the order given, that no other run has claimed, loaded only then (a TCG
    guest takes ~0.2 s to load and compile one: the other guest's share is not loaded here). Invalid ones are
    said and added to `invalid`."""
    keep = keyword_filter(args.k)
    for path in files:
        if not claim(args.claim_dir, str(path)):
            continue  # another run sharing the directory has it
        loaded, errors = load_scenarios([str(path)], args.profile)
        print_invalid(errors)
        invalid.extend(errors)
        yield from (s for s in loaded if keep(s.name))


def cmd_run(args) -> int:
    problem = _unwritable_outputs(args)
    if not problem and args.claim_dir and not os.path.isdir(args.claim_dir):
        problem = f"--claim-dir {args.claim_dir} is not a directory"
    if problem:
        new_console(True).print(f"error {problem}", markup=False)  # as main() prints a HarnessError
        return 2
    if getattr(args, "kernels", None):  # the conformance matrix: every scenario on every kernel
        return cmd_run_matrix(args)
    invalid: list = []
    if args.claim_dir:
        try:
            files = find_scenarios(args.paths or [str(DEFAULT_SCENARIOS)])
        except ScenarioError as exc:
            print_invalid([exc])
            return 2
        total = len(files)
        scenarios: Iterable[Scenario] = claimed_scenarios(args, files, invalid)
    else:
        scenarios = selected_scenarios(args)
        if scenarios is None:
            return 2
        total = len(scenarios)
    chooser = BackendChooser(args.backend, args.profile, options=backend_options(args))
    by_path: dict[str, ScenarioResult] = {}
    console = new_console()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=args.quiet) as progress:
        task = progress.add_task("scenarios", total=total)
        batches: dict[str, list[Scenario]] = {}
        ran = []
        for s in scenarios:
            ran.append(s)
            backend = chooser.choose(s)
            if backend.kind == BATCH:
                batches.setdefault(backend.name, []).append(s)  # one boot serves them all, below
                continue
            engine = Engine(backend, profile=args.profile, matrix=not args.no_matrix,
                            on_event=lambda name, phase: progress.update(task, description=safe(f"{name}: {phase}")))
            progress.update(task, description=safe(f"{s.name} [{backend.name}]"))
            by_path[s.path] = engine.run(s)
            progress.advance(task)
        for name, batch in batches.items():
            progress.update(task, description=safe(f"{len(batch)} scenarios in one {name} boot"))
            for result in chooser.backend(name).run_batch(batch, args.profile, matrix=not args.no_matrix):
                by_path[result.path] = result
                progress.advance(task)
    results = [by_path[s.path] for s in ran]
    # The files first: whatever printing meets, the records are already written.
    if args.json:
        write_json(results, args.json)
    if args.junit:
        write_junit(results, args.junit)
    _print_results(results, console, verbose=args.verbose)
    return 2 if invalid else 1 if any(r.status in (FAIL, ERROR) for r in results) else 0


def _print_results(results: list[ScenarioResult], console: Console, verbose: bool = False) -> None:
    table = Table("scenario", "backend", "status", "checks", "setup s", "checks s", "teardown s", "reason",
                  title="verdicts")
    for r in results:
        style = STATUS_STYLE[r.status]
        judged = [c for c in r.checks if c.judged]
        passed = sum(c.ok for c in judged)
        unjudged = len(r.checks) - len(judged)
        d = r.durations
        table.add_row(safe(r.scenario), safe(r.backend), f"[{style}]{safe(r.status)}[/{style}]",
                      f"{passed}/{len(judged)}" + (f" (+{unjudged} n/v)" if unjudged else ""),
                      f"{d.get('setup', 0):.2f}", f"{d.get('checks', 0):.2f}", f"{d.get('teardown', 0):.2f}",
                      safe(r.reason.splitlines()[0]) if r.reason else "")
    console.print(table)
    for r in results:
        if r.status in (FAIL, ERROR):
            console.print(f"\n[bold]{safe(r.scenario)}[/bold] ({safe(r.path)}) on {safe(r.backend)}, "
                          f"kernel {safe(r.kernel)}:")
            console.print(r.failure_report(), markup=False)
        elif verbose:
            for c in r.checks:
                console.print(f"  {mark(c)} {c.message}", markup=False)
    counts = {s: sum(r.status == s for r in results) for s in (PASS, FAIL, SKIP, ERROR)}
    console.print(f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped, {counts[ERROR]} errors")
