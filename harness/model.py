"""The scenario model: frozen dataclasses, no I/O.

A `Scenario` is one documented example: the `Topology` (the Docker hosts, each a `DockerHost` with its
`Nic`s, and their upstream network), the
ordered `Step`s (each a parsed Docker CLI command such as `NetworkCreate` or `ContainerRun`, a host
`ip link` command, or a `Refused` one), and the `Expect`ations (`Probe`s that must reach or be isolated,
addresses, routes, MACs, links). `Location` ties every piece back to its file and line so errors can
point at it. The name rules (`container_name_error`, `ifname_error`, `RESERVED_NODES`) keep every name
that becomes a namespace or a link one that Docker, the kernel and the harness accept.
"""

from __future__ import annotations

import ipaddress
import re
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



ONE_OF = " or "


def one_of(expected: str) -> list[str]:
    """An expected value with Docker's alternatives (`192.168.110.3/24 or 192.168.112.3/24`): each one."""
    return [part.strip() for part in expected.split(ONE_OF)]

@dataclass(frozen=True)
class Location:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


NOWHERE = Location("<memory>", 0)


# --- names ----------------------------------------------------------------------------------------
# A container name becomes a namespace name, and a namespace name is a path to pyroute2 and `ip netns`;
# an interface name goes to the kernel. Both follow the rules of whoever would refuse them first.

# Docker 20.10's rule (moby v20.10.24 daemon/names/names.go RestrictedNameChars, checked in
# daemon/names.go reserveName after one leading "/" is trimmed). The pattern ends in `+`, so a
# one-character name is refused too (seen on a real 20.10 engine: `Invalid container name (a), only
# [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed`).
CONTAINER_NAME_CHARS = "[a-zA-Z0-9][a-zA-Z0-9_.-]"
_CONTAINER_NAME = re.compile(f"{CONTAINER_NAME_CHARS}+")

# The harness's own nodes (harness.world): a container of that name would be the same namespace.
RESERVED_NODES = {"host": "the Docker host's namespace", "rt": "the upstream router's namespace",
                  "up": "the switch's namespace"}

IFNAMSIZ = 16  # the kernel's limit, with the terminating NUL: at most 15 characters


def container_name_error(name: str) -> str | None:
    """Docker's refusal of `docker run --name NAME`, verbatim, or None when Docker accepts the name."""
    if _CONTAINER_NAME.fullmatch(name.removeprefix("/")):
        return None
    return f"Invalid container name ({name}), only {CONTAINER_NAME_CHARS} are allowed"


def ifname_error(name: str) -> str | None:
    """Why an interface name is refused, or None: the kernel's dev_valid_name (1-15 bytes, no '/', ':' or
    whitespace, not '.' or '..'), and no unprintable character (the harness prints names)."""
    if not name:
        return "it is empty"
    if len(name.encode()) >= IFNAMSIZ:
        return f"it is longer than {IFNAMSIZ - 1} bytes"
    if name in (".", ".."):
        return f"{name!r} is not a name"
    bad = next((c for c in name if c in "/:" or c.isspace() or not c.isprintable()), None)
    if bad is not None:
        return f"it contains {bad!r}"
    return None


# --- topology -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouterAddress:
    """An address of the upstream router; `vlan` None means: derive it from the network that contains it."""

    interface: IPInterface
    vlan: int | None = None


MAIN_SWITCH = ""  # the one switch every scenario has (the router's); other switches are named (`switch: lan2`)
DEFAULT_HOST = "host"  # the Docker host of a single-host scenario (`topology.host`)
HOST_NAME_MAX = 12  # a host's switch ports are `p-<name><n>`: 15 characters at most


def switch_label(switch: str) -> str:
    return f"switch {switch}" if switch != MAIN_SWITCH else "the switch"


@dataclass(frozen=True)
class Nic:
    """A NIC of a Docker host: a port of `switch` (the main one unless named) with its own addresses."""

    name: str
    addresses: tuple[IPInterface, ...] = ()
    switch: str = MAIN_SWITCH


@dataclass(frozen=True)
class DockerHost:
    """One Docker host: a node of its own with its NICs (the first is `parent`, `eth0` by default), its own
    Docker daemon and its containers. A single-host scenario has one, called `host`."""

    name: str = DEFAULT_HOST
    nics: tuple[Nic, ...] = (Nic("eth0"),)

    @property
    def parent(self) -> str:
        return self.nics[0].name

    @property
    def addresses(self) -> tuple[IPInterface, ...]:
        return self.nics[0].addresses

    def nic(self, name: str) -> Nic | None:
        return next((n for n in self.nics if n.name == name), None)

    def ports(self) -> list[tuple[Nic, str]]:
        """Each NIC with the name of its switch port: `p-<host>` for the first, `p-<host><n>` for the others."""
        return [(nic, f"p-{self.name}" + (str(i) if i else "")) for i, nic in enumerate(self.nics)]


