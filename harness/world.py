"""The emulated world around the Docker host: the physical network only.

`World` is the physical network of DESIGN.md: an `up` node whose Linux bridge `br0` is the switch, a
`host` node whose `eth0` is a veth into that switch with the host's documented address (or, with several
Docker hosts, one node per host, each with its NICs; a NIC on a switch of its own is a port of another
bridge `br-<name>` in `up`, another L2 segment; several hosts also get a monitor port `mon<k>` per switch
for the ARP view of address conflicts), and, when the
scenario names router addresses, an `rt` node (the upstream router) on a switch port, holding every
gateway address, tagged on `eth0.N` when the network that contains it uses VLAN N. The router behaves
as a router does, not as a Linux box does by default: it answers ARP only on the port that holds the
asked address (`ROUTER_ARP_SYSCTLS`), so a gateway on VLAN 50 is not reachable from the untagged host
that uses the same subnet. The switch passes 802.1q tags unchanged, so VLAN isolation is enforced by the
tagged sub-interfaces at both ends, as on a trunk port. Which VLANs the switch carries comes from the Docker under test's compile
(`harness.docker.emulated.compile_scenario`): the world itself knows nothing of Docker.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from harness.model import MAIN_SWITCH, DockerHost, IPInterface, IPNetwork, Topology
from harness.plan import (
    AddAddress,
    AddBridgeVlan,
    AddLink,
    AddRoute,
    CreateNode,
    Op,
    SetLink,
    SetSysctl,
)

SWITCH, ROUTER, HOST = "up", "rt", "host"  # HOST: the Docker host of a single-host scenario
# The upstream router's strong-host ARP: reply only for an address of the receiving port (arp_ignore=1),
# and take an ARP request's source address from the outgoing port's subnet (arp_announce=2). The kernel
# uses the larger of `all` and the port's own value, so `all` covers ports added later.
ROUTER_ARP_SYSCTLS = (("net.ipv4.conf.all.arp_ignore", "1"), ("net.ipv4.conf.all.arp_announce", "2"))


@dataclass(frozen=True)
class RouterPort:
    interface: IPInterface
    vlan: int | None
    dev: str  # eth0 or eth0.N in the router node


@dataclass(frozen=True)
class World:
    hosts: tuple[DockerHost, ...]
    router_ports: tuple[RouterPort, ...]
    forwarding: bool
    hairpin: bool
    vlans: tuple[int, ...] = ()  # VLANs the switch's trunk ports carry
    switches: tuple[str, ...] = (MAIN_SWITCH,)  # the main switch, then the named ones
    monitor: bool = False  # a monitor port on every switch: the ARP view of address conflicts (issue #13)

    @classmethod
    def of(cls, topo: Topology, vlans: Iterable[tuple[IPNetwork, int | None]] = (), monitor: bool | None = None) -> World:
        """The world for a topology whose Docker networks use `vlans`: (subnet, VLAN tag or None) pairs.

        Several Docker hosts get the monitor port unless `monitor` says otherwise."""
        vlans = tuple(vlans)
        ports = []
        for ra in topo.router_addresses:
            vlan = ra.vlan if ra.vlan is not None else _vlan_for(ra.interface, vlans)
            ports.append(RouterPort(ra.interface, vlan, "eth0" if vlan is None else f"eth0.{vlan}"))
        used = {vlan for _, vlan in vlans if vlan is not None} | {p.vlan for p in ports if p.vlan is not None}
        return cls(topo.hosts, tuple(ports), topo.router_forwarding, topo.switch_hairpin, tuple(sorted(used)),
                   topo.switches, topo.multi_host if monitor is None else monitor)

    @classmethod
    def for_scenario(cls, scenario, vlans: Iterable[tuple[IPNetwork, int | None]] = ()) -> World:
        """The world of a scenario: the monitor port when it has several hosts or expects a conflict."""
        return cls.of(scenario.topology, vlans, scenario.topology.multi_host or bool(scenario.expect.conflicts))

    # The first host, as the single-host code has always read it.
    @property
    def host_parent(self) -> str:
        return self.hosts[0].parent

    @property
    def host_addresses(self) -> tuple[IPInterface, ...]:
        return self.hosts[0].addresses

    @property
    def host_nics(self) -> tuple:
        return tuple((n.name, n.addresses) for n in self.hosts[0].nics[1:])

    def host(self, name: str) -> DockerHost:
        return next(h for h in self.hosts if h.name == name)

    def host_gateway(self, version: int, host: str | None = None) -> IPInterface | None:
        """The router address a host's own default route uses: one in its untagged subnet on the router's switch."""
        docker_host = self.host(host) if host is not None else self.hosts[0]
        if docker_host.nics[0].switch != MAIN_SWITCH:
            return None
        for addr in docker_host.addresses:
            for port in self.router_ports:
                if port.vlan is None and port.interface.version == version == addr.version and port.interface.ip in addr.network:
                    return port.interface
        return None

    def bridge(self, switch: str) -> str:
        return "br0" if switch == MAIN_SWITCH else f"br-{switch}"

    def monitor_iface(self, switch: str, vlan: int | None) -> str:
        """The monitor's interface on a segment: `mon<k>` (untagged) or `mon<k>.<vlan>`, in the switch node."""
        base = f"mon{self.switches.index(switch)}"
        return base if vlan is None else f"{base}.{vlan}"

    def ops(self) -> tuple[Op, ...]:
        ops: list[Op] = [
            CreateNode(SWITCH, "switch"),
            # The switch is a layer-2 device: no IPv6 of its own (no link-local chatter, no DAD delays).
            SetSysctl(SWITCH, "net.ipv6.conf.all.disable_ipv6", "1"),
            SetSysctl(SWITCH, "net.ipv6.conf.default.disable_ipv6", "1"),
        ]
        for switch in self.switches:
            # With VLANs in play the switch is VLAN-aware: its ports are trunks carrying exactly the
            # scenario's VLANs (tagged) plus the untagged default, as a top-of-rack port would. A switch
            # of its own (`switch: lan2`) is another bridge: another L2 segment.
            ops += [AddLink(SWITCH, self.bridge(switch), "bridge", vlan_filtering=bool(self.vlans)),
                    SetLink(SWITCH, self.bridge(switch), up=True)]
        for host in self.hosts:
            ops.append(CreateNode(host.name, "host"))
            for nic, port in host.ports():
                ops += _switch_port(host.name, nic.name, port, hairpin=self.hairpin, vlans=self.vlans,
                                    bridge=self.bridge(nic.switch))
                ops += [AddAddress(host.name, nic.name, str(a)) for a in nic.addresses]
            for version in (4, 6):
                gw = self.host_gateway(version, host.name)
                if gw is not None:
                    ops.append(AddRoute(host.name, "default", host.parent, gateway=str(gw.ip), family=version))
        if self.router_ports:
            ops += [CreateNode(ROUTER, "router"), *_switch_port(ROUTER, "eth0", "p-rt", hairpin=False, vlans=self.vlans)]
            for vlan in sorted({p.vlan for p in self.router_ports if p.vlan is not None}):
                ops += [AddLink(ROUTER, f"eth0.{vlan}", "vlan", parent="eth0", vlan_id=vlan),
                        SetLink(ROUTER, f"eth0.{vlan}", up=True)]
            ops += [AddAddress(ROUTER, p.dev, str(p.interface)) for p in self.router_ports]
            value = "1" if self.forwarding else "0"
            ops += [SetSysctl(ROUTER, "net.ipv4.ip_forward", value),
                    SetSysctl(ROUTER, "net.ipv6.conf.all.forwarding", value)]
            # A router answers ARP only for the addresses of the port the request came in on, and
            # announces from that port's own subnet (Linux's default is the weak-host model: any
            # address of the box, on any port, which would make a gateway on VLAN 50 answer the
            # untagged host for the same address). IPv6 neighbour discovery already answers only for
            # the receiving interface's addresses, so it needs no setting.
            ops += [SetSysctl(ROUTER, key, value) for key, value in ROUTER_ARP_SYSCTLS]
        if self.monitor:
            # A monitor port per switch, inside the switch node (no address, no IPv6): what the ARP
            # scanner (harness/arpscan.py) asks and hears from, on the untagged segment and on each VLAN.
            for switch in self.switches:
                iface = self.monitor_iface(switch, None)
                ops += [AddLink(SWITCH, iface, "veth", peer=f"p{iface}", peer_node=SWITCH),
                        SetLink(SWITCH, f"p{iface}", master=self.bridge(switch)),
                        *(AddBridgeVlan(SWITCH, f"p{iface}", vid) for vid in self.vlans),
                        SetLink(SWITCH, f"p{iface}", up=True), SetLink(SWITCH, iface, up=True)]
                for vlan in self.vlans:
                    sub = self.monitor_iface(switch, vlan)
                    ops += [AddLink(SWITCH, sub, "vlan", parent=iface, vlan_id=vlan), SetLink(SWITCH, sub, up=True)]
        return tuple(ops)


def _switch_port(node: str, name: str, port: str, hairpin: bool, vlans: tuple[int, ...] = (),
                 bridge: str = "br0") -> list[Op]:
    ops: list[Op] = [
        AddLink(node, name, "veth", peer=port, peer_node=SWITCH),
        SetLink(SWITCH, port, master=bridge),
        *(AddBridgeVlan(SWITCH, port, vid) for vid in vlans),
    ]
    if hairpin:
        ops.append(SetLink(SWITCH, port, hairpin=True))
    ops += [SetLink(SWITCH, port, up=True), SetLink(node, name, up=True)]
    return ops


def _vlan_for(interface: IPInterface, vlans) -> int | None:
    for net, vlan in vlans:
        if interface.version == net.version and interface.ip in net:
            return vlan
    return None
