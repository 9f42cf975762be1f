#!/usr/bin/env python3
"""Cold and warm timings of the VM plumbing (backends/vm/: kernel.py, image.py, qemu.py).

Cold: an empty cache (a fresh ``hx`` temp dir, removed afterwards unless ``--keep``), so the kernel
is downloaded and unpacked and the image built from scratch. Warm: the same steps again on that
cache. Then a project-layer rebuild (one project file changed, in a temp copy of the project) and
the guest's Python start-up with pyroute2. Prints a Markdown table for docs/performance.md.

    python3 tools/vm_smoke.py [--cache DIR] [--runs N] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends.vm import PROJECT_PACKAGES, KernelBundle, build_initramfs, fetch_kernel  # noqa: E402
from backends.vm.qemu import GuestResult, run_in_guest  # noqa: E402

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    started = time.monotonic()
    value = fn()
    return value, time.monotonic() - started


def boot(kernel: KernelBundle, image: Path, argv: list[str], runs: int) -> list[GuestResult]:
    results = []
    for _ in range(runs):
        result = run_in_guest(argv, kernel, image, timeout=300)
        result.assert_success()
        results.append(result)
    return results


def median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="cache dir (default: a fresh temp dir: cold)")
    parser.add_argument("--runs", type=int, default=3, help="boots per measurement (median)")
    parser.add_argument("--keep", action="store_true", help="keep the temp cache dir")
    args = parser.parse_args()

    cache = args.cache or Path(tempfile.mkdtemp(prefix="hx-vm-smoke-"))
    rows: list[tuple[str, str, str]] = []
    try:
        for phase in ("cold", "warm"):
            kernel, fetch_s = timed(lambda: fetch_kernel(cache))
            image, build_s = timed(lambda k=kernel: build_initramfs(k, cache, ROOT))
            results = boot(kernel, image, ["true"], args.runs)
            rows += [
                (phase, "kernel fetch_kernel()", f"{fetch_s:.2f}"),
                (phase, f"image build_initramfs() ({image.stat().st_size / 1e6:.0f} MB)", f"{build_s:.2f}"),
                (phase, "boot: qemu start -> guest command start", median([r.boot_seconds for r in results])),
                (phase, "whole run of `true` (qemu start -> qemu exit)", median([r.total_seconds for r in results])),
            ]
        with tempfile.TemporaryDirectory(prefix="hx-vm-smoke-") as tmp:
            project = Path(tmp)
            for package in PROJECT_PACKAGES:
                if (ROOT / package).is_dir():
                    shutil.copytree(ROOT / package, project / package,
                                    ignore=shutil.ignore_patterns("__pycache__"))
            build_initramfs(kernel, cache, project)
            changed = project / "backends" / "hx_smoke_marker.py"
            changed.write_text(f"STAMP = {time.time()!r}\n")
            _, rebuild_s = timed(lambda: build_initramfs(kernel, cache, project))
            rows.append(("warm", "image rebuild after a project file changed", f"{rebuild_s:.2f}"))
        results = boot(kernel, image, ["python3", "-c", "import pyroute2, yaml, jsonschema, rich"],
                       args.runs)
        startup = [r.total_seconds - r.boot_seconds for r in results]
        rows.append(("warm", "guest: python3 importing pyroute2, yaml, jsonschema, rich",
                     median(startup)))
    finally:
        if args.cache is None and not args.keep:
            shutil.rmtree(cache, ignore_errors=True)

    print(f"kernel {kernel.release} ({kernel.package}), qemu TCG, {os.cpu_count()} host CPUs, "
          f"median of {args.runs} boots")
    print("| cache | step | seconds |\n| --- | --- | ---: |")
    for phase, step, seconds in rows:
        print(f"| {phase} | {step} | {seconds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
