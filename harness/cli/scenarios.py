"""`harness list`, `validate` and `plan`: scenario files read, checked and compiled; nothing is run."""

from __future__ import annotations

import json

from rich.table import Table

from harness.cli.common import docker_errors, load_scenarios, new_console, print_invalid, safe
from harness.docker.describe import describe
from harness.docker.emulated import compile_scenario
from harness.docker.profiles import get_profile, knob_rows, version_text
from harness.errors import ScenarioError
from harness.loader import find_scenarios, load_scenario
from harness.plan import quote, render


def cmd_list(args) -> int:
    scenarios, errors = load_scenarios(args.paths, args.profile)
    table = Table("scenario", "source", "kernel features needed", "commands", title=f"{len(scenarios)} scenarios")
    for s in scenarios:
        plan = compile_scenario(s, args.profile).plan
        table.add_row(safe(s.name), safe(s.source.split()[0]), ", ".join(plan.required_features()), str(len(s.steps)))
    new_console().print(table)
    print_invalid(errors)
    return 1 if errors else 0


def cmd_validate(args) -> int:
    out = new_console()
    try:
        files = find_scenarios(args.paths)
    except ScenarioError as exc:
        new_console(True).print(f"[red]error[/red] {safe(exc)}", soft_wrap=True)
        return 2
    if not files:
        new_console(True).print(f"no scenario files found in {safe(', '.join(args.paths))}")
        return 2
    scenarios, errors = load_scenarios(args.paths)
    for s in scenarios:
        if not any(str(e.file) == s.path for e in errors):
            out.print(f"[green]valid[/green]   {safe(s.path)} ({safe(s.name)})")
    print_invalid(errors, out)
    return 1 if errors else 0


def cmd_plan(args) -> int:
    """The plan as `ip` commands (names shell-quoted, untrusted text only in comments) or JSON.

    Exits 2 when the file is invalid, 1 when Docker would refuse a command the scenario does not expect
    (the plan is still printed: it shows where).
    """
    try:
        scenario = load_scenario(args.file)
    except ScenarioError as exc:
        new_console(True).print(f"[red]error[/red] {safe(exc)}", soft_wrap=True)
        return 2
    compiled = compile_scenario(scenario, args.profile)
    plan = compiled.plan
    profile = get_profile(plan.profile)
    if args.json:
        doc = {"scenario": scenario.name, "profile": plan.profile, "required_features": list(plan.required_features()),
               "profile_version": version_text(profile.version),
               "profile_knobs": [{"knob": k, "value": v, "since": since, "source": src}
                                 for k, v, since, src in knob_rows(profile)],
               **describe(compiled.emulator, plan.steps)}
        print(json.dumps(doc, indent=2))
    else:
        print(_comment(f"scenario {scenario.name} ({scenario.source.split()[0]}), profile {plan.profile}"))
        print(_comment(f"profile {profile.name}: Docker {version_text(profile.version)}; its knobs "
                       "(value, the Docker version that introduced it):"))
        for knob, value, since, _ in knob_rows(profile):
            print(_comment(f"  {knob} = {value} (since {since})"))
        for note in plan.notes:
            print(_comment(f"not deterministic in Docker: {note}"))
        hosts = [h.name for h in scenario.hosts]
        if len(hosts) > 1:
            print(f"# the emulated world: switch `up`, router `rt`, Docker hosts {', '.join(f'`{h}`' for h in hosts)}")
        else:
            print("# the emulated world: switch `up`, router `rt`, Docker host `host`")
        for op in plan.world:
            print("\n".join(render(op)))
        compiled_outputs = getattr(compiled.emulator, "outputs", {})
        for compiled in plan.steps:
            on = f" (on {compiled.step.host})" if len(hosts) > 1 else ""
            print("\n" + _comment(f"[{compiled.step.index}]{on} {compiled.step.text}"))
            if compiled.error:
                print(_comment(f"  Docker: Error response from daemon: {compiled.error}"))
            output = compiled_outputs.get(compiled.step.index)
            if output:
                print(_comment("  Docker prints:\n" + output))
            for op in compiled.ops:
                print("\n".join(render(op)))
            if compiled.check:
                check = compiled.check
                print(f"ip netns exec {quote(check.src)} ping -c 1 {quote(check.dst)}   "
                      + _comment(check.command))
            for op in compiled.cleanup:
                print("\n".join(render(op)))
    refused = docker_errors(scenario, args.profile)
    print_invalid(refused)
    return 1 if refused else 0


def _comment(text: str) -> str:
    """Untrusted text as shell comment lines: every line starts with `#`, control characters escaped."""
    lines = str(text).splitlines() or [""]
    return "\n".join("# " + "".join(c if c.isprintable() else repr(c)[1:-1] for c in line) for line in lines)
