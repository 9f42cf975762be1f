"""`harness doctor`, `prepare`, `capabilities` and `clean`: the backends themselves."""

from __future__ import annotations

import json

from rich.table import Table

from backends.base import backend_names, get_backend
from backends.select import BackendChooser
from harness.cli.common import backend_options, load_scenarios, new_console
from harness.cli.matrix import cmd_prepare_kernels, doctor_kernels
from harness.errors import BackendUnavailable
from harness.plan import FEATURES, cannot_run


def cmd_doctor(args) -> int:
    console = new_console()
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
        scenarios, _ = load_scenarios(args.paths)
        chooser = BackendChooser("auto", args.profile)
        t2 = Table("scenario", "auto picks", "why", title="backend per scenario (auto)")
        for s in scenarios:
            backend, why = chooser.explain(s)
            runnable = cannot_run(backend, chooser.features(s)) is None
            t2.add_row(s.name, backend.name if runnable else "skip", why)
        console.print(t2)
    if getattr(args, "kernel", None):  # what each named VM kernel can run (harness.cli.matrix)
        doctor_kernels(args.kernel, args.paths, args.profile, console)
    return 0


def cmd_capabilities(args) -> int:
    """What this kernel can create, as JSON (the VM backend asks its guest this way)."""
    backend = get_backend(args.backend)
    caps = backend.capabilities()
    print(json.dumps({f: {"available": c.available, "detail": c.detail} for f, c in sorted(caps.items())}))
    return 0


def cmd_prepare(args) -> int:
    """The slow one-time work of each named backend (kernel download, image build), done now."""
    if getattr(args, "kernels", None):  # every kernel of a matrix (harness.cli.matrix)
        return cmd_prepare_kernels(args)
    options = backend_options(args)
    for name in args.backend or ["vm"]:
        print(get_backend(name, **options.get(name, {})).prepare())
    return 0


def cmd_clean(args) -> int:
    """What killed runs left: real-engine daemons (processes, mounts, data roots), processes in their
    namespaces, the namespaces, their temporary directories.
    Nothing of a run still in progress is touched (its owner record or directory name says it lives)."""
    from backends.docker.backend import docker_base_dir
    from backends.docker.daemon import clean_leftovers as clean_docker_leftovers
    from backends.netns import clean_leftovers
    from harness import proc

    # A killed real-engine run's daemon first (its processes, mounts and data root), then the namespaces.
    docker_removed, docker_kept = clean_docker_leftovers(docker_base_dir())
    ended: list[str] = []
    removed, kept = clean_leftovers(ended=ended)
    dirs_removed, dirs_kept = proc.clean_temp_dirs()
    console = new_console()
    console.print(f"removed {len(docker_removed)} leftover Docker daemon directories"
                  + (f": {', '.join(docker_removed)}" if docker_removed else ""), markup=False)
    if docker_kept:
        console.print(f"kept {len(docker_kept)} Docker daemons of runs still in progress: {', '.join(docker_kept)}",
                      markup=False)
    if ended:
        console.print(f"ended {len(ended)} process{'es' if len(ended) != 1 else ''} left running in leftover "
                      f"namespaces: {', '.join(ended)}", markup=False)
    console.print(f"removed {len(removed)} leftover namespaces" + (f": {', '.join(removed)}" if removed else ""),
                  markup=False)
    if kept:
        console.print(f"kept {len(kept)} namespaces of runs still in progress: {', '.join(kept)}", markup=False)
    console.print(f"removed {len(dirs_removed)} temporary directories of dead runs"
                  + (f": {', '.join(dirs_removed)}" if dirs_removed else ""), markup=False)
    if dirs_kept:
        console.print(f"kept {len(dirs_kept)} temporary directories of runs still in progress", markup=False)
    return 0
