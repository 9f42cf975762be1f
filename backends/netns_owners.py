"""Owner records, prefix claims and the cleaning of killed runs' leftovers, for `backends.netns`.

`Owner` is who owns a prefix's namespaces: a process (PID and start time from /proc/<pid>/stat, so that a
reused PID is not taken for the owner) running one scenario. `_claim_prefix` claims the first free prefix
of this run and worker with an owner record, `/run/harness/<prefix>.pid` (`_claim`: exclusive, by a hard
link), and `_release` removes it. `check_name` checks a namespace name before any syscall touches it.

`clean_leftovers` removes, by prefix only, what a killed run left: the processes still running in its
namespaces (found by the namespace's device and inode, ended by PID), the namespaces and dead owners'
records; it names the owner of every namespace it keeps.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from pyroute2 import netns

from harness import proc
from harness.errors import HarnessError
from harness.runid import PREFIX, prefix_candidates

NETNS_DIR = "/run/netns"
OWNERS_DIR = "/run/harness"  # <prefix>.pid: the owner record of a prefix's namespaces (see `_claim`)
LEFTOVER = re.compile(rf"^{PREFIX}[0-9a-f]{{4}}[0-9a-z]{{2}}-")

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")

def check_name(name: str) -> str:
    """`name` if it can name a namespace of ours, else HarnessError, before any syscall touches it.

    pyroute2 takes a name holding '/' for a path relative to the working directory (and would create
    directories and mounts there); '.' and '..' are directories. So: [A-Za-z0-9_.-], at most 15 characters.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise HarnessError(f"invalid network namespace name {name!r}: only letters, digits, '_', '.' and '-', "
                           "at most 15 characters, not '.' or '..'")
    return name


def _identity(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of what is at `path` now: for a namespace mount, the namespace itself."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


# -- owner records ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    """Who owns a prefix's namespaces: a process (PID and start time) running one scenario."""

    pid: int
    scenario: str = ""  # the session's label; empty in an old plain-PID record
    started: str = ""  # ISO 8601, when the record was written
    starttime: int | None = None  # /proc/<pid>/stat field 22, clock ticks after boot; None: not recorded

    def describe(self) -> str:
        return f"scenario {self.scenario}, pid {self.pid}" if self.scenario else f"pid {self.pid}"


def _record_path(prefix: str) -> str:
    return os.path.join(OWNERS_DIR, f"{prefix}.pid")


_process_start = proc.process_start  # when a process started: with its PID, it names the owner


def _claim(prefix: str, label: str) -> bool:
    """Record this process as the owner of `prefix`'s namespaces, exclusively: False if `prefix` has an
    owner record already (a live run's, or a killed run's that `harness clean` has not removed yet)."""
    pid = os.getpid()
    record = {"pid": pid, "scenario": label, "started": datetime.now(UTC).isoformat(timespec="seconds"),
              "starttime": _process_start(pid)}
    path = _record_path(prefix)
    temporary = f"{path}.{pid}.{threading.get_ident()}.tmp"
    for attempt in range(100):
        try:
            try:
                os.makedirs(OWNERS_DIR)
            except FileExistsError:  # (makedirs' exist_ok raises it too when a rmdir follows the mkdir)
                pass
            # Written whole, then linked: a reader never sees half a record, and link(2) fails with EEXIST
            # when the record exists, so of two claims of one prefix exactly one wins.
            with open(temporary, "w") as f:
                json.dump(record, f)
        except FileNotFoundError:
            # Another run's _release removed the empty directory between makedirs and open: again.
            # (Once our temporary file is in it, the directory is not empty and stays.)
            if attempt == 99:
                raise
            continue
        try:
            os.link(temporary, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(temporary)
    return False


def _release(prefix: str, owner: Owner | None = None) -> None:
    """Remove `prefix`'s owner record if it is this process's, or, given `owner`, if it still is that dead
    owner's (a concurrent `harness clean` may have removed it meanwhile and a new run claimed the prefix)."""
    current = _read_owner(prefix)
    if current is None or (current != owner if owner is not None else current.pid != os.getpid()):
        return
    try:
        os.unlink(_record_path(prefix))
        os.rmdir(OWNERS_DIR)  # only succeeds when no other run owns anything: nothing left behind
    except OSError:
        pass


def _claim_prefix(label: str) -> str:
    """Claim the first prefix of this run and worker that no live run owns and no namespace uses."""
    busy = []
    for prefix in prefix_candidates():
        if _prefix_in_use(prefix):
            busy.append(prefix)
            continue
        if _claim(prefix, label):
            if not _prefix_in_use(prefix):  # a namespace made between the check and the claim: not ours
                return prefix
            _release(prefix)
        busy.append(prefix)
    raise HarnessError(f"every namespace prefix of this run ({busy[0][:-1]}*) is in use by a live run or a killed "
                       "run's leftovers: run `python3 -m harness clean`, or set another HARNESS_RUN_ID")


def _prefix_in_use(prefix: str) -> bool:
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return False
    return any(name.startswith(prefix + "-") for name in names)


def _read_owner(prefix: str) -> Owner | None:
    """The owner record of `prefix` as written, alive or not; None when there is none or it is unreadable.

    Old records hold only a PID and are still understood (without the start time check)."""
    try:
        with open(_record_path(prefix)) as f:
            text = f.read().strip()
    except OSError:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, int) and not isinstance(data, bool):  # an old plain-PID record
        return Owner(data) if data > 0 else None
    if not isinstance(data, dict):
        return None
    pid, starttime = data.get("pid"), data.get("starttime")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    return Owner(pid, str(data.get("scenario") or ""), str(data.get("started") or ""),
                 starttime if isinstance(starttime, int) and not isinstance(starttime, bool) else None)


def _live_owner(prefix: str) -> Owner | None:
    """The owner of `prefix` if it still runs: its PID is alive and, when recorded, started when the record
    says (else the PID was reused by another process and the owner is gone)."""
    owner = _read_owner(prefix)
    if owner is None:
        return None
    now = _process_start(owner.pid)
    if now is None:
        return None
    if owner.starttime is not None and owner.starttime != now:
        return None
    return owner


def _remove_netns(name: str) -> None:
    check_name(name)
    if os.path.lexists(os.path.join(NETNS_DIR, name)):
        try:
            netns.remove(name)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EINVAL):
                raise


