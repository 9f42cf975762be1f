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
from collections.abc import Sequence
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
    text: str = ""  # the --subnet as typed (a non-canonical one is shown unmasked by network inspect)


def go_parse_cidr(text: str) -> IPNetwork:
    """Go's net.ParseCIDR: the network (host bits masked), or its error text `invalid CIDR address: X`."""
    try:
        if "/" not in text:
            raise ValueError
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise DockerError(f"invalid CIDR address: {text}") from None


def _go_parse_ip(text: str) -> IPAddress | None:
    """Go's net.ParseIP: None for a malformed address."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _subnet_matches(subnet: str, data: str) -> bool:
    """The CLI's subnetMatches (docker/cli v20.10.24 cli/command/network/create.go:229-249)."""
    try:
        net = go_parse_cidr(subnet)
    except DockerError as exc:
        raise DockerError(f"invalid subnet: {exc.message}") from None
    if "/" in data:
        go_parse_cidr(data)  # its error, unwrapped
        ip = ipaddress.ip_interface(data).ip  # Go returns the address as typed, not masked
    else:
        ip = _go_parse_ip(data)
    return ip is not None and ip.version == net.version and ip in net


def _one_per_subnet(values: Sequence[str], subnets: Sequence[str], unmatched: str, twice: str) -> dict[int, str]:
    """Each value paired with the subnet(s) containing it, at most one per subnet, in Docker's words."""
    chosen: dict[int, str] = {}
    for v in values:
        matched = False
        for i, s in enumerate(subnets):
            if _subnet_matches(s, v):
                if i in chosen:
                    raise DockerError(twice.format(v=v, other=chosen[i], s=s))
                chosen[i] = v
                matched = True
        if not matched:
            raise DockerError(unmatched.format(v=v))
    return chosen


def consolidate_ipam(
    subnets: tuple[str, ...],
    ranges: tuple[str, ...],
    gateways: tuple[str, ...],
    aux: tuple[tuple[str, str], ...],
) -> tuple[IPAMConfig, ...]:
    """The Docker CLI's consolidateIpam (docker/cli v20.10.24 cli/command/network/create.go:133-227): pair
    ranges, gateways and aux addresses with their subnet, with the CLI's checks in its order and words.
    A malformed subnet is parsed here only when something is compared with it; alone, the daemon refuses
    it (`Invalid subnet foo : invalid CIDR address: foo`, moby v20.10.24 daemon/network.go:418-421)."""
    if len(subnets) < len(ranges) or len(subnets) < len(gateways):
        raise DockerError("every ip-range or gateway must have a corresponding subnet")
    for i, s in enumerate(subnets):
        for other in subnets[:i]:
            if _subnet_matches(s, other) or _subnet_matches(other, s):
                raise DockerError("multiple overlapping subnet configuration is not supported")
    # Ranges first, then gateways: the CLI's order, so the first error is Docker's first error.
    rng = _one_per_subnet(ranges, subnets, "no matching subnet for range {v}",
                          "cannot configure multiple ranges ({v}, {other}) on the same subnet ({s})")
    gw = _one_per_subnet(gateways, subnets, "no matching subnet for gateway {v}",
                         "cannot configure multiple gateways ({v}, {other}) for the same subnet ({s})")
    aux_by: dict[int, list[tuple[str, str]]] = {i: [] for i in range(len(subnets))}
    for name, value in aux:
        matched = False
        for i, s in enumerate(subnets):
            if _subnet_matches(s, value):
                aux_by[i].append((name, value))
                matched = True
        if not matched:
            raise DockerError(f"no matching subnet for aux-address {value}")
    out = []
    for i, s in enumerate(subnets):
        try:
            net = go_parse_cidr(s)
        except DockerError as exc:
            raise DockerError(f"Invalid subnet {s} : {exc.message}") from None
        out.append(IPAMConfig(
            subnet=net, gateway=ipaddress.ip_address(gw[i]) if i in gw else None,
            ip_range=go_parse_cidr(rng[i]) if i in rng else None,
            aux=tuple((n, ipaddress.ip_address(v)) for n, v in aux_by[i]), text=s))
    return tuple(out)


