"""The backend-neutral plan: ordered operations a backend turns into kernel state.

Operations (`CreateNode`, `AddLink`, `MoveLink`, `SetLink`, `DeleteLink`, `AddAddress`, `AddRoute`,
`SetSysctl`, `DeleteNode`) name nodes by their logical role (`up`, `rt`, `host`, a container name); a
backend maps them to real, prefixed namespaces. A `CompiledStep` is what one documented command turns
into (operations, a transient container's reach check, or Docker's error), and a `Plan` is the world
plus every step. `FEATURES` names the kernel features operations need, with the wording of a skip;
`render` shows an operation as `ip` command lines and `inverse` undoes one.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Union

from harness.model import Step

# Kernel features an operation may need, as a skip reason words them.
FEATURES: dict[str, str] = {
    "veth": "veth pairs (CONFIG_VETH)",
    "bridge": "Linux bridges (CONFIG_BRIDGE)",
    "macvlan": "macvlan (CONFIG_MACVLAN)",
    "vlan": "802.1q VLAN support (CONFIG_VLAN_8021Q)",
    "ipvlan": "ipvlan (CONFIG_IPVLAN)",
    "dummy": "dummy links (CONFIG_DUMMY)",
    "bridge_vlan_filtering": "bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)",
    "ipv6": "IPv6 (CONFIG_IPV6)",
}


@dataclass(frozen=True)
class CreateNode:
    node: str
    role: str  # switch | router | host | container


@dataclass(frozen=True)
class DeleteNode:
    node: str


@dataclass(frozen=True)
class AddLink:
    node: str
    name: str
    kind: str  # veth | bridge | macvlan | ipvlan | vlan | dummy
    parent: str | None = None  # lower device, in the same node
    mode: str | None = None  # macvlan: bridge|private|vepa|passthru; ipvlan: l2|l3|l3s
    flag: str | None = None  # ipvlan: bridge|private|vepa
    vlan_id: int | None = None
    peer: str | None = None  # veth peer name ...
    peer_node: str | None = None  # ... created directly in this node
    # How Docker words a kernel refusal of this create, e.g. "failed to create {name} vlan link: {error}".
    error_format: str | None = None
    vlan_filtering: bool = False  # bridge: a VLAN-aware switch (ports carry only their VLANs)

    @property
    def feature(self) -> str:
        return "bridge_vlan_filtering" if self.vlan_filtering else self.kind


@dataclass(frozen=True)
class AddBridgeVlan:
    """A VLAN a port of a VLAN-aware bridge carries, tagged (a trunk port)."""

    node: str
    dev: str
    vid: int


@dataclass(frozen=True)
class MoveLink:
    node: str
    name: str
    to_node: str
    new_name: str


@dataclass(frozen=True)
class SetLink:
    node: str
    name: str
    up: bool | None = None
    mac: str | None = None
    master: str | None = None
    hairpin: bool | None = None
    mtu: int | None = None


@dataclass(frozen=True)
class DeleteLink:
    node: str
    name: str


@dataclass(frozen=True)
class AddAddress:
    node: str
    dev: str
    address: str  # CIDR
    nodad: bool = True


@dataclass(frozen=True)
class AddRoute:
    node: str
    dst: str  # "default" or CIDR
    dev: str
    gateway: str | None = None
    family: int = 4
    replace: bool = False  # `ip route replace`: take over an existing default route


@dataclass(frozen=True)
class SetSysctl:
    node: str
    key: str  # e.g. net.ipv4.ip_forward
    value: str


@dataclass(frozen=True)
class SetHostname:
    """A container's own UTS namespace with this hostname (`docker run --hostname`); it ends with its node."""

    node: str
    hostname: str


Op = Union[CreateNode, DeleteNode, AddLink, AddBridgeVlan, MoveLink, SetLink, DeleteLink, AddAddress, AddRoute,
           SetSysctl, SetHostname]


@dataclass(frozen=True)
class ReachCheck:
    """The documented `docker run ... ping X` from a transient container."""

    src: str
    dst: str  # an address
    family: int
    command: str  # the documented ping, for evidence


@dataclass(frozen=True)
class CompiledStep:
    step: Step
    ops: tuple[Op, ...] = ()
    check: ReachCheck | None = None
    cleanup: tuple[Op, ...] = ()  # after the check: a transient container is removed
    error: str | None = None  # Docker's answer, when the command fails before touching the kernel

    @property
    def all_ops(self) -> tuple[Op, ...]:
        return self.ops + self.cleanup


