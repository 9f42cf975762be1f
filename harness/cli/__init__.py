"""The `harness` command line: list, validate, plan, run, doctor, prepare, clean, bench, report.

`main(argv)` parses the command and dispatches; each `cmd_*` function returns the exit status. Which
backend runs a scenario is `backends.select.BackendChooser`'s answer; `-k` is `harness.keywords`.
Failures print in domain words; a traceback means a bug in the harness.

The commands live by concern: `scenarios` (list, validate, plan), `run`, `admin` (doctor, prepare,
capabilities, clean); `common` holds what they share. bench and report are `harness.bench`'s.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from backends.base import backend_names
from harness import __version__
from harness.cli.admin import cmd_capabilities, cmd_clean, cmd_doctor, cmd_prepare
from harness.cli.common import DEFAULT_SCENARIOS, new_console
from harness.cli.run import cmd_run
from harness.cli.scenarios import cmd_list, cmd_plan, cmd_validate
from harness.docker.profiles import DEFAULT_PROFILE, PROFILES
from harness.errors import HarnessError, ScenarioError


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
    new_console(True).print(f"[red]unavailable[/red]: {exc}")
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
        new_console(True).print(f"[red]error[/red] {exc}", markup=True)
        return 2
    except HarnessError as exc:
        new_console(True).print(f"[red]error[/red] {exc}")
        return 2
    except KeyboardInterrupt:
        new_console(True).print("interrupted; everything created was removed")
        return 130


if __name__ == "__main__":
    sys.exit(main())
