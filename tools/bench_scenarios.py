"""Measure scenario wall times: per scenario (setup, checks, teardown) and whole suites, serial and -n 2.

A benchmark, not a test: it prints figures (Markdown) for docs/performance.md and asserts nothing.

    python3 tools/bench_scenarios.py [--repeat 5] [--suites 3] [--vm]

Per-scenario figures are medians over --repeat runs of each documented scenario this kernel can run
on the namespace backend, through the engine (the same path as `harness run`), with the range of the
wall time. Suite figures are the wall times of `pytest -k scenario --backend netns --no-docker-items`
(the real-engine items, `scenario[docker]`, start a real dockerd: they are the docker tier's, not the
namespace backend's) serial and with `-n 2`, each run listed, and, with --vm, of `harness run --backend vm`
over every scenario that needs the VM (cold and warm image cache). The load average is printed with
each part: the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backends.netns import NetnsBackend  # noqa: E402
from harness import proc  # noqa: E402
from harness.docker.emulated import compile_scenario  # noqa: E402
from harness.engine import Engine  # noqa: E402
from harness.loader import load_all  # noqa: E402
from harness.plan import cannot_run  # noqa: E402


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def per_scenario(repeat: int) -> list[tuple[str, dict[str, float]]]:
    backend = NetnsBackend()
    rows = []
    for scenario in load_all([ROOT / "scenarios"]):
        if cannot_run(backend, compile_scenario(scenario).plan.required_features()) is not None:
            continue
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            result = Engine(backend).run(scenario)
            wall = time.perf_counter() - t0
            if result.status != "pass":
                raise SystemExit(f"{scenario.name} did not pass: {result.failure_report()}")
            samples.append({**result.durations, "wall": wall, "checks_n": len(result.checks)})
        row = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
        row["wall_min"], row["wall_max"] = min(s["wall"] for s in samples), max(s["wall"] for s in samples)
        rows.append((scenario.name, row))
    return rows


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def timed(argv: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    done = proc.run(argv, cwd=ROOT, env={**os.environ, **(env or {})}, timeout=3600)
    wall = time.perf_counter() - t0
    if not done.ok:
        raise SystemExit(f"`{done.command}` exited {done.exit_code}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--suites", type=int, default=3)
    parser.add_argument("--vm", action="store_true", help="also time the VM batch, cold and warm")
    parser.add_argument("--vm-only", action="store_true", help="time only the VM batch")
    args = parser.parse_args()
    args.vm = args.vm or args.vm_only

    print(f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"- machine: {os.cpu_count()} vCPU ({cpu_model()}), kernel {platform.release()}, Python {platform.python_version()}")
    flag = " --vm-only" if args.vm_only else " --vm" if args.vm else ""
    print(f"- command: `python3 tools/bench_scenarios.py --repeat {args.repeat} --suites {args.suites}{flag}`")
    print(f"- load average before: {loadavg()}")
    print()
    if not args.vm_only:
        netns_figures(args)
    if args.vm:
        vm_batch(args.suites)
    return 0


def netns_figures(args) -> None:
    rows = per_scenario(args.repeat)
    print(f"| scenario (netns, median of {args.repeat}) | checks | setup s | checks s | teardown s | wall s | wall range s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, d in rows:
        print(f"| {name} | {d['checks_n']:.0f} | {d['setup']:.3f} | {d['checks']:.3f} | {d['teardown']:.3f} | "
              f"{d['wall']:.3f} | {d['wall_min']:.3f}-{d['wall_max']:.3f} |")
    walls = [d["wall"] for _, d in rows]
    print(f"| **median over scenarios** | | | | | **{statistics.median(walls):.3f}** | |")
    print(f"- load average after the scenarios: {loadavg()}")
    print()
    pytest = [sys.executable, "-m", "pytest", "-k", "scenario", "--backend", "netns", "--no-docker-items", "-q",
              "-p", "no:cacheprovider", str(ROOT / "scenarios")]
    serial, parallel = [], []
    for _ in range(args.suites):  # interleaved: both see the same moments of a shared machine
        serial.append(timed(pytest))
        parallel.append(timed([*pytest, "-n", "2"]))
    print(f"| suite (`pytest -k scenario --backend netns --no-docker-items`, {len(rows)} run, the rest skip) "
          "| median wall s | runs |")
    print("|---|---:|---|")
    print(f"| serial | {statistics.median(serial):.2f} | {', '.join(f'{t:.2f}' for t in serial)} |")
    print(f"| `-n 2` | {statistics.median(parallel):.2f} | {', '.join(f'{t:.2f}' for t in parallel)} |")
    print(f"| speed-up (median serial / median `-n 2`) | {statistics.median(serial) / statistics.median(parallel):.2f}x | |")
    print(f"- load average after the suites: {loadavg()}")


def vm_batch(runs: int) -> None:
    """`harness run --backend vm` over every scenario that needs the VM: once after removing the images and
    saved guests (cold: image build, one boot to save the guest), then `runs` times warm (resumed)."""
    import json
    import tempfile

    from backends.vm import default_cache_dir

    scratch = Path(tempfile.mkdtemp(prefix="hxbench-"))
    results_json = scratch / "vm.json"
    harness_vm = [sys.executable, "-m", "harness", "run", "--backend", "vm", "-q", "--json", str(results_json)]
    vm_scenarios = [str(s.path) for s in load_all([ROOT / "scenarios"])
                    if cannot_run(NetnsBackend(), compile_scenario(s).plan.required_features()) is not None]
    # A cache of its own with the prepared kernels in it, so the cold run finds no image and no saved guest
    # (and other runs sharing the machine keep theirs).
    cache = scratch / "cache"
    cache.mkdir()
    (cache / "kernels").symlink_to(default_cache_dir() / "kernels")
    for probe in default_cache_dir().glob("capabilities-*.json"):
        shutil.copy(probe, cache)
    rows = []
    for i in range(runs + 1):
        load = loadavg()
        wall = timed([*harness_vm, *vm_scenarios], env={"HARNESS_CACHE": str(cache)})
        records = json.loads(results_json.read_text())
        first = records[0]["durations"]
        inside = [sum(r["durations"].get(k, 0) for k in ("setup", "checks", "teardown")) for r in records]
        rows.append(("cold" if i == 0 else "warm", wall, first.get("vm_boot", float("nan")),
                     "resumed" if first.get("vm_resumed") else "booted", sum(inside), statistics.median(inside), load))
    shutil.rmtree(scratch, ignore_errors=True)  # the symlink, not the kernels
    print()
    print(f"| VM batch ({len(vm_scenarios)} scenarios, 2 guests) | wall s | qemu start to first command s | guest "
          "| scenarios' own time, sum s | per scenario, median s | load before |")
    print("|---|---:|---:|---|---:|---:|---|")
    for cache, wall, boot, how, total, median, load in rows:
        print(f"| {cache} | {wall:.1f} | {boot:.2f} | {how} | {total:.1f} | {median:.2f} | {load} |")
    warm = [r[1] for r in rows[1:]]
    if warm:
        print(f"| **warm, median** | **{statistics.median(warm):.1f}** | | | | | |")


if __name__ == "__main__":
    sys.exit(main())
