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
are never taken for a new run's (`Owner`, `_claim_prefix`, in `backends.netns_owners`). A namespace is
removed only if it is the very one this session created (see `_create_node`). Namespace names are checked
(`check_name`) before any syscall: pyroute2 takes a name holding '/' for a path relative to the working
directory.

`clean_leftovers` removes, by prefix only, what a killed run left: the processes still running in its
namespaces (found by the namespace's device and inode, ended by PID), the namespaces and dead owners'
records; it names the owner of every namespace it keeps. It lives in `backends.netns_owners` and is
re-exported here, with `check_name`. (`harness clean` also removes dead runs' temporary directories:
`harness.proc.clean_temp_dirs`.)
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import re
import shutil
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import lru_cache

from pyroute2 import IPRoute, NetlinkError
from pyroute2.netlink.rtnl.ifinfmsg.plugins import ipvlan as _ipvlan_plugin

from backends.base import SESSION, BackgroundProcess, Capability, CommandResult, unavailable_everywhere
from backends.netns_owners import (  # noqa: F401 (re-exported: backends.netns is their public path)
    LEFTOVER,
    NETNS_DIR,
    OWNERS_DIR,
    Owner,
    _claim,
    _claim_prefix,
    _identity,
    _live_owner,
    _read_owner,
    _release,
    _remove_netns,
    check_name,
    clean_leftovers,
)
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
    SetHostname,
    SetLink,
    SetSysctl,
)

# pyroute2 knows IFLA_IPVLAN_MODE but not IFLA_IPVLAN_FLAGS (bridge/private/vepa, Linux 4.15+).
if len(_ipvlan_plugin.ipvlan.nla_map) == 2:
    _ipvlan_plugin.ipvlan.nla_map = (*_ipvlan_plugin.ipvlan.nla_map, ("IFLA_IPVLAN_FLAGS", "uint16"))

IFA_F_NODAD = 0x02
LOOPBACK_IFINDEX = 1  # every network namespace's lo (include/net/flow.h)
CLONE_NEWNET = 0x40000000
IPVLAN_MODES = {"l2": 0, "l3": 1, "l3s": 2}
IPVLAN_FLAGS = {"bridge": 0, "private": 1, "vepa": 2}
TOOLS = (("ip", "iproute2"), ("ping", "iputils-ping"))  # what the checks run in the namespaces, and its package


_libc = ctypes.CDLL(None, use_errno=True)
_NODE = re.compile(r"[A-Za-z0-9_.-]+")  # a node's part of the name; a long one gets a stand-in


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


def _in_own_thread(name: str, body):
    """body() in a new thread, waited for; its value, or its exception raised here. Network namespaces are
    per thread: a thread that enters or unshares one leaves the caller's untouched."""
    box: dict = {}

    def target():
        try:
            box["value"] = body()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, name=name)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _in_namespace(name: str, fn):
    """Run fn() in a thread that has entered namespace `name`; /proc/sys/net then shows that namespace."""

    def body():
        fd = os.open(os.path.join(NETNS_DIR, check_name(name)), os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        finally:
            os.close(fd)
        return fn()

    return _in_own_thread(f"setns-{name}", body)


MS_BIND, MS_REC, MS_SHARED, NETLINK_ROUTE = 0x1000, 0x4000, 0x100000, 0


def _mount(source: bytes, target: bytes, flags: int) -> int:
    return _libc.mount(source, target, b"none", flags, None)


def _create_netns(name: str) -> socket.socket:
    """Create the named network namespace and return a netlink socket opened inside it, without a fork.

    What `pyroute2.netns.create` and `IPRoute(netns=...)` do, each in a forked child (about 20 ms each
    here, measured, most of a small scenario's setup): a thread unshares its network namespace, which
    is per thread, bind-mounts it on /run/netns/NAME (the mount point created with O_EXCL first, so an
    existing name raises FileExistsError and is never touched) and opens the socket there; a socket
    stays in the namespace it was created in. The thread then ends; the namespace lives on its mount.
    """
    path = os.path.join(NETNS_DIR, check_name(name)).encode()
    # /run/netns is a shared mount, so that a namespace's mount shows in every mount namespace (iproute2's
    # and pyroute2's own sequence: make it shared, bind-mounting it on itself first if it is no mount).
    if _mount(b"", NETNS_DIR.encode(), MS_SHARED | MS_REC) != 0:
        if _mount(NETNS_DIR.encode(), NETNS_DIR.encode(), MS_BIND | MS_REC) != 0 or \
                _mount(b"", NETNS_DIR.encode(), MS_SHARED | MS_REC) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"sharing {NETNS_DIR}: {os.strerror(err)}")
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))

    def body():
        if _libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare: {os.strerror(err)}")
        own = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
        if _mount(own, path, MS_BIND) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mounting the namespace on {path.decode()}: {os.strerror(err)}")
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)

    return _in_own_thread(f"netns-{name}", body)


