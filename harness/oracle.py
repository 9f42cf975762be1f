"""Expected reachability and state, derived from the model rather than from the kernel.

`Oracle` lists every `Endpoint` address of the scenario's end state (running containers of every Docker
host, the hosts, the router's gateways) and decides for each ordered pair whether Linux should deliver an
ICMP echo and its reply (`Expectation`, with the reason in words): same L2 segment and subnet -> reachable
in macvlan bridge and ipvlan l2; a macvlan child and its own host's parent address -> isolated (unless
VEPA with a hairpinning switch); private mode -> siblings isolated; different VLANs or subnets without a
forwarding router -> isolated; ipvlan l3 -> routed between every child of one parent. Across hosts the
shared switch decides: same segment (switch and VLAN) and subnet -> reachable, the parent rule applies per
host (host A reaches host B's macvlan children, not its own).

The matrix asks that per node, as the kernel sends (`Oracle.verdict`): the source node sends from the
address its own route picks (`Egress`, `source_of`: a connected subnet before the one default route Docker
gives a container per family, or a Docker host's own default route; a host's routes include its macvlan
shim), any interface of the destination node that hears the request takes it (the weak host model), and
the reply leaves by the destination's route back; where that depends on the reverse-path filter the pair
is not judged. `HostSetup` is what one Docker host's own commands configured (the documented workaround's
`mac0`), one per host. Several nodes holding one address on one segment are a `Conflict` (`conflicts`);
matrix pairs that depend on it get no verdict.

It also states what every container should show (`expected_state`), as typed `Fact`s (kind, node,
interface, value): link kind and mode, MAC, addresses, default routes and a `--hostname`; and, for a node
with several interfaces of a family, the interface and source address it uses per destination (`paths`).
It reads what Docker built through `DockerState` (one per host, as a `Fleet`), so the same oracle judges
the emulation and a real engine.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from harness.docker.base import DockerState
from harness.docker.fleet import Fleet, as_fleet
from harness.docker.ipam import link_local_from_mac
from harness.docker.state import ContainerState, Endpoint, NetworkState
from harness.model import (
    DEFAULT_HOST,
    MAIN_SWITCH,
    HostAddressAdd,
    HostLinkAdd,
    HostLinkDelete,
    HostLinkUp,
    HostRouteAdd,
)
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
    iface: str | None = None  # the interface holding it in its node: eth0, eth2, mac0
    onlink: tuple = ()  # networks this interface reaches without a gateway; () is just `network`
    shim: str | None = None  # a Docker host's own macvlan on `lower` (the workaround's mac0): its mode

    def reaches_onlink(self, ip) -> bool:
        return any(ip in n for n in (self.onlink or (self.network,)) if n.version == ip.version)

    @property
    def child(self) -> bool:
        """A macvlan/ipvlan child of `lower`: a container's endpoint or a host's shim."""
        return self.docker_net is not None or self.shim is not None

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
    """One thing a node must show: kind (link, mac, address, route, hostname, path), node, interface, and
    the value."""

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


@dataclass(frozen=True)
class HostSetup:
    """What one Docker host's own commands configured (`ip link|addr|route` that succeeded): the
    documentation's macvlan workaround gives the host a macvlan `mac0` on its parent, a /32 and a route
    to the containers' range through it. Docker knows nothing of these; the oracle needs them to say
    which interface and source address the host uses and what its shim reaches."""

    links: tuple = ()  # (name, parent, kind, mode, up)
    addresses: tuple = ()  # (dev, IPv4Interface | IPv6Interface)
    routes: tuple = ()  # (network, dev, via or None)

    @classmethod
    def of(cls, done) -> HostSetup:
        """From one host's (command, Docker's or iproute2's error) pairs in order; failed commands changed
        nothing."""
        links: dict[str, list] = {}
        addresses, routes = [], []
        for cmd, error in done:
            if error is not None:
                continue
            if isinstance(cmd, HostLinkAdd):
                links[cmd.name] = [cmd.name, cmd.parent, cmd.kind, cmd.mode or "bridge", False]
            elif isinstance(cmd, HostLinkUp) and cmd.name in links:
                links[cmd.name][4] = True
            elif isinstance(cmd, HostLinkDelete):
                links.pop(cmd.name, None)
                addresses = [a for a in addresses if a[0] != cmd.name]
                routes = [r for r in routes if r[1] != cmd.name]
            elif isinstance(cmd, HostAddressAdd):
                addresses.append((cmd.dev, ipaddress.ip_interface(cmd.address)))
            elif isinstance(cmd, HostRouteAdd):
                dst = "0.0.0.0/0" if cmd.dst == "default" else cmd.dst
                via = ipaddress.ip_address(cmd.via) if cmd.via else None
                routes.append((ipaddress.ip_network(dst, strict=False), cmd.dev, via))
        return cls(tuple(tuple(v) for v in links.values()), tuple(addresses), tuple(routes))

    @classmethod
    def by_host(cls, done: Iterable) -> dict[str, HostSetup]:
        """One `HostSetup` per Docker host, from (step, error) pairs in order: a command is run on the host
        its step names (`Step.host`, `host:` in the scenario), so each host's links, addresses and routes
        are its own."""
        per_host: dict[str, list] = {}
        for step, error in done:
            per_host.setdefault(step.host, []).append((step.command, error))
        return {host: cls.of(pairs) for host, pairs in per_host.items()}


@dataclass(frozen=True)
class Egress:
    """How a node sends to a destination (its routing decision): from which address and interface,
    and through which gateway (None: on-link)."""

    address: Address
    via: object = None


def segment_text(segment: tuple) -> str:
    kind, where, *rest = segment
    if kind == "internal":
        return f"internal network on {where}" + (f" of {rest[0]}" if rest else "")
    text = "untagged" if where is None else f"VLAN {where}"
    return text + (f" on switch {rest[0]}" if rest else "")


class Oracle:
    """Expected facts for one scenario's end state, across every Docker host of its `Fleet`."""

    def __init__(self, state: DockerState | Fleet, world: World,
                 setup: HostSetup | Mapping[str, HostSetup] | None = None, rp_filter: int | None = None):
        self.fleet = as_fleet(state)
        self.state = state  # as given: one host's DockerState, or a Fleet (read `fleet` for every host)
        self.world = world
        # What each Docker host's own commands configured, by host; a bare `HostSetup` is the one host's.
        if isinstance(setup, HostSetup):
            setup = {world.hosts[0].name: setup}
        self.setups: dict[str, HostSetup] = dict(setup or {})
        # The reverse-path filter of the nodes' interfaces (0 off, 1 strict, 2 loose), or None: not
        # known. Docker sets none; a new namespace inherits it from the machine's initial namespace
        # (net.core.devconf_inherit_init_net 0), which the harness never touches.
        self.rp_filter = rp_filter

    def host_state(self, host: str) -> DockerState:
        return self.fleet.hosts[host]

    def setup_of(self, host: str) -> HostSetup:
        return self.setups.get(host) or HostSetup()

    @property
    def host_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.world.hosts)

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
                                   host=host, iface=ep.ifname))
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
                                       host=host.name, role="host", iface=nic.name))
            out += self.shim_addresses(host.name)
        for port in self.world.router_ports:
            out.append(Address("gateway", port.interface.ip, port.interface.network, wire(port.vlan), None,
                               role="gateway"))
        return out

    def shim_addresses(self, host: str = HOST) -> list[Address]:
        """A Docker host's addresses on its own macvlan links (the workaround's mac0, made by the commands
        run on that host), when the link is up: each is a child of its parent, on the parent's segment,
        reaching on-link its own prefix and every `ip route add X dev mac0` without a gateway."""
        setup = self.setup_of(host)
        out = []
        for name, parent, kind, mode, up in setup.links:
            if kind != "macvlan" or not up:
                continue
            for dev, iface in setup.addresses:
                if dev != name:
                    continue
                onlink = tuple(n for n, d, via in setup.routes if d == name and via is None)
                if iface.network.prefixlen < iface.network.max_prefixlen:
                    onlink = (iface.network, *onlink)
                out.append(Address(host, iface.ip, iface.network, self.segment_of(parent, host), parent,
                                   host=host, role="host", iface=name, onlink=onlink, shim=mode))
        return out

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

    # -- routing: which interface and source address a node uses ---------------------------------------

    def egress(self, node: str, dst, addrs: list[Address] | None = None) -> Egress | None:
        """The node's routing decision for `dst` (longest prefix; a connected route before a default):
        the address it sends from and the gateway, or None when it has no route. A Docker host routes by
        its connected subnets, its own commands' routes and its default route (on its first NIC); a
        container by its connected subnets and the default route of the endpoint Docker picked for that
        family (`ContainerState.gateway_endpoints`)."""
        addrs = self.addresses() if addrs is None else addrs
        own = [a for a in addrs if a.owner == node and a.ip.version == dst.version]
        best: tuple[int, int, Egress] | None = None

        def offer(prefixlen: int, rank: int, egress: Egress) -> None:
            nonlocal best
            if best is None or (prefixlen, -rank) > (best[0], -best[1]):
                best = (prefixlen, rank, egress)

        for rank, a in enumerate(own):
            for net in a.onlink or (a.network,):
                if net.version == dst.version and dst in net:
                    offer(net.prefixlen, rank, Egress(a))
        if node in self.host_names:
            for net, dev, via in self.setup_of(node).routes:
                a = next((x for x in own if x.iface == dev), None)
                if via is not None and a is not None and dst in net:
                    offer(net.prefixlen, 0, Egress(a, via))
            gw = self.world.host_gateway(dst.version, node)
            parent = self.world.host(node).parent
            a = next((x for x in own if x.iface == parent), None)
            if gw is not None and a is not None:
                offer(0, len(own), Egress(a, gw.ip))
        elif node in self.fleet.containers:
            ep4, ep6 = self.fleet.containers[node].gateway_endpoints()
            ep = ep4 if dst.version == 4 else ep6
            if ep is not None and ep.has_default()[dst.version == 6]:
                gw = ep.gateway4 if dst.version == 4 else ep.gateway6
                a = next((x for x in own if x.endpoint is ep), None)
                if a is not None:
                    offer(0, len(own), Egress(a, gw))
        return best[2] if best is not None else None

    def source_of(self, node: str, dst, addrs: list[Address] | None = None) -> Address | None:
        """The address `node` sends from to reach `dst` (its route's interface); with no route, its
        first address of that family (the probe then fails with no route). The one rule for every node:
        a Docker host with addresses on several NICs, a host with its shim, a container on several
        networks."""
        addrs = self.addresses() if addrs is None else addrs
        egress = self.egress(node, dst, addrs)
        if egress is not None:
            return egress.address
        return next((a for a in addrs if a.owner == node and a.ip.version == dst.version), None)

    def paths(self) -> list[Fact]:
        """Where a node has several interfaces of a family (a host with its shim or several NICs, a
        container on several networks), which interface and source address it uses for each destination
        of the matrix: `ip route get` in the node shows the kernel's own decision. An address the node
        holds itself is local, not a path."""
        addrs = self.addresses()
        out = []
        for node in self._sources(addrs):
            for version in (4, 6):
                mine = {a.ip for a in addrs if a.owner == node and a.ip.version == version}
                if len([a for a in addrs if a.owner == node and a.ip.version == version]) < 2:
                    continue
                for dst in sorted({a.ip for a in addrs if a.ip.version == version} - mine):
                    egress = self.egress(node, dst, addrs)
                    if egress is None:
                        continue
                    src = egress.address
                    via = f" via {egress.via}" if egress.via is not None else ""
                    out.append(Fact("path", node, src.iface, f"{dst}{via} dev {src.iface} src {src.ip}"))
        return out

    # -- the matrix -----------------------------------------------------------------------------------

    def _sources(self, addrs: list[Address]) -> list[str]:
        return list(dict.fromkeys(a.owner for a in addrs if a.role != "gateway"))

    def matrix(self) -> list[Expectation]:
        """Every source (containers, hosts) against every destination it could plausibly try, from the
        address the source's own route picks (`source_of`). A pair whose source or destination address is
        in conflict has no verdict: which holder answers is chance."""
        addrs = self.addresses()
        conflicts = self.conflicts(addrs)
        out = []
        for owner in self._sources(addrs):
            for dst in addrs:
                if dst.owner == owner:
                    continue
                if any(a.owner == owner and a.ip == dst.ip for a in addrs):
                    continue  # its own address (held elsewhere too): delivered locally, not a test of the wire
                src = self.source_of(owner, dst.ip, addrs)
                if src is None:
                    continue
                if dst.segment != src.segment and any(a.ip == dst.ip and a.owner != dst.owner and a.segment == src.segment
                                                      for a in addrs):
                    continue  # the address is held on the source's own segment too: that holder answers
                if dst.role == "gateway" and not self._own_subnet(owner, dst, addrs):
                    continue  # another subnet's gateway answers through local delivery: not an isolation test
                verdict = self.verdict(src, dst, addrs)
                if verdict is None:
                    continue
                conflict = self.conflict_of(dst, conflicts) or self.conflict_of(src, conflicts)
                if conflict is not None:
                    out.append(Expectation(src, dst, None, f"{conflict.ip} is in conflict", conflict))
                else:
                    out.append(Expectation(src, dst, *verdict))
        return out

    def ports(self, node: str, version: int, addrs: list[Address]) -> list[Address]:
        """Every interface of `node` that takes frames off a segment, one entry each: its addresses of
        `version`, and for a Docker host also its NICs that hold none (a second NIC on the same switch)."""
        out = {}
        for a in addrs:
            if a.owner == node and a.ip.version == version:
                out.setdefault(a.iface, a)
        if node in self.host_names:
            for nic in self.world.host(node).nics:
                if nic.name not in out:
                    out[nic.name] = Address(node, ipaddress.ip_address("::" if version == 6 else "0.0.0.0"),
                                            ipaddress.ip_network("::/128" if version == 6 else "0.0.0.0/32"),
                                            self.segment_of(nic.name, node), nic.name, host=node, role="host",
                                            iface=nic.name)
        return list(out.values())

    def _deliver(self, sender: Address, node: str, holder: Address, verdict, addrs: list[Address]):
        """A frame from `sender`, on its segment, for an address of `node` (`holder` holds it): (verdict,
        the interface that takes it). A node other than the router answers ARP for all its addresses on
        every interface (arp_ignore 0, Linux's weak host model), so where the holder cannot hear the
        sender another interface of the node on that segment may take it."""
        if verdict is None or verdict[0] or holder.role == "gateway" or not sender.reaches_onlink(holder.ip):
            return verdict, holder
        for port in self.ports(node, holder.ip.version, addrs):
            if port.iface == holder.iface or port.segment != sender.segment:
                continue
            l2 = self._on_segment(sender, port)
            if l2 is not None and l2[0]:
                return (True, f"{port.iface} of {node} answers for {holder.ip} (weak host: arp_ignore 0) and "
                              f"{l2[1]}"), port
        return verdict, holder

    def verdict(self, src: Address, dst: Address, addrs: list[Address] | None = None) -> tuple[bool, str] | None:
        """An echo from `src` (the address its node's route picks) to `dst`, and its reply. The request
        reaches `dst`'s node on some interface (`_deliver`: the weak host model); the reply leaves by the
        route `dst`'s node has back to `src.ip` and reaches `src`'s node on some interface. Where either
        arrives on another interface than the receiver's own route back would use, a strict reverse-path
        filter drops it: such a pair is judged by `rp_filter` (None: unknown, the pair is not judged when
        delivery depends on it)."""
        addrs = self.addresses() if addrs is None else addrs
        one_way = (dst.role != "gateway" and src.segment == dst.segment and src.reaches_onlink(dst.ip)
                   and not dst.reaches_onlink(src.ip))
        # On-link one way only (the host's /32 shim): the request is delivered on the segment; whether
        # the reply comes back is the destination's route's business, judged below.
        forward = self._on_segment(src, dst) if one_way else self.expect(src, dst)
        forward, arrival = self._deliver(src, dst.owner, dst, forward, addrs)
        if forward is None or not forward[0] or dst.role == "gateway":
            return forward
        back = self.egress(dst.owner, src.ip, addrs)
        if back is None:
            return False, f"{dst.owner} has no route back to {src.ip}"
        reply_from = back.address
        if reply_from.iface == arrival.iface and arrival is dst and not one_way:
            return forward  # symmetric: the pair's own verdict holds both ways
        if back.via is None:
            if not reply_from.reaches_onlink(src.ip):
                return False, f"{dst.owner} has no route to {src.ip}"
            if reply_from.segment != src.segment:
                reply = (False, f"{dst.owner}'s {reply_from.iface} and {src.owner}'s {src.iface} are on different "
                                "segments")
            else:
                reply = self._on_segment(reply_from, src)
            reply, landing = self._deliver(reply_from, src.owner, src, reply, addrs)
        else:
            reply, landing = self._routed(reply_from, src), src
        if reply is None:
            return None
        if not reply[0]:
            return False, f"the reply leaves {dst.owner} by {reply_from.iface} and is lost: {reply[1]}"
        strict = [f"{dst.owner} takes the request on {arrival.iface} but routes back by {reply_from.iface}"] \
            if reply_from.iface != arrival.iface else []
        if landing.iface != src.iface:
            strict.append(f"{src.owner} takes the reply on {landing.iface} but routes back by {src.iface}")
        if not strict:
            return forward if arrival is dst else (True, f"{forward[1]}; the reply leaves by {reply_from.iface}")
        if self.rp_filter is None:
            return None
        if self.rp_filter == 1:
            return False, f"strict reverse-path filter: {'; '.join(strict)}"
        return True, f"{forward[1]}; {'; '.join(strict)} (rp_filter {self.rp_filter})"

    @staticmethod
    def _own_subnet(owner: str, dst: Address, addrs: list[Address]) -> bool:
        return any(a.owner == owner and dst.ip in a.network for a in addrs)

    def expect(self, src: Address, dst: Address) -> tuple[bool, str] | None:
        """(reachable, why) for one address pair, or None where the model cannot say (the pair is then
        not judged)."""
        same_subnet = src.reaches_onlink(dst.ip) and dst.reaches_onlink(src.ip)
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
        if src.child and dst.child and src.lower == dst.lower and src.host == dst.host:
            if src.shim is not None or dst.shim is not None:
                return self._shim_sibling(src, dst)
            return self._siblings(src.docker_net)
        if len(hosts) == 1 and "gateway" not in (src.role, dst.role):
            host = hosts[0]
            other = dst if host is src else src
            # The parent rule holds per host: a host cannot reach its own children from that NIC, while
            # another host on the same segment reaches them through the switch. A host's shim is a child
            # itself (handled above for its own parent's children).
            if host.shim is None and other.host == host.host and other.lower == host.lower and other.docker_net is not None:
                if other.docker_net.driver == "macvlan" and other.docker_net.mode == "vepa" and self.world.hairpin:
                    return True, "VEPA sends to the switch, which hairpins back to the host"
                return False, f"{other.docker_net.driver} children cannot reach their parent's own address"
        if net is not None and net.driver == "ipvlan" and net.mode in ("l3", "l3s"):
            return None  # ipvlan l3 to another machine depends on the host's routing: not modelled
        if net is not None and net.driver == "macvlan" and net.mode == "passthru":
            return True, "passthru: the child owns the parent's port on the wire"
        return True, "same L2 segment and subnet"

    def _shim_sibling(self, src: Address, dst: Address) -> tuple[bool, str] | None:
        """A host's macvlan shim and a container's child on one parent of that host (drivers/net/macvlan.c:
        a frame is switched to another port of the parent only when both ports are in bridge mode)."""
        container = dst if src.shim is not None else src
        shim = src if src.shim is not None else dst
        net = container.docker_net
        if net is None:
            return None  # two shims of the host: not the workaround
        if net.driver != "macvlan":
            return None  # an ipvlan network and a macvlan shim cannot share a parent
        if net.mode == "bridge" and shim.shim == "bridge":
            return True, f"the host's {shim.iface} and the container's child are macvlan bridge ports of one parent"
        if "private" in (net.mode, shim.shim):
            return False, "macvlan private mode isolates children of one parent"
        return None

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
            # Only the endpoint that holds the container's default route of that family has a gateway in use.
            container = self.fleet.containers.get(addr.owner)
            if container is not None and len(container.endpoints) > 1:
                ep4, ep6 = container.gateway_endpoints()
                if (ep4 if addr.ip.version == 4 else ep6) is not addr.endpoint:
                    return None
            return addr.endpoint.gateway4 if addr.ip.version == 4 else addr.endpoint.gateway6
        if addr.role == "host":
            gw = self.world.host_gateway(addr.ip.version, addr.host)
            return gw.ip if gw else None
        return None

    def _multi_homed(self, addr: Address) -> bool:
        container = self.fleet.containers.get(addr.owner)
        return container is not None and len(container.endpoints) > 1

    def _router_port(self, ip, segment) -> bool:
        return any(p.interface.ip == ip and wire(p.vlan) == segment for p in self.world.router_ports)

    def _routed(self, src: Address, dst: Address) -> tuple[bool, str]:
        gw_src, gw_dst = self._gateway_of(src), self._gateway_of(dst)
        if gw_src is None:
            return False, f"{src.owner} has no route to {dst.network}"
        if not self._router_port(gw_src, src.segment):
            return False, f"{src.owner}'s gateway {gw_src} is not on its segment"
        if dst.role == "gateway":
            # The router owns every gateway address: it delivers locally and answers through the port
            # the source's gateway is on, forwarding or not.
            return True, f"the router holds {dst.ip} and answers through {src.owner}'s gateway {gw_src}"
        if not self.world.forwarding:
            return False, "different subnets or VLANs and the router does not route between them"
        if gw_dst is None and self._multi_homed(dst):
            return True, "routed by the upstream router (the reply leaves by the destination's default route)"
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
        hostname = (container.config or {}).get("hostname")
        if hostname:
            # `docker run --hostname`: the container's own UTS namespace carries it (Docker's default, the
            # short id, is not judged: the emulation makes up its ids).
            out.append(Fact("hostname", name, None, hostname))
        ep4, ep6 = container.gateway_endpoints()  # one endpoint before moby 28, one per family since
        if ep4 is not None and (ep4.gateway4 or ep4.connected_default):
            via = f" via {ep4.gateway4}" if ep4.gateway4 else ""
            out.append(Fact("route", name, ep4.ifname, f"default{via} dev {ep4.ifname}"))
        if ep6 is not None and ep6.gateway6:
            out.append(Fact("route", name, ep6.ifname, f"default via {ep6.gateway6} dev {ep6.ifname}"))
        return out