@dataclass(frozen=True)
class Plan:
    scenario: str
    profile: str
    world: tuple[Op, ...]
    steps: tuple[CompiledStep, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def ops(self) -> tuple[Op, ...]:
        return self.world + tuple(op for s in self.steps for op in s.all_ops)

    def required_features(self) -> tuple[str, ...]:
        return required_features(self.ops())


def quote(text: object) -> str:
    """One shell word on one line: shlex.quote, or bash's $'...' when the text holds a newline or control."""
    text = str(text)
    if text.isprintable():
        return shlex.quote(text)
    return "$'" + "".join(map(_ansi_c, text)) + "'"


def _ansi_c(c: str) -> str:
    if c in "\\'":
        return "\\" + c
    if c.isprintable():
        return c
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def render(op: Op) -> list[str]:
    """The `ip` (or `sysctl`) command lines equivalent to one operation, every name shell-quoted.

    Names come from scenario files (a parent called `eth0;rm` is a valid interface name), and a
    rendered plan is made to be pasted into a shell.
    """
    q = quote
    n = q(getattr(op, "node", ""))
    if isinstance(op, CreateNode):
        return [f"ip netns add {n}", f"ip -n {n} link set lo up"]
    if isinstance(op, DeleteNode):
        return [f"ip netns del {n}"]
    if isinstance(op, SetHostname):
        # A UTS namespace held by a process that lives as long as the node (the netns backend's keeper).
        return [f"ip netns exec {n} unshare --uts sh -c {q('hostname ' + q(op.hostname) + ' && exec sleep infinity')} &"]
    if isinstance(op, AddLink):
        head = f"ip -n {n} link add"
        if op.parent:
            head += f" link {q(op.parent)}"
        head += f" name {q(op.name)} type {q(op.kind)}"
        if op.kind == "veth":
            return [f"{head} peer name {q(str(op.peer))} netns {q(str(op.peer_node))}"]
        if op.kind == "vlan":
            return [f"{head} id {q(str(op.vlan_id))}"]
        if op.kind == "macvlan":
            return [f"{head} mode {q(str(op.mode))}"]
        if op.kind == "ipvlan":
            return [f"{head} mode {q(str(op.mode))}" + (f" {q(op.flag)}" if op.flag and op.flag != "bridge" else "")]
        if op.vlan_filtering:
            return [f"{head} vlan_filtering 1"]
        return [head]
    if isinstance(op, AddBridgeVlan):
        return [f"bridge -n {n} vlan add dev {q(op.dev)} vid {q(str(op.vid))}"]
    if isinstance(op, MoveLink):
        return [f"ip -n {n} link set {q(op.name)} netns {q(op.to_node)}",
                f"ip -n {q(op.to_node)} link set {q(op.name)} name {q(op.new_name)}"]
    if isinstance(op, SetLink):
        out = []
        name = q(op.name)
        if op.mac:
            out.append(f"ip -n {n} link set {name} address {q(op.mac)}")
        if op.mtu:
            out.append(f"ip -n {n} link set {name} mtu {q(str(op.mtu))}")
        if op.master:
            out.append(f"ip -n {n} link set {name} master {q(op.master)}")
        if op.hairpin is not None:
            out.append(f"ip netns exec {n} bridge link set dev {name} hairpin {'on' if op.hairpin else 'off'}")
        if op.up is not None:
            out.append(f"ip -n {n} link set {name} {'up' if op.up else 'down'}")
        return out
    if isinstance(op, DeleteLink):
        return [f"ip -n {n} link del {q(op.name)}"]
    if isinstance(op, AddAddress):
        return [f"ip -n {n} addr add {q(op.address)} dev {q(op.dev)}"
                + (" nodad" if op.nodad and ":" in op.address else "")]
    if isinstance(op, AddRoute):
        fam = "-6 " if op.family == 6 else ""
        via = f" via {q(op.gateway)}" if op.gateway else ""
        return [f"ip {fam}-n {n} route {'replace' if op.replace else 'add'} {q(op.dst)}{via} dev {q(op.dev)}"]
    if isinstance(op, SetSysctl):
        return [f"ip netns exec {n} sysctl -qw {q(f'{op.key}={op.value}')}"]
    raise TypeError(f"cannot render {op!r}")


def required_features(ops) -> tuple[str, ...]:
    needed = {op.feature for op in ops if isinstance(op, AddLink)}
    if any(isinstance(op, AddAddress) and ":" in op.address for op in ops):
        needed.add("ipv6")
    return tuple(sorted(needed))


def inverse(op: Op) -> Op | None:
    """The operation that undoes `op` when a command fails half-way (None: its node's removal undoes it)."""
    if isinstance(op, CreateNode):
        return DeleteNode(op.node)
    if isinstance(op, AddLink):
        return DeleteLink(op.node, op.name)
    if isinstance(op, MoveLink):
        return DeleteLink(op.to_node, op.new_name)
    return None


def cannot_run(backend, features) -> str | None:
    """Why `backend` cannot run a plan needing `features` (unavailable, or a missing kernel feature, named).

    Asks only the backend's cheap `available()` and `capabilities()`.
    """
    unavailable = backend.available()
    if unavailable:
        return unavailable
    caps = backend.capabilities()
    missing = [f for f in features if not (caps.get(f) and caps[f].available)]
    if not missing:
        return None
    return "; ".join(f"kernel lacks {FEATURES[f]}" for f in missing) + \
        f" (backend {backend.name}, kernel {backend.kernel_release()})"
