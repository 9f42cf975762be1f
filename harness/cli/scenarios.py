"""`harness list`, `validate` and `plan`: scenario files read, checked and compiled; nothing is run."""

from __future__ import annotations

import json

from rich.table import Table

from harness.cli.common import load_scenarios, new_console
from harness.docker.describe import describe
from harness.docker.emulated import compile_scenario
from harness.errors import ScenarioError
from harness.loader import find_scenarios, load_scenario
from harness.plan import render


def cmd_list(args) -> int:
    scenarios, errors = load_scenarios(args.paths)
    table = Table("scenario", "source", "kernel features needed", "commands", title=f"{len(scenarios)} scenarios")
    for s in scenarios:
        plan = compile_scenario(s, args.profile).plan
        table.add_row(s.name, s.source.split()[0], ", ".join(plan.required_features()), str(len(s.steps)))
    new_console().print(table)
    for e in errors:
        new_console(True).print(f"[red]invalid[/red] {e}")
    return 1 if errors else 0


def cmd_validate(args) -> int:
    out = new_console()
    try:
        files = find_scenarios(args.paths)
    except ScenarioError as exc:
        new_console(True).print(f"[red]error[/red] {exc}")
        return 2
    if not files:
        new_console(True).print(f"no scenario files found in {', '.join(args.paths)}")
        return 2
    scenarios, errors = load_scenarios(args.paths)
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
