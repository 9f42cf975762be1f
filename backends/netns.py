"""The namespace backend: plans applied with pyroute2 on real kernel netlink, in private namespaces.

`NetnsBackend` probes once per process which link kinds this kernel can create (`probe_capabilities`,
in a throwaway namespace) and opens a `NetnsSession` per scenario. The session maps logical nodes
(`up`, `rt`, `host`, containers) to namespaces named `hx<run><worker><seq>-<node>` (at most 15
characters), applies each plan operation over netlink and pushes its undo onto an ExitStack at once, runs
argv lists inside a node (`run`, `run_many`) and starts background processes (`spawn`), both through
`harness.proc`, which enters the node's namespace between fork and exec. Nothing is ever created in the
machine's root namespace.

Each session claims its prefix with an owner record, `/run/harness/<prefix>.pid`: a small JSON document
naming the process (its PID and its start time from /proc/<pid>/stat, so that a reused PID is not taken
for the owner), the scenario (the session's label) and when it started. The claim is exclusive (a hard
link, which fails if the record exists), and a prefix that already has a record or a namespace is
skipped, so two runs given the same `HARNESS_RUN_ID` never share names, and a killed run's leftovers
are never taken for a new run's. A namespace is removed only if it is the very one this session
created (see `_create_node`). Namespace names are checked (`check_name`) before any syscall: pyroute2
takes a name holding '/' for a path relative to the working directory.

`clean_leftovers` removes, by prefix only, what a killed run left: the processes still running in its
namespaces (found by the namespace's device and inode, ended by PID), the namespaces and dead owners'
records; it names the owner of every namespace it keeps. (`harness clean` also removes dead runs'
temporary directories: `harness.proc.clean_temp_dirs`.)
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

from pyroute2 import IPRoute, NetlinkError, netns
from pyroute2.netlink.rtnl.ifinfmsg.plugins import ipvlan as _ipvlan_plugin

from backends.base import SESSION, BackgroundProcess, Capability, CommandResult, unavailable_everywhere
from harness import proc
from harness.docker.emulated import CompiledScenario, EmulatedDocker
from harness.errors import BackendUnavailable, HarnessError, KernelError
from harness.plan import (
    FEATURES,
    AddAddress,
    AddBridgeVlan,
    AddLink,
    AddRoute,
    CreateNode,
    DeleteLink,
    DeleteNode,
    MoveLink,
    Op,
    SetLink,
    SetSysctl,
)
from harness.runid import PREFIX, prefix_candidates

# pyroute2 knows IFLA_IPVLAN_MODE but not IFLA_IPVLAN_FLAGS (bridge/private/vepa, Linux 4.15+).
if len(_ipvlan_plugin.ipvlan.nla_map) == 2:
    _ipvlan_plugin.ipvlan.nla_map = (*_ipvlan_plugin.ipvlan.nla_map, ("IFLA_IPVLAN_FLAGS", "uint16"))

NETNS_DIR = "/run/netns"
OWNERS_DIR = "/run/harness"  # <prefix>.pid: the owner record of a prefix's namespaces (see `_claim`)
LEFTOVER = re.compile(rf"^{PREFIX}[0-9a-f]{{4}}[0-9a-z]{{2}}-")
IFA_F_NODAD = 0x02
CLONE_NEWNET = 0x40000000
IPVLAN_MODES = {"l2": 0, "l3": 1, "l3s": 2}
IPVLAN_FLAGS = {"bridge": 0, "private": 1, "vepa": 2}
TOOLS = (("ip", "iproute2"), ("ping", "iputils-ping"))  # what the checks run in the namespaces, and its package


_libc = ctypes.CDLL(None, use_errno=True)
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_NODE = re.compile(r"[A-Za-z0-9_.-]+")  # a node's part of the name; a long one gets a stand-in


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


def _netns_dir_problem() -> str | None:
    """Why namespaces cannot be named in /run/netns (read-only, not a directory), or None."""
    where = NETNS_DIR if os.path.lexists(NETNS_DIR) else os.path.dirname(NETNS_DIR)
    if not os.path.isdir(where):
        return f"cannot create network namespaces: {where} is not a directory"
    try:
        read_only = bool(os.statvfs(where).f_flag & os.ST_RDONLY)
    except OSError as exc:
        return f"cannot create network namespaces: {where}: {exc.strerror}"
    if read_only or not os.access(where, os.W_OK | os.X_OK):
        return f"cannot create network namespaces: {where} is {'read-only' if read_only else 'not writable'}"
    return None


def _netns_dir() -> None:
    """Make /run/netns if needed; a read-only or unusable /run is a clean error, not a traceback."""
    problem = _netns_dir_problem()
    if problem is None:
        try:
            os.makedirs(NETNS_DIR, exist_ok=True)
        except OSError as exc:
            problem = f"cannot create network namespaces: {NETNS_DIR}: {exc.strerror}"
    if problem:
        raise BackendUnavailable(problem)


def _in_namespace(name: str, fn):
    """Run fn() in a thread that has entered namespace `name`; /proc/sys/net then shows that namespace."""
    box: dict = {}

    def target():
        try:
            fd = os.open(os.path.join(NETNS_DIR, check_name(name)), os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, name=f"setns-{name}")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _write_sysctl(key: str, value: str) -> None:
    with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
        f.write(value)


@dataclass
class NetnsSession:
    """One scenario's namespaces. Every create pushes its undo; closing the session undoes them all."""

    prefix: str
    stack: ExitStack
    kernel: str = field(default_factory=platform.release)
    observes: bool = True
    nodes: dict[str, str] = field(default_factory=dict)  # logical -> namespace name
    handles: dict[str, IPRoute] = field(default_factory=dict)
    closing: bool = False  # set when the whole session unwinds: removing a namespace removes its links
    serial: int = 0  # stand-in names for long node names: never reused within a session

    # -- names ------------------------------------------------------------------------------------

    def physical_name(self, node: str) -> str:
        try:
            return self.nodes[node]
        except KeyError:
            raise KeyError(f"node {node!r} does not exist in this session") from None

    def _ipr(self, node: str) -> IPRoute:
        return self.handles[self.physical_name(node)]

    def _index(self, node: str, ifname: str, op: Op) -> int:
        found = self._ipr(node).link_lookup(ifname=ifname)
        if not found:
            raise KernelError(op, errno.ENODEV, f"Cannot find device \"{ifname}\"", node)
        return found[0]

    # -- operations ---------------------------------------------------------------------------------

    def apply(self, op: Op) -> None:
        try:
            # One operation is a few netlink messages (and a fork for a new namespace): a signal waits
            # for its end, so an undo never meets a half-done operation or an unrecorded namespace.
            with proc.deferred_signals():
                self._apply(op)
        except NetlinkError as exc:
            raise KernelError(op, exc.code, os.strerror(exc.code), getattr(op, "node", "")) from None
        except OSError as exc:
            if exc.errno is None:
                raise
            raise KernelError(op, exc.errno, os.strerror(exc.errno), getattr(op, "node", "")) from None

    def _apply(self, op: Op) -> None:
        if isinstance(op, CreateNode):
            self._create_node(op.node)
        elif isinstance(op, DeleteNode):
            self._delete_node(op.node)
        elif isinstance(op, AddLink):
            self._add_link(op)
        elif isinstance(op, AddBridgeVlan):
            idx = self._index(op.node, op.dev, op)
            self._ipr(op.node).vlan_filter("add", index=idx, vlan_info={"vid": op.vid})
        elif isinstance(op, MoveLink):
            ipr = self._ipr(op.node)
            idx = self._index(op.node, op.name, op)
            ipr.link("set", index=idx, net_ns_fd=self.physical_name(op.to_node))
            target = self._ipr(op.to_node)
            moved = self._index(op.to_node, op.name, op)
            target.link("set", index=moved, ifname=op.new_name)
        elif isinstance(op, SetLink):
            self._set_link(op)
        elif isinstance(op, DeleteLink):
            self._delete_link(op.node, op.name)
        elif isinstance(op, AddAddress):
            idx = self._index(op.node, op.dev, op)
            address, _, plen = op.address.partition("/")
            flags = IFA_F_NODAD if op.nodad and ":" in address else 0
            self._ipr(op.node).addr("add", index=idx, address=address, prefixlen=int(plen), flags=flags)
        elif isinstance(op, AddRoute):
            idx = self._index(op.node, op.dev, op)
            family = 10 if op.family == 6 else 2
            spec = {"oif": idx, "family": family}
            if op.dst != "default":
                spec["dst"] = op.dst
            else:
                spec["dst"] = "::/0" if op.family == 6 else "0.0.0.0/0"
            if op.gateway:
                spec["gateway"] = op.gateway
            else:
                spec["scope"] = 253  # link: a device route, as `ip route add default dev eth0` makes it
            self._ipr(op.node).route("replace" if op.replace else "add", **spec)
        elif isinstance(op, SetSysctl):
            _in_namespace(self.physical_name(op.node), lambda: _write_sysctl(op.key, op.value))
        else:
            raise TypeError(f"the netns backend cannot apply {op!r}")

    def _create_node(self, node: str) -> None:
        if node in self.nodes:
            raise KernelError(CreateNode(node, "?"), errno.EEXIST, f"node {node} exists", node)
        if not _NODE.fullmatch(node) or node in (".", ".."):  # even where a stand-in would hide it
            raise HarnessError(f"invalid network namespace name for node {node!r}: only letters, digits, "
                               "'_', '.' and '-', not '.' or '..'")
        name = f"{self.prefix}-{node}"
        if len(name) > 15:
            # Long container names get a short, stable stand-in; the logical name stays in every report.
            # '_' never starts a container name, so a stand-in never meets a real node's name.
            name = f"{self.prefix}-_{self.serial}"
            self.serial += 1
        check_name(name)  # before anything touches the file system
        # A run removes only what it created. The undo goes on the stack before the create (an exception
        # between a create and its undo would leak), and removes the namespace only if it is the one
        # created here: `made` gets its (st_dev, st_ino) right after the create, in the same section
        # that defers signals (harness.proc), so no interrupt falls between them. A create that fails
        # because the name exists (EEXIST: pyroute2 makes the mount point with O_EXCL) leaves `made`
        # empty and the undo touches nothing: that namespace is someone else's. The prefix is claimed
        # exclusively (`_claim_prefix`), so this is a last line of defence, not the normal path.
        # A create that fails otherwise (a mount refused) may leave what it made so far: removed if it
        # appeared during this attempt (nothing was there before, its ctime is not older than the attempt).
        path = os.path.join(NETNS_DIR, name)
        if os.path.lexists(path):
            raise KernelError(CreateNode(node, "?"), errno.EEXIST,
                              f"network namespace {name} exists and is not this run's", node)
        made: dict = {}
        self.stack.callback(_remove_own_netns, name, made)
        try:
            made["attempt"] = time.time()
            netns.create(name)
        except FileExistsError:
            made.clear()
            raise KernelError(CreateNode(node, "?"), errno.EEXIST,
                              f"network namespace {name} exists and is not this run's", node) from None
        made["identity"] = _identity(path)
        self.nodes[node] = name
        ipr = IPRoute(netns=name, flags=0)  # flags=0: open it, never create it again if it vanished
        self.handles[name] = ipr
        self.stack.callback(self._close_handle, name)
        lo = ipr.link_lookup(ifname="lo")
        if lo:
            ipr.link("set", index=lo[0], state="up")

    def _close_handle(self, name: str) -> None:
        ipr = self.handles.pop(name, None)
        if ipr is not None:
            ipr.close()

    def _delete_node(self, node: str) -> None:
        name = self.nodes.pop(node, None)
        if name is None:
            return
        self._close_handle(name)
        _remove_netns(name)  # its undo then finds nothing of its own there and does nothing

    def _add_link(self, op: AddLink) -> None:
        ipr = self._ipr(op.node)
        spec: dict = {"ifname": op.name, "kind": op.kind}
        if op.parent:
            spec["link"] = self._index(op.node, op.parent, op)
        if op.kind == "veth":
            spec["peer"] = {"ifname": op.peer, "net_ns_fd": self.physical_name(op.peer_node)}
        elif op.kind == "macvlan":
            spec["macvlan_mode"] = op.mode or "bridge"
        elif op.kind == "ipvlan":
            spec["ipvlan_mode"] = IPVLAN_MODES[op.mode or "l2"]
            if op.flag and op.flag != "bridge":
                spec["ipvlan_flags"] = IPVLAN_FLAGS[op.flag]
        elif op.kind == "vlan":
            spec["vlan_id"] = op.vlan_id
        if op.vlan_filtering:
            spec["br_vlan_filtering"] = 1
        ipr.link("add", **spec)
        self.stack.callback(self._undo_link, op.node, op.name)

    def _set_link(self, op: SetLink) -> None:
        ipr = self._ipr(op.node)
        idx = self._index(op.node, op.name, op)
        if op.mac:
            ipr.link("set", index=idx, address=op.mac)
        if op.mtu:
            ipr.link("set", index=idx, mtu=op.mtu)
        if op.master:
            ipr.link("set", index=idx, master=self._index(op.node, op.master, op))
        if op.hairpin is not None:
            # IFLA_BRPORT_MODE is the hairpin flag; pyroute2 ignores unknown keys, so the name matters.
            ipr.brport("set", index=idx, mode=1 if op.hairpin else 0)
        if op.up is not None:
            ipr.link("set", index=idx, state="up" if op.up else "down")

    def _undo_link(self, node: str, name: str) -> None:
        # Deleting a link waits for RCU grace periods (~20 ms each); when the whole session unwinds,
        # the removal of its namespace that follows removes every link in it, veth peers included.
        if not self.closing:
            self._delete_link(node, name)

    def _delete_link(self, node: str, name: str) -> None:
        """Idempotent: a link already gone (moved, deleted with its namespace) is fine."""
        phys = self.nodes.get(node)
        ipr = self.handles.get(phys) if phys else None
        if ipr is None:
            return
        found = ipr.link_lookup(ifname=name)
        if not found:
            return
        try:
            ipr.link("del", index=found[0])
        except NetlinkError as exc:
            if exc.code not in (errno.ENODEV, errno.ENOENT):
                raise

    # -- commands -------------------------------------------------------------------------------------

    def _job(self, node: str, argv: Sequence[str]) -> proc.Job:
        """argv inside the node's namespace, with a single exec (every exec is slow under TCG)."""
        phys = self.physical_name(node)
        if argv and argv[0] == "ip":
            return proc.Job(["ip", "-n", phys, *argv[1:]], node=node)  # iproute2 enters it itself
        return proc.Job(argv, node=node, netns=os.path.join(NETNS_DIR, phys))

    def run(self, node: str, argv: Sequence[str], timeout: float = 10.0) -> CommandResult:
        return self.run_many([(node, argv)], timeout)[0]

    def run_many(self, jobs: Sequence[tuple[str, Sequence[str]]], timeout: float = 10.0) -> list[CommandResult]:
        """Run every job at once and wait for all: concurrent probes cost one timeout, not one each.

        A program that cannot start is a result with exit code 127; a job past the deadline is killed with
        its process group and marked `timed_out`. An unknown node raises KeyError before anything starts.
        """
        return proc.run_many([self._job(node, argv) for node, argv in jobs], timeout)

    @contextmanager
    def spawn(self, node: str, argv: Sequence[str]) -> Iterator[BackgroundProcess]:
        """A background process in the node, ended (TERM, then KILL, with its group) when the block exits.

        Its output goes to files while it runs and stays readable (`output()`) after the block."""
        job = self._job(node, argv)
        with proc.spawn(job.argv, node=node, netns=job.netns, gentle=True) as handle:
            yield handle


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


