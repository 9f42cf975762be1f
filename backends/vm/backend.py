"""The VM backend: scenarios run for real inside qemu, on Debian's full kernel (802.1q, ipvlan, dummy).

`VMBackend` is a batch backend (`kind = "batch"`): one guest start serves many scenarios. `run_batch(scenarios)`
copies the scenario files into a share, starts guests (`backends.vm.qemu.run_in_guests`, image from
`backends.vm.image`): each resumes the guest saved with the harness loaded (`snapshot`,
`backends.vm.snapshot`), or boots when there is none. They run the very same namespace backend inside,
taking the scenarios from one shared list (`python3 -m harness run --backend netns --claim-dir /out/claims
--json /out/results-N.json ...`). The guests' JSON records come back as `ScenarioResult`s, marked with
backend `vm` and the guest's kernel release. A scenario a failed or hung guest took is an error carrying
the console tail. `run_tool` runs any
`python3 -m harness ...` command in one guest (the bench uses it).

Cheap and side-effect free, as every backend's: `available()` (qemu is installed and a kernel is
prepared: in the cache, or given with ``--kernel``), `capabilities()` (the cached guest probe, else the
kernel's own ``config-<release>``; only a ``--kernel`` without any config file is probed by booting it,
once, cached) and `kernel_release()`. Slow and explicit: `prepare()` fetches Debian's kernel package,
builds the image and probes the guest kernel's capabilities.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from filelock import FileLock

from backends.base import BATCH, Capability, unavailable_everywhere
from backends.batch import adopt_records, stage_scenarios
from backends.vm.capabilities import ProbeCache, from_config
from backends.vm.closure import GUEST_DISTRIBUTIONS
from backends.vm.errors import VMError
from backends.vm.image import PROJECT_ROOT, build_initramfs
from backends.vm.kernel import (
    DEFAULT_PACKAGE,
    KernelBundle,
    fetch_kernel,
    find_config,
    is_kernel_name,
    kernel_release_of_file,
    prepared_kernel,
)
from backends.vm.qemu import (
    DEFAULT_APPEND,
    QEMU,
    GuestJob,
    GuestResult,
    QemuVM,
    qemu_available,
    run_in_guest,
    run_in_guests,
)
from backends.vm.snapshot import AGENT_APPEND, SnapshotError, SnapshotSpec, ensure_snapshot
from backends.vm.steps import default_cache_dir
from harness import proc
from harness.docker.profiles import DEFAULT_PROFILE
from harness.errors import BackendUnavailable, HarnessError
from harness.model import ContainerRun, Scenario
from harness.results import ERROR, ScenarioResult
from harness.runid import child_env

__all__ = ["NOT_PREPARED", "SNAPSHOT_ENV", "VMBackend", "not_prepared"]

log = logging.getLogger(__name__)
SNAPSHOT_ENV = "HARNESS_VM_SNAPSHOT"  # 0: boot every guest instead of resuming the saved one

GUEST_PACKAGES = ("harness", "backends", "scenarios")
BOOT_AND_IMPORT_ALLOWANCE = 60.0  # seconds on top of the per-scenario allowance
PER_SCENARIO_ALLOWANCE = 20.0
NOT_PREPARED = "no VM kernel prepared: run `python3 -m harness prepare --backend vm` (scripts/setup.sh does it)"


def not_prepared(name: str | None) -> str:
    """Why a VM kernel cannot run yet, with the command that prepares it."""
    if name is None:
        return NOT_PREPARED
    return f"VM kernel {name} is not prepared: run `python3 -m harness prepare --backend vm --kernel {name}`"


PROBE_ARGV = ("python3", "-m", "harness", "capabilities", "--backend", "netns", "--json")


class VMBackend:
    name = "vm"
    description = "a qemu VM booting Debian's kernel (TCG); runs the namespace backend inside the guest"
    kind = BATCH
    # What runs inside the guest (VMDockerBackend: the docker backend, a real engine), the image layers it
    # needs, the guest's memory, the time allowed, and the backend name its results carry.
    guest_backend = "netns"
    image_layers: tuple[str, ...] = ()
    memory_mb = 512
    boot_allowance = BOOT_AND_IMPORT_ALLOWANCE
    per_scenario_allowance = PER_SCENARIO_ALLOWANCE
    result_name = "vm"
    kernel_append: tuple[str, ...] = ()  # kernel command line words after qemu.DEFAULT_APPEND
    # Resume a guest saved with the harness loaded (backends.vm.snapshot) instead of booting one per batch.
    snapshots = True

    def __init__(self, kernel: str | None = None, modules: str | None = None, cache_dir: str | None = None,
                 parallel: int | None = None):
        self.parallel = parallel or int(os.environ.get("HARNESS_VM_PARALLEL", 0)) or min(2, os.cpu_count() or 1)
        # --kernel is a file, or a Debian kernel by name (6.12, linux-image-6.12.*+deb12-amd64): fetched by prepare()
        self.kernel_name = kernel if kernel and is_kernel_name(kernel) else None
        self.kernel_path = Path(kernel).expanduser() if kernel and not self.kernel_name else None
        self.modules_path = Path(modules).expanduser() if modules else None
        # A kernel or modules path that names nothing is the user's mistake: an error (exit 2), not a skip.
        if self.kernel_path is not None and not self.kernel_path.is_file():
            raise HarnessError(f"VM kernel {self.kernel_path} (--kernel) does not exist or is not a file")
        if self.modules_path is not None and not self.modules_path.is_dir():
            raise HarnessError(f"VM kernel modules directory {self.modules_path} (--kernel-modules) does not exist")
        self._cache_dir = Path(cache_dir) if cache_dir else None
        self._bundle: KernelBundle | None = None
        self._release: str | None = None
        self._caps: dict[str, Capability] | None = None

    def cache_dir(self) -> Path:
        return self._cache_dir or default_cache_dir()

    # -- cheap: no download, no build, no boot ------------------------------------------------------

    def available(self) -> str | None:
        reason = qemu_available()
        if reason:
            return reason
        if self.kernel_path is not None:
            if not self.kernel_path.is_file():
                return f"VM kernel {self.kernel_path} (--kernel) does not exist"
            if self.modules_path is not None and not self.modules_path.is_dir():
                return f"VM kernel modules directory {self.modules_path} (--kernel-modules) does not exist"
            return None
        if self._bundle is None and prepared_kernel(self.cache_dir(), self.kernel_name) is None:
            return not_prepared(self.kernel_name)
        return None

    def kernel_release(self) -> str:
        if self._release is None:
            try:
                if self._bundle is not None:
                    self._release = self._bundle.release
                elif self.kernel_path is not None:
                    self._release = kernel_release_of_file(self.kernel_path)
                else:
                    prepared = prepared_kernel(self.cache_dir(), self.kernel_name)
                    if prepared is None:
                        return "unknown"
                    self._release = prepared.release
            except (OSError, VMError):
                return "unknown"
        return self._release

    def capabilities(self) -> dict[str, Capability]:
        """The cached guest probe, else the kernel's build configuration; never downloads or builds
        (only a --kernel without any config file is probed by booting it, once, and cached)."""
        if self._caps is not None:
            return self._caps
        reason = self.available()
        if reason:
            return unavailable_everywhere(reason)
        caps = self._probe_cache().read()
        if caps is None:
            config = self._config_file()
            if config is not None:
                caps = from_config(config.read_text(errors="replace"), config.name)
            else:  # a --kernel without a config file: ask it, once (cached on disk)
                try:
                    caps = self._probe()
                except HarnessError as exc:
                    caps = unavailable_everywhere(f"probing the VM kernel's capabilities failed: {exc}")
        self._caps = caps
        return caps

    def _config_file(self) -> Path | None:
        if self.kernel_path is not None:
            return find_config(self.kernel_path, self.kernel_release(), self.modules_path)
        bundle = self._bundle or prepared_kernel(self.cache_dir(), self.kernel_name)
        return bundle.config if bundle is not None else None

    def _probe_cache(self) -> ProbeCache:
        key = self.kernel_release()
        if self.kernel_path is not None:  # a user kernel may share its release string with Debian's
            st = self.kernel_path.stat()
            key += "-user-" + hashlib.sha256(f"{self.kernel_path.resolve()} {st.st_size} {st.st_mtime_ns}".encode()
                                             ).hexdigest()[:8]
        return ProbeCache(self.cache_dir(), key, PROJECT_ROOT)

    # -- slow, explicit ------------------------------------------------------------------------------

    def prepare(self) -> str:
        """Fetch the kernel (Debian's package, cached), build the guest image, probe the guest kernel."""
        reason = qemu_available()
        if reason:
            raise BackendUnavailable(reason)
        if self.kernel_path is not None:
            bundle = KernelBundle.from_path(self.kernel_path, self.modules_path, cache_dir=self.cache_dir())
        else:
            bundle = fetch_kernel(self.cache_dir(), self.kernel_name or DEFAULT_PACKAGE)
        self._bundle, self._release, self._caps = bundle, bundle.release, None
        image = self.image()
        self._caps = self._probe()
        missing = sorted(f for f, c in self._caps.items() if not c.available)
        saved = self.snapshot(self.batch_image())
        return (f"vm: kernel {bundle.release} ready ({bundle.package or bundle.boot_image}), image built "
                f"({image.stat().st_size / 1e6:.0f} MB), capabilities probed "
                f"({'every feature' if not missing else 'missing: ' + ', '.join(missing)})"
                + (f", guest saved to resume ({saved.stat().st_size / 1e6:.0f} MB)" if saved else ""))

    def bundle(self) -> KernelBundle:
        """The kernel to boot: --kernel's (a bzImage is decompressed once into the cache) or the prepared one."""
        if self._bundle is None:
            if self.kernel_path is not None:
                self._bundle = KernelBundle.from_path(self.kernel_path, self.modules_path, cache_dir=self.cache_dir())
            else:
                prepared = prepared_kernel(self.cache_dir(), self.kernel_name)
                if prepared is None:
                    raise BackendUnavailable(not_prepared(self.kernel_name))
                self._bundle = prepared
        return self._bundle

    def image(self, extra_distributions: Sequence[str] = ()) -> Path:
        """The guest image for this checkout (cached; a project edit costs a small rebuild)."""
        return build_initramfs(self.bundle(), self.cache_dir(), PROJECT_ROOT, packages=GUEST_PACKAGES,
                               distributions=(*GUEST_DISTRIBUTIONS, *extra_distributions))

    def batch_image(self) -> Path:
        """The image `run_batch` boots: the scenario runner's, plus this backend's layers (docker)."""
        if not self.image_layers:
            return self.image()
        return build_initramfs(self.bundle(), self.cache_dir(), PROJECT_ROOT, packages=GUEST_PACKAGES,
                               distributions=GUEST_DISTRIBUTIONS, extras=self.image_layers)

    def _probe(self) -> dict[str, Capability]:
        """Ask the guest kernel itself (one boot), unless the answer is cached; pytest-xdist workers
        asking at once wait for one probe."""
        cache = self._probe_cache()
        cache.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(cache.lock_path):
            caps = cache.read()
            if caps is None:
                result = run_in_guest(list(PROBE_ARGV), self.bundle(), self.image(),
                                      timeout=BOOT_AND_IMPORT_ALLOWANCE, env=_guest_env())
                if result.exit_code != 0:
                    raise VMError(f"probing the guest kernel's capabilities failed (exit {result.exit_code}): "
                                  f"{result.stderr.strip() or result.console_tail}",
                                  console_tail=result.console_tail, stdout=result.stdout, stderr=result.stderr)
                try:
                    caps = cache.store(result.stdout)
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise VMError(f"the guest's capability probe printed no capabilities ({exc}): "
                                  f"{result.stdout[-2000:]}") from None
        return caps

    # -- the batch ----------------------------------------------------------------------------------

    def run_batch(self, scenarios: Sequence[Scenario], profile: str = DEFAULT_PROFILE,
                  matrix: bool = True) -> list[ScenarioResult]:
        """Run every scenario inside guests started for this batch; one result per scenario, in order.

        `parallel` guests start at once (a TCG guest with one vCPU keeps one host CPU busy, so on this
        2-vCPU machine kind two guests halve the wall time) and share the work: each is given every
        scenario, most expensive first, and runs those it claims first (`harness run --claim-dir`), so
        neither waits while the other still has several to run, and one that fails to start leaves its
        share to the other.
        """
        if not scenarios:
            return []
        reason = self.available()
        if reason:
            return [_error(s, self.result_name, "unknown", reason, status="skip") for s in scenarios]
        t0 = time.monotonic()
        ordered = sorted(scenarios, key=lambda s: (-_cost(s), s.path))
        guests = max(1, min(self.parallel, len(ordered)))
        with proc.UndoStack() as stack:  # the share goes even if a signal comes meanwhile
            share = Path(proc.temp_dir("vm-share"))
            stack.callback(shutil.rmtree, share, ignore_errors=True)
            (share / "scenarios").mkdir()
            (share / "claims").mkdir()
            paths = stage_scenarios(ordered, share / "scenarios", "/out/scenarios")
            jobs = [GuestJob(("python3", "-m", "harness", "run", "--backend", self.guest_backend, "--profile", profile,
                              "--json", f"/out/results-{i}.json", "--claim-dir", "/out/claims", "--quiet",
                              *(() if matrix else ("--no-matrix",)), *paths), share, env=_guest_env())
                    for i in range(guests)]
            # A scenario with several Docker hosts builds and probes a world per host: it counts once per host.
            # A guest may end up running all of them (the other failed to start).
            timeout = self.boot_allowance + self.per_scenario_allowance * sum(len(s.topology.hosts) for s in ordered)
            try:
                outcomes = self._run_jobs(jobs, timeout)
            except VMError as exc:  # no kernel, no image, no qemu: every scenario says why
                return [_error(s, self.result_name, self.kernel_release(), f"the VM failed: {exc}") for s in scenarios]
            results = self._collect(ordered, paths, share, outcomes, time.monotonic() - t0)
        by_path = {r.path: r for r in results}
        return [by_path[s.path] for s in scenarios]

    def _run_jobs(self, jobs: list[GuestJob], timeout: float) -> list[GuestResult | VMError]:
        """Run the jobs in guests resumed from the saved guest (`snapshot`), or booted when there is none
        or it does not resume (then it is removed, and made again next time)."""
        image = self.batch_image()
        saved = self.snapshot(image)
        if saved is not None:
            outcomes = run_in_guests(jobs, self.bundle(), image, timeout, memory_mb=self.memory_mb,
                                     append=self.kernel_append, snapshot=saved)
            refused = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, SnapshotError)]
            if not refused:
                return outcomes
            log.warning("booting instead: %s", outcomes[refused[0]])
            saved.unlink(missing_ok=True)
            retried = run_in_guests([jobs[i] for i in refused], self.bundle(), image, timeout,
                                    memory_mb=self.memory_mb, append=self.kernel_append)
            for i, outcome in zip(refused, retried):
                outcomes[i] = outcome
            return outcomes
        return run_in_guests(jobs, self.bundle(), image, timeout, memory_mb=self.memory_mb, append=self.kernel_append)

    def snapshot(self, image: Path) -> Path | None:
        """The saved guest for `image` (made now, one boot, if it is not cached), or None when this backend
        does not use one, HARNESS_VM_SNAPSHOT=0 turns them off, or it cannot be made (then it says why)."""
        if not self.snapshots or os.environ.get(SNAPSHOT_ENV, "1") == "0":
            return None
        bundle = self.bundle()
        spec = SnapshotSpec(bundle.release, Path(bundle.boot_image), image, self.memory_mb, "max",
                            (*DEFAULT_APPEND, *self.kernel_append, AGENT_APPEND), QEMU)

        @contextlib.contextmanager
        def agent_vm(incoming):
            with proc.UndoStack() as stack:  # the saved guest has both shares, empty: their paths are not saved
                shares = {}
                for tag in ("hxctl", "hxshare"):
                    shares[tag] = Path(proc.temp_dir("ctl"))
                    stack.callback(shutil.rmtree, shares[tag], ignore_errors=True)
                with QemuVM(bundle, image, shares=shares, append=self.kernel_append, memory_mb=self.memory_mb,
                            agent=True, incoming=incoming) as vm:
                    yield vm

        try:
            return ensure_snapshot(self.cache_dir(), spec, agent_vm)
        except (SnapshotError, OSError) as exc:
            log.warning("cannot save a guest to resume, booting instead: %s", exc)
            return None

    def _collect(self, scenarios: list[Scenario], guest_paths: list[str], share: Path,
                 outcomes: list[GuestResult | VMError], wall: float) -> list[ScenarioResult]:
        """Every guest's records, as results; a scenario without one carries what went wrong in the guests."""
        records, guests, troubles = [], {}, []
        for i, guest in enumerate(outcomes):
            name = f"guest {i + 1} of {len(outcomes)}"
            if isinstance(guest, VMError):
                troubles.append(f"{name}: the VM failed: {guest}")
                continue
            results_file = share / f"results-{i}.json"
            if not results_file.is_file():
                detail = (guest.stderr.strip() or guest.stdout.strip())[-3000:]
                troubles.append(f"{name} wrote no results (exit {guest.exit_code}):\n{detail}\n"
                                f"console tail:\n{guest.console_tail}")
                continue
            for record in json.loads(results_file.read_text()):
                records.append(record)
                guests[record.get("path")] = guest
        kernel = next((g.kernel_release for g in outcomes if isinstance(g, GuestResult)), self.kernel_release())
        missing = "\n".join(troubles) or "the guests returned no record for this scenario"
        out = adopt_records(scenarios, guest_paths, records, self.result_name, kernel,
                            lambda s: _error(s, self.result_name, kernel, missing))
        for result, guest_path in zip(out, guest_paths):
            guest = guests.get(guest_path)
            if guest is not None:
                result.durations["vm_boot"] = guest.boot_seconds  # qemu start to the first command, booted or resumed
                result.durations["vm_resumed"] = float(guest.restored)
            result.durations["vm_batch_wall"] = round(wall, 3)
        return out

    def run_tool(self, args: Sequence[str], outputs: Sequence[str], timeout: float,
                 extra_distributions: Sequence[str] = (), memory_mb: int = 512) -> tuple[GuestResult, dict[str, bytes]]:
        """Run `python3 -m harness ARGS` in one guest with an empty share at /out; return the guest's
        result and the named files it wrote there (missing ones are left out). `extra_distributions`
        are Python distributions the tool needs beyond the scenario runner's (a separate cached image)."""
        reason = self.available()
        if reason:
            raise BackendUnavailable(reason)
        share = Path(proc.temp_dir("vm-share"))
        try:
            guest = run_in_guest(["python3", "-m", "harness", *args], self.bundle(), self.image(extra_distributions),
                                 share_dir=share, timeout=timeout, env=_guest_env(), memory_mb=memory_mb)
            files = {name: (share / name).read_bytes() for name in outputs if (share / name).is_file()}
        finally:
            shutil.rmtree(share, ignore_errors=True)
        return guest, files


