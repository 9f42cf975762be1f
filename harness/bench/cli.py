"""The `harness bench` command: `add_arguments(parser)` and `main(args)`.

`params_from_args` turns the options into `BenchParams` (refusing unknown topologies and tests with the
valid ones); `main` runs a `BenchRunner` on the chosen backend, writes the results document and prints
`summary_table`. With `--backend vm` the whole bench runs inside one guest on Debian's kernel (which has
ipvlan), with the namespace backend there, and its results document comes back through the share.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from harness.bench.document import validate_document, write_document
from harness.bench.params import ALL_TESTS, QUICK, BenchParams, BenchUnavailable
from harness.bench.runner import BenchRunner, RichProgress
from harness.bench.stats import MIN_INTERVAL_N
from harness.bench.topologies import TOPOLOGIES
from harness.errors import BackendUnavailable, HarnessError


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = BenchParams()
    parser.description = ("Measure macvlan against a Linux bridge and a bare veth pair with iperf3, in rounds that "
                          "interleave the topologies, until the macvlan/bridge ratio is known to the target precision.")
    parser.add_argument("--json", metavar="FILE", help="write the results here (default results/bench-<time>.json)")
    parser.add_argument("--save-baseline", metavar="PATH", help="also save the results as a baseline (e.g. bench/baselines/NAME.json)")
    parser.add_argument("--quick", action="store_true",
                        help="about 25 s, for CI: one short full round, then macvlan/bridge pairs (6-8: an interval "
                             "for that ratio only; every other metric an estimate without one)")
    parser.add_argument("--rounds", type=int, metavar="N", help="exactly N quiet rounds (noisy ones replaced, up to 5) instead of the adaptive stop")
    parser.add_argument("--duration", type=int, metavar="S", help=f"seconds per TCP test after the omitted ones (default {d.duration})")
    parser.add_argument("--omit", type=int, metavar="S", help=f"leading seconds iperf3 omits (-O; default {d.omit})")
    parser.add_argument("--streams", type=int, metavar="N", help=f"parallel TCP streams (-P; default {d.streams})")
    parser.add_argument("--mtu", type=int, metavar="N", help=f"MTU of every link of every topology (default {d.mtu})")
    parser.add_argument("--udp-rate", metavar="RATE", help=f"UDP sending rate, iperf3 -b syntax (default {d.udp_rate})")
    parser.add_argument("--udp-duration", type=int, metavar="S", help="seconds per UDP test (default: --udp-blocks)")
    parser.add_argument("--udp-blocks", type=int, metavar="N",
                        help=f"datagrams per UDP test (iperf3 -k; default {d.udp_blocks}, ~0.5 s at 1 Gbit/s)")
    parser.add_argument("--rr-count", type=int, metavar="N", help=f"timed request/response transactions per test (default {d.rr_count})")
    parser.add_argument("--no-rr-pin", action="store_true",
                        help="do not put the request/response client and server on one CPU (then wake-ups dominate)")
    parser.add_argument("--budget", type=float, metavar="SECONDS",
                        help=f"time budget of an adaptive run, set-up included (default {d.budget:.0f})")
    parser.add_argument("--target", type=float, metavar="PCT",
                        help=f"stop once the macvlan/bridge 95%% CI half-width is at most PCT %% (default {100 * d.target:.0f})")
    parser.add_argument("--min-rounds", type=int, metavar="N", help=f"rounds before the adaptive stop may stop (default {d.min_rounds})")
    parser.add_argument("--full-rounds", type=int, metavar="N",
                        help=f"adaptive: rounds of every test on every topology, spread over the budget; the others are "
                             f"TCP pairs of macvlan and bridge (default {d.full_rounds})")
    parser.add_argument("--no-focus", action="store_true", help="adaptive: run every test on every topology in every round")
    parser.add_argument("--tests", metavar="LIST", help=f"comma-separated tests from {','.join(ALL_TESTS)} (default all)")
    parser.add_argument("--topologies", metavar="LIST", help=f"comma-separated, from {','.join(TOPOLOGIES)} (default all)")
    parser.add_argument("--backend", default="netns", help="backend to build the topologies with (default netns)")
    parser.add_argument("--kernels", metavar="LIST",
                        help="the bench on each kernel of LIST in turn (e.g. 6.1,6.12,host; host: netns here, the "
                             "others in a VM): one results file per kernel (--json FILE -> FILE-<kernel>.json), "
                             "and the ratios side by side")
    parser.add_argument("--seed", type=int, help=f"bootstrap RNG seed (default {d.seed})")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress display")


VM_NOTE = ("measured inside a qemu TCG guest (no KVM): every CPU instruction is emulated, so absolute "
           "figures say nothing about the kernel's speed; compare ratios only with runs of the same kind")
# Options that concern this machine's run, not the bench inside the guest (which gets its own).
_LOCAL_ONLY = ("json", "save_baseline", "backend", "quiet", "kernels")


def _forwarded(args: argparse.Namespace) -> list[str]:
    """The bench options the user gave, as command-line words for the bench inside the guest.

    Every bench option's flag is its destination with dashes (`--udp-rate` for `udp_rate`), and every
    option without a value is a switch whose given value is True."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    words: list[str] = []
    for dest, default in vars(parser.parse_args([])).items():
        value = getattr(args, dest, default)
        if dest in _LOCAL_ONLY or value == default or value is None:
            continue
        flag = "--" + dest.replace("_", "-")
        words += [flag] if value is True else [flag, str(value)]
    return words


