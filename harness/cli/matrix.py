"""`harness run --kernels 6.1,6.12,host` (and `harness prepare --kernels ...`): every scenario on every kernel.

`host` is this machine's kernel through the namespace backend; any other entry is a VM kernel, by name
(a version series such as `6.12`, a Debian package name or pattern) or by path, as `--kernel` takes it.
The host runs first (its isolation probes are timed; TCG guests keep the CPUs busy), then the VM kernels'
batches, spread over the CPUs: each kernel gets `CPUs // VM kernels` guests (at least one), and as many
kernels run at once as that leaves CPUs for, each as its own `harness run --backend vm --kernel K` (started
through `harness.proc`, so Ctrl-C or a kill stops every kernel's guests). Nothing is downloaded here: a kernel that is not prepared
is a column of skips naming the command that prepares it.

Results carry the kernel (each record's backend and kernel release); `--json` holds every kernel's records
(what `harness report` renders as the conformance matrix), `--junit` one test case per scenario and
kernel (class `scenario.<backend>-<kernel>`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

from backends.select import BackendChooser
from harness import proc
from harness.cli.common import (
    DEFAULT_SCENARIOS,
    STATUS_STYLE,
    load_scenarios,
    new_console,
    safe,
    selected_scenarios,
)
from harness.engine import Engine
from harness.errors import HarnessError
from harness.matrix import build_matrix
from harness.model import Scenario
from harness.results import ERROR, FAIL, ScenarioResult, write_json, write_junit
from harness.runid import child_env

PROJECT_ROOT = DEFAULT_SCENARIOS.parent  # the checkout whose harness the per-kernel runs import

__all__ = ["HOST", "cmd_prepare_kernels", "cmd_run_matrix", "doctor_kernels", "kernel_chooser", "parse_kernels", "vm_slots"]

HOST = "host"


def parse_kernels(text: str) -> list[str]:
    """`6.1,6.12,host` -> ["6.1", "6.12", "host"]; duplicates dropped, order kept."""
    out: list[str] = []
    for word in (w.strip() for w in text.split(",")):
        if word and word not in out:
            out.append(word)
    if not out:
        raise HarnessError("--kernels names no kernel (e.g. --kernels 6.1,6.12,host)")
    return out


def vm_slots(n_vm: int, cpus: int | None = None) -> tuple[int, int]:
    """(guests per VM kernel, VM kernels at once): one single-vCPU TCG guest per host CPU, never more."""
    cpus = cpus or int(os.environ.get("HARNESS_VM_PARALLEL", 0)) or os.cpu_count() or 1
    per_kernel = max(1, cpus // max(1, n_vm))
    return per_kernel, max(1, cpus // per_kernel)


def kernel_chooser(kernel: str, profile: str, parallel: int | None = None) -> BackendChooser:
    """The chooser of one matrix column: the namespace backend for `host`, else the VM booting `kernel`."""
    if kernel == HOST:
        return BackendChooser("netns", profile)
    options = {"kernel": kernel, **({"parallel": parallel} if parallel else {})}
    return BackendChooser("vm", profile, options={"vm": options})


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def _run_host(scenarios: list[Scenario], args) -> tuple[list[ScenarioResult], float]:
    """Every scenario on this machine's kernel, through the namespace backend (a skip names what it lacks)."""
    t0 = time.monotonic()
    backend = kernel_chooser(HOST, args.profile).backend("netns")
    engine = Engine(backend, profile=args.profile, matrix=not args.no_matrix)
    return [engine.run(s) for s in scenarios], time.monotonic() - t0


