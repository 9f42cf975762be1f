"""The VM backend: scenarios run for real inside qemu, on Debian's full kernel (802.1q, ipvlan, dummy).

`VMBackend` is a batch backend: one boot serves many scenarios. `run_batch(scenarios)` copies the
scenario files into a share, boots the guest once (`backends.qemu.run_in_guest`, image from
`backends.vmimage`), and runs the very same namespace backend inside it
(`python3 -m harness run --backend netns --json /out/results.json ...`). The guest's JSON records come
back as `ScenarioResult`s, marked with backend `vm` and the guest's kernel release. A boot that fails
or hangs makes every scenario of the batch an error carrying the console tail. `capabilities()` asks
the guest kernel once (cached on disk per kernel release). `BatchCache` lets pytest-xdist workers share
one batch behind a file lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from filelock import FileLock

from backends.base import Capability, adopt_records, stage_scenarios, unavailable_everywhere
from harness.errors import BackendUnavailable
from harness.model import ContainerRun, Scenario
from harness.profiles import DEFAULT_PROFILE
from harness.results import ERROR, ScenarioResult

PROJECT_ROOT = Path(__file__).resolve().parent.parent
GUEST_PACKAGES = ("harness", "backends", "scenarios")
BOOT_AND_IMPORT_ALLOWANCE = 60.0  # seconds on top of the per-scenario allowance
PER_SCENARIO_ALLOWANCE = 20.0


class VMBackend:
    name = "vm"
    description = "a qemu VM booting Debian's kernel (TCG); runs the namespace backend inside the guest"
    batch = True

    def __init__(self, kernel: str | None = None, modules: str | None = None, cache_dir: str | None = None,
                 parallel: int | None = None):
        self.parallel = parallel or int(os.environ.get("HARNESS_VM_PARALLEL", 0)) or min(2, os.cpu_count() or 1)
        self.kernel_path = kernel
        self.modules_path = modules
        self._cache_dir = Path(cache_dir) if cache_dir else None
        self._bundle = None
        self._caps: dict[str, Capability] | None = None

    # -- availability -------------------------------------------------------------------------------

    def available(self) -> str | None:
        from backends.qemu import qemu_available

        reason = qemu_available()
        if reason:
            return reason
        try:
            self.bundle()
        except Exception as exc:  # the image pipeline's errors name the failing command
            return f"no guest kernel: {exc}"
        return None

    def cache_dir(self) -> Path:
        from backends.vmimage import default_cache_dir

        return self._cache_dir or default_cache_dir()

    def bundle(self):
        if self._bundle is None:
            from backends.vmimage import KernelBundle, fetch_kernel

            if self.kernel_path:
                self._bundle = KernelBundle.from_path(self.kernel_path, self.modules_path, cache_dir=self.cache_dir())
            else:
                self._bundle = fetch_kernel(self.cache_dir())
        return self._bundle

    def kernel_release(self) -> str:
        try:
            return self.bundle().release
        except Exception:
            return "unknown"

    def image(self, extra_distributions: Sequence[str] = ()) -> Path:
        from backends.vmimage import GUEST_DISTRIBUTIONS, build_initramfs

        return build_initramfs(self.bundle(), self.cache_dir(), PROJECT_ROOT, packages=GUEST_PACKAGES,
                               distributions=(*GUEST_DISTRIBUTIONS, *extra_distributions))

    def capabilities(self) -> dict[str, Capability]:
        if self._caps is not None:
            return self._caps
        reason = self.available()
        if reason:
            return unavailable_everywhere(reason)
        path = self.cache_dir() / f"capabilities-{self.bundle().release}-{_code_key()}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        # pytest-xdist workers collect at the same time: one probes, the others wait and read.
        with FileLock(str(path) + ".lock"):
            if not path.is_file():
                from backends.qemu import run_in_guest

                result = run_in_guest(["python3", "-m", "harness", "capabilities", "--json"], self.bundle(),
                                      self.image(), timeout=BOOT_AND_IMPORT_ALLOWANCE, env=_guest_env())
                if result.exit_code != 0:
                    raise BackendUnavailable(
                        f"probing the guest kernel failed: {result.stderr.strip() or result.console_tail}")
                tmp = path.with_suffix(".tmp")
                tmp.write_text(result.stdout)
                tmp.replace(path)
        data = json.loads(path.read_text())
        self._caps = {f: Capability(f, bool(v["available"]), v.get("detail", "")) for f, v in data.items()}
        return self._caps

    def session(self, label: str):
        raise BackendUnavailable("the vm backend runs scenarios in batches (one boot for many): use run_batch")

    # -- the batch ----------------------------------------------------------------------------------

    def run_batch(self, scenarios: Sequence[Scenario], profile: str = DEFAULT_PROFILE, matrix: bool = True) -> list[ScenarioResult]:
        """Run every scenario inside guests booted for this batch; one result per scenario, in order.

        The batch is split over `parallel` guests booted at once: a TCG guest with one vCPU keeps one
        host CPU busy, so on this 2-vCPU machine kind two guests halve the wall time.
        """
        from backends.qemu import GuestJob, VMError, run_in_guests

        if not scenarios:
            return []
        reason = self.available()
        if reason:
            return [_error(s, self.name, "unknown", reason, status="skip") for s in scenarios]
        t0 = time.monotonic()
        chunks = _split(list(scenarios), self.parallel)
        with contextlib.ExitStack() as stack:
            jobs, guest_paths = [], []
            for chunk in chunks:
                share = Path(tempfile.mkdtemp(prefix="hxvm-share-"))
                stack.callback(shutil.rmtree, share, ignore_errors=True)
                (share / "scenarios").mkdir()
                paths = stage_scenarios(chunk, share / "scenarios", "/out/scenarios")
                argv = ("python3", "-m", "harness", "run", "--backend", "netns", "--profile", profile,
                        "--json", "/out/results.json", "--quiet", *(() if matrix else ("--no-matrix",)), *paths)
                jobs.append(GuestJob(argv, share, env=_guest_env()))
                guest_paths.append(paths)
            timeout = BOOT_AND_IMPORT_ALLOWANCE + PER_SCENARIO_ALLOWANCE * max(len(c) for c in chunks)
            try:
                outcomes = run_in_guests(jobs, self.bundle(), self.image(), timeout)
            except VMError as exc:
                return [_error(s, self.name, self.kernel_release(), f"the VM failed: {exc}") for s in scenarios]
            by_path: dict[str, ScenarioResult] = {}
            wall = time.monotonic() - t0
            for chunk, paths, job, outcome in zip(chunks, guest_paths, jobs, outcomes):
                for result in self._collect(chunk, paths, job.share_dir, outcome, wall):
                    by_path[result.path] = result
        return [by_path[s.path] for s in scenarios]

    def _collect(self, chunk, guest_paths, share: Path, guest, wall: float) -> list[ScenarioResult]:
        from backends.qemu import VMError

        if isinstance(guest, VMError):
            return [_error(s, self.name, self.kernel_release(), f"the VM failed: {guest}") for s in chunk]
        results_file = share / "results.json"
        if not results_file.is_file():
            detail = (guest.stderr.strip() or guest.stdout.strip())[-3000:]
            return [_error(s, self.name, guest.kernel_release,
                           f"the guest wrote no results (exit {guest.exit_code}):\n{detail}\n"
                           f"console tail:\n{guest.console_tail}") for s in chunk]
        out = adopt_records(chunk, guest_paths, json.loads(results_file.read_text()), self.name,
                            guest.kernel_release, lambda s: _error(s, self.name, guest.kernel_release,
                                                                   "the guest returned no record for this scenario"))
        for result in out:
            result.durations["vm_boot"] = guest.boot_seconds
            result.durations["vm_batch_wall"] = round(wall, 3)
        return out

    def run_tool(self, args: Sequence[str], outputs: Sequence[str], timeout: float,
                 extra_distributions: Sequence[str] = (), memory_mb: int = 512) -> tuple[object, dict[str, bytes]]:
        """Run `python3 -m harness ARGS` in one guest with an empty share at /out; return the guest's
        result and the named files it wrote there (missing ones are left out). `extra_distributions`
        are Python distributions the tool needs beyond the scenario runner's (a separate cached image)."""
        from backends.qemu import run_in_guest

        reason = self.available()
        if reason:
            raise BackendUnavailable(reason)
        share = Path(tempfile.mkdtemp(prefix="hxvm-share-"))
        try:
            guest = run_in_guest(["python3", "-m", "harness", *args], self.bundle(), self.image(extra_distributions),
                                 share_dir=share, timeout=timeout, env=_guest_env(), memory_mb=memory_mb)
            files = {name: (share / name).read_bytes() for name in outputs if (share / name).is_file()}
        finally:
            shutil.rmtree(share, ignore_errors=True)
        return guest, files