def _main_in_vm(args: argparse.Namespace, err, kernel: str | None = None) -> int:
    """`--backend vm`: the whole bench runs inside one guest on Debian's kernel (which has ipvlan), or on
    `kernel` (`--kernels`), with the namespace backend there, and its results document comes back
    through the share."""
    from backends.base import get_backend

    budget = getattr(args, "budget", None) or BenchParams().budget or 120
    try:
        backend = get_backend("vm", **({"kernel": kernel} if kernel else {}))
        guest, files = backend.run_tool(["bench", "--backend", "netns", "--json", "/out/bench.json", "-q",
                                         *_forwarded(args)], ["bench.json"], timeout=budget * 3 + 180,
                                        # numpy for the statistics; the larger image needs more guest memory
                                        extra_distributions=("numpy",), memory_mb=1024)
    except HarnessError as exc:  # BackendUnavailable, or the VM failed to boot or run
        err.print(f"bench unavailable: {exc}", markup=False)
        return 2
    if "bench.json" not in files:
        err.print(f"bench failed in the VM (exit {guest.exit_code}):\n{guest.stderr[-3000:]}", markup=False)
        return 1
    doc = json.loads(files["bench.json"])
    doc["backend"] = "vm"
    doc["stop"]["reason"] = f"{doc['stop']['reason']}; {VM_NOTE}"
    validate_document(doc)
    path = args.json or f"results/bench-vm-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out = write_document(doc, path)
    if getattr(args, "save_baseline", None):
        write_document(doc, args.save_baseline)
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    console.print(summary_table(doc))
    console.print(summary_caption(doc), markup=False)
    for t in doc["topologies"]:
        if t["status"] != "ran":
            console.print(f"{t['name']}: {t['status']} — {t['reason']}", markup=False)
    console.print(f"kernel {doc['machine'].get('kernel', '?')} in the VM; {VM_NOTE}", markup=False)
    console.print(f"results: {out}", markup=False)
    return 0 if guest.exit_code == 0 else 1


def params_from_args(args: argparse.Namespace) -> BenchParams:
    values: dict = dict(QUICK) if getattr(args, "quick", False) else {}
    values["quick"] = bool(getattr(args, "quick", False))
    simple = {"rounds": "rounds", "duration": "duration", "omit": "omit", "streams": "streams", "mtu": "mtu",
              "udp_rate": "udp_rate", "udp_duration": "udp_duration", "rr_count": "rr_count", "budget": "budget",
              "min_rounds": "min_rounds", "seed": "seed"}
    for attr, key in simple.items():
        v = getattr(args, attr, None)
        if v is not None:
            values[key] = v
    if getattr(args, "udp_duration", None) is not None:
        values["udp_blocks"] = None  # a duration asked for replaces the default datagram count
    if getattr(args, "udp_blocks", None) is not None:
        values["udp_blocks"] = args.udp_blocks
    if getattr(args, "target", None) is not None:
        values["target"] = args.target / 100
    if getattr(args, "no_rr_pin", False):
        values["rr_pin"] = False
    if getattr(args, "no_focus", False):
        values["focus"] = False
    if getattr(args, "full_rounds", None) is not None:
        values["full_rounds"] = args.full_rounds
    if getattr(args, "topologies", None):
        values["topologies"] = _csv(args.topologies)
    if getattr(args, "tests", None):
        values["tests"] = _csv(args.tests)
    values["backend"] = getattr(args, "backend", None) or "netns"
    if values.get("rounds") is not None and getattr(args, "budget", None) is None:
        values["budget"] = None  # a fixed number of rounds is not cut short by the default budget
    params = BenchParams(**values)
    _check(params)
    return params


