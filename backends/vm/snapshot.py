"""Guest snapshots: boot a guest once, save it with the harness loaded, and restore it for every job.

Main objects:

* :class:`SnapshotSpec`: everything a saved guest depends on (kernel, image, qemu binary, machine
  options); its :meth:`~SnapshotSpec.key` names the cached file.
* :func:`ensure_snapshot`: the cached snapshot for a spec, made on first use (one boot and a save, under
  a file lock so that parallel runs make it once); :func:`snapshot_path` finds it without making it.
* :class:`AgentChannel`: the host's end of one agent VM: its serial socket (the go line) and QMP (the
  save, and "is the restored guest running yet").
* :class:`SnapshotError`: the snapshot could not be made or restored (a :class:`VMError`); callers boot
  instead.

The guest side is ``backends/vm/guest_agent.py``; ``guest_init.sh`` starts it when the kernel command
line holds ``hx.agent``. Why and what it saves, measured on this machine kind (2 vCPU, TCG; see
docs/performance.md): a boot to the first harness command takes ~7 s (kernel and initramfs ~3 s, Python
and the imports ~4 s); a restore of the saved guest ~0.3 s. The file holds the guest's RAM without its
zero pages (~250 MB for the 512 MB netns guest); qemu writes it in ~0.2 s through ``exec:cat`` and reads it
back the same way (qemu 7.2 has no ``file:`` migration URI).

qemu refuses to save a guest with a 9p share mounted, so the agent mounts its shares only after the
restore; the share paths given to the restored qemu can differ from the saved one's, the device layout
cannot: an agent VM always has both 9p devices (``hxctl`` and ``hxshare``), the agent's serial port and a
QMP socket, in that order (:data:`LAYOUT` names that layout in the key).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shlex
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from backends.vm.errors import VMError

log = logging.getLogger(__name__)

__all__ = ["AGENT_APPEND", "AgentChannel", "SnapshotError", "SnapshotSpec", "agent_qemu_args", "ensure_snapshot",
           "snapshot_path"]

AGENT_APPEND = "hx.agent"
LAYOUT = "agent-v1: hxctl+hxshare 9p, ttyS1 agent socket, qmp socket"
READY = b"READY\n"
READY_TIMEOUT = 120.0  # boot and imports under TCG take ~7 s on a quiet machine, several times that under load
SAVE_TIMEOUT = 60.0
RESUME_TIMEOUT = 60.0
_KEEP_SNAPSHOTS = 2  # per kernel release: ~250 MB each
# qemu's `cat` opens the file within a second of ensure_snapshot returning it; an open file outlives its unlink.
_PRUNE_GRACE_SECONDS = 60


class SnapshotError(VMError):
    """A snapshot could not be made or restored; the message says which step and why."""


@dataclass(frozen=True)
class SnapshotSpec:
    """What a saved guest depends on. A restore must start qemu with the same machine: the same kernel and
    image files (read again at start-up), memory, CPU model and device layout."""

    release: str
    boot_image: Path
    initramfs: Path
    memory_mb: int
    cpu: str
    append: tuple[str, ...]
    qemu: str

    def key(self) -> str:
        qemu = shutil.which(self.qemu) or self.qemu
        parts = [LAYOUT, f"memory {self.memory_mb}", f"cpu {self.cpu}", "append " + " ".join(self.append)]
        # A rebuilt kernel or an upgraded qemu is another snapshot. The image's name holds its layers' content
        # hashes (backends.vm.image); its mtime is not used: the image cache touches it on every use.
        for path, mtime in ((self.boot_image, True), (self.initramfs, False), (Path(qemu), True)):
            st = Path(path).stat()
            parts.append(f"{Path(path).resolve()} {st.st_size}" + (f" {st.st_mtime_ns}" if mtime else ""))
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def _directory(cache_dir: Path, spec: SnapshotSpec) -> Path:
    return cache_dir / "snapshots" / spec.release


def snapshot_path(cache_dir: Path, spec: SnapshotSpec) -> Path:
    """Where the snapshot of `spec` lives (it may not exist yet)."""
    return _directory(cache_dir, spec) / f"guest-{spec.key()}.qemu"


def agent_qemu_args(workdir: Path, incoming: Path | None) -> list[str]:
    """qemu options of an agent VM: QMP, the agent's serial port (qemu waits at start-up until the host
    connects to it, so nothing the guest says there is lost), and the saved state to resume from."""
    args = ["-qmp", f"unix:{workdir / 'qmp.sock'},server=on,wait=off",
            "-chardev", f"socket,id=hxagent,path={workdir / 'agent.sock'},server=on,wait=on",
            "-serial", "chardev:hxagent"]
    if incoming is not None:
        args += ["-incoming", "exec:cat " + shlex.quote(str(incoming))]
    return args


class AgentChannel:
    """The host's end of an agent VM: connect right after qemu starts (qemu waits for it)."""

    def __init__(self, workdir: Path, alive, timeout: float = 30.0) -> None:
        self._serial = _connect(workdir / "agent.sock", alive, timeout, "the agent's serial port")
        from qemu.qmp.legacy import QEMUMonitorProtocol

        self._qmp_path = workdir / "qmp.sock"
        deadline = time.monotonic() + timeout
        while not self._qmp_path.exists():  # created after the agent's chardev, which waited for us
            if time.monotonic() > deadline or not alive():
                raise SnapshotError("qemu never opened its QMP socket")
            time.sleep(0.005)
        self.qmp = QEMUMonitorProtocol(str(self._qmp_path))
        try:
            self.qmp.connect()
        except _qmp_failures() as exc:
            self._serial.close()
            raise SnapshotError(f"cannot talk to qemu's QMP socket: {exc or type(exc).__name__}") from None

    def _cmd(self, command: str, **arguments) -> dict:
        """A QMP command's answer; qemu exiting meanwhile (a saved state it could not load) is a SnapshotError."""
        try:
            answer = self.qmp.cmd(command, **arguments)
        except _qmp_failures() as exc:
            raise SnapshotError(f"qemu stopped answering (QMP {command}: {exc or type(exc).__name__})") from None
        return answer if isinstance(answer, dict) else {}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.qmp.close()
        self._serial.close()

    def __enter__(self) -> AgentChannel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_ready(self, timeout: float, alive) -> None:
        """Block until the freshly booted agent says READY (it has loaded the harness)."""
        data = b""
        deadline = time.monotonic() + timeout
        self._serial.settimeout(0.2)
        while not data.endswith(READY):
            if time.monotonic() > deadline:
                raise SnapshotError(f"the guest agent did not say READY within {timeout:.0f} s")
            try:
                chunk = self._serial.recv(256)
            except TimeoutError:
                if not alive():
                    raise SnapshotError("qemu exited before the guest agent said READY") from None
                continue
            if not chunk:
                raise SnapshotError("the guest agent's serial port closed before it said READY")
            data += chunk

    def save(self, target: Path, timeout: float = SAVE_TIMEOUT) -> None:
        """Save the running guest's whole state to `target` (live: the guest is idle, so one pass)."""
        self._cmd("migrate-set-parameters", **{"max-bandwidth": 64 * 1024 ** 3})
        self._cmd("migrate", uri="exec:cat > " + shlex.quote(str(target)))
        deadline = time.monotonic() + timeout
        while True:
            state = self._cmd("query-migrate")
            status = state.get("status")
            if status == "completed":
                return
            if status in ("failed", "cancelled"):
                raise SnapshotError(f"qemu could not save the guest: {state.get('error-desc', status)}")
            if time.monotonic() > deadline:
                raise SnapshotError(f"saving the guest did not finish within {timeout:.0f} s (status {status})")
            time.sleep(0.02)

    def resume(self, timeout: float = RESUME_TIMEOUT) -> None:
        """Wait until the restored guest runs, then send the go line: fresh entropy and the host's clock.
        (Bytes sent before the guest's serial port state is loaded could be lost with the old state.)"""
        deadline = time.monotonic() + timeout
        while True:
            status = self._cmd("query-status").get("status")
            if status == "running":
                break
            if status not in ("inmigrate", "prelaunch", "paused", "restore-vm"):
                raise SnapshotError(f"the restored guest is {status!r}, not running: the snapshot did not load")
            if time.monotonic() > deadline:
                raise SnapshotError(f"the restored guest was not running within {timeout:.0f} s (status {status})")
            time.sleep(0.005)
        go = {"entropy": secrets.token_hex(32), "time": time.time()}
        self._serial.sendall(json.dumps(go).encode() + b"\n")


