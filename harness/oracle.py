"""Expected reachability and state, derived from the model rather than from the kernel.

`Oracle` lists every `Endpoint` address of the scenario's end state (running containers of every Docker
host, the hosts, the router's gateways) and decides for each ordered pair whether Linux should deliver an ICMP echo and
its reply (`Expectation`, with the reason in words): same L2 segment and subnet -> reachable in macvlan
bridge and ipvlan l2; a macvlan child and its parent's own address -> isolated (unless VEPA with a
hairpinning switch); private mode -> siblings isolated; different VLANs or subnets without a forwarding
router -> isolated; ipvlan l3 -> routed between every child of one parent. It also states what every
container should show (`expected_state`), as typed `Fact`s (kind, node, interface, value): link kind
and mode, MAC, addresses and default routes. It reads what Docker built through `DockerState` (one per
host, as a `Fleet`), so the same oracle judges the emulation and a real engine. Across hosts the shared
switch decides: same segment (switch and VLAN) and subnet -> reachable, the parent rule applies per host
(host A reaches host B's macvlan children, not its own). Several nodes holding one address on one
segment are a `Conflict` (`conflicts`); matrix pairs that depend on it get no verdict.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from harness.docker.base import DockerState
from harness.docker.fleet import Fleet, as_fleet
from harness.docker.ipam import link_local_from_mac
from harness.docker.state import ContainerState, Endpoint, NetworkState
from harness.model import DEFAULT_HOST, MAIN_SWITCH
from harness.world import World

HOST = DEFAULT_HOST  # the Docker host of a single-host scenario


def wire(vlan: int | None, switch: str = MAIN_SWITCH) -> tuple:
    """An L2 segment on the wire: a VLAN (None: untagged) of a switch; the main switch's keep the short form."""
    return ("wire", vlan) if switch == MAIN_SWITCH else ("wire", vlan, switch)


@dataclass(frozen=True)
class Address:
    owner: str  # container name, a Docker host's name ("host" in a single-host scenario), or "gateway"
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    segment: tuple  # wire(vlan, switch), or ("internal", parent[, host])
    lower: str | None  # the host link a container's child hangs off; the host NIC for the host
    docker_net: NetworkState | None = None
    endpoint: Endpoint | None = None
    host: str | None = None  # the Docker host the address lives on (None: the router's)
    role: str = "container"  # container | host | gateway

    @property
    def label(self) -> str:
        return f"{self.owner} ({self.ip})" if self.owner != "gateway" else f"gateway {self.ip}"

    @property
    def holder(self) -> str:
        """Who holds it, with the host for a container: `c1 on hosta`."""
        if self.role == "container" and self.host is not None:
            return f"{self.owner} on {self.host}"
        return self.owner if self.role != "gateway" else "the router"


@dataclass(frozen=True)
class Conflict:
    """One address held by several nodes on one L2 segment at once (issue #13): an address conflict."""

    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    segment: tuple
    holders: tuple[Address, ...]

    @property
    def owners(self) -> tuple[str, ...]:
        return tuple(sorted({a.owner for a in self.holders}))

    @property
    def label(self) -> str:
        return f"{self.ip} ({segment_text(self.segment)}) held by {', '.join(a.holder for a in self.holders)}"


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
    reachable: bool | None  # None: no verdict, the pair depends on an address conflict (`conflict`)
    reason: str
    conflict: Conflict | None = None


def segment_text(segment: tuple) -> str:
    kind, where, *rest = segment
    if kind == "internal":
        return f"internal network on {where}" + (f" of {rest[0]}" if rest else "")
    text = "untagged" if where is None else f"VLAN {where}"
    return text + (f" on switch {rest[0]}" if rest else "")