def _check(p: BenchParams) -> None:
    unknown = [t for t in p.topologies if t not in TOPOLOGIES]
    if unknown:
        raise BenchUnavailable(f"unknown topology {', '.join(unknown)}; valid topologies: {', '.join(TOPOLOGIES)}")
    bad = [t for t in p.tests if t not in ALL_TESTS]
    if bad or not p.tests:
        raise BenchUnavailable(f"unknown test {', '.join(bad) or '(none)'}; valid tests: {', '.join(ALL_TESTS)}")
    if p.duration < 1 or p.udp_duration < 1 or p.omit < 0:
        raise BenchUnavailable("--duration and --udp-duration are whole seconds >= 1 (iperf3 -t 0 means forever)")
    if p.streams < 1 or (p.rounds is not None and p.rounds < 1) or p.rr_count < 1 or (p.udp_blocks is not None and p.udp_blocks < 1):
        raise BenchUnavailable("--streams, --rounds, --rr-count and --udp-blocks must be at least 1")


def summary_table(doc: Mapping):
    from rich.table import Table
    from rich.text import Text

    stop = doc["stop"]
    # Text, not markup: metric ids in the reason ([macvlan/bridge]) would be taken for rich tags
    table = Table(title=Text(f"bench: {stop['used_rounds']} rounds in {doc['wall_seconds']:.0f} s — {stop['reason']}"))
    for col in ("metric", "estimate", "95% CI", "±", "n"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for m in doc["stats"]["metrics"]:
        if m["kind"] != "ratio" and m["quantity"] not in ("gbps", "loss_pct", "p50_us"):
            continue
        ci = "-" if m["ci_low"] is None else f"{m['ci_low']:.3f} – {m['ci_high']:.3f}"
        hw = "-" if m["half_width_pct"] is None else f"{m['half_width_pct']:.1f}%"
        table.add_row(Text(m["id"]), f"{m['median']:.3f} {m['unit'] if m['unit'] != 'ratio' else ''}".strip(), ci, hw, str(m["n"]))
    return table


def summary_caption(doc: Mapping) -> str:
    """What the table's figures are and, for the primary ratio, the smallest change the run could detect."""
    lines = ["ratios: Hodges-Lehmann estimate of per-pair log-ratios, exact signed-rank 95 % interval; "
             "topologies: median, bootstrap 95 % interval"]
    if any(m["ci_low"] is None for m in doc["stats"]["metrics"]):
        lines.append(f"'-': fewer than {MIN_INTERVAL_N} rounds of that metric, too few for a 95 % interval")
    det = doc["stop"].get("detectable_change_pct")
    primary = doc["stats"].get("primary")
    if primary and det is not None:
        lines.append(f"smallest change of {primary} this run can detect: {det:.1f} % (95 % confidence, 80 % power, "
                     f"against a baseline as precise as this run)")
    elif primary:
        lines.append(f"{primary}: no interval, so no detectable change can be given")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape  # reasons and metric ids contain [brackets] rich would take for markup

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if getattr(args, "kernels", None):
        return _main_kernels(args, err)
    if getattr(args, "backend", None) == "vm":
        return _main_in_vm(args, err)
    try:
        params = params_from_args(args)
        from backends.base import get_backend

        backend = get_backend(params.backend)
        runner = BenchRunner(params, backend, None if getattr(args, "quiet", False) else RichProgress())
        started = time.time()
        runner.run()
        doc = runner.document(started, time.time())
    except (BenchUnavailable, BackendUnavailable) as exc:
        err.print(f"[red]bench unavailable[/red]: {escape(str(exc))}")
        return 2
    except HarnessError as exc:
        err.print("[red]bench failed[/red]: ", end="", markup=True)
        err.print(str(exc), markup=False)
        return 1
    path = args.json or f"results/bench-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out = write_document(doc, path)
    if runner.error:
        err.print("[red]bench failed[/red]: ", end="", markup=True)
        err.print(f"{runner.error}\nthe samples measured before the failure are in {out}", markup=False)
        return 1
    out_console = Console(highlight=False, soft_wrap=True)
    out_console.print(summary_table(doc))
    out_console.print(summary_caption(doc), markup=False)
    for t in doc["topologies"]:
        if t["status"] != "ran":
            out_console.print(f"{t['name']}: {t['status']} — {t['reason']}", markup=False)
    if doc["stop"]["adaptive"] and not doc["stop"]["target_reached"]:
        hw = doc["stop"]["half_width_pct"]
        out_console.print(f"[yellow]target not reached[/yellow]: macvlan/bridge half-width "
                          f"{'unknown' if hw is None else f'{hw:.1f} %'} (target {doc['stop']['target_pct']:.0f} %); "
                          f"{escape(doc['stop']['reason'])}")
    noisy = [r["index"] + 1 for r in doc["rounds"] if r["noisy"]]
    if doc["stats"]["includes_noisy"] and doc["stop"]["adaptive"]:
        out_console.print(f"{len(noisy)} of {len(doc['rounds'])} rounds began on a busy machine (kept: pairs cancel "
                          f"the load both samples saw; see rounds\\[].noise_reasons)")
    elif doc["stats"]["includes_noisy"]:
        out_console.print(f"[yellow]the machine stayed busy[/yellow]: the statistics include noisy rounds "
                          f"{', '.join(map(str, noisy))} (see rounds\\[].noise_reasons)")
    elif noisy:
        out_console.print(f"noisy rounds left out of the statistics and replaced: {', '.join(map(str, noisy))}")
    out_console.print(f"results: {out}", markup=False)
    if getattr(args, "save_baseline", None):
        out_console.print(f"baseline: {write_document(doc, args.save_baseline)}", markup=False)
    return 0


def kernel_path(path: str, kernel: str) -> str:
    """`results/b.json` for kernel 6.12 -> `results/b-6.12.json` (one results document per kernel)."""
    from pathlib import Path

    p = Path(path)
    safe = "".join(ch if ch.isalnum() or ch in ".+_" else "_" for ch in kernel)
    return str(p.with_name(f"{p.stem}-{safe}{p.suffix or '.json'}"))


def _main_kernels(args: argparse.Namespace, err) -> int:
    """`--kernels 6.1,6.12,host`: the bench on each kernel in turn (never at once: it measures), host with
    the namespace backend here, the others in a VM booting that kernel; the ratios per kernel side by side."""
    from harness.cli.matrix import HOST, parse_kernels

    kernels = parse_kernels(args.kernels)
    base = args.json or f"results/bench-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    docs: dict[str, dict] = {}
    status = 0
    for kernel in kernels:
        sub = argparse.Namespace(**{**vars(args), "kernels": None, "json": kernel_path(base, kernel),
                                    "save_baseline": kernel_path(args.save_baseline, kernel) if args.save_baseline else None,
                                    "backend": "netns" if kernel == HOST else "vm"})
        err.print(f"bench on kernel {kernel}", markup=False)
        rc = main(sub) if kernel == HOST else _main_in_vm(sub, err, kernel=kernel)
        status = max(status, rc)
        try:
            docs[kernel] = json.loads(open(sub.json).read())
        except (OSError, ValueError):
            err.print(f"kernel {kernel}: no results (exit {rc})", markup=False)
    from rich.console import Console

    Console(highlight=False, soft_wrap=True).print(ratios_by_kernel(docs))
    return status


def ratios_by_kernel(docs: Mapping[str, Mapping]):
    """A table of every ratio (median [95 % CI]) per kernel: only ratios compare across kernels and VMs."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="bench ratios per kernel (estimate [95 % CI])")
    table.add_column("ratio")
    ids: list[str] = []
    for kernel, doc in docs.items():
        table.add_column(f"{kernel} ({doc.get('machine', {}).get('kernel', '?')}, {doc.get('backend', '?')})", justify="right")
        ids += [m["id"] for m in doc["stats"]["metrics"] if m["kind"] == "ratio" and m["id"] not in ids]
    for metric in ids:
        cells = []
        for doc in docs.values():
            m = next((m for m in doc["stats"]["metrics"] if m["id"] == metric), None)
            if m is None or m["median"] is None:
                cells.append("-")
            else:
                ci = "" if m["ci_low"] is None else f" [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
                cells.append(f"{m['median']:.3f}{ci}")
        table.add_row(Text(metric), *cells)
    return table
