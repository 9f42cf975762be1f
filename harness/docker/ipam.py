"""Docker-compatible IPAM: address pools, gateways, aux addresses, ranges, MACs and link-local addresses.

`consolidate_ipam` is the Docker CLI's client-side pairing of `--subnet` with `--gateway`,
`--ip-range` and `--aux-address`; `AddressSpace` is libnetwork's default IPAM (pool overlap, default
pools); `Pool` is one subnet with its bitmap: ordinal 0 (and the IPv4 broadcast) reserved, then the
gateway, then aux addresses, and dynamic addresses taken lowest-free, from the range when one is given.
`mac_from_ip` and `link_local_from_mac` derive what the kernel and Docker 20.10 will show.
Errors are `DockerError`s with Docker's own wording.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from harness.errors import DockerError
from harness.model import IPAddress, IPNetwork

# Docker's error texts (libnetwork ipamapi and the CLI), verbatim.
ADDRESS_IN_USE = "Address already in use"
POOL_OVERLAP = "Pool overlaps with other one on this address space"
NO_AVAILABLE_IPS = "No available addresses on this pool"
NO_V6_POOL = "could not find an available, non-overlapping IPv6 address pool among the defaults to assign to the network"
STATIC_IP_NEEDS_SUBNET = (
    "user specified IP address is supported only when connecting to networks with user configured subnets"
)


def invalid_address(ip: str) -> str:
    return f"Invalid address {ip}: It does not belong to any of this network's subnets"


@dataclass(frozen=True)
class IPAMConfig:
    """One `--subnet` with what the CLI matched to it."""

    subnet: IPNetwork
    gateway: IPAddress | None = None
    ip_range: IPNetwork | None = None
    aux: tuple[tuple[str, IPAddress], ...] = ()


def _parse_network(text: str, what: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise DockerError(f"invalid {what} {text}: {exc}") from exc


def _parse_address(text: str, what: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError as exc:
        raise DockerError(f"invalid {what} {text}: {exc}") from exc


def consolidate_ipam(
    subnets: tuple[str, ...],
    ranges: tuple[str, ...],
    gateways: tuple[str, ...],
    aux: tuple[tuple[str, str], ...],
) -> tuple[IPAMConfig, ...]:
    """The Docker CLI's consolidateIpam: pair ranges, gateways and aux addresses with their subnet."""
    if len(subnets) < len(ranges) or len(subnets) < len(gateways):
        raise DockerError("every ip-range or gateway must have a corresponding subnet")
    nets = [_parse_network(s, "subnet") for s in subnets]
    for i, a in enumerate(nets):
        for b in nets[:i]:
            if a.version == b.version and (a.subnet_of(b) or b.subnet_of(a)):
                raise DockerError("multiple overlapping subnet configuration is not supported")
    gw: dict[int, IPAddress] = {}
    rng: dict[int, IPNetwork] = {}
    aux_by: dict[int, list[tuple[str, IPAddress]]] = {i: [] for i in range(len(nets))}
    for r in ranges:
        rnet = _parse_network(r, "ip-range")
        matches = [i for i, n in enumerate(nets) if n.version == rnet.version and rnet.subnet_of(n)]
        if not matches:
            raise DockerError(f"no matching subnet for range {r}")
        for i in matches:
            if i in rng:
                raise DockerError(
                    f"cannot configure multiple ranges ({r}, {rng[i]}) on the same subnet ({subnets[i]})"
                )
            rng[i] = rnet
    for g in gateways:
        ip = _parse_address(g, "gateway")
        matches = [i for i, n in enumerate(nets) if ip in n]
        if not matches:
            raise DockerError(f"no matching subnet for gateway {g}")
        for i in matches:
            if i in gw:
                raise DockerError(
                    f"cannot configure multiple gateways ({g}, {gw[i]}) for the same subnet ({subnets[i]})"
                )
            gw[i] = ip
    for name, value in aux:
        ip = _parse_address(value, "aux-address")
        matches = [i for i, n in enumerate(nets) if ip in n]
        if not matches:
            raise DockerError(f"no matching subnet for aux-address {value}")
        for i in matches:
            aux_by[i].append((name, ip))
    return tuple(
        IPAMConfig(subnet=n, gateway=gw.get(i), ip_range=rng.get(i), aux=tuple(aux_by[i])) for i, n in enumerate(nets)
    )