def clean_leftovers(match: str = PREFIX, ended: list[str] | None = None) -> tuple[list[str], list[str]]:
    """Remove what killed runs left behind, by the harness prefix only: namespaces, the processes still
    running in them, and dead owners' records.

    Namespaces whose owner (see `_claim`) is still running belong to a live run (another shell, a
    pytest-xdist worker) and are kept. A process whose network namespace (device and inode of
    /proc/PID/ns/net) is a removed namespace's was started there by the dead run (an iperf3 or probe
    server after a SIGKILL): it is killed by PID before the name goes, or it would keep the namespace
    alive, out of sight. Returns (removed, kept): namespace names, each kept one followed by whose it is,
    e.g. "hx1234m1-host (scenario macvlan-bridge, pid 4242)"; `ended` (if given) gets "PID (command) in
    NAME" for each process ended. `match` narrows the names further (a test cleaning only its own run's).
    """
    removed, kept = [], []
    names = sorted(os.listdir(NETNS_DIR)) if os.path.isdir(NETNS_DIR) else []
    for name in names:
        if not LEFTOVER.match(name) or not name.startswith(match) or not _NAME.fullmatch(name):
            continue
        prefix = name.split("-", 1)[0]
        owner = _live_owner(prefix)
        if owner is not None:
            kept.append(f"{name} ({owner.describe()})")
            continue
        for what in _end_processes_in(name):
            if ended is not None:
                ended.append(f"{what} in {name}")
        if _live_owner(prefix) is not None:  # claimed meanwhile by a new run: not ours to remove
            continue
        _remove_netns(name)
        _release(prefix, _read_owner(prefix))
        removed.append(name)
    # Records of dead owners whose namespaces are gone (a run killed between its last removal and its
    # release): they would keep the prefix from being claimed again.
    for entry in sorted(os.listdir(OWNERS_DIR)) if os.path.isdir(OWNERS_DIR) else []:
        prefix = entry[:-len(".pid")]
        if not entry.endswith(".pid") or not prefix.startswith(match) or not LEFTOVER.match(prefix + "-"):
            continue
        owner = _read_owner(prefix)
        if owner is not None and _live_owner(prefix) is None and not _prefix_in_use(prefix):
            _release(prefix, owner)
    return removed, kept


def _end_processes_in(name: str, grace: float = 5.0) -> list[str]:
    """SIGKILL every process in namespace `name` (by PID, through a pidfd where there is one, so a PID
    reused meanwhile is never hit); wait until they are gone. Returns "PID (command)" for each."""
    target = _identity(os.path.join(NETNS_DIR, name))
    if target is None:
        return []
    ended, pids = [], []
    for pid in _pids_in_netns(target):
        command = _command(pid)
        try:
            fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            fd = None
        try:
            if _identity(f"/proc/{pid}/ns/net") != target:  # it exited and the PID went to another process
                continue
            if fd is not None:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        finally:
            if fd is not None:
                os.close(fd)
        ended.append(f"{pid} ({command})")
        pids.append(pid)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _identity(f"/proc/{pid}/ns/net") == target]
        if pids:
            time.sleep(0.02)
    return ended


def _pids_in_netns(target: tuple[int, int]) -> list[int]:
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me and _identity(f"/proc/{entry}/ns/net") == target:
            found.append(int(entry))
    return sorted(found)


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"