def _vm_job(kernel: str, scenarios: list[Scenario], args, parallel: int, out: Path) -> proc.Job:
    """One VM kernel's batch as its own `harness run --backend vm --kernel K` (its guests die with it: Ctrl-C
    or a kill stops every kernel's guests at once)."""
    argv = [sys.executable, "-m", "harness", "run", "--backend", "vm", "--kernel", kernel, "--profile", args.profile,
            "--json", str(out), "-q", *(["--no-matrix"] if args.no_matrix else []),
            *(str(Path(s.path).resolve()) for s in scenarios)]
    env = {**os.environ, **child_env(), "HARNESS_VM_PARALLEL": str(parallel),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    return proc.Job(argv, node=f"vm {kernel}", env=env)


def _vm_results(kernel: str, scenarios: list[Scenario], done: proc.CommandResult, out: Path) -> list[ScenarioResult]:
    """The child's records as this run's results (the paths as given here; an unprepared kernel's column
    still named by the kernel); an error per scenario when the child wrote nothing."""
    try:
        records = {r["path"]: ScenarioResult.from_dict(r) for r in json.loads(out.read_text())}
    except (OSError, ValueError, KeyError, TypeError):
        why = "timed out" if done.timed_out else f"exit {done.exit_code}"
        detail = (done.stderr.strip() or done.stdout.strip())[-3000:]
        return [ScenarioResult(s.name, s.path, "vm", kernel, ERROR, reason=f"the {kernel} run wrote no results "
                               f"({why}):\n{detail}", source=s.source) for s in scenarios]
    results = []
    for s in scenarios:
        r = records.get(str(Path(s.path).resolve()))
        if r is None:
            r = ScenarioResult(s.name, s.path, "vm", kernel, ERROR, reason=f"the {kernel} run returned no record",
                               source=s.source)
        results.append(replace(r, path=s.path, kernel=kernel if r.kernel in ("", "unknown") else r.kernel,
                               checks=[replace(c, location=c.location.replace(str(Path(s.path).resolve()), s.path))
                                       for c in r.checks]))
    return results


def _run_vms(vms: list[str], scenarios: list[Scenario], args) -> dict[str, tuple[list[ScenarioResult], float]]:
    """Every VM kernel's batch, `at_once` kernels at a time, each with its share of the CPUs."""
    per_kernel, at_once = vm_slots(len(vms))
    timeout = 600.0 + 60.0 * len(scenarios)  # the guest's own allowances are far below this
    out: dict[str, tuple[list[ScenarioResult], float]] = {}
    tmp = proc.temp_dir("matrix")  # owned by this run: `harness clean` removes it if the run is killed
    try:
        for i in range(0, len(vms), at_once):
            wave = vms[i:i + at_once]
            files = {k: Path(tmp) / f"{n + i}.json" for n, k in enumerate(wave)}
            done = proc.run_many([_vm_job(k, scenarios, args, per_kernel, files[k]) for k in wave], timeout=timeout)
            for k, result in zip(wave, done):
                out[k] = (_vm_results(k, scenarios, result, files[k]), result.end - result.start)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def cmd_run_matrix(args) -> int:
    if getattr(args, "backend", "auto") not in ("auto", None) or getattr(args, "kernel", None):
        new_console(True).print("--kernels chooses the backend per kernel (host: netns, others: vm); "
                                "leave out --backend and --kernel")
        return 2
    kernels = parse_kernels(args.kernels)
    scenarios = selected_scenarios(args)
    if scenarios is None:
        return 2
    vms = [k for k in kernels if k != HOST]
    per_kernel, at_once = vm_slots(len(vms))
    results: dict[str, list[ScenarioResult]] = {}
    walls: dict[str, float] = {}
    if HOST in kernels:
        _say(args.quiet, f"host: {len(scenarios)} scenarios on this machine's kernel (netns)")
        results[HOST], walls[HOST] = _run_host(scenarios, args)
    if vms:
        _say(args.quiet, f"vm: {len(scenarios)} scenarios on each of {', '.join(vms)}: {per_kernel} guest(s) per "
                         f"kernel, {min(at_once, len(vms))} kernel(s) at once")
        for k, (rs, wall) in _run_vms(vms, scenarios, args).items():
            results[k], walls[k] = rs, wall
    ordered = [r for k in kernels for r in results[k]]
    console = new_console()
    console.print(_matrix_table(build_matrix([r.to_dict() for r in ordered])))
    for k in kernels:
        rs = results[k]
        counts = {s: sum(r.status == s for r in rs) for s in STATUS_STYLE}
        release = next((r.kernel for r in rs if r.kernel), "?")
        console.print(f"{k} ({release}): " + ", ".join(f"{n} {s}" for s, n in counts.items()) +
                      f" in {walls[k]:.1f} s", markup=False)
    for r in ordered:
        if r.status in (FAIL, ERROR):
            console.print(f"\n[bold]{r.scenario}[/bold] ({r.path}) on {r.backend}, kernel {r.kernel}:")
            console.print(r.failure_report(), markup=False)
    if args.json:
        write_json(ordered, args.json)
    if args.junit:
        write_junit([replace(r, backend=f"{r.backend}-{k}") for k in kernels for r in results[k]], args.junit)
    return 1 if any(r.status in (FAIL, ERROR) for r in ordered) else 0


def _matrix_table(matrix):
    """The matrix for the terminal: a status per kernel, the first differing fact (`harness report` renders
    the same as Markdown and HTML, with every skip's reason)."""
    from rich.table import Table
    from rich.text import Text

    table = Table("scenario", *matrix.columns, "first differing fact", title="conformance matrix")
    for row in matrix.rows:
        cells = [Text(row.status(c) or "-", style=STATUS_STYLE.get(row.status(c) or "", "")) for c in matrix.columns]
        table.add_row(row.scenario, *cells, Text(row.difference))
    return table


def cmd_prepare_kernels(args) -> int:
    """`harness prepare --kernels 6.1,6.12,host`: fetch and probe each VM kernel (host needs nothing)."""
    from backends.base import get_backend

    for kernel in parse_kernels(args.kernels):
        if kernel == HOST:
            print("host: this machine's kernel, through the namespace backend: nothing to prepare")
            continue
        print(get_backend("vm", kernel=kernel).prepare())
    return 0


def doctor_kernels(kernels, paths, profile: str, console) -> None:
    """`harness doctor --kernel 6.1 --kernel 6.12`: each kernel's features, and per scenario whether it can
    run there or which feature it lacks. Cheap: the cached probe or the kernel's config, no download."""
    from rich.table import Table

    from harness.plan import FEATURES, cannot_run

    features = sorted(FEATURES)
    choosers = {k: kernel_chooser(k, profile) for k in kernels}
    table = Table("kernel", "release", "available", *features, title="what each kernel can create")
    for k, chooser in choosers.items():
        backend = chooser.backend("netns" if k == HOST else "vm")
        reason = backend.available()
        caps = backend.capabilities() if reason is None else {}
        cells = ["[green]yes[/green]" if caps.get(f) and caps[f].available else "[red]no[/red]" if caps else "-"
                 for f in features]
        table.add_row(k, backend.kernel_release(), "[green]yes[/green]" if reason is None else f"[red]no[/red]: {safe(reason)}",
                      *cells)
    console.print(table)
    scenarios, _ = load_scenarios(paths) if paths else ([], [])
    if not scenarios:
        return
    t2 = Table("scenario", *kernels, title="what each kernel can run")
    for s in scenarios:
        cells = []
        for chooser in choosers.values():
            reason = cannot_run(chooser.choose(s), chooser.features(s))
            cells.append("[green]runs[/green]" if reason is None else f"[yellow]skip[/yellow]: {safe(reason)}")
        t2.add_row(s.name, *cells)
    console.print(t2)