def _cost(scenario: Scenario) -> int:
    """A scenario's expected cost: the probe matrix grows with the square of its containers, and a scenario
    with several Docker hosts builds and probes a world per host."""
    runs = sum(isinstance(step.command, ContainerRun) for step in scenario.steps)
    return (runs * runs + len(scenario.steps)) * len(scenario.topology.hosts)


def _guest_env() -> dict[str, str]:
    # The guest has no terminal; keep rich from guessing, and give the guest our run id for its names.
    return {"TERM": "dumb", "COLUMNS": "160", **child_env()}


def _error(scenario: Scenario, backend: str, kernel: str, reason: str, status: str = ERROR) -> ScenarioResult:
    return ScenarioResult(scenario.name, scenario.path, backend, kernel, status, reason=reason, source=scenario.source)


class VMDockerBackend(VMBackend):
    """The docker backend (a real Docker 20.10 engine) inside the guest, for the scenarios this machine's
    kernel cannot run (802.1q, ipvlan, dummy): `--backend docker` hands them here (backends.select).

    The guest boots the image with the docker layer (docker.io's programs, the offline container image,
    cgroup2; `backends.vm.image`), 1 GB of memory (the layer adds about 195 MB to the initramfs, which is
    unpacked into RAM), and runs `python3 -m harness run --backend docker`; its results carry backend
    `docker (vm)` and the guest's kernel release.
    """

    name = "vm-docker"
    description = ("the docker backend (a real Docker 20.10 engine) inside the qemu VM booting Debian's kernel "
                   "(TCG), for the scenarios this kernel cannot run")
    guest_backend = "docker"
    image_layers = ("docker",)
    memory_mb = 1024
    # Measured under TCG on this machine kind: dockerd starts in 10-25 s, a scenario takes 30-150 s.
    boot_allowance = 180.0
    per_scenario_allowance = 300.0
    result_name = "docker (vm)"
    # Its guest starts a real dockerd for each run, and the docker layer makes the saved guest ~200 MB
    # larger; the agent runs the netns tier only.
    snapshots = False
    # DEFAULT_APPEND's acpi=off hides the HPET: the guest clock is then jiffies, which under TCG drifts
    # (measured: minutes off the host's within one boot, ahead or behind), and dockerd gives containerd 15 s
    # of that clock to start ("failed to start containerd: timeout waiting for containerd to start").
    # With ACPI the kernel calibrates the TSC against the HPET and keeps the host's time.
    kernel_append = ("acpi=force",)

    def available(self) -> str | None:
        reason = super().available()
        if reason:
            return reason
        from backends.docker.daemon import missing_binaries
        from backends.docker.image import cached_image, default_cache_dir, find_busybox

        missing = missing_binaries()
        if missing:
            return (f"docker.io is not installed on this machine, so the guest gets no engine "
                    f"({', '.join(missing)} missing; apt-get install docker.io)")
        if find_busybox() is None and cached_image(default_cache_dir()) is None:
            return "no static busybox to build the offline container image from (apt-get install busybox-static)"
        return None

    def prepare(self) -> str:
        said = super().prepare()
        reason = self.available()
        if reason:
            raise BackendUnavailable(reason)
        image = self.batch_image()
        return f"{said}; image with the docker layer built ({image.stat().st_size / 1e6:.0f} MB)"