SIOCGIFINDEX = 0x8933
IFNAMSIZ = 16


def _ifindex(sock: socket.socket, ifname: str) -> int | None:
    """The index of link `ifname` in the namespace of `sock` (any socket made there), or None.

    SIOCGIFINDEX: the kernel answers a device ioctl on any socket from the socket's own namespace, in one
    system call. pyroute2's `link_lookup` is a netlink round trip whose answer, the whole link, it decodes
    in Python: about 3 ms under TCG in the VM guest, a third of an operation there (measured 2026-11-30),
    for the name lookup that most operations start with.
    """
    name = ifname.encode()
    if not name or len(name) >= IFNAMSIZ or b"\0" in name:
        return None  # no link has such a name (the ioctl would cut it short)
    try:
        answer = fcntl.ioctl(sock.fileno(), SIOCGIFINDEX, struct.pack("16si", name, 0))
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            return None
        raise
    return struct.unpack("16si", answer)[1]


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
    keepers: dict[str, tuple] = field(default_factory=dict)  # node -> (keeper of its UTS namespace, its stack)
    sockets: dict[str, socket.socket] = field(default_factory=dict)  # namespace -> its netlink socket

    # -- names ------------------------------------------------------------------------------------

    def physical_name(self, node: str) -> str:
        try:
            return self.nodes[node]
        except KeyError:
            raise KeyError(f"node {node!r} does not exist in this session") from None

    def _ipr(self, node: str) -> IPRoute:
        return self.handles[self.physical_name(node)]

    def _index(self, node: str, ifname: str, op: Op) -> int:
        found = _ifindex(self.sockets[self.physical_name(node)], ifname)
        if found is None:
            raise KernelError(op, errno.ENODEV, f"Cannot find device \"{ifname}\"", node)
        return found

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
            idx = self._index(op.node, op.name, op)
            # One request: the kernel moves the link, then renames it in its new namespace (do_setlink:
            # a name given with an index is a rename, made after the namespace change).
            self._ipr(op.node).link("set", index=idx, net_ns_fd=self.physical_name(op.to_node), ifname=op.new_name)
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
        elif isinstance(op, SetHostname):
            self._set_hostname(op)
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
            sock = _create_netns(name)
        except FileExistsError:
            made.clear()
            raise KernelError(CreateNode(node, "?"), errno.EEXIST,
                              f"network namespace {name} exists and is not this run's", node) from None
        made["identity"] = _identity(path)
        self.nodes[node] = name
        ipr = IPRoute(use_socket=sock)  # the socket opened inside the namespace: it never opens another
        self.handles[name] = ipr
        self.sockets[name] = sock
        self.stack.callback(self._close_handle, name)
        ipr.link("set", index=LOOPBACK_IFINDEX, state="up")

    def _set_hostname(self, op: SetHostname) -> None:
        """The node's own UTS namespace, named as Docker names the container: a network namespace has no
        hostname, so a keeper process (in the node's network namespace, sleeping) unshares one and sets
        the name before it execs; the node's commands enter it by /proc/<keeper>/ns/uts. The keeper ends
        with its node (`_delete_node`) or with the session (its spawn is on the stack)."""
        if op.node in self.keepers:
            raise KernelError(op, errno.EEXIST, f"node {op.node} has a hostname already", op.node)
        # A stack of its own: a container stopped mid-scenario ends its keeper at once (never later,
        # when the keeper's PID may be another process's); the session's stack closes it otherwise.
        own = ExitStack()
        self.stack.callback(own.close)
        keeper = own.enter_context(proc.spawn(
            [sys.executable, "-I", "-S", "-c", KEEPER_MARK], node=op.node,
            netns=os.path.join(NETNS_DIR, self.physical_name(op.node)), die_with_parent=True, gentle=False,
            hostname=op.hostname))
        self.keepers[op.node] = (keeper, own)
        # Ready once it has exec'd: the unshare and the name came before the exec.
        deadline = time.monotonic() + 10
        while not _execd(keeper.pid, KEEPER_MARK):
            if keeper.poll() is not None:
                raise HarnessError(f"the UTS keeper of {op.node} exited: {' '.join(keeper.output())}")
            if time.monotonic() > deadline:
                raise HarnessError(f"the UTS keeper of {op.node} did not start within 10 s")
            time.sleep(0.01)

    def uts(self, node: str) -> str | None:
        held = self.keepers.get(node)
        return f"/proc/{held[0].pid}/ns/uts" if held is not None else None

    def _close_handle(self, name: str) -> None:
        self.sockets.pop(name, None)
        ipr = self.handles.pop(name, None)
        if ipr is not None:
            ipr.close()

    def _delete_node(self, node: str) -> None:
        name = self.nodes.get(node)
        if name is None:
            return
        # A container removed mid-scenario: delete its links first, synchronously. The kernel destroys a
        # removed namespace's links later, in a workqueue, so its macvlan child could still hold its MAC on
        # the parent when the next container's child takes the same MAC (EADDRINUSE, seen on a restart).
        ipr = self.handles.get(name)
        for link in ipr.get_links() if ipr is not None else ():
            if link.get_attr("IFLA_IFNAME") != "lo":
                try:
                    ipr.link("del", index=link["index"])
                except NetlinkError as exc:
                    if exc.code not in (errno.ENODEV, errno.ENOENT):
                        raise
        self.nodes.pop(node, None)
        held = self.keepers.pop(node, None)
        if held is not None:
            held[1].close()  # the keeper ends with its node
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
        found = _ifindex(self.sockets[phys], name)
        if found is None:
            return
        try:
            ipr.link("del", index=found)
        except NetlinkError as exc:
            if exc.code not in (errno.ENODEV, errno.ENOENT):
                raise

    # -- commands -------------------------------------------------------------------------------------

    def _job(self, node: str, argv: Sequence[str]) -> proc.Job:
        """argv inside the node's namespace, with a single exec (every exec is slow under TCG)."""
        phys = self.physical_name(node)
        if argv and argv[0] == "ip":
            return proc.Job(["ip", "-n", phys, *argv[1:]], node=node)  # iproute2 enters it itself
        return proc.Job(argv, node=node, netns=os.path.join(NETNS_DIR, phys), uts=self.uts(node))

    def netns_path(self, node: str) -> str:
        """The node's namespace file (the batch prober enters it to open that node's ICMP sockets)."""
        return os.path.join(NETNS_DIR, self.physical_name(node))

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


# The keeper of a container's UTS namespace: it only sleeps (its namespace is the point).
KEEPER_MARK = "import signal\nwhile True: signal.pause()  # hx UTS keeper"


def _execd(pid: int, mark: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return mark.encode() in f.read()
    except OSError:
        return False


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
            sock = _create_netns(name)
            made["identity"] = _identity(os.path.join(NETNS_DIR, name))
            ipr = IPRoute(use_socket=sock)
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
