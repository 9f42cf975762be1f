"""What a Docker daemon knows about one host: `HostLink`s, `NetworkState`s, `ContainerState`s, `Endpoint`s.

The emulated Docker builds these as it executes commands (harness.docker.driver); the oracle derives
the expected facts from them, whichever Docker built them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.docker import ipam
from harness.model import IPAddress


@dataclass
class HostLink:
    name: str
    kind: str
    parent: str | None = None
    vlan_id: int | None = None
    owner: str = "topology"  # topology | user | <network id>


@dataclass
class Endpoint:
    network: str
    ifname: str  # inside the container: eth0, eth1, ...
    child: str  # the name libnetwork gives it in the host before the move: veth + 7 hex
    addresses: list[tuple[IPAddress, int]] = field(default_factory=list)  # (address, prefix length)
    mac: str | None = None
    gateway4: IPAddress | None = None
    gateway6: IPAddress | None = None
    connected_default: bool = False  # ipvlan l3: "default dev eth0"
    internal: bool = False  # the network is internal: sorts after the others for the default route
    aliases: tuple[str, ...] = ()
    static_ip: str | None = None  # --ip given at run/connect: kept across restarts
    static_ip6: str | None = None
    gw_priority: int = 0  # moby 28+: --gw-priority / gw-priority=N; the highest gives the default route

    def cidrs(self) -> list[str]:
        return [f"{ip}/{plen}" for ip, plen in self.addresses]

    def has_default(self) -> tuple[bool, bool]:
        """(IPv4, IPv6): a gateway or a static default route in that family (moby v28.0.0
        libnetwork/endpoint_info.go:409-437 hasGatewayOrDefaultRoute; ipvlan l3 adds connected defaults)."""
        v6_addr = any(ip.version == 6 for ip, _ in self.addresses)
        return (bool(self.gateway4 or self.connected_default),
                bool(self.gateway6 or (self.connected_default and v6_addr)))


@dataclass
class NetworkState:
    id: str
    name: str
    driver: str
    mode: str
    flag: str | None
    parent: str
    created_parent: bool
    internal: bool
    ipv6: bool
    pools4: list[ipam.Pool]
    pools6: list[ipam.Pool]
    user_subnets4: bool
    user_subnets6: bool
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    options: tuple[tuple[str, str], ...] = ()  # -o as given (network inspect's Options)
    user_internal: bool = False  # --internal as given (network inspect's Internal)
    ipam_config: tuple[dict, ...] = ()  # the subnets as given (network inspect's IPAM.Config)
    created_at: int = 0  # seconds after 2026-01-01T00:00:00Z (network inspect's Created)

    @property
    def pools(self) -> list[ipam.Pool]:
        return self.pools4 + self.pools6


@dataclass
class ContainerState:
    name: str
    id: str
    running: bool = True
    transient: bool = False
    ipv6: bool = False
    endpoints: list[Endpoint] = field(default_factory=list)
    interfaces_made: int = 0  # eth0, eth1, ...: the 20.10 counter, never reused after a disconnect
    status: str = "running"  # running | exited | created (a start that failed)
    net_mode: str = ""  # "" (networks), "none", "host" or "container:NAME"
    config: dict = field(default_factory=dict)  # what `docker run` asked: networks, ip, mac, hostname, restart
    gateway_score: str = "gw4-1-gw6-2"  # the profile's endpoint ordering (harness.docker.profiles)
    gateway_select: str = "one"  # the profile's `gateway_endpoints`: one | per-family

    def endpoint(self, network: str) -> Endpoint | None:
        return next((e for e in self.endpoints if e.network == network), None)

    def ordered_endpoints(self) -> list[Endpoint]:
        """libnetwork's sandbox order (moby v20.10.24 libnetwork/sandbox.go:1202-1265 `Less`; v28.0.0
        libnetwork/sandbox.go:651-700; docker-v29.7.2 daemon/libnetwork/sandbox.go:618-672): the higher
        gateway priority first (moby 28+ sets it from `--gw-priority`; 0 otherwise), then non-internal, then
        the higher gateway score (20.10: +1 for an IPv4 gateway, +2 for an IPv6 one; 28+: the count of
        families with a gateway or default route), then the network name (byte order)."""
        def score(e: Endpoint) -> int:
            if self.gateway_score == "count":
                has4, has6 = e.has_default()
                return int(has4) + int(has6)
            return (1 if e.gateway4 else 0) + (2 if e.gateway6 else 0)
        return sorted(self.endpoints, key=lambda e: (-e.gw_priority, e.internal, -score(e), e.network.encode()))

    def gateway_endpoints(self) -> tuple[Endpoint | None, Endpoint | None]:
        """(the endpoint giving the IPv4 default route, the one giving the IPv6 default route).

        `one` (20.10 to 27): the first endpoint in sandbox order with an IPv4 gateway gives both (libnetwork
        default_gateway.go getGatewayEndpoint), else one with a static default route (ipvlan l3), else one with
        an IPv6 gateway. `per-family` (moby v28.0.0 libnetwork/default_gateway.go:182-215 selectGatewayEndpoint):
        in sandbox order the first dual-stack endpoint gives both, even after single-stack ones; otherwise the
        first with IPv4 gives IPv4 and the first with IPv6 gives IPv6."""
        ordered = self.ordered_endpoints()
        if self.gateway_select == "per-family":
            ep4 = ep6 = None
            for e in ordered:
                has4, has6 = e.has_default()
                if has4 and has6:
                    return e, e
                if has4 and ep4 is None:
                    ep4 = e
                if has6 and ep6 is None:
                    ep6 = e
            return ep4, ep6
        one = (next((e for e in ordered if e.gateway4), None)
               or next((e for e in ordered if e.connected_default), None)
               or next((e for e in ordered if e.gateway6), None))
        return one, one

    def gateway_endpoint(self) -> Endpoint | None:
        """The endpoint giving the IPv4 default route (else the IPv6 one)."""
        ep4, ep6 = self.gateway_endpoints()
        return ep4 or ep6
