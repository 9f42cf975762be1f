"""The namespace backend: plans applied with pyroute2 on real kernel netlink, in private namespaces.

`NetnsBackend` probes once per process which link kinds this kernel can create (`probe_capabilities`,
in a throwaway namespace) and opens a `NetnsSession` per scenario. The session maps logical nodes
(`up`, `rt`, `host`, containers) to namespaces named `hx<run><worker><seq>-<node>` (at most 15
characters), applies each plan operation over netlink and pushes its undo onto an ExitStack at once, runs
argv lists inside a node with `nsenter --net=` (`run`, `run_many`), and starts background processes
(`spawn`). Nothing is ever created in the machine's root namespace; `clean_leftovers` removes, by prefix
only, whatever a killed run left behind.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import re
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import lru_cache

from pyroute2 import IPRoute, NetlinkError, netns
from pyroute2.netlink.rtnl.ifinfmsg.plugins import ipvlan as _ipvlan_plugin

from backends.base import Capability, CommandResult, unavailable_everywhere
from harness.errors import BackendUnavailable, KernelError
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

# pyroute2 knows IFLA_IPVLAN_MODE but not IFLA_IPVLAN_FLAGS (bridge/private/vepa, Linux 4.15+).
if len(_ipvlan_plugin.ipvlan.nla_map) == 2:
    _ipvlan_plugin.ipvlan.nla_map = (*_ipvlan_plugin.ipvlan.nla_map, ("IFLA_IPVLAN_FLAGS", "uint16"))

NETNS_DIR = "/run/netns"
OWNERS_DIR = "/run/harness"  # <prefix>.pid: which live process owns the namespaces of a prefix
PREFIX = "hx"
LEFTOVER = re.compile(r"^hx[0-9a-f]{4}[0-9a-z]{2}-")
IFA_F_NODAD = 0x02
CLONE_NEWNET = 0x40000000
IPVLAN_MODES = {"l2": 0, "l3": 1, "l3s": 2}
IPVLAN_FLAGS = {"bridge": 0, "private": 1, "vepa": 2}


def _worker_char() -> str:
    """pytest-xdist's worker id (gw0, gw1, ...) as one character, so parallel workers never collide."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    digits = "".join(c for c in worker if c.isdigit())
    if not digits:
        return "m"
    return "0123456789abcdefghijklmnopqrstuvwxyz"[int(digits) % 36]


def run_id() -> str:
    """Four hex characters shared by a whole run (the pytest plugin sets HARNESS_RUN_ID for all workers)."""
    rid = os.environ.get("HARNESS_RUN_ID", "")
    if not re.fullmatch(r"[0-9a-f]{4}", rid):
        rid = secrets.token_hex(2)
        os.environ["HARNESS_RUN_ID"] = rid
    return rid


_session_counter = 0
_counter_lock = threading.Lock()


def _next_prefix() -> str:
    global _session_counter
    with _counter_lock:
        _session_counter += 1
        seq = "0123456789abcdefghijklmnopqrstuvwxyz"[_session_counter % 36]
    return f"{PREFIX}{run_id()}{_worker_char()}{seq}"


_libc = ctypes.CDLL(None, use_errno=True)


def _in_namespace(name: str, fn):
    """Run fn() in a thread that has entered namespace `name`; /proc/sys/net then shows that namespace."""
    box: dict = {}

    def target():
        try:
            fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
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


