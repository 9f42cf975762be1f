"""Run one command in a throwaway qemu guest booting a full distribution kernel.

Main objects:

* :class:`QemuVM`: a context manager owning one qemu process (TCG, no network device at all);
  leaving the ``with`` block kills the process group if it is still running and removes its files.
* :func:`run_in_guest`: boot, run ``argv`` in the guest, power off; returns a :class:`GuestResult`.
* :class:`GuestResult`: exit code, stdout, stderr, console tail, guest kernel release, timings.
* :func:`run_in_guests`: the same for a list of :class:`GuestJob`, one guest each, booted at once.
* :class:`VMError` (and :class:`VMTimeout`, from ``backends.vm.errors``): the VM could not run the
  command; the message carries the qemu command or the guest console tail.

qemu is started through ``harness.proc.spawn`` (its own process group, killed with it; SIGKILLed by
the kernel if the harness itself dies), its stderr and stdout going to files beside the console.

How data crosses the VM boundary, and why:

* The job goes in, and stdout, stderr and the exit status come out, through a virtio-9p share of a
  private host temp dir (tag ``hxctl``, mounted on /hx/ctl by the guest's /init). 9p needs no
  guest agent and no parsing: stdout and stderr stay separate byte streams, a file the guest
  wrote is on the host the moment the write returns (9p is uncached), and a command that hangs
  leaves its partial output readable for the error message. The serial console could not keep
  stdout and stderr apart and mixes them with kernel messages; virtio-serial needs a reader
  thread on the host. The user's ``share_dir`` is a second 9p share (tag ``hxshare``) mounted at
  ``share_mount`` (default /out), for scenario files in and result files out.
* The exit status is also reported through ``isa-debug-exit`` (qemu exits with ``code << 1 | 1``):
  an odd qemu exit status proves that /init ran to its end, whereas a kernel panic (``panic=-1``
  with ``-no-reboot``) makes qemu exit 0 at once instead of hanging until the timeout.
* The console goes to a file, kept only for diagnostics (``console_tail``).

Boot time is "qemu started" to "guest command starts": the guest writes ``started`` on the 9p share
just before it runs the command, and qemu, a host process, gives that file a host-clock mtime, so
no polling and no guest clock are involved.

Machine options, measured on this 2-vCPU machine kind (KVM unusable, TCG only; median boot to
the guest command, see docs/performance.md): ``-smp 1`` 3.4 s against 5.5 s for ``-smp 2`` (a second
TCG vCPU only adds synchronisation); ``-cpu max`` boots 0.3 s slower than ``qemu64`` but runs the
guest's Python about 0.8 s faster per pyroute2 import, which dominates real runs; ``-m 512``
because with 256 MB the initramfs does not fit the rootfs (tmpfs, half of RAM: "Initramfs unpacking
failed: write error") and 1024 MB boots 0.3 s slower; qboot instead of SeaBIOS gained nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING

from backends.vm.errors import VMError, VMTimeout
from backends.vm.snapshot import AGENT_APPEND, AgentChannel, SnapshotError, agent_qemu_args
from harness import proc
from harness.errors import CommandFailed

if TYPE_CHECKING:
    from backends.vm.kernel import KernelBundle

__all__ = [
    "DEFAULT_APPEND",
    "GuestJob",
    "GuestResult",
    "QemuVM",
    "VMError",
    "VMTimeout",
    "qemu_available",
    "run_in_guest",
    "run_in_guests",
]

QEMU = "qemu-system-x86_64"
AGENT_ARGV = ("python3", "-m", "harness")  # what a restored guest's agent runs (backends/vm/guest_agent.py)
CONSOLE_TAIL_LINES = 40

# Measured on this machine kind (see docs/performance.md):
# quiet: every console character is an emulated UART write under TCG. panic=-1 with -no-reboot
# turns a kernel panic into an immediate qemu exit instead of a hang until the timeout.
# cryptomgr.notests skips the crypto self-tests (-0.25 s); acpi=off skips the ACPI interpreter and
# PCI hotplug slots (-0.25 s; virtio-pci works with the legacy IRQ routing, and /init powers off
# through isa-debug-exit, not ACPI). mitigations=off: speculation workarounds only cost time in a
# throwaway guest. i8042.*: no PS/2 probing, there is no keyboard.
DEFAULT_APPEND: tuple[str, ...] = (
    "console=ttyS0", "quiet", "loglevel=4", "panic=-1", "rdinit=/init", "cryptomgr.notests",
    "acpi=off", "mitigations=off", "i8042.noaux", "i8042.nomux", "i8042.nopnp", "i8042.dumbkbd",
    "random.trust_cpu=on",
)


def qemu_available(binary: str = QEMU) -> str | None:
    """Why qemu cannot be used here, or None when it can (for skips and capability reports)."""
    if shutil.which(binary) is None:
        return f"{binary} not found (Debian package qemu-system-x86)"
    return None


@dataclass(frozen=True)
class GuestResult:
    """What a guest command did. ``boot_seconds``: qemu start to guest command start (booted or restored)."""

    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    console_tail: str
    kernel_release: str
    boot_seconds: float
    total_seconds: float
    restored: bool = False  # resumed from a saved guest (backends.vm.snapshot), not booted

    def assert_success(self) -> GuestResult:
        """Return self, or raise VMError with the command, exit code and stderr."""
        if self.exit_code != 0:
            raise VMError(f"guest command `{shlex.join(self.argv)}` exited with {self.exit_code}:"
                          f"\n{self.stderr.strip() or self.stdout.strip() or '(no output)'}",
                          console_tail=self.console_tail, stdout=self.stdout, stderr=self.stderr)
        return self


_ANSI_ESCAPE = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|[A-Za-z])")


def _tail(path: Path, lines: int = CONSOLE_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    text = _ANSI_ESCAPE.sub("", text)  # SeaBIOS clears the screen with escape sequences
    return "\n".join(text.rstrip("\n").split("\n")[-lines:])


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""


class QemuVM:
    """One qemu process booting ``kernel`` with ``initramfs`` as its whole root filesystem.

    ``shares`` maps a virtio-9p mount tag to a host directory. The VM has no network device at
    all (``-nodefaults -nic none``): guest traffic never leaves the guest. qemu is started by
    ``harness.proc.spawn`` in its own process group, so a terminal's Ctrl-C reaches only the harness,
    which then kills the group; SIGTERM to the harness is turned into SystemExit while the VM runs (so
    the finally blocks run), and PR_SET_PDEATHSIG kills qemu if the harness itself is SIGKILLed.
    """

    def __init__(self, kernel: KernelBundle | Path, initramfs: Path, *,
                 shares: Mapping[str, Path] | None = None, append: Sequence[str] = (),
                 memory_mb: int = 512, smp: int = 1, cpu: str = "max", qemu: str = QEMU,
                 extra_args: Sequence[str] = (), agent: bool = False, incoming: Path | None = None) -> None:
        self.boot_image = Path(getattr(kernel, "boot_image", kernel))
        self.initramfs = Path(initramfs)
        self.shares = dict(shares or {})
        # An agent VM (backends.vm.snapshot): /init starts the guest agent; `incoming` is a saved agent VM
        # to resume instead of booting.
        self.agent = agent or incoming is not None
        self.incoming = incoming
        self.append = tuple(DEFAULT_APPEND) + tuple(append) + ((AGENT_APPEND,) if self.agent else ())
        self.memory_mb = memory_mb
        self.smp = smp
        self.cpu = cpu
        self.qemu = qemu
        self.extra_args = tuple(extra_args)
        self._workdir: Path | None = None
        self._stack: contextlib.ExitStack | None = None
        self._proc: proc.BackgroundProcess | None = None
        self._old_sigterm: signal.Handlers | object | None = None
        self.started_at = 0.0  # time.time() just before qemu started
        self._started_mono = 0.0

    @property
    def console_path(self) -> Path:
        assert self._workdir is not None, "QemuVM is not started"
        return self._workdir / "console.log"

    @property
    def workdir(self) -> Path:
        assert self._workdir is not None, "QemuVM is not started"
        return self._workdir

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def argv(self, console: Path | str = "console.log", workdir: Path | None = None) -> list[str]:
        """The qemu command line, with the serial console written to ``console`` (an agent VM's sockets
        go in ``workdir``)."""
        argv = [
            self.qemu, "-accel", "tcg", "-machine", "pc", "-cpu", self.cpu,
            "-smp", str(self.smp), "-m", str(self.memory_mb),
            # -nodefaults drops the default NIC (user-mode networking), VGA, floppy and CD-ROM;
            # -nic none says it again, explicitly: this VM has no way out.
            "-nodefaults", "-no-user-config", "-nic", "none",
            "-nographic", "-no-reboot", "-monitor", "none",
            "-serial", f"file:{console}",
            "-kernel", str(self.boot_image), "-initrd", str(self.initramfs),
            "-append", " ".join(self.append),
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
        ]
        for tag, path in sorted(self.shares.items()):
            escaped = str(path).replace(",", ",,")  # qemu's option syntax doubles commas
            argv += ["-fsdev", f"local,id={tag},path={escaped},security_model=none,multidevs=remap",
                     "-device", f"virtio-9p-pci,fsdev={tag},mount_tag={tag}"]
        if self.agent:
            argv += agent_qemu_args(workdir or Path("."), self.incoming)
        return argv + list(self.extra_args)

    def __enter__(self) -> QemuVM:
        for what, path in (("kernel", self.boot_image), ("initramfs", self.initramfs),
                           *((("snapshot", self.incoming),) if self.incoming else ())):
            if not path.is_file():
                raise VMError(f"{what} {path} does not exist")
        for tag, path in self.shares.items():
            if not Path(path).is_dir():
                raise VMError(f"share {tag}: {path} is not a directory")
        self._workdir = Path(proc.temp_dir("vm"))  # its owner in its name: `harness clean` knows when it is dead
        self._stack = contextlib.ExitStack()
        try:
            self._install_sigterm()
            argv = self.argv(self.console_path, self._workdir)
            self.started_at = time.time()
            self._started_mono = time.monotonic()
            try:
                # Its stdout and stderr go to files in the work dir; leaving the stack SIGKILLs its group.
                self._proc = self._stack.enter_context(
                    proc.spawn(argv, die_with_parent=True, gentle=False, output_dir=self._workdir))
            except CommandFailed as exc:
                raise VMError(f"cannot start `{shlex.join(argv)}`: {exc.stderr}") from None
        except BaseException:
            self._cleanup()
            raise
        return self

    def wait(self, timeout: float) -> int:
        """qemu's exit status; on timeout kill qemu and raise VMTimeout with the console tail."""
        assert self._proc is not None, "QemuVM is not started"
        status = self._proc.wait(timeout)
        if status is None:
            self.kill()
            raise VMTimeout(
                f"guest did not power off within {timeout:.0f} s; killed qemu (pid "
                f"{self._proc.pid}). Console tail:\n{self.console_tail()}",
                console_tail=self.console_tail())
        return status

    def elapsed(self) -> float:
        return time.monotonic() - self._started_mono

    def console_tail(self, lines: int = CONSOLE_TAIL_LINES) -> str:
        return _tail(self.console_path, lines) if self._workdir else ""

    def qemu_stderr(self) -> str:
        """What qemu itself printed (its stderr, then its stdout; -nographic leaves stdout empty)."""
        if self._workdir is None:
            return ""
        return "\n".join(filter(None, (_read(self._workdir / name).strip() for name in ("stderr", "stdout"))))

    def kill(self) -> None:
        """Kill qemu's process group (qemu is its leader: pgid == its pid) and reap it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        with proc.deferred_signals():  # a signal now waits: it must not leave qemu or its directory behind
            try:
                if self._stack is not None:
                    self._stack.close()  # ends qemu's process group (SIGKILL) and reaps it
                    self._stack = None
            finally:
                self._restore_sigterm()
                if self._workdir is not None:
                    shutil.rmtree(self._workdir, ignore_errors=True)
                    self._workdir = None

    def _install_sigterm(self) -> None:
        # Python's default SIGTERM action ends the process without running finally blocks, which
        # would leave qemu running; only the main thread can install a handler.
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            raise SystemExit(128 + signum)

        self._old_sigterm = signal.signal(signal.SIGTERM, on_sigterm)

    def _restore_sigterm(self) -> None:
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)  # type: ignore[arg-type]
            self._old_sigterm = None


def _job_script(argv: Sequence[str], cwd: str, env: Mapping[str, str],
                share_mount: str | None) -> str:
    """The job /init sources: only its helpers and shell-quoted data (shlex.quote is POSIX sh)."""
    lines = ["# written by backends/vm/qemu.py, sourced by the guest's /init"]
    if share_mount is not None:
        q = shlex.quote(share_mount)
        lines.append(f"hx_mount hxshare {q} || hx_fail 'cannot mount the shared directory on '{q}")
    q = shlex.quote(cwd)
    lines.append(f"cd {q} || hx_fail 'cannot change to directory '{q}")
    for key, value in sorted(env.items()):
        if not key.isidentifier():
            raise ValueError(f"invalid environment variable name {key!r}")
        lines.append(f"export {key}={shlex.quote(value)}")
    lines.append("hx_exec " + " ".join(shlex.quote(a) for a in argv))
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class GuestJob:
    """One command for one guest: what `run_in_guests` boots a VM for."""

    argv: tuple[str, ...]
    share_dir: Path | None = None
    cwd: str | None = None
    env: Mapping[str, str] | None = None
    share_mount: str = "/out"


def run_in_guest(argv: Sequence[str], kernel: KernelBundle | Path, initramfs: Path,
                 share_dir: Path | str | None = None, timeout: float = 300.0, *,
                 cwd: str | None = None, env: Mapping[str, str] | None = None,
                 share_mount: str = "/out", memory_mb: int = 512, smp: int = 1,
                 cpu: str = "max", append: Sequence[str] = (), qemu: str = QEMU,
                 qemu_args: Sequence[str] = ()) -> GuestResult:
    """Boot a guest, run ``argv`` in it as root, power it off, and return what it did.

    ``share_dir`` (a host directory) is mounted read-write at ``share_mount`` in the guest; ``cwd``
    defaults to ``share_mount`` when there is a share, else ``/``. ``timeout`` covers the whole
    run, boot included. A non-zero exit code of the command is a result, not an error; VMError is
    raised when the guest could not run the command at all, VMTimeout (a VMError) on timeout.
    qemu never outlives this call.
    """
    if not argv:
        raise ValueError("argv must not be empty")
    job = GuestJob(tuple(argv), Path(share_dir) if share_dir is not None else None, cwd, env, share_mount)
    outcome = run_in_guests([job], kernel, initramfs, timeout, memory_mb=memory_mb, smp=smp, cpu=cpu,
                            append=append, qemu=qemu, qemu_args=qemu_args)[0]
    if isinstance(outcome, VMError):
        raise outcome
    return outcome


def run_in_guests(jobs: Sequence[GuestJob], kernel: KernelBundle | Path, initramfs: Path,
                  timeout: float = 300.0, *, memory_mb: int = 512, smp: int = 1, cpu: str = "max",
                  append: Sequence[str] = (), qemu: str = QEMU, qemu_args: Sequence[str] = (),
                  snapshot: Path | None = None) -> list[GuestResult | VMError]:
    """Boot one guest per job, all at once (a single-vCPU TCG guest keeps one host CPU busy), and
    return each job's GuestResult, or the VMError that ended it, in order.

    With ``snapshot`` (``backends.vm.snapshot.ensure_snapshot`` of the same kernel, image and machine
    options) each guest resumes that saved guest instead of booting, and its agent runs the job, which
    must be ``python3 -m harness ...``; a guest that cannot resume ends as a SnapshotError.

    Every qemu is started from this thread under one ExitStack and waited for in turn, so Ctrl-C or
    SIGTERM while waiting kills them all: no qemu outlives this call.
    """
    unavailable = qemu_available(qemu)
    if unavailable:
        raise VMError(unavailable)
    if snapshot is not None:
        for job in jobs:
            if tuple(job.argv[:3]) != AGENT_ARGV:
                raise ValueError(f"a restored guest runs only `python3 -m harness ...` jobs, not {job.argv!r}")
    deadline = time.monotonic() + timeout
    with proc.UndoStack() as stack:  # the control directories go even if a signal comes meanwhile
        started = []
        for job in jobs:
            ctl = Path(proc.temp_dir("ctl"))
            stack.callback(shutil.rmtree, ctl, ignore_errors=True)
            shares = {"hxctl": ctl}
            mount = job.share_mount if job.share_dir is not None else None
            workdir = job.cwd or (job.share_mount if job.share_dir is not None else "/")
            if snapshot is not None:  # an agent VM always has both 9p devices: the saved layout
                empty = ctl / "no-share"
                empty.mkdir()
                shares["hxshare"] = Path(job.share_dir).resolve() if job.share_dir is not None else empty
                (ctl / "job.json").write_text(json.dumps(
                    {"argv": list(job.argv), "cwd": workdir, "env": dict(job.env or {}), "share_mount": mount}))
            else:
                if job.share_dir is not None:
                    shares["hxshare"] = Path(job.share_dir).resolve()
                (ctl / "job.sh").write_text(_job_script(job.argv, workdir, job.env or {}, mount))
            vm = QemuVM(kernel, initramfs, shares=shares, append=append, memory_mb=memory_mb,
                        smp=smp, cpu=cpu, qemu=qemu, extra_args=qemu_args, incoming=snapshot)
            stack.enter_context(vm)
            started.append((job, ctl, vm))
        refused: dict[int, VMError] = {}
        if snapshot is not None:  # each qemu waits for its agent channel before it loads the saved guest
            for i, (_job, _ctl, vm) in enumerate(started):
                try:
                    channel = stack.enter_context(AgentChannel(vm.workdir, vm.running))
                    channel.resume()
                except SnapshotError as exc:
                    vm.kill()
                    refused[i] = SnapshotError(f"cannot resume the saved guest {snapshot}: {exc}\n"
                                               f"qemu: {vm.qemu_stderr() or '(nothing)'}",
                                               console_tail=vm.console_tail())
        return [refused.get(i) or _finish(job, ctl, vm, max(0.0, deadline - time.monotonic()), timeout,
                                          snapshot is not None)
                for i, (job, ctl, vm) in enumerate(started)]


def _finish(job: GuestJob, ctl: Path, vm: QemuVM, remaining: float, timeout: float,
            restored: bool) -> GuestResult | VMError:
    argv = job.argv
    try:
        rc = vm.wait(remaining)
    except VMTimeout as exc:
        stdout, stderr = _read(ctl / "stdout"), _read(ctl / "stderr")
        return VMTimeout(
            f"guest command `{shlex.join(argv)}` did not finish within {timeout:.0f} s; "
            f"killed qemu (pid {vm.pid}).\nstderr so far:\n{stderr.strip() or '(none)'}"
            f"\nconsole tail:\n{exc.console_tail}",
            console_tail=exc.console_tail, stdout=stdout, stderr=stderr)
    total = vm.elapsed()
    console = vm.console_tail()
    qemu_err = vm.qemu_stderr()
    started_at = vm.started_at
    stdout, stderr = _read(ctl / "stdout"), _read(ctl / "stderr")
    status = _read(ctl / "status").strip()
    setup_error = _read(ctl / "setup_error").strip()
    if setup_error:
        return VMError(f"guest could not set up `{shlex.join(argv)}`: {setup_error}",
                       console_tail=console, stdout=stdout, stderr=stderr)
    if not status.lstrip("-").isdigit():
        # qemu's own failures exit 1 with a message, which isa-debug-exit cannot tell apart
        # from a reported 0: trust the message first.
        how = (f"failed with exit status {rc}" if qemu_err else
               f"reported {rc >> 1} through isa-debug-exit" if rc & 1 else
               "powered off or crashed" if rc == 0 else f"exited with status {rc}")
        return VMError(
            f"guest never reported an exit status for `{shlex.join(argv)}`: qemu {how}."
            f"{chr(10) + 'qemu: ' + qemu_err if qemu_err else ''}\nconsole tail:\n{console}",
            console_tail=console, stdout=stdout, stderr=stderr)
    try:
        boot = (ctl / "started").stat().st_mtime - started_at
    except OSError:
        boot = float("nan")
    return GuestResult(argv=tuple(argv), exit_code=int(status), stdout=stdout, stderr=stderr,
                       console_tail=console, kernel_release=_read(ctl / "kernel_release").strip(),
                       boot_seconds=round(boot, 3), total_seconds=round(total, 3), restored=restored)