def _remove_own_netns(name: str, made: dict) -> None:
    """The undo of `NetnsSession._create_node`: remove the namespace only if it is the one created there."""
    path = os.path.join(NETNS_DIR, name)
    if "identity" in made:
        if made["identity"] is not None and _identity(path) == made["identity"]:
            _remove_netns(name)
    elif "attempt" in made:  # the create failed or never returned: what it made since the attempt is ours
        try:
            st = os.lstat(path)
        except OSError:
            return
        if st.st_ctime >= made["attempt"] - 1:  # file systems keep ctime in coarse ticks
            _remove_netns(name)


def _remove_netns(name: str) -> None:
    check_name(name)
    if os.path.lexists(os.path.join(NETNS_DIR, name)):
        try:
            netns.remove(name)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EINVAL):
                raise


# -- capabilities --------------------------------------------------------------------------------------

_PROBES: dict[str, dict] = {
    "veth": {"kind": "veth", "peer": "hxprobe1"},
    "bridge": {"kind": "bridge"},
    "dummy": {"kind": "dummy"},
    "macvlan": {"kind": "macvlan", "macvlan_mode": "bridge", "link": "base"},
    "vlan": {"kind": "vlan", "vlan_id": 42, "link": "base"},
    "ipvlan": {"kind": "ipvlan", "ipvlan_mode": 0, "link": "base"},
}


