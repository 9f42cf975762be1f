"""The `harness` command line: list, validate, plan, run, doctor, prepare, clean, bench, report.

`main(argv)` parses the command and dispatches; each `cmd_*` function returns the exit status. Which
backend runs a scenario is `backends.select.BackendChooser`'s answer; `-k` is `harness.keywords`.
Failures print in domain words; a traceback means a bug in the harness.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from backends.base import BATCH, backend_names, get_backend
from backends.select import BackendChooser
from harness import __version__
from harness.docker.describe import describe
from harness.docker.emulated import compile_scenario
from harness.docker.profiles import DEFAULT_PROFILE, PROFILES
from harness.engine import Engine
from harness.errors import BackendUnavailable, HarnessError, ScenarioError
from harness.keywords import keyword_filter
from harness.loader import find_scenarios, load_scenario
from harness.model import Scenario
from harness.plan import FEATURES, cannot_run, render
from harness.results import ERROR, FAIL, PASS, SKIP, ScenarioResult, write_json, write_junit

DEFAULT_SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
STATUS_STYLE = {PASS: "green", FAIL: "bold red", SKIP: "yellow", ERROR: "bold magenta"}


def _console(stderr: bool = False) -> Console:
    # CI logs are not terminals; give tables room there instead of rich's 80-column default.
    probe = Console(stderr=stderr)
    return Console(stderr=stderr, highlight=False, width=None if probe.is_terminal else 160)


def _backend_options(args) -> dict[str, dict]:
    """Constructor options per backend name, from the command line (the VM's kernel)."""
    vm = {k: v for k, v in (("kernel", args.kernel), ("modules", args.kernel_modules)) if v}
    return {"vm": vm} if vm else {}


def _load(paths: Sequence[str]) -> tuple[list[Scenario], list[ScenarioError]]:
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


def cmd_list(args) -> int:
    scenarios, errors = _load(args.paths)
    table = Table("scenario", "source", "kernel features needed", "commands", title=f"{len(scenarios)} scenarios")
    for s in scenarios:
        plan = compile_scenario(s, args.profile).plan
        table.add_row(s.name, s.source.split()[0], ", ".join(plan.required_features()), str(len(s.steps)))
    _console().print(table)
    for e in errors:
        _console(True).print(f"[red]invalid[/red] {e}")
    return 1 if errors else 0


def cmd_validate(args) -> int:
    out = _console()
    try:
        files = find_scenarios(args.paths)
    except ScenarioError as exc:
        _console(True).print(f"[red]error[/red] {exc}")
        return 2
    if not files:
        _console(True).print(f"no scenario files found in {', '.join(args.paths)}")
        return 2
    scenarios, errors = _load(args.paths)
    for s in scenarios:
        if not any(str(e.file) == s.path for e in errors):
            out.print(f"[green]valid[/green]   {s.path} ({s.name})")
    for e in errors:
        out.print(f"[red]invalid[/red] {e}")
    return 1 if errors else 0


def cmd_plan(args) -> int:
    scenario = load_scenario(args.file)
    compiled = compile_scenario(scenario, args.profile)
    plan = compiled.plan
    if args.json:
        doc = {"scenario": scenario.name, "profile": plan.profile, "required_features": list(plan.required_features()),
               **describe(compiled.emulator, plan.steps)}
        print(json.dumps(doc, indent=2))
        return 0
    print(f"# scenario {scenario.name} ({scenario.source.split()[0]}), profile {plan.profile}")
    print("# the emulated world: switch `up`, router `rt`, Docker host `host`")
    for op in plan.world:
        print("\n".join(render(op)))
    for compiled in plan.steps:
        print(f"\n# [{compiled.step.index}] {compiled.step.text}")
        if compiled.error:
            print(f"#   Docker: Error response from daemon: {compiled.error}")
        for op in compiled.ops:
            print("\n".join(render(op)))
        if compiled.check:
            print(f"ip netns exec {compiled.check.src} ping -c 1 {compiled.check.dst}   # {compiled.check.command}")
        for op in compiled.cleanup:
            print("\n".join(render(op)))
    return 0


def cmd_run(args) -> int:
    scenarios, errors = _load(args.paths or [str(DEFAULT_SCENARIOS)])
    for e in errors:
        _console(True).print(f"[red]invalid[/red] {e}")
    if errors:
        return 2
    keep = keyword_filter(args.k)
    scenarios = [s for s in scenarios if keep(s.name)]
    if not scenarios:
        _console(True).print("no scenario selected")
        return 2
    chooser = BackendChooser(args.backend, args.profile, options=_backend_options(args))
    by_path: dict[str, ScenarioResult] = {}
    console = _console()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=args.quiet) as progress:
        task = progress.add_task("scenarios", total=len(scenarios))
        batches: dict[str, list[Scenario]] = {}
        for s in scenarios:
            backend = chooser.choose(s)
            if backend.kind == BATCH:
                batches.setdefault(backend.name, []).append(s)  # one boot serves them all, below
                continue
            engine = Engine(backend, profile=args.profile, matrix=not args.no_matrix,
                            on_event=lambda name, phase: progress.update(task, description=f"{name}: {phase}"))
            progress.update(task, description=f"{s.name} [{backend.name}]")
            by_path[s.path] = engine.run(s)
            progress.advance(task)
        for name, batch in batches.items():
            progress.update(task, description=f"{len(batch)} scenarios in one {name} boot")
            for result in chooser.backend(name).run_batch(batch, args.profile, matrix=not args.no_matrix):
                by_path[result.path] = result
                progress.advance(task)
    results = [by_path[s.path] for s in scenarios]
    _print_results(results, console, verbose=args.verbose)
    if args.json:
        write_json(results, args.json)
    if args.junit:
        write_junit(results, args.junit)
    return 1 if any(r.status in (FAIL, ERROR) for r in results) else 0


