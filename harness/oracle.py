"""Expected reachability and state, derived from the model rather than from the kernel.

`Oracle` lists every `Endpoint` address of the scenario's end state (running containers, the host,
the router's gateways) and decides for each ordered pair whether Linux should deliver an ICMP echo and
its reply (`Expectation`, with the reason in words): same L2 segment and subnet -> reachable in macvlan
bridge and ipvlan l2; a macvlan child and its parent's own address -> isolated (unless VEPA with a
hairpinning switch); private mode -> siblings isolated; different VLANs or subnets without a forwarding
router -> isolated; ipvlan l3 -> routed between every child of one parent. The matrix asks that per
node, as the kernel sends (`Oracle.verdict`): the source sends from the address its own route picks
(`Egress`: a connected subnet before the one default route Docker gives a container; the host's routes
include its macvlan shim), any interface of the destination node that hears the request takes it (the
weak host model), and the reply leaves by the destination's route back; where that depends on the
reverse-path filter the pair is not judged. `HostSetup` is what the scenario's own host commands
configured (the documented workaround's `mac0`). It also states what every container should show
(`expected_state`), as typed `Fact`s (kind, node, interface, value): link kind and mode, MAC, addresses,
default routes and a `--hostname`; and, for a node with several interfaces, the interface and source
address it uses per destination (`paths`). It reads what Docker built through `DockerState`, so the
same oracle judges the emulation and a real engine.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from harness.docker.base import DockerState
from harness.docker.ipam import link_local_from_mac
from harness.docker.state import ContainerState, Endpoint, NetworkState
from harness.model import HostAddressAdd, HostLinkAdd, HostLinkDelete, HostLinkUp, HostRouteAdd
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
    iface: str | None = None  # the interface holding it in its node: eth0, eth2, mac0
    onlink: tuple = ()  # networks this interface reaches without a gateway; () is just `network`
    shim: str | None = None  # the host's own macvlan on `lower` (the workaround's mac0): its mode

    def reaches_onlink(self, ip) -> bool:
        return any(ip in n for n in (self.onlink or (self.network,)) if n.version == ip.version)

    @property
    def child(self) -> bool:
        """A macvlan/ipvlan child of `lower`: a container's endpoint or the host's shim."""
        return self.docker_net is not None or self.shim is not None

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


@dataclass(frozen=True)
class HostSetup:
    """What the scenario's own host commands configured (`ip link|addr|route` that succeeded): the
    documentation's macvlan workaround gives the host a macvlan `mac0` on its parent, a /32 and a route
    to the containers' range through it. Docker knows nothing of these; the oracle needs them to say
    which interface and source address the host uses and what its shim reaches."""

    links: tuple = ()  # (name, parent, kind, mode, up)
    addresses: tuple = ()  # (dev, IPv4Interface | IPv6Interface)
    routes: tuple = ()  # (network, dev, via or None)

    @classmethod
    def of(cls, done) -> HostSetup:
        """From (command, Docker's or iproute2's error) pairs in order; failed commands changed nothing."""
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


@dataclass(frozen=True)
class Egress:
    """How a node sends to a destination (its routing decision): from which address and interface,
    and through which gateway (None: on-link)."""

    address: Address
    via: object = None


def _segment(segment: tuple) -> str:
    kind, where = segment
    if kind == "internal":
        return f"internal network on {where}"
    return "untagged" if where is None else f"VLAN {where}"


class Oracle:
    def __init__(self, state: DockerState, world: World, host: HostSetup | None = None,
                 rp_filter: int | None = None):
        self.state = state
        self.world = world
        self.host = host or HostSetup()
        # The reverse-path filter of the nodes' interfaces (0 off, 1 strict, 2 loose), or None: not
        # known. Docker sets none; a new namespace inherits it from the machine's initial namespace
        # (net.core.devconf_inherit_init_net 0), which the harness never touches.
        self.rp_filter = rp_filter

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
                out.append(Address(container.name, ip, network, self.segment_of(net.parent), net.parent, net, ep,
                                   iface=ep.ifname))
        return out

    def addresses(self) -> list[Address]:
        out: list[Address] = []
        for name in sorted(self.state.containers):
            out += self.container_addresses(self.state.containers[name])
        for iface in self.world.host_addresses:
            out.append(Address(HOST, iface.ip, iface.network, ("wire", None), self.world.host_parent,
                               iface=self.world.host_parent))
        out += self.shim_addresses()
        for port in self.world.router_ports:
            out.append(Address("gateway", port.interface.ip, port.interface.network, ("wire", port.vlan), None))
        return out

    def shim_addresses(self) -> list[Address]:
        """The host's addresses on its own macvlan links (the workaround's mac0), when the link is up:
        each is a child of its parent, on the parent's segment, reaching on-link its own prefix and every
        `ip route add X dev mac0` without a gateway."""
        out = []
        for name, parent, kind, mode, up in self.host.links:
            if kind != "macvlan" or not up:
                continue
            for dev, iface in self.host.addresses:
                if dev != name:
                    continue
                onlink = tuple(n for n, d, via in self.host.routes if d == name and via is None)
                if iface.network.prefixlen < iface.network.max_prefixlen:
                    onlink = (iface.network, *onlink)
                out.append(Address(HOST, iface.ip, iface.network, self.segment_of(parent), parent, iface=name,
                                   onlink=onlink, shim=mode))
        return out

    # -- routing: which interface and source address a node uses ---------------------------------------

    def egress(self, node: str, dst, addrs: list[Address] | None = None) -> Egress | None:
        """The node's routing decision for `dst` (longest prefix; a connected route before a default):
        the address it sends from and the gateway, or None when it has no route."""
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
        if node == HOST:
            for net, dev, via in self.host.routes:
                a = next((x for x in own if x.iface == dev), None)
                if via is not None and a is not None and dst in net:
                    offer(net.prefixlen, 0, Egress(a, via))
            gw = self.world.host_gateway(dst.version)
            a = next((x for x in own if x.iface == self.world.host_parent), None)
            if gw is not None and a is not None:
                offer(0, len(own), Egress(a, gw.ip))
        elif node in self.state.containers:
            ep = self.state.containers[node].gateway_endpoint()
            if ep is not None:
                gw = ep.gateway4 if dst.version == 4 else ep.gateway6
                a = next((x for x in own if x.endpoint is ep), None)
                if a is not None and (gw is not None or (dst.version == 4 and ep.connected_default)):
                    offer(0, len(own), Egress(a, gw))
        return best[2] if best is not None else None

    def source_of(self, node: str, dst, addrs: list[Address] | None = None) -> Address | None:
        """The address `node` sends from to reach `dst` (its route's interface); with no route, its
        first address of that family (the probe then fails with no route)."""
        addrs = self.addresses() if addrs is None else addrs
        egress = self.egress(node, dst, addrs)
        if egress is not None:
            return egress.address
        return next((a for a in addrs if a.owner == node and a.ip.version == dst.version), None)

    def paths(self) -> list[Fact]:
        """Where a node has several interfaces of a family (the host with its shim, a container on
        several networks), which interface and source address it uses for each destination of the
        matrix: `ip route get` in the node shows the kernel's own decision."""
        addrs = self.addresses()
        out = []
        for node in self._sources(addrs):
            for version in (4, 6):
                if len([a for a in addrs if a.owner == node and a.ip.version == version]) < 2:
                    continue
                for dst in sorted({a.ip for a in addrs if a.owner != node and a.ip.version == version}):
                    egress = self.egress(node, dst, addrs)
                    if egress is None:
                        continue
                    src = egress.address
                    via = f" via {egress.via}" if egress.via is not None else ""
                    out.append(Fact("path", node, src.iface, f"{dst}{via} dev {src.iface} src {src.ip}"))
        return out

    # -- the matrix -----------------------------------------------------------------------------------

    def _sources(self, addrs: list[Address]) -> list[str]:
        return list(dict.fromkeys(a.owner for a in addrs if a.owner != "gateway"))

    def matrix(self) -> list[Expectation]:
        """Every source (containers, host) against every destination it could plausibly try, from the
        address the source's own route picks."""
        addrs = self.addresses()
        out = []
        for owner in self._sources(addrs):
            for dst in addrs:
                if dst.owner == owner:
                    continue
                src = self.source_of(owner, dst.ip, addrs)
                if src is None:
                    continue
                if dst.owner == "gateway" and not self._own_subnet(owner, dst, addrs):
                    continue  # another subnet's gateway answers through local delivery: not an isolation test
                verdict = self.verdict(src, dst, addrs)
                if verdict is not None:
                    out.append(Expectation(src, dst, *verdict))
        return out

    def ports(self, node: str, version: int, addrs: list[Address]) -> list[Address]:
        """Every interface of `node` that takes frames off a segment, one entry each: its addresses of
        `version`, and for the host also its NICs that hold none (a second NIC on the same switch)."""
        out = {}
        for a in addrs:
            if a.owner == node and a.ip.version == version:
                out.setdefault(a.iface, a)
        if node == HOST:
            for nic, _ in self.world.host_nics:
                if nic not in out:
                    out[nic] = Address(HOST, ipaddress.ip_address("::" if version == 6 else "0.0.0.0"),
                                       ipaddress.ip_network("::/128" if version == 6 else "0.0.0.0/32"),
                                       self.segment_of(nic), nic, iface=nic)
        return list(out.values())

    def _deliver(self, sender: Address, node: str, holder: Address, verdict, addrs: list[Address]):
        """A frame from `sender`, on its segment, for an address of `node` (`holder` holds it): (verdict,
        the interface that takes it). A node other than the router answers ARP for all its addresses on
        every interface (arp_ignore 0, Linux's weak host model), so where the holder cannot hear the
        sender another interface of the node on that segment may take it."""
        if verdict is None or verdict[0] or node == "gateway" or not sender.reaches_onlink(holder.ip):
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
        one_way = (dst.owner != "gateway" and src.segment == dst.segment and src.reaches_onlink(dst.ip)
                   and not dst.reaches_onlink(src.ip))
        # On-link one way only (the host's /32 shim): the request is delivered on the segment; whether
        # the reply comes back is the destination's route's business, judged below.
        forward = self._on_segment(src, dst) if one_way else self.expect(src, dst)
        forward, arrival = self._deliver(src, dst.owner, dst, forward, addrs)
        if forward is None or not forward[0] or dst.owner == "gateway":
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
        if src.child and dst.child and src.lower == dst.lower:
            if src.shim is not None or dst.shim is not None:
                return self._shim_sibling(src, dst)
            return self._siblings(src.docker_net)
        if {src.owner, dst.owner} & {HOST} and not {src.owner, dst.owner} & {"gateway"}:
            other = dst if src.owner == HOST else src
            host_side = src if src.owner == HOST else dst
            if host_side.shim is None and other.lower == host_side.lower and other.docker_net is not None:
                if other.docker_net.driver == "macvlan" and other.docker_net.mode == "vepa" and self.world.hairpin:
                    return True, "VEPA sends to the switch, which hairpins back to the host"
                return False, f"{other.docker_net.driver} children cannot reach their parent's own address"
        if net is not None and net.driver == "ipvlan" and net.mode in ("l3", "l3s"):
            return None  # ipvlan l3 to another machine depends on the host's routing: not modelled
        if net is not None and net.driver == "macvlan" and net.mode == "passthru":
            return True, "passthru: the child owns the parent's port on the wire"
        return True, "same L2 segment and subnet"

    def _shim_sibling(self, src: Address, dst: Address) -> tuple[bool, str] | None:
        """The host's macvlan shim and a container's child on one parent (drivers/net/macvlan.c: a frame
        is switched to another port of the parent only when both ports are in bridge mode)."""
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
            # Only the endpoint that holds the container's default route has a gateway in use.
            container = self.state.containers.get(addr.owner)
            if container is not None and len(container.endpoints) > 1 and container.gateway_endpoint() is not addr.endpoint:
                return None
            return addr.endpoint.gateway4 if addr.ip.version == 4 else addr.endpoint.gateway6
        if addr.owner == HOST:
            gw = self.world.host_gateway(addr.ip.version)
            return gw.ip if gw else None
        return None

    def _multi_homed(self, addr: Address) -> bool:
        container = self.state.containers.get(addr.owner)
        return container is not None and len(container.endpoints) > 1

    def _router_port(self, ip, segment) -> bool:
        return any(p.interface.ip == ip and ("wire", p.vlan) == segment for p in self.world.router_ports)

    def _routed(self, src: Address, dst: Address) -> tuple[bool, str]:
        if dst.owner == "gateway":
            return False, "the gateway is on another segment or subnet"
        gw_src, gw_dst = self._gateway_of(src), self._gateway_of(dst)
        if gw_src is None:
            return False, f"{src.owner} has no route to {dst.network}"
        if not self._router_port(gw_src, src.segment):
            return False, f"{src.owner}'s gateway {gw_src} is not on its segment"
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
        hostname = (container.config or {}).get("hostname")
        if hostname:
            # `docker run --hostname`: the container's own UTS namespace carries it (Docker's default, the
            # short id, is not judged: the emulation makes up its ids).
            out.append(Fact("hostname", name, None, hostname))
        gateway_ep = container.gateway_endpoint()
        if gateway_ep is not None and (gateway_ep.gateway4 or gateway_ep.connected_default):
            via = f" via {gateway_ep.gateway4}" if gateway_ep.gateway4 else ""
            out.append(Fact("route", name, gateway_ep.ifname, f"default{via} dev {gateway_ep.ifname}"))
        if gateway_ep is not None and gateway_ep.gateway6:
            out.append(Fact("route", name, gateway_ep.ifname, f"default via {gateway_ep.gateway6} dev {gateway_ep.ifname}"))
        return out