def _cost(scenario: Scenario) -> int:
    """A scenario's expected cost: the probe matrix grows with the square of its containers."""
    runs = sum(isinstance(step.command, ContainerRun) for step in scenario.steps)
    return runs * runs + len(scenario.steps)


def _split(scenarios: list[Scenario], parts: int) -> list[list[Scenario]]:
    """Greedy balance by `_cost`, most expensive first (measured here: 25.2 s / 25.3 s of guest time)."""
    parts = max(1, min(parts, len(scenarios)))
    chunks: list[list[Scenario]] = [[] for _ in range(parts)]
    load = [0] * parts
    for s in sorted(scenarios, key=lambda s: (-_cost(s), s.path)):
        i = load.index(min(load))
        chunks[i].append(s)
        load[i] += _cost(s)
    return chunks


def _guest_env() -> dict[str, str]:
    # The guest has no terminal; keep rich from guessing, and give the guest our run id for its names.
    env = {"TERM": "dumb", "COLUMNS": "160"}
    if os.environ.get("HARNESS_RUN_ID"):
        env["HARNESS_RUN_ID"] = os.environ["HARNESS_RUN_ID"]
    return env


def _code_key() -> str:
    """Capabilities are probed by the project's code: re-probe when backends/netns.py changes."""
    import hashlib

    return hashlib.sha256((PROJECT_ROOT / "backends" / "netns.py").read_bytes()).hexdigest()[:12]