@dataclass
class Pool:
    """One subnet of a network: libnetwork's bitmap allocator, lowest free first."""

    subnet: IPNetwork
    ip_range: IPNetwork | None = None
    gateway: IPAddress | None = None
    aux: dict[str, IPAddress] = field(default_factory=dict)
    allocated: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        # libnetwork reserves ordinal 0 in both families (so a bridge starts at ...1) and the IPv4 broadcast.
        self.allocated.add(0)
        if self.subnet.version == 4 and self.subnet.num_addresses > 1:
            self.allocated.add(self.subnet.num_addresses - 1)

    def _ordinal(self, ip: IPAddress) -> int:
        return int(ip) - int(self.subnet.network_address)

    def contains(self, ip: IPAddress) -> bool:
        return ip.version == self.subnet.version and ip in self.subnet

    def request(self, ip: IPAddress | None = None) -> IPAddress:
        """Allocate `ip`, or the lowest free address (of the range, when the pool has one)."""
        if ip is not None:
            ordinal = self._ordinal(ip)
            if ordinal in self.allocated:
                raise DockerError(ADDRESS_IN_USE)
            self.allocated.add(ordinal)
            return ip
        # libnetwork takes the gateway, too, from the range when there is one (SetAnyInRange).
        if self.ip_range is not None:
            start = self._ordinal(self.ip_range.network_address)
            end = self._ordinal(self.ip_range.broadcast_address)
        else:
            start, end = 0, self.subnet.num_addresses - 1
        ordinal = start
        # The allocated set is small (a scenario's worth), so a scan from the start is cheap and exact.
        while ordinal <= end and ordinal in self.allocated:
            ordinal += 1
        if ordinal > end:
            raise DockerError(NO_AVAILABLE_IPS)
        self.allocated.add(ordinal)
        return self.subnet.network_address + ordinal

    def release(self, ip: IPAddress) -> None:
        self.allocated.discard(self._ordinal(ip))



# Docker's default address pools: 172.17-31.0.0/16, then 192.168.0.0/16 in /20s.
DEFAULT_POOLS_V4 = tuple(ipaddress.ip_network(f"172.{i}.0.0/16") for i in range(17, 32)) + tuple(
    ipaddress.ip_network("192.168.0.0/16").subnets(new_prefix=20)
)


@dataclass
class AddressSpace:
    """libnetwork's local address space: every pool in use, for overlap checks and default pools."""

    in_use: list[IPNetwork] = field(default_factory=list)

    def overlaps(self, subnet: IPNetwork) -> bool:
        return any(subnet.version == n.version and subnet.overlaps(n) for n in self.in_use)

    def reserve(self, subnet: IPNetwork) -> None:
        if self.overlaps(subnet):
            raise DockerError(POOL_OVERLAP)
        self.in_use.append(subnet)

    def release(self, subnet: IPNetwork) -> None:
        if subnet in self.in_use:
            self.in_use.remove(subnet)

    def default_v4(self) -> IPNetwork:
        for candidate in DEFAULT_POOLS_V4:
            if not self.overlaps(candidate):
                return candidate
        raise DockerError("could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network")


def mac_from_ip(ip: ipaddress.IPv4Address) -> str:
    """Docker 20.10's container MAC: 02:42 followed by the four IPv4 bytes."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)


def link_local_from_mac(mac: str) -> ipaddress.IPv6Address:
    """The kernel's EUI-64 link-local address for a MAC (fe80::42:acff:fe10:560a for 02:42:ac:10:56:0a)."""
    octets = [int(x, 16) for x in mac.split(":")]
    if len(octets) != 6:
        raise ValueError(f"not a MAC address: {mac}")
    eui = [octets[0] ^ 0x02, *octets[1:3], 0xFF, 0xFE, *octets[3:6]]
    return ipaddress.IPv6Address(bytes([0xFE, 0x80, 0, 0, 0, 0, 0, 0, *eui]))