@lru_cache(maxsize=1)
def probe_capabilities() -> dict[str, Capability]:
    """Create one link of each kind in a throwaway namespace; what the kernel refuses is missing."""
    caps: dict[str, Capability] = {}
    _netns_dir()
    with proc.deferred_signals():  # a claimed prefix is released below, whatever interrupts
        prefix = _claim_prefix("capability probe")
    name = f"{prefix}-probe"
    made: dict = {}
    try:
        with proc.deferred_signals():  # the create and the record of what it made, uninterrupted
            made["attempt"] = time.time()
            netns.create(name)
            made["identity"] = _identity(os.path.join(NETNS_DIR, name))
            ipr = IPRoute(netns=name, flags=0)
        with ipr:
            for i, (feature, spec) in enumerate(_PROBES.items()):
                spec = dict(spec)
                if spec.get("link") == "base":
                    # A lower device of its own per probe: one device cannot carry macvlan and ipvlan ports.
                    ipr.link("add", ifname=f"base{i}", kind="veth", peer=f"peer{i}")
                    spec["link"] = ipr.link_lookup(ifname=f"base{i}")[0]
                if spec.get("peer"):
                    spec["peer"] = f"probepeer{i}"
                try:
                    ipr.link("add", ifname=f"probe{i}", **spec)
                    caps[feature] = Capability(feature, True, "created a test link")
                except NetlinkError as exc:
                    if exc.code in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EAFNOSUPPORT, errno.ENOENT):
                        detail = f"kernel lacks {FEATURES[feature]}"
                    else:
                        detail = f"creating a {feature} test link failed: {os.strerror(exc.code)}"
                    caps[feature] = Capability(feature, False, detail)
            caps["bridge_vlan_filtering"] = _probe_vlan_filtering(ipr)
        has_v6 = os.path.exists("/proc/sys/net/ipv6")
        caps["ipv6"] = Capability("ipv6", has_v6, "" if has_v6 else f"kernel lacks {FEATURES['ipv6']}")
    finally:
        with proc.deferred_signals():  # a signal now must not cut the removal short
            _remove_own_netns(name, made)
            _release(prefix)
    return caps


