"""The scenario model: frozen dataclasses, no I/O.

A `Scenario` is one documented example: the `Topology` (the Docker host and its upstream network), the
ordered `Step`s (each a parsed Docker CLI command such as `NetworkCreate` or `ContainerRun`, or a host
`ip link` command), and the `Expect`ations (`Probe`s that must reach or be isolated, addresses, routes,
MACs, links). `Location` ties every piece back to its file and line so errors can point at it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Union

IPInterface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


@dataclass(frozen=True)
class Location:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


NOWHERE = Location("<memory>", 0)


# --- topology -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouterAddress:
    """An address of the upstream router; `vlan` None means: derive it from the network that contains it."""

    interface: IPInterface
    vlan: int | None = None


@dataclass(frozen=True)
class Topology:
    """The Docker host and the physical network it sits on."""

    host_parent: str = "eth0"
    host_addresses: tuple[IPInterface, ...] = ()
    router_addresses: tuple[RouterAddress, ...] = ()
    router_forwarding: bool = False  # does the upstream router route between its subnets?
    switch_hairpin: bool = False  # does the switch port of the host reflect frames (needed by VEPA)?


# --- commands -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkCreate:
    name: str
    driver: str = "bridge"
    subnets: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()
    ip_ranges: tuple[str, ...] = ()
    aux_addresses: tuple[tuple[str, str], ...] = ()
    ipv6: bool = False
    internal: bool = False
    options: tuple[tuple[str, str], ...] = ()

    def option(self, key: str, default: str | None = None) -> str | None:
        """The value of `-o key=value`; when repeated, the last one wins, as in Docker's map options."""
        values = [v for k, v in self.options if k == key]
        return values[-1] if values else default


@dataclass(frozen=True)
class NetworkRemove:
    networks: tuple[str, ...]


@dataclass(frozen=True)
class NetworkConnect:
    network: str
    container: str
    ip: str | None = None
    ip6: str | None = None


@dataclass(frozen=True)
class NetworkDisconnect:
    network: str
    container: str


@dataclass(frozen=True)
class ContainerRun:
    """`docker run`. A container whose command is not a shell runs it and is gone (`transient`)."""

    name: str
    network: str | None = None
    ip: str | None = None
    ip6: str | None = None
    detach: bool = False
    remove: bool = False
    image: str = "alpine"
    command: tuple[str, ...] = ()
    named_by_user: bool = True

    @property
    def probe(self) -> PingCommand | None:
        return parse_ping(self.command)

    @property
    def transient(self) -> bool:
        return self.probe is not None


@dataclass(frozen=True)
class ContainerRemove:
    names: tuple[str, ...]
    force: bool = False


@dataclass(frozen=True)
class HostLinkAdd:
    """`ip link add link PARENT name NAME type vlan id N` on the Docker host (a manually created parent)."""

    name: str
    parent: str
    vlan_id: int


@dataclass(frozen=True)
class HostLinkUp:
    name: str


@dataclass(frozen=True)
class HostLinkDelete:
    name: str


Command = Union[
    NetworkCreate,
    NetworkRemove,
    NetworkConnect,
    NetworkDisconnect,
    ContainerRun,
    ContainerRemove,
    HostLinkAdd,
    HostLinkUp,
    HostLinkDelete,
]


@dataclass(frozen=True)
class PingCommand:
    """A `ping`/`ping6` inside a transient container: the documented reach check."""

    target: str
    count: int
    family: int  # 4 or 6; 0 means: by the target's address


SHELLS = frozenset({"/bin/sh", "sh", "/bin/bash", "bash", "/bin/ash", "ash"})


def parse_ping(argv: tuple[str, ...]) -> PingCommand | None:
    """The ping inside `docker run ... alpine ping -c 4 X`, or None when the command is not a ping."""
    if not argv or argv[0] not in ("ping", "ping6", "/bin/ping"):
        return None
    family = 6 if argv[0] == "ping6" else 0
    count, target, i = 4, None, 1
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-c"):
            value = arg[2:] or (argv[i + 1] if i + 1 < len(argv) else "")
            i += 0 if arg[2:] else 1
            count = int(value) if value.isdigit() else count
        elif arg == "-6":
            family = 6
        elif arg == "-4":
            family = 4
        elif not arg.startswith("-"):
            target = arg
        i += 1
    if target is None:
        return None
    return PingCommand(target=target, count=count, family=family)


@dataclass(frozen=True)
class Step:
    """One line of `commands`: the verbatim text, what it parsed to, and the error it must end in, if any."""

    index: int  # 1-based position in `commands`
    text: str
    command: Command
    location: Location = NOWHERE
    expect_error: str | None = None


# --- expectations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """`src -> dst`: a container name, `host`, or an IP address (as destination)."""

    src: str
    dst: str
    location: Location = NOWHERE

    def __str__(self) -> str:
        return f"{self.src} -> {self.dst}"


@dataclass(frozen=True)
class LinkExpect:
    """A link that must exist in a node with a kind (and mode), or must be absent."""

    node: str
    name: str
    kind: str | None  # None: must be absent
    mode: str | None = None
    location: Location = NOWHERE


@dataclass(frozen=True)
class Expect:
    reach: tuple[Probe, ...] = ()
    isolate: tuple[Probe, ...] = ()
    addresses: tuple[tuple[str, tuple[str, ...], Location], ...] = ()
    routes: tuple[tuple[str, tuple[str, ...], Location], ...] = ()
    macs: tuple[tuple[str, str, Location], ...] = ()
    links: tuple[LinkExpect, ...] = ()
    matrix: bool = True  # also judge the full reachability/isolation matrix derived from the model


@dataclass(frozen=True)
class Scenario:
    name: str
    source: str
    topology: Topology
    steps: tuple[Step, ...]
    expect: Expect = field(default_factory=Expect)
    path: str = "<memory>"
    description: str = ""

    @property
    def container_names(self) -> tuple[str, ...]:
        return tuple(s.command.name for s in self.steps if isinstance(s.command, ContainerRun))
