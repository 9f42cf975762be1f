"""Expected reachability and state, derived from the model rather than from the kernel.

`Oracle` lists every `Endpoint` address of the scenario's end state (running containers, the host,
the router's gateways) and decides for each ordered pair whether Linux should deliver an ICMP echo and
its reply (`Expectation`, with the reason in words): same L2 segment and subnet -> reachable in macvlan
bridge and ipvlan l2; a macvlan child and its parent's own address -> isolated (unless VEPA with a
hairpinning switch); private mode -> siblings isolated; different VLANs or subnets without a forwarding
router -> isolated; ipvlan l3 -> routed between every child of one parent. It also states what every
container should show (`expected_state`), as typed `Fact`s (kind, node, interface, value): link kind
and mode, MAC, addresses and default routes. It reads what Docker built through `DockerState`, so the
same oracle judges the emulation and a real engine.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from harness.docker.base import DockerState
from harness.docker.ipam import link_local_from_mac
from harness.docker.state import ContainerState, Endpoint, NetworkState
from harness.world import World

HOST = "host"


@dataclass(frozen=True)
class Address:
    owner: str  # container name, "host", or "gateway"
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    segment: tuple  # ("wire", vlan) or ("internal", parent)
    lower: str | None  # the host link a container's child hangs off; the host NIC for the host
    docker_net: NetworkState | None = None
    endpoint: Endpoint | None = None

    @property
    def label(self) -> str:
        return f"{self.owner} ({self.ip})" if self.owner != "gateway" else f"gateway {self.ip}"


@dataclass(frozen=True)
class Fact:
    """One thing a node must show: kind (link, mac, address, route), node, interface, and the value."""

    kind: str
    node: str
    interface: str | None
    value: str

    @property
    def subject(self) -> str:
        return f"{self.node} {self.interface}" if self.interface and self.kind != "route" else self.node


@dataclass(frozen=True)
class Expectation:
    src: Address
    dst: Address
    reachable: bool
    reason: str


def _segment(segment: tuple) -> str:
    kind, where = segment
    if kind == "internal":
        return f"internal network on {where}"
    return "untagged" if where is None else f"VLAN {where}"


class Oracle:
    def __init__(self, state: DockerState, world: World):
        self.state = state
        self.world = world

    # -- endpoints ------------------------------------------------------------------------------------

    def segment_of(self, lower: str) -> tuple:
        link = self.state.host_links.get(lower)
        if link is not None and link.kind == "dummy":
            return ("internal", lower)
        return ("wire", self.state.vlan_of(lower))

    def container_addresses(self, container: ContainerState) -> list[Address]:
        out = []
        for ep in container.endpoints:
            net = self.state.networks[ep.network]
            for ip, plen in ep.addresses:
                network = ipaddress.ip_interface(f"{ip}/{plen}").network
                out.append(Address(container.name, ip, network, self.segment_of(net.parent), net.parent, net, ep))
        return out

    def addresses(self) -> list[Address]:
        out: list[Address] = []
        for name in sorted(self.state.containers):
            out += self.container_addresses(self.state.containers[name])
        for iface in self.world.host_addresses:
            out.append(Address(HOST, iface.ip, iface.network, ("wire", None), self.world.host_parent))
        for port in self.world.router_ports:
            out.append(Address("gateway", port.interface.ip, port.interface.network, ("wire", port.vlan), None))
        return out

    # -- the matrix -----------------------------------------------------------------------------------

    def matrix(self) -> list[Expectation]:
        """Every source (containers, host) against every destination it could plausibly try."""
        addrs = self.addresses()
        out = []
        for src in addrs:
            if src.owner == "gateway":
                continue
            for dst in addrs:
                if dst.owner == src.owner or dst.ip.version != src.ip.version:
                    continue
                if dst.owner == "gateway" and not self._own_subnet(src.owner, dst, addrs):
                    continue  # another subnet's gateway answers through local delivery: not an isolation test
                verdict = self.expect(src, dst)
                if verdict is not None:
                    out.append(Expectation(src, dst, *verdict))
        return out

    @staticmethod
    def _own_subnet(owner: str, dst: Address, addrs: list[Address]) -> bool:
        return any(a.owner == owner and dst.ip in a.network for a in addrs)

    def expect(self, src: Address, dst: Address) -> tuple[bool, str] | None:
        """(reachable, why), or None where the model cannot say (the pair is then not judged)."""
        same_subnet = dst.ip in src.network and src.ip in dst.network
        if same_subnet and src.segment == dst.segment:
            return self._on_segment(src, dst)
        siblings = src.lower is not None and src.lower == dst.lower and src.docker_net and dst.docker_net
        if siblings and src.docker_net.driver == "ipvlan" and src.docker_net.mode in ("l3", "l3s"):
            return True, "ipvlan l3 routes between every child of one parent"
        if src.segment[0] == "internal" or dst.segment[0] == "internal":
            return False, "an internal (dummy-parent) network has no way out"
        if same_subnet:
            # The source takes the destination for a neighbour and asks for it on its own segment only
            # (no gateway is involved, whatever the router forwards); the router answers ARP only on
            # the port holding the address (harness.world.ROUTER_ARP_SYSCTLS).
            return False, f"same subnet on another segment ({_segment(src.segment)} vs {_segment(dst.segment)})"
        return self._routed(src, dst)

    def _passthru_on(self, lower: str | None) -> bool:
        return any(n.driver == "macvlan" and n.mode == "passthru" and n.parent == lower and n.endpoints
                   for n in self.state.networks.values())

    def _on_segment(self, src: Address, dst: Address) -> tuple[bool, str] | None:
        net = src.docker_net or dst.docker_net
        host = next((a for a in (src, dst) if a.owner == HOST), None)
        if host is not None and self._passthru_on(host.lower):
            return False, "passthru gives the parent's port to its child: the host's own address is cut off"
        both_children = src.docker_net is not None and dst.docker_net is not None
        if both_children and src.lower == dst.lower:
            return self._siblings(src.docker_net)
        if {src.owner, dst.owner} & {HOST} and not {src.owner, dst.owner} & {"gateway"}:
            other = dst if src.owner == HOST else src
            if other.lower == self.world.host_parent and other.docker_net is not None:
                if other.docker_net.driver == "macvlan" and other.docker_net.mode == "vepa" and self.world.hairpin:
                    return True, "VEPA sends to the switch, which hairpins back to the host"
                return False, f"{other.docker_net.driver} children cannot reach their parent's own address"
        if net is not None and net.driver == "ipvlan" and net.mode in ("l3", "l3s"):
            return None  # ipvlan l3 to another machine depends on the host's routing: not modelled
        if net is not None and net.driver == "macvlan" and net.mode == "passthru":
            return True, "passthru: the child owns the parent's port on the wire"
        return True, "same L2 segment and subnet"

    def _siblings(self, net: NetworkState) -> tuple[bool, str]:
        if net.driver == "macvlan":
            if net.mode == "bridge":
                return True, "macvlan bridge mode switches between children of one parent"
            if net.mode == "private":
                return False, "macvlan private mode isolates children of one parent"
            if net.mode == "vepa":
                if self.world.hairpin:
                    return True, "VEPA: the switch hairpins frames back to the parent"
                return False, "VEPA without a hairpinning switch: children cannot reach each other"
            return True, "passthru"
        if net.flag == "private":
            return False, "ipvlan private flag isolates children of one parent"
        if net.flag == "vepa":
            if self.world.hairpin:
                return True, "ipvlan VEPA: the switch hairpins frames back"
            return False, "ipvlan VEPA without a hairpinning switch"
        return True, f"ipvlan {net.mode} switches between children of one parent"

    def _gateway_of(self, addr: Address):
        if addr.endpoint is not None:
            return addr.endpoint.gateway4 if addr.ip.version == 4 else addr.endpoint.gateway6
        if addr.owner == HOST:
            gw = self.world.host_gateway(addr.ip.version)
            return gw.ip if gw else None
        return None

    def _router_port(self, ip, segment) -> bool:
        return any(p.interface.ip == ip and ("wire", p.vlan) == segment for p in self.world.router_ports)

    def _routed(self, src: Address, dst: Address) -> tuple[bool, str]:
        gw_src, gw_dst = self._gateway_of(src), self._gateway_of(dst)
        if gw_src is None:
            return False, f"{src.owner} has no route to {dst.network}"
        if not self._router_port(gw_src, src.segment):
            return False, f"{src.owner}'s gateway {gw_src} is not on its segment"
        if dst.owner == "gateway":
            # The router owns every gateway address: it delivers locally and answers through the port
            # the source's gateway is on, forwarding or not.
            return True, f"the router holds {dst.ip} and answers through {src.owner}'s gateway {gw_src}"
        if not self.world.forwarding:
            return False, "different subnets or VLANs and the router does not route between them"
        if gw_dst is None or not self._router_port(gw_dst, dst.segment):
            return False, f"{dst.owner} has no route back through the router"
        return True, "routed by the upstream router"

    # -- state ----------------------------------------------------------------------------------------

    def expected_state(self, container: ContainerState) -> list[Fact]:
        """What every container must show, as Docker sets it."""
        out = []
        name = container.name
        for ep in container.endpoints:
            net = self.state.networks[ep.network]
            out.append(Fact("link", name, ep.ifname, f"{net.driver} {net.mode}"))
            if ep.mac:
                out.append(Fact("mac", name, ep.ifname, ep.mac))
            for cidr in ep.cidrs():
                out.append(Fact("address", name, ep.ifname, cidr))
            if ep.mac and container.ipv6:
                # The kernel derives it from the MAC Docker set (EUI-64): fe80::42:c0ff:fea8:8803/64.
                out.append(Fact("address", name, ep.ifname, f"{link_local_from_mac(ep.mac)}/64"))
        ep4, ep6 = container.gateway_endpoints()  # one endpoint before moby 28, one per family since
        if ep4 is not None and (ep4.gateway4 or ep4.connected_default):
            via = f" via {ep4.gateway4}" if ep4.gateway4 else ""
            out.append(Fact("route", name, ep4.ifname, f"default{via} dev {ep4.ifname}"))
        if ep6 is not None and ep6.gateway6:
            out.append(Fact("route", name, ep6.ifname, f"default via {ep6.gateway6} dev {ep6.ifname}"))
        return out
