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

    def cidrs(self) -> list[str]:
        return [f"{ip}/{plen}" for ip, plen in self.addresses]


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
    interfaces_made: int = 0  # eth0, eth1, ...: never reused after a disconnect, as in Docker

    def endpoint(self, network: str) -> Endpoint | None:
        return next((e for e in self.endpoints if e.network == network), None)

    def gateway_endpoint(self) -> Endpoint | None:
        """Docker routes by the endpoint whose network name sorts first among those with a gateway."""
        providing = [e for e in self.endpoints if e.gateway4 or e.gateway6 or e.connected_default]
        return min(providing, key=lambda e: e.network) if providing else None