@dataclass(frozen=True)
class Topology:
    """The Docker host(s) and the physical network they sit on."""

    host_parent: str = "eth0"
    host_addresses: tuple[IPInterface, ...] = ()
    # More NICs of the Docker host (`topology.host.nics`): (name, addresses), each a port of the same switch.
    host_nics: tuple[tuple[str, tuple[IPInterface, ...]], ...] = ()
    router_addresses: tuple[RouterAddress, ...] = ()
    router_forwarding: bool = False  # does the upstream router route between its subnets?
    switch_hairpin: bool = False  # does the switch port of the host reflect frames (needed by VEPA)?
    # Every Docker host (`topology.hosts`, issue #13), in order; empty: the one host of the fields above.
    docker_hosts: tuple[DockerHost, ...] = ()

    @property
    def hosts(self) -> tuple[DockerHost, ...]:
        if self.docker_hosts:
            return self.docker_hosts
        nics = (Nic(self.host_parent, self.host_addresses),
                *(Nic(name, addresses) for name, addresses in self.host_nics))
        return (DockerHost(DEFAULT_HOST, nics),)

    @property
    def multi_host(self) -> bool:
        return len(self.hosts) > 1

    def host(self, name: str) -> DockerHost:
        return next(h for h in self.hosts if h.name == name)

    @property
    def switches(self) -> tuple[str, ...]:
        """Every switch, the main one first, then in the order hosts name them."""
        return tuple(dict.fromkeys([MAIN_SWITCH, *(n.switch for h in self.hosts for n in h.nics)]))


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
    aliases: tuple[str, ...] = ()
    gw_priority: str | None = None  # --gw-priority as given (moby 28+; the profile decides what it means)


@dataclass(frozen=True)
class NetworkDisconnect:
    network: str
    container: str
    force: bool = False


@dataclass(frozen=True)
class NetworkInspect:
    """`docker network inspect NET...`: prints Docker's JSON; changes nothing."""

    networks: tuple[str, ...]


@dataclass(frozen=True)
class NetworkList:
    """`docker network ls [-q] [--no-trunc]`: prints Docker's table; changes nothing."""

    quiet: bool = False
    no_trunc: bool = False


@dataclass(frozen=True)
class ContainerStop:
    """`docker stop|start|restart NAME...` (`action` says which)."""

    names: tuple[str, ...]
    action: str = "stop"  # stop | start | restart


@dataclass(frozen=True)
class DaemonRestart:
    """`systemctl restart docker` (or `service docker restart`): dockerd stops and starts again."""


@dataclass(frozen=True)
class NetworkAttachment:
    """One `--network` value of `docker run` as the CLI's NetworkOpt reads it: a name, or the advanced
    syntax `name=X,ip=...,ip6=...,alias=...,mac-address=...,gw-priority=N` (`fields`: its key=value pairs
    in order, lower-cased as the CLI does; which keys a Docker version knows is the daemon profile's)."""

    target: str
    text: str = ""  # the flag's value as given
    fields: tuple[str, ...] = ()  # the CSV fields as given


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
    mac_address: str | None = None
    hostname: str | None = None
    restart: str = "no"  # --restart as given: no | always | unless-stopped | on-failure[:N] (checked per profile)
    networks: tuple[str, ...] = ()  # every --network given (20.10 accepts one)
    attachments: tuple[NetworkAttachment, ...] = ()  # the same, with any advanced-syntax fields

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
    """`ip link add link PARENT name NAME type vlan id N` on the Docker host (a manually created parent),
    or `ip link add NAME link PARENT type macvlan mode M` (the host-side macvlan shim)."""

    name: str
    parent: str
    vlan_id: int | None = None
    kind: str = "vlan"  # vlan | macvlan
    mode: str | None = None  # macvlan mode


@dataclass(frozen=True)
class HostAddressAdd:
    """`ip addr add CIDR dev NAME` on the Docker host."""

    dev: str
    address: str


@dataclass(frozen=True)
class HostRouteAdd:
    """`ip route add DST dev NAME [via GW]` on the Docker host."""

    dst: str
    dev: str
    via: str | None = None


@dataclass(frozen=True)
class HostLinkUp:
    name: str


@dataclass(frozen=True)
class HostLinkDelete:
    name: str


@dataclass(frozen=True)
class Refused:
    """A command refused before it changes anything (Docker's name check, iproute2's argument check).

    `message` is the refusal verbatim; the loader keeps such a step only when the scenario expects it.
    """

    message: str
    verb: str = ""  # e.g. `docker run`, for messages


Command = Union[
    Refused,
    NetworkCreate,
    NetworkRemove,
    NetworkConnect,
    NetworkDisconnect,
    ContainerRun,
    ContainerRemove,
    ContainerStop,
    NetworkInspect,
    NetworkList,
    DaemonRestart,
    HostLinkAdd,
    HostLinkUp,
    HostLinkDelete,
    HostAddressAdd,
    HostRouteAdd,
]

# The commands run on the Docker host itself (`ip ...`), not through Docker.
HOST_COMMANDS = (HostLinkAdd, HostLinkUp, HostLinkDelete, HostAddressAdd, HostRouteAdd)


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
    host: str = DEFAULT_HOST  # the Docker host whose CLI runs it (`host:` on the command)


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
    # Address conflicts the scenario expects (issue #13): (address, the containers/hosts holding it, where).
    conflicts: tuple[tuple[str, tuple[str, ...], Location], ...] = ()
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
    # Docker's random choices pinned for the emulation (`docker_choices:`; harness.docker.choices):
    # (key, the options in the order Docker takes them, where the file says so).
    docker_choices: tuple[tuple[str, tuple[str, ...], Location], ...] = ()

    @property
    def hosts(self) -> tuple[DockerHost, ...]:
        return self.topology.hosts

    @property
    def container_names(self) -> tuple[str, ...]:
        return tuple(s.command.name for s in self.steps if isinstance(s.command, ContainerRun))