def _probe_vlan_filtering(ipr: IPRoute) -> Capability:
    """A VLAN-aware bridge with one trunk port carrying VLAN 42; read back what the kernel kept."""
    feature = "bridge_vlan_filtering"
    try:
        ipr.link("add", ifname="vfbr", kind="bridge", br_vlan_filtering=1)
        ipr.link("add", ifname="vfport", kind="veth", peer="vfpeer")
        port = ipr.link_lookup(ifname="vfport")[0]
        ipr.link("set", index=port, master=ipr.link_lookup(ifname="vfbr")[0])
        ipr.vlan_filter("add", index=port, vlan_info={"vid": 42})
        bridge = ipr.get_links(ipr.link_lookup(ifname="vfbr")[0])[0]
        data = (bridge.get_attr("IFLA_LINKINFO") or {}).get_attr("IFLA_INFO_DATA")
        if data is None or not data.get_attr("IFLA_BR_VLAN_FILTERING"):
            return Capability(feature, False, f"kernel lacks {FEATURES[feature]}")
        return Capability(feature, True, "filtered VLAN 42 on a bridge port")
    except NetlinkError as exc:
        if exc.code in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
            return Capability(feature, False, f"kernel lacks {FEATURES[feature]}")
        return Capability(feature, False, f"probing {feature} failed: {os.strerror(exc.code)}")


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