class Oracle:
    """Expected facts for one scenario's end state, across every Docker host of its `Fleet`."""

    def __init__(self, state: DockerState | Fleet, world: World):
        self.fleet = as_fleet(state)
        self.state = state  # as given: one host's DockerState, or a Fleet (read `fleet` for every host)
        self.world = world

    def host_state(self, host: str) -> DockerState:
        return self.fleet.hosts[host]

    # -- endpoints ------------------------------------------------------------------------------------

    def segment_of(self, lower: str, host: str | None = None) -> tuple:
        host = host if host is not None else next(iter(self.fleet.hosts))
        state = self.host_state(host)
        link = state.host_links.get(lower)
        if link is not None and link.kind == "dummy":
            return ("internal", lower) if not self.fleet.multi_host else ("internal", lower, host)
        return wire(state.vlan_of(lower), self._switch_of(host, lower))

    def _switch_of(self, host: str, lower: str) -> str:
        """The switch a host link's frames go out on: its NIC's (following the parent chain)."""
        links = self.host_state(host).host_links
        name, seen = lower, set()
        while name in links and links[name].parent and name not in seen:
            seen.add(name)
            name = links[name].parent
        try:
            nic = self.world.host(host).nic(name)
        except StopIteration:
            nic = None
        return nic.switch if nic is not None else MAIN_SWITCH

    def container_addresses(self, container: ContainerState) -> list[Address]:
        out = []
        host = self.fleet.host_of(container.name)
        networks = self.host_state(host).networks
        for ep in container.endpoints:
            net = networks[ep.network]
            for ip, plen in ep.addresses:
                network = ipaddress.ip_interface(f"{ip}/{plen}").network
                out.append(Address(container.name, ip, network, self.segment_of(net.parent, host), net.parent, net, ep,
                                   host=host))
        return out

    def addresses(self) -> list[Address]:
        out: list[Address] = []
        containers = self.fleet.containers
        for name in sorted(containers):
            out += self.container_addresses(containers[name])
        for host in self.world.hosts:
            for nic in host.nics:
                for iface in nic.addresses:
                    out.append(Address(host.name, iface.ip, iface.network, wire(None, nic.switch), nic.name,
                                       host=host.name, role="host"))
        for port in self.world.router_ports:
            out.append(Address("gateway", port.interface.ip, port.interface.network, wire(port.vlan), None,
                               role="gateway"))
        return out

    @property
    def host_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.world.hosts)

    # -- address conflicts ------------------------------------------------------------------------------

    def conflicts(self, addrs: list[Address] | None = None) -> list[Conflict]:
        """Every address that several nodes hold on one segment of the wire (an internal network is one
        host's own, and one daemon's IPAM never hands out an address twice)."""
        groups: dict[tuple, list[Address]] = {}
        for a in addrs if addrs is not None else self.addresses():
            if a.segment[0] == "wire":
                groups.setdefault((a.ip, a.segment), []).append(a)
        out = []
        for (ip, segment), holders in groups.items():
            if len({a.owner for a in holders}) > 1:
                out.append(Conflict(ip, segment, tuple(holders)))
        return sorted(out, key=lambda c: (c.ip.version, c.ip, str(c.segment)))

    def conflict_of(self, addr: Address, conflicts: list[Conflict]) -> Conflict | None:
        return next((c for c in conflicts if c.ip == addr.ip and c.segment == addr.segment), None)

    # -- the matrix -----------------------------------------------------------------------------------

    def matrix(self) -> list[Expectation]:
        """Every source (containers, hosts) against every destination it could plausibly try. A pair whose
        source or destination address is in conflict has no verdict: which holder answers is chance."""
        addrs = self.addresses()
        conflicts = self.conflicts(addrs)
        out = []
        for src in addrs:
            if src.owner == "gateway":
                continue
            for dst in addrs:
                if dst.owner == src.owner or dst.ip.version != src.ip.version:
                    continue
                if any(a.owner == src.owner and a.ip == dst.ip for a in addrs):
                    continue  # its own address (held elsewhere too): delivered locally, not a test of the wire
                if dst.segment != src.segment and any(a.ip == dst.ip and a.owner != dst.owner and a.segment == src.segment
                                                      for a in addrs):
                    continue  # the address is held on the source's own segment too: that holder answers
                if src.role == "host" and self.host_source(src.owner, dst, addrs) is not src:
                    continue  # a host with addresses on several NICs sends from the one the kernel picks
                if dst.owner == "gateway" and not self._own_subnet(src.owner, dst, addrs):
                    continue  # another subnet's gateway answers through local delivery: not an isolation test
                verdict = self.expect(src, dst)
                if verdict is None:
                    continue
                conflict = self.conflict_of(dst, conflicts) or self.conflict_of(src, conflicts)
                if conflict is not None:
                    out.append(Expectation(src, dst, None, f"{conflict.ip} is in conflict", conflict))
                else:
                    out.append(Expectation(src, dst, *verdict))
        return out

    def host_source(self, host: str, dst: Address, addrs: list[Address]) -> Address | None:
        """The address a Docker host pings `dst` from: one whose subnet holds it (a connected route), else the
        first on its first NIC (where its default route is)."""
        own = [a for a in addrs if a.owner == host and a.role == "host" and a.ip.version == dst.ip.version]
        parent = self.world.host(host).parent
        return (next((a for a in own if dst.ip in a.network), None)
                or next((a for a in own if a.lower == parent), None) or (own[0] if own else None))

    @staticmethod
    def _own_subnet(owner: str, dst: Address, addrs: list[Address]) -> bool:
        return any(a.owner == owner and dst.ip in a.network for a in addrs)

    def expect(self, src: Address, dst: Address) -> tuple[bool, str] | None:
        """(reachable, why), or None where the model cannot say (the pair is then not judged)."""
        same_subnet = dst.ip in src.network and src.ip in dst.network
        if same_subnet and src.segment == dst.segment:
            return self._on_segment(src, dst)
        siblings = (src.lower is not None and src.lower == dst.lower and src.host == dst.host
                    and src.docker_net and dst.docker_net)
        if siblings and src.docker_net.driver == "ipvlan" and src.docker_net.mode in ("l3", "l3s"):
            return True, "ipvlan l3 routes between every child of one parent"
        if src.segment[0] == "internal" or dst.segment[0] == "internal":
            return False, "an internal (dummy-parent) network has no way out"
        if same_subnet:
            # The source takes the destination for a neighbour and asks for it on its own segment only
            # (no gateway is involved, whatever the router forwards); the router answers ARP only on
            # the port holding the address (harness.world.ROUTER_ARP_SYSCTLS).
            return False, f"same subnet on another segment ({segment_text(src.segment)} vs {segment_text(dst.segment)})"
        return self._routed(src, dst)

    def _passthru_on(self, host: str, lower: str | None) -> bool:
        return any(n.driver == "macvlan" and n.mode == "passthru" and n.parent == lower and n.endpoints
                   for n in self.host_state(host).networks.values())

    def _on_segment(self, src: Address, dst: Address) -> tuple[bool, str] | None:
        net = src.docker_net or dst.docker_net
        hosts = [a for a in (src, dst) if a.role == "host"]
        if any(self._passthru_on(h.host, h.lower) for h in hosts):
            return False, "passthru gives the parent's port to its child: the host's own address is cut off"
        both_children = src.docker_net is not None and dst.docker_net is not None
        if both_children and src.lower == dst.lower and src.host == dst.host:
            return self._siblings(src.docker_net)
        if len(hosts) == 1 and "gateway" not in (src.role, dst.role):
            host = hosts[0]
            other = dst if host is src else src
            # The parent rule holds per host: a host cannot reach its own children on that NIC, while
            # another host on the same segment reaches them through the switch.
            if other.host == host.host and other.lower == host.lower and other.docker_net is not None:
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
        if addr.role == "host":
            gw = self.world.host_gateway(addr.ip.version, addr.host)
            return gw.ip if gw else None
        return None

    def _router_port(self, ip, segment) -> bool:
        return any(p.interface.ip == ip and wire(p.vlan) == segment for p in self.world.router_ports)

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
        networks = self.host_state(self.fleet.host_of(name)).networks
        for ep in container.endpoints:
            net = networks[ep.network]
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