def _qmp_failures() -> tuple[type[BaseException], ...]:
    # Imported when used: backends.vm is imported in the guest too, which has no qemu.qmp.
    from qemu.qmp import QMPError

    return QMPError, OSError, EOFError


def _connect(path: Path, alive, timeout: float, what: str) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline or not alive():
                raise SnapshotError(f"cannot connect to {what} ({path})") from None
            time.sleep(0.005)


def ensure_snapshot(cache_dir: Path, spec: SnapshotSpec, make_vm) -> Path:
    """The snapshot of `spec`, made now if it is not cached. `make_vm(incoming)` returns a QemuVM context
    (an agent VM: `backends.vm.qemu.QemuVM(..., agent=True)`) booting the spec's kernel and image."""
    path = snapshot_path(cache_dir, spec)
    if path.is_file():
        os.utime(path)  # most recently used: kept by the pruning
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            return path
        t0 = time.monotonic()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with make_vm(None) as vm, AgentChannel(vm.workdir, vm.running) as channel:
                try:
                    channel.wait_ready(READY_TIMEOUT, vm.running)
                    channel.save(tmp)
                except SnapshotError as exc:
                    raise SnapshotError(f"{exc}\nqemu: {vm.qemu_stderr() or '(nothing)'}\nconsole tail:\n"
                                        f"{vm.console_tail()}", console_tail=vm.console_tail()) from None
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        log.info("saved the guest with the harness loaded in %.1f s: %s (%.0f MB)", time.monotonic() - t0, path,
                 path.stat().st_size / 1e6)
    _prune(path.parent, keep=path)
    return path


def _prune(directory: Path, keep: Path) -> None:
    """Remove all but the most recently used snapshots of a release (not one used in the last minute:
    another run may be about to resume it)."""
    snaps = sorted(directory.glob("guest-*.qemu"), key=lambda p: p.stat().st_mtime, reverse=True)
    now = time.time()
    for partial in directory.glob(".guest-*.tmp"):  # a save killed before its `finally` ran
        if now - partial.stat().st_mtime > _PRUNE_GRACE_SECONDS:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
    for old in snaps[_KEEP_SNAPSHOTS:]:
        if old != keep and now - old.stat().st_mtime > _PRUNE_GRACE_SECONDS:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
            with contextlib.suppress(FileNotFoundError):
                Path(str(old) + ".lock").unlink()