def _print_results(results: list[ScenarioResult], console: Console, verbose: bool = False) -> None:
    table = Table("scenario", "backend", "status", "checks", "setup s", "checks s", "teardown s", "reason",
                  title="verdicts")
    for r in results:
        style = STATUS_STYLE[r.status]
        passed = sum(c.ok for c in r.checks)
        d = r.durations
        table.add_row(r.scenario, r.backend, f"[{style}]{r.status}[/{style}]", f"{passed}/{len(r.checks)}",
                      f"{d.get('setup', 0):.2f}", f"{d.get('checks', 0):.2f}", f"{d.get('teardown', 0):.2f}",
                      r.reason.splitlines()[0] if r.reason else "")
    console.print(table)
    for r in results:
        if r.status in (FAIL, ERROR):
            console.print(f"\n[bold]{r.scenario}[/bold] ({r.path}) on {r.backend}, kernel {r.kernel}:")
            console.print(r.failure_report(), markup=False)
        elif verbose:
            for c in r.checks:
                console.print(f"  {'ok  ' if c.ok else 'FAIL'} {c.message}", markup=False)
    counts = {s: sum(r.status == s for r in results) for s in (PASS, FAIL, SKIP, ERROR)}
    console.print(f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped, {counts[ERROR]} errors")


def cmd_doctor(args) -> int:
    console = _console()
    features = sorted(FEATURES)
    table = Table("backend", "available", *features, title="what each backend can run here")
    for name in backend_names():
        try:
            backend = get_backend(name)
        except (BackendUnavailable, ImportError) as exc:
            table.add_row(name, f"[red]no[/red]: {exc}", *["" for _ in features])
            continue
        reason = backend.available()
        caps = backend.capabilities() if reason is None else {}
        cells = []
        for f in features:
            cap = caps.get(f)
            cells.append("[green]yes[/green]" if cap and cap.available else "[red]no[/red]" if cap else "-")
        table.add_row(name, "[green]yes[/green]" if reason is None else f"[red]no[/red]: {reason}", *cells)
    console.print(table)
    if args.paths:
        scenarios, _ = _load(args.paths)
        chooser = BackendChooser("auto", args.profile)
        t2 = Table("scenario", "auto picks", "why", title="backend per scenario (auto)")
        for s in scenarios:
            backend, why = chooser.explain(s)
            runnable = cannot_run(backend, chooser.features(s)) is None
            t2.add_row(s.name, backend.name if runnable else "skip", why)
        console.print(t2)
    return 0


def cmd_capabilities(args) -> int:
    """What this kernel can create, as JSON (the VM backend asks its guest this way)."""
    backend = get_backend(args.backend)
    caps = backend.capabilities()
    print(json.dumps({f: {"available": c.available, "detail": c.detail} for f, c in sorted(caps.items())}))
    return 0


def cmd_prepare(args) -> int:
    """The slow one-time work of each named backend (kernel download, image build), done now."""
    options = _backend_options(args)
    for name in args.backend or ["vm"]:
        print(get_backend(name, **options.get(name, {})).prepare())
    return 0


def cmd_clean(args) -> int:
    from backends.netns import clean_leftovers

    removed, kept = clean_leftovers()
    console = _console()
    console.print(f"removed {len(removed)} leftover namespaces" + (f": {', '.join(removed)}" if removed else ""))
    if kept:
        console.print(f"kept {len(kept)} namespaces of runs still in progress: {', '.join(kept)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="Docker macvlan/ipvlan documentation, executed and judged.")
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_profile(p):
        p.add_argument("--profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES),
                       help="Docker behaviour to emulate (default %(default)s)")
        return p

    p = with_profile(sub.add_parser("list", help="list scenarios with their source and needed kernel features"))
    p.add_argument("paths", nargs="*", default=[str(DEFAULT_SCENARIOS)])
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("validate", help="validate scenario files (exit 0 valid, 1 invalid, 2 nothing found)")
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=cmd_validate)

    p = with_profile(sub.add_parser("plan", help="show what Docker would do, as `ip` commands or --json"))
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print networks, containers and errors as JSON")
    p.set_defaults(func=cmd_plan)

    p = with_profile(sub.add_parser("run", help="run scenarios on a backend and judge them"))
    p.add_argument("paths", nargs="*")
    p.add_argument("--backend", default="auto", help=f"auto (default) or one of: {', '.join(backend_names())}")
    p.add_argument("--json", metavar="FILE", help="write one JSON record per scenario")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML")
    p.add_argument("-k", metavar="EXPR", help="select scenarios by name (pytest-like keyword expression)")
    p.add_argument("--no-matrix", action="store_true", help="judge only the explicit expectations")
    p.add_argument("--kernel", metavar="PATH", help="vm backend: boot this kernel (bzImage or vmlinux) instead of Debian's")
    p.add_argument("--kernel-modules", metavar="DIR", help="vm backend: the modules directory of --kernel")
    p.add_argument("-v", "--verbose", action="store_true", help="print every check")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=cmd_run)

    p = with_profile(sub.add_parser("doctor", help="what each backend can run here, and which backend auto picks"))
    p.add_argument("paths", nargs="*", default=[str(DEFAULT_SCENARIOS)])
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("capabilities", help="print what a backend's kernel can create, as JSON")
    p.add_argument("--backend", default="netns")
    p.add_argument("--json", action="store_true", help="JSON output (the only format)")
    p.set_defaults(func=cmd_capabilities)

    p = sub.add_parser("prepare", help="download and build what a backend needs (the VM's kernel and image)")
    p.add_argument("--backend", action="append", choices=backend_names(), default=None,
                   help="a backend to prepare (repeatable; default vm)")
    p.add_argument("--kernel", metavar="PATH", help="vm backend: prepare this kernel (bzImage or vmlinux)")
    p.add_argument("--kernel-modules", metavar="DIR", help="vm backend: the modules directory of --kernel")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("clean", help="remove namespaces a killed run left behind (by the harness prefix only)")
    p.set_defaults(func=cmd_clean)

    for name, module, text in (("bench", "harness.bench", "measure macvlan against a Linux bridge with iperf3"),
                               ("report", "harness.bench.report", "compare bench results with a baseline")):
        p = sub.add_parser(name, help=text)
        try:
            mod = __import__(module, fromlist=["add_arguments"])
            mod.add_arguments(p)
            p.set_defaults(func=mod.main)
        except ImportError as exc:
            p.set_defaults(func=lambda args, exc=exc: _unavailable(exc))
    return parser


def _unavailable(exc: Exception) -> int:
    _console(True).print(f"[red]unavailable[/red]: {exc}")
    return 2


_MAIN_PID = os.getpid()


def _terminate(signum, frame):
    if os.getpid() != _MAIN_PID:
        # A forked helper (pyroute2 forks one to open a socket in a namespace) inherits this handler;
        # it must die quietly, never unwind the parent's stacks and delete the parent's links.
        os._exit(128 + signum)
    # SIGTERM unwinds like Ctrl-C, so every ExitStack undo runs and nothing is left behind.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    signal.signal(signal.SIGTERM, _terminate)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ScenarioError as exc:
        _console(True).print(f"[red]error[/red] {exc}", markup=True)
        return 2
    except HarnessError as exc:
        _console(True).print(f"[red]error[/red] {exc}")
        return 2
    except KeyboardInterrupt:
        _console(True).print("interrupted; everything created was removed")
        return 130


if __name__ == "__main__":
    sys.exit(main())
