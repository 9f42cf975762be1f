"""The bench's topologies: two endpoint nodes `a` (client) and `b` (server) and every operation connecting them.

`Topology` is one way of connecting the endpoints, as a list of `harness.plan` operations that a backend
`Session` applies exactly as it applies a scenario. `TOPOLOGIES` maps names to their builders: macvlan
bridge mode, the docker0-style bridge, a direct veth pair, ipvlan L2, macvlan VEPA with a hairpin switch
port. `topology_for(name, mtu)` builds one, with every link set to `mtu` when it is not the default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from harness.bench.params import DEFAULT_MTU, BenchUnavailable
from harness.plan import AddAddress, AddLink, CreateNode, MoveLink, Op, SetLink, required_features

CLIENT, SERVER = "a", "b"
CLIENT_ADDR, SERVER_ADDR, PREFIXLEN = "10.77.0.1", "10.77.0.2", 24


@dataclass(frozen=True)
class Topology:
    """Two endpoints `a` and `b`, and every operation that connects them, parents first."""

    name: str
    description: str
    ops: tuple[Op, ...]
    links: tuple[tuple[str, str], ...]  # (node, link) in final place, lower devices before upper ones

    @property
    def features(self) -> tuple[str, ...]:
        return required_features(self.ops)


def _endpoint_ops() -> list[Op]:
    ops: list[Op] = []
    for node, addr in ((CLIENT, CLIENT_ADDR), (SERVER, SERVER_ADDR)):
        ops += [AddAddress(node, "eth0", f"{addr}/{PREFIXLEN}"), SetLink(node, "eth0", up=True)]
    return ops


def _switch_and_host(bridge_in_switch: bool) -> list[Op]:
    """An `up` node standing for the physical switch and a `host` whose eth0 is its veth to the switch.

    macvlan/ipvlan children only pass traffic while their lower device has carrier, which a veth has
    only when its peer is up; the VEPA topology also needs a real switch (a bridge) to reflect frames.
    """
    ops: list[Op] = [
        CreateNode("up", "switch"), CreateNode("host", "host"),
        CreateNode(CLIENT, "container"), CreateNode(SERVER, "container"),
        AddLink("host", "eth0", "veth", peer="p0", peer_node="up"),
    ]
    if bridge_in_switch:
        ops += [AddLink("up", "br0", "bridge"), SetLink("up", "br0", up=True),
                # hairpin: the port sends frames back where they came from, which VEPA relies on
                SetLink("up", "p0", master="br0", hairpin=True, up=True)]
    else:
        ops += [SetLink("up", "p0", up=True)]
    ops += [SetLink("host", "eth0", up=True)]
    return ops


def _children(kind: str, mode: str) -> list[Op]:
    ops: list[Op] = []
    for child, node in (("cha", CLIENT), ("chb", SERVER)):
        ops += [AddLink("host", child, kind, parent="eth0", mode=mode), MoveLink("host", child, node, "eth0")]
    return ops


def macvlan_topology(mode: str = "bridge") -> Topology:
    vepa = mode == "vepa"
    ops = _switch_and_host(bridge_in_switch=vepa) + _children("macvlan", mode) + _endpoint_ops()
    links = (("up", "p0"),) + ((("up", "br0"),) if vepa else ()) + (("host", "eth0"), (CLIENT, "eth0"), (SERVER, "eth0"))
    if vepa:
        return Topology("macvlan-vepa", "macvlan VEPA children of host eth0; the switch port hairpins frames back",
                        tuple(ops), links)
    return Topology("macvlan", "macvlan bridge-mode children of host eth0 (a veth to the switch), moved into a and b",
                    tuple(ops), links)


def ipvlan_topology() -> Topology:
    ops = _switch_and_host(bridge_in_switch=False) + _children("ipvlan", "l2") + _endpoint_ops()
    return Topology("ipvlan", "ipvlan L2 children of host eth0, moved into a and b", tuple(ops),
                    (("up", "p0"), ("host", "eth0"), (CLIENT, "eth0"), (SERVER, "eth0")))


def bridge_topology() -> Topology:
    """The docker0 way: a bridge in the host, one veth pair per container, the far end moved and renamed."""
    ops: list[Op] = [CreateNode("host", "host"), CreateNode(CLIENT, "container"), CreateNode(SERVER, "container"),
                     AddLink("host", "br0", "bridge"), SetLink("host", "br0", up=True)]
    for host_end, peer, node in (("vetha", "pa", CLIENT), ("vethb", "pb", SERVER)):
        ops += [AddLink("host", host_end, "veth", peer=peer, peer_node="host"),
                SetLink("host", host_end, master="br0", up=True),
                MoveLink("host", peer, node, "eth0")]
    ops += _endpoint_ops()
    return Topology("bridge", "Linux bridge in host with a veth pair per endpoint (as docker0 does)", tuple(ops),
                    (("host", "br0"), ("host", "vetha"), ("host", "vethb"), (CLIENT, "eth0"), (SERVER, "eth0")))


def veth_topology() -> Topology:
    ops: list[Op] = [CreateNode(CLIENT, "container"), CreateNode(SERVER, "container"),
                     AddLink(CLIENT, "eth0", "veth", peer="eth0", peer_node=SERVER)] + _endpoint_ops()
    return Topology("veth", "a direct veth pair between a and b: the floor", tuple(ops),
                    ((CLIENT, "eth0"), (SERVER, "eth0")))


TOPOLOGIES: dict[str, Callable[[], Topology]] = {
    "macvlan": macvlan_topology,
    "bridge": bridge_topology,
    "veth": veth_topology,
    "ipvlan": ipvlan_topology,
    "macvlan-vepa": lambda: macvlan_topology("vepa"),
}


def mtu_method(mtu: int) -> str:
    """How --mtu is applied: `default` (1500, nothing to do) or `link` (SetLink mtu on every link)."""
    return "default" if mtu == DEFAULT_MTU else "link"


def topology_for(name: str, mtu: int = DEFAULT_MTU) -> Topology:
    try:
        topo = TOPOLOGIES[name]()
    except KeyError:
        raise BenchUnavailable(f"unknown topology {name!r}; valid topologies: {', '.join(TOPOLOGIES)}") from None
    if mtu_method(mtu) == "link":
        mtu_ops = tuple(SetLink(node, link, mtu=mtu) for node, link in topo.links)
        topo = dataclasses.replace(topo, ops=topo.ops + mtu_ops)
    return topo