@dataclass
class Pool:
    """One subnet of a network: libnetwork's bitmap allocator, lowest free first."""

    subnet: IPNetwork
    ip_range: IPNetwork | None = None
    gateway: IPAddress | None = None
    aux: dict[str, IPAddress] = field(default_factory=dict)
    allocated: set[int] = field(default_factory=set)  # shared by the networks of one subnet (see AddressSpace)
    rfc3021: bool = False  # moby 28+: a /31 (and /32) reserves neither network nor broadcast address

    def __post_init__(self) -> None:
        # libnetwork reserves ordinal 0 in both families (so a bridge starts at ...1) and the IPv4 broadcast;
        # moby 28+ not in a /31 or /32 (docker-v29.7.2 ipams/defaultipam/allocator.go:235-253).
        if self.subnet.version == 6 or not (self.rfc3021 and self.subnet.prefixlen >= 31):
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
    """libnetwork's local address space (moby v20.10.24 libnetwork/ipam/structures.go:261-304
    updatePoolDBOnAdd): a subnet without --ip-range is refused when it overlaps any pool in use; a subnet
    with a range is not checked at all (the same subnet may then serve several networks, which share its
    address bitmap), only the same subnet and range twice is refused. Default pools: 20.10 rotates (the
    search starts after the last pool handed out, allocator.go:387-448), moby 27+ takes the lowest free."""

    masters: dict[IPNetwork, int] = field(default_factory=dict)  # subnet -> pools on it (refcount)
    children: set[tuple[IPNetwork, IPNetwork]] = field(default_factory=set)  # (subnet, ip-range)
    bitmaps: dict[IPNetwork, set[int]] = field(default_factory=dict)
    start_index: int = 0  # 20.10's rotation through the default pools (in memory: 0 after a restart)

    @property
    def in_use(self) -> list[IPNetwork]:
        return list(self.masters)

    def overlaps(self, subnet: IPNetwork) -> bool:
        return any(subnet.version == n.version and subnet.overlaps(n) for n in self.masters)

    def reserve(self, subnet: IPNetwork, ip_range: IPNetwork | None = None) -> set[int]:
        """Register a pool; returns the subnet's address bitmap (shared between pools of one subnet)."""
        if ip_range is None:
            if subnet in self.masters or self.overlaps(subnet):
                raise DockerError(POOL_OVERLAP)
        elif (subnet, ip_range) in self.children:
            raise DockerError(POOL_OVERLAP)
        else:
            self.children.add((subnet, ip_range))
        self.masters[subnet] = self.masters.get(subnet, 0) + 1
        return self.bitmaps.setdefault(subnet, set())

    def release(self, subnet: IPNetwork, ip_range: IPNetwork | None = None) -> None:
        if ip_range is not None:
            self.children.discard((subnet, ip_range))
        if subnet in self.masters:
            self.masters[subnet] -= 1
            if self.masters[subnet] <= 0:
                del self.masters[subnet]
                self.bitmaps.pop(subnet, None)

    def default_v4(self, rotate: bool = True, exclude: tuple[IPNetwork, ...] = ()) -> IPNetwork:
        n = len(DEFAULT_POOLS_V4)
        order = range(self.start_index, self.start_index + n) if rotate else range(n)
        for i in order:
            candidate = DEFAULT_POOLS_V4[i % n]
            if self.overlaps(candidate) or any(candidate.overlaps(x) for x in exclude if x.version == 4):
                continue
            if rotate:
                self.start_index = (i % n + 1) % n
            return candidate
        if rotate:
            raise DockerError("could not find an available, non-overlapping IPv4 address pool among the defaults "
                              "to assign to the network")
        raise DockerError("all predefined address pools have been fully subnetted")

    def default_v6(self, base: IPNetwork) -> IPNetwork:
        """moby 27+: the first free /64 of the host's ULA /48 (docker-v29.7.2 daemon/daemon.go:1718-1758)."""
        for candidate in base.subnets(new_prefix=64):
            if not self.overlaps(candidate):
                return candidate
        raise DockerError("all predefined address pools have been fully subnetted")


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