def _error(scenario: Scenario, backend: str, kernel: str, reason: str, status: str = ERROR) -> ScenarioResult:
    return ScenarioResult(scenario.name, scenario.path, backend, kernel, status, reason=reason, source=scenario.source)


class BatchCache:
    """One VM batch per test run, shared by pytest-xdist workers behind a file lock.

    The first worker that needs a VM result boots the VM for every VM scenario of the run and writes
    the records to a file named by the run id; the others wait on the lock and read them.
    """

    def __init__(self, backend: VMBackend, run_id: str, directory: Path | None = None):
        self.backend = backend
        self.dir = directory or Path(tempfile.gettempdir()) / f"hxvm-batch-{run_id}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.results_file = self.dir / "results.json"
        self._memo: dict[str, ScenarioResult] | None = None

    def result(self, scenario: Scenario, batch: Iterable[Scenario], profile: str) -> ScenarioResult:
        if self._memo is None or scenario.path not in self._memo:
            with FileLock(str(self.dir / "lock")):
                if not self.results_file.is_file():
                    results = self.backend.run_batch(sorted(batch, key=lambda s: s.path), profile)
                    tmp = self.results_file.with_suffix(".tmp")
                    tmp.write_text(json.dumps([r.to_dict() for r in results]))
                    tmp.replace(self.results_file)
                records = json.loads(self.results_file.read_text())
            self._memo = {r["path"]: ScenarioResult.from_dict(r) for r in records}
        found = self._memo.get(scenario.path)
        if found is None:
            return _error(scenario, self.backend.name, self.backend.kernel_release(),
                          "not in this run's VM batch (collected after the batch ran)")
        return found