def _setns_or_fail(fd: int) -> None:
    """In a forked child, before exec: enter the network namespace open on fd."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns into the node's network namespace: {os.strerror(err)}")


def _write_sysctl(key: str, value: str) -> None:
    with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
        f.write(value)


@dataclass
class _Proc:
    """A background process; its output goes to files, so a chatty server never blocks on a full pipe."""

    pid: int
    popen: subprocess.Popen
    stdout_path: str
    stderr_path: str
    final: tuple[str, str] | None = None  # kept when the files go, at the end of the spawn block

    def output(self) -> tuple[str, str]:
        """What it printed so far (complete once the spawn block has exited)."""
        if self.final is not None:
            return self.final
        return _read_text(self.stdout_path), _read_text(self.stderr_path)


def _read_text(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


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
        name = f"{self.prefix}-{node}"
        if len(name) > 15:
            # Long container names get a short, stable stand-in; the logical name stays in every report.
            name = f"{self.prefix}-n{len(self.nodes)}"
        # The undo goes on the stack first: an interrupt inside create must not leak the namespace.
        self.stack.callback(_remove_netns, name)
        netns.create(name)
        self.nodes[node] = name
        ipr = IPRoute(netns=name)
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
        _remove_netns(name)

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

    def _popen(self, node: str, argv: Sequence[str], stdout=subprocess.PIPE, stderr=subprocess.PIPE) -> subprocess.Popen:
        """Start argv inside the node's namespace with a single exec (every exec is slow under TCG)."""
        phys = self.physical_name(node)
        options = dict(stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        if argv and argv[0] == "ip":
            return subprocess.Popen(["ip", "-n", phys, *argv[1:]], **options)  # iproute2 enters it itself
        fd = os.open(os.path.join(NETNS_DIR, phys), os.O_RDONLY | os.O_CLOEXEC)
        try:
            # The child enters the namespace between fork and exec: what `nsenter --net=` does, minus
            # the extra exec of nsenter itself.
            return subprocess.Popen(list(argv), pass_fds=(fd,), preexec_fn=lambda: _setns_or_fail(fd), **options)
        finally:
            os.close(fd)

    def run(self, node: str, argv: Sequence[str], timeout: float = 10.0) -> CommandResult:
        return self.run_many([(node, argv)], timeout)[0]

    def run_many(self, jobs: Sequence[tuple[str, Sequence[str]]], timeout: float = 10.0) -> list[CommandResult]:
        """Run every job at once and wait for all: concurrent probes cost one timeout, not one each."""
        started = []
        for node, argv in jobs:
            start = time.time()
            proc = self._popen(node, argv)
            started.append((node, tuple(argv), proc, start))
        deadline = time.monotonic() + timeout
        results = []
        for node, argv, proc, start in started:
            timed_out = False
            try:
                out, err = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill(proc)
                out, err = proc.communicate()
            results.append(CommandResult(node, argv, proc.returncode if not timed_out else -signal.SIGKILL,
                                         out, err, start, time.time(), timed_out))
        return results

    @contextmanager
    def spawn(self, node: str, argv: Sequence[str]) -> Iterator[_Proc]:
        with tempfile.TemporaryDirectory(prefix="hxspawn-") as tmp:
            out_path, err_path = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
            with open(out_path, "w") as out, open(err_path, "w") as err:
                proc = self._popen(node, argv, stdout=out, stderr=err)
            handle = _Proc(proc.pid, proc, out_path, err_path)
            try:
                yield handle
            finally:
                _kill(proc, gentle=True)
                handle.final = handle.output()


def _kill(proc: subprocess.Popen, gentle: bool = False) -> None:
    """End a process this backend started (by its own PID), gently first when asked."""
    if proc.poll() is not None:
        return
    if gentle:
        proc.terminate()
        try:
            proc.wait(timeout=2)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    proc.wait()


def _claim(prefix: str) -> None:
    """Record this process as the owner of `prefix`'s namespaces, so `harness clean` leaves them alone."""
    os.makedirs(OWNERS_DIR, exist_ok=True)
    with open(os.path.join(OWNERS_DIR, f"{prefix}.pid"), "w") as f:
        f.write(str(os.getpid()))


def _release(prefix: str) -> None:
    try:
        os.unlink(os.path.join(OWNERS_DIR, f"{prefix}.pid"))
        os.rmdir(OWNERS_DIR)  # only succeeds when no other run owns anything: nothing left behind
    except OSError:
        pass


def _owner_alive(prefix: str) -> int | None:
    """The PID of the live process that owns `prefix`, or None (no marker, or its process is gone)."""
    try:
        with open(os.path.join(OWNERS_DIR, f"{prefix}.pid")) as f:
            pid = int(f.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return None
    if pid <= 0 or not os.path.exists(f"/proc/{pid}"):
        return None
    return pid


def _remove_netns(name: str) -> None:
    if os.path.exists(os.path.join(NETNS_DIR, name)):
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
    prefix = f"{PREFIX}{run_id()}{_worker_char()}z"
    name = f"{prefix}-probe"
    _claim(prefix)
    try:
        netns.create(name)  # inside the try: an interrupt during create must not leak the namespace
        with IPRoute(netns=name) as ipr:
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
        _remove_netns(name)
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


def clean_leftovers() -> tuple[list[str], list[str]]:
    """Remove namespaces a killed run left behind, by the harness prefix only.

    Namespaces whose owner (see `_claim`) is still running belong to a live run (another shell, a
    pytest-xdist worker) and are kept. Returns (removed, kept).
    """
    removed, kept = [], []
    for name in sorted(os.listdir(NETNS_DIR)) if os.path.isdir(NETNS_DIR) else []:
        if not LEFTOVER.match(name):
            continue
        prefix = name.split("-", 1)[0]
        if _owner_alive(prefix) is not None:
            kept.append(name)
            continue
        _remove_netns(name)
        _release(prefix)
        removed.append(name)
    return removed, kept


class NetnsBackend:
    name = "netns"
    description = "network namespaces on this machine's kernel, configured with pyroute2 (needs root)"

    def available(self) -> str | None:
        if os.geteuid() != 0:
            return "the netns backend needs root (it creates network namespaces)"
        if not os.access("/proc/self/ns/net", os.R_OK):
            return "network namespaces are not available"
        return None

    def capabilities(self) -> dict[str, Capability]:
        reason = self.available()
        if reason:
            return unavailable_everywhere(reason)
        return probe_capabilities()

    def kernel_release(self) -> str:
        return platform.release()

    @contextmanager
    def session(self, label: str) -> Iterator[NetnsSession]:
        reason = self.available()
        if reason:
            raise BackendUnavailable(reason)
        os.makedirs(NETNS_DIR, exist_ok=True)
        with ExitStack() as stack:
            session = NetnsSession(prefix=_next_prefix(), stack=stack)
            _claim(session.prefix)
            stack.callback(_release, session.prefix)
            try:
                yield session
            finally:
                session.closing = True