class NetnsBackend:
    name = "netns"
    description = "network namespaces on this machine's kernel, configured with pyroute2 (needs root)"
    kind = SESSION

    def available(self) -> str | None:
        if os.geteuid() != 0:
            return "the netns backend needs root (it creates network namespaces)"
        if not os.access("/proc/self/ns/net", os.R_OK):
            return "network namespaces are not available"
        for tool, package in TOOLS:  # observing goes through them: without, every check would be an error
            if shutil.which(tool) is None:
                return f"{package} is not installed: `{tool}` not found"
        return _netns_dir_problem()

    def capabilities(self) -> dict[str, Capability]:
        reason = self.available()
        if reason:
            return unavailable_everywhere(reason)
        return probe_capabilities()

    def kernel_release(self) -> str:
        return platform.release()

    def prepare(self) -> str:
        """Nothing to download or build: namespaces are made per session."""
        reason = self.available()
        if reason:
            raise BackendUnavailable(reason)
        return f"nothing to prepare: network namespaces on this machine's kernel ({self.kernel_release()})"

    def docker(self, compiled: CompiledScenario, session) -> EmulatedDocker:
        """The Docker under test here: the emulation, whose plan operations the session applies."""
        return EmulatedDocker(compiled, session)

    @contextmanager
    def session(self, label: str) -> Iterator[NetnsSession]:
        """A fresh set of namespaces for one scenario; `label` (its name) goes into the owner record."""
        reason = self.available()
        if reason:
            raise BackendUnavailable(reason)
        _netns_dir()
        with proc.UndoStack() as stack:  # a signal during the teardown waits for its end
            with proc.deferred_signals():  # the claim and its undo, with no interrupt between them
                prefix = _claim_prefix(label)
                stack.callback(_release, prefix)
            session = NetnsSession(prefix=prefix, stack=stack)
            try:
                yield session
            finally:
                session.closing = True
