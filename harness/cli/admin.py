"""`harness doctor`, `prepare`, `capabilities` and `clean`: the backends themselves."""

from __future__ import annotations

import json

from rich.table import Table

from backends.base import backend_names, get_backend
from backends.select import BackendChooser
from harness.cli.common import backend_options, load_scenarios, new_console
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
    return 0


def cmd_capabilities(args) -> int:
    """What this kernel can create, as JSON (the VM backend asks its guest this way)."""
    backend = get_backend(args.backend)
    caps = backend.capabilities()
    print(json.dumps({f: {"available": c.available, "detail": c.detail} for f, c in sorted(caps.items())}))
    return 0


def cmd_prepare(args) -> int:
    """The slow one-time work of each named backend (kernel download, image build), done now."""
    options = backend_options(args)
    for name in args.backend or ["vm"]:
        print(get_backend(name, **options.get(name, {})).prepare())
    return 0


def cmd_clean(args) -> int:
    from backends.netns import clean_leftovers

    removed, kept = clean_leftovers()
    console = new_console()
    console.print(f"removed {len(removed)} leftover namespaces" + (f": {', '.join(removed)}" if removed else ""))
    if kept:
        console.print(f"kept {len(kept)} namespaces of runs still in progress: {', '.join(kept)}")
    return 0
