"""Measure how a scenario's time grows with its containers: N on one macvlan bridge network, full matrix.

A benchmark, not a test: it prints a Markdown table for docs/performance.md and asserts nothing.

    python3 tools/bench_scale.py [--counts 2,10,50,100,200] [--repeat 3]

Each row is one container count (the stress topology of tools/make_big_scenario.py: every container
reaches every other one and the gateway, the host is isolated from all of them), run through the engine on
the namespace backend as `harness run` does, `--repeat` times: the median and the range (min-max) of the
wall time, setup and checks, with the number of probes, the waves they ran in (the neighbour-table budget,
harness.observe) and the processes started to probe. The load average is printed before and after, since
the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from make_big_scenario import big_scenario  # noqa: E402

from backends.netns import NetnsBackend  # noqa: E402
from harness.engine import Engine  # noqa: E402
from harness.loader import parse_scenario  # noqa: E402


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def span(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="2,10,50,100,200")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    backend = NetnsBackend()
    reason = backend.available()
    if reason:
        raise SystemExit(reason)
    backend.capabilities()
    print(f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average before: {loadavg()}")
    print(f"- machine: {os.cpu_count()} vCPU, kernel {platform.release()}, Python {platform.python_version()}")
    print(f"- command: `python3 tools/bench_scale.py --counts {args.counts} --repeat {args.repeat}`")
    print()
    print(f"| containers | probes | waves | probe processes | setup s | checks s | wall s, median (range of {args.repeat}) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in counts:
        scenario = parse_scenario(big_scenario(n), f"stress-{n}.yaml")
        walls, setups, checks = [], [], []
        for _ in range(args.repeat):
            engine = Engine(backend)
            start = time.perf_counter()
            result = engine.run(scenario)
            walls.append(time.perf_counter() - start)
            if result.status != "pass":
                raise SystemExit(f"{n} containers did not pass: {result.failure_report()[:3000]}")
            setups.append(result.durations["setup"])
            checks.append(result.durations["checks"])
        stats = engine.probe_stats
        print(f"| {n} | {stats.probes} | {stats.waves} | {stats.processes} | {span(setups)} | {span(checks)} | "
              f"{span(walls)} |", flush=True)
    print()
    print(f"- load average after: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
