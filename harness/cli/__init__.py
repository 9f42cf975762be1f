"""The `harness` command line: list, validate, plan, run, conform, doctor, prepare, clean, bench, report.

`main(argv)` parses the command and dispatches; each `cmd_*` function returns the exit status. Which
backend runs a scenario is `backends.select.BackendChooser`'s answer; `-k` is `harness.keywords`.
Failures print in domain words; a traceback means a bug in the harness.

The commands live by concern: `scenarios` (list, validate, plan), `run`, `conform`, `admin` (doctor, prepare,
capabilities, clean); `common` holds what they share. bench and report are `harness.bench`'s.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from backends.base import backend_names
from harness import __version__, proc
from harness.cli.admin import cmd_capabilities, cmd_clean, cmd_doctor, cmd_prepare
from harness.cli.common import DEFAULT_SCENARIOS, new_console
from harness.cli.conform import add_arguments as add_conform_arguments
from harness.cli.conform import cmd_conform
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
    p.add_argument("--kernel", metavar="KERNEL", help="vm backend: boot this kernel: a file (bzImage or vmlinux), or "
                   "Debian's by name (6.12, linux-image-6.12.*+deb12-amd64), prepared first")
    p.add_argument("--kernel-modules", metavar="DIR", help="vm backend: the modules directory of --kernel")
    p.add_argument("--kernels", metavar="LIST", help="the conformance matrix: every scenario on every kernel of LIST "
                   "(e.g. 6.1,6.12,host; host = this machine's kernel through netns, the others VM kernels)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every check")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.add_argument("--claim-dir", metavar="DIR", help="share the work with other runs given the same DIR: run, in the "
                   "order given, only the scenarios no other run has claimed (the VM backend's guests do this)")
    p.set_defaults(func=cmd_run)

    p = with_profile(sub.add_parser("conform", help="run scenarios on the emulation and on a real Docker engine "
                                    "and compare every fact (exit 1 on an unexplained difference)"))
    add_conform_arguments(p)
    p.set_defaults(func=cmd_conform)

    p = with_profile(sub.add_parser("doctor", help="what each backend can run here, and which backend auto picks"))
    p.add_argument("paths", nargs="*", default=[str(DEFAULT_SCENARIOS)])
    p.add_argument("--kernel", action="append", metavar="KERNEL",
                   help="also show what this VM kernel can run (6.1, 6.12, a package name or a path; repeatable)")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("capabilities", help="print what a backend's kernel can create, as JSON")
    p.add_argument("--backend", default="netns")
    p.add_argument("--json", action="store_true", help="JSON output (the only format)")
    p.set_defaults(func=cmd_capabilities)

    p = sub.add_parser("prepare", help="download and build what a backend needs (the VM's kernel and image)")
    p.add_argument("--backend", action="append", choices=backend_names(), default=None,
                   help="a backend to prepare (repeatable; default vm)")
    p.add_argument("--kernel", metavar="KERNEL", help="vm backend: prepare this kernel: a file (bzImage or vmlinux), "
                   "or Debian's by name (6.12, linux-image-6.12.*+deb12-amd64), fetched into the cache")
    p.add_argument("--kernel-modules", metavar="DIR", help="vm backend: the modules directory of --kernel")
    p.add_argument("--kernels", metavar="LIST", help="prepare every VM kernel of LIST (e.g. 6.1,6.12,host; host needs nothing)")
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


def _unraisable(unraisable) -> None:
    """pyroute2 keeps an asyncio event loop per netlink socket. When a signal unwinds a run, a loop may be
    finalized after its selector's descriptor was closed, and asyncio's `__del__` then raises
    "Invalid file descriptor: -1" into the void at exit: nothing is left open, so that one is not printed."""
    where = getattr(unraisable.object, "__qualname__", "")
    if isinstance(unraisable.exc_value, ValueError) and where == "BaseEventLoop.__del__":
        return
    sys.__unraisablehook__(unraisable)


def main(argv: Sequence[str] | None = None) -> int:
    sys.unraisablehook = _unraisable
    args = build_parser().parse_args(argv)
    # SIGINT and SIGTERM unwind the run so every undo runs; a run that saw one exits 128+N, even if its
    # exception was lost on the way (see harness.proc). The command line itself (argv None) leaves
    # SIG_DFL behind, so a signal after the run ends kills it; a caller in-process gets its handlers back.
    previous = proc.handle_signals()
    status = 2
    try:
        status = _dispatch(args)
    finally:
        status = proc.finish_signals(status, previous if argv is not None else dict.fromkeys(previous, signal.SIG_DFL))
    return status


def _dispatch(args) -> int:
    try:
        status = args.func(args)
    except ScenarioError as exc:
        new_console(True).print(f"[red]error[/red] {exc}", markup=True)
        return 2
    except HarnessError as exc:
        new_console(True).print(f"[red]error[/red] {exc}")
        return 2
    except KeyboardInterrupt:
        new_console(True).print("interrupted; everything created was removed")
        return 130
    except SystemExit:
        received = proc.signal_received()
        if received is None:  # sys.exit() of a command: not ours to change
            raise
        new_console(True).print(f"interrupted by {signal.Signals(received).name}; everything created was removed")
        return 128 + received
    received = proc.signal_received()
    if received is not None:  # its exception was lost on the way (see harness.proc): never a success
        new_console(True).print(f"interrupted by {signal.Signals(received).name}; the run's result does not count")
    return status


if __name__ == "__main__":
    sys.exit(main())
