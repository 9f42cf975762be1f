"""The Docker CLI front end: documented command lines -> model commands, parsed as Docker's CLI would.

`parse_command(text)` splits a command line as a POSIX shell does (quotes, backslash-newline
continuations, comments) and parses it with `FlagParser`, a small re-implementation of the pflag rules
Docker's CLI uses: `--flag=value`, `--flag value`, `-o value`, `-ovalue`, combined short booleans
(`-itd`), repeated flags, and `--` to end flags. Unknown flags are errors naming the flag, worded as
Docker words them (`unknown flag: --foo`). Besides `docker network create|rm|connect|disconnect`,
`docker run` and `docker rm`, the documentation's own host commands `ip link add link P name N type vlan
id V`, `ip link set N up` and `ip link del N` are understood, so scenario files can quote them verbatim.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from harness.model import (
    SHELLS,
    Command,
    ContainerRemove,
    ContainerRun,
    HostLinkAdd,
    HostLinkDelete,
    HostLinkUp,
    NetworkConnect,
    NetworkCreate,
    NetworkDisconnect,
    NetworkRemove,
    parse_ping,
)


class CLIError(ValueError):
    """The command line is not one Docker's CLI (or `ip`) would accept; the message says why."""


@dataclass(frozen=True)
class Flag:
    long: str
    short: str | None = None
    takes_value: bool = True
    repeatable: bool = False
    comma_list: bool = False  # pflag StringSlice: `--subnet=a,b` is two values


@dataclass
class Parsed:
    values: dict[str, list[str]] = field(default_factory=dict)
    positional: list[str] = field(default_factory=list)

    def last(self, name: str) -> str | None:
        vals = self.values.get(name)
        return vals[-1] if vals else None

    def all(self, name: str) -> list[str]:
        return list(self.values.get(name, ()))

    def flag(self, name: str) -> bool:
        vals = self.values.get(name)
        return bool(vals) and vals[-1] not in ("false", "0")


class FlagParser:
    """pflag's rules for one command; `interspersed=False` stops at the first positional (docker run)."""

    def __init__(self, command: str, flags: list[Flag], interspersed: bool = True):
        self.command = command
        self.by_long = {f.long: f for f in flags}
        self.by_short = {f.short: f for f in flags if f.short}
        self.interspersed = interspersed

    def parse(self, args: list[str]) -> Parsed:
        out = Parsed()
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                out.positional.extend(args[i + 1 :])
                break
            if arg.startswith("--") and len(arg) > 2:
                name, eq, value = arg[2:].partition("=")
                flag = self.by_long.get(name)
                if flag is None:
                    raise CLIError(f"unknown flag: --{name}")
                if flag.takes_value:
                    if not eq:
                        if i + 1 >= len(args):
                            raise CLIError(f"flag needs an argument: --{name}")
                        i += 1
                        value = args[i]
                else:
                    value = value if eq else "true"
                out.values.setdefault(flag.long, []).extend(_values(flag, value))
            elif arg.startswith("-") and len(arg) > 1:
                shorts = arg[1:]
                j = 0
                while j < len(shorts):
                    c = shorts[j]
                    flag = self.by_short.get(c)
                    if flag is None:
                        raise CLIError(f"unknown shorthand flag: '{c}' in -{shorts}")
                    if flag.takes_value:
                        value = shorts[j + 1 :]
                        if value.startswith("="):
                            value = value[1:]
                        if not value:
                            if i + 1 >= len(args):
                                raise CLIError(f"flag needs an argument: '{c}' in -{shorts}")
                            i += 1
                            value = args[i]
                        out.values.setdefault(flag.long, []).extend(_values(flag, value))
                        break
                    out.values.setdefault(flag.long, []).append("true")
                    j += 1
            else:
                out.positional.append(arg)
                if not self.interspersed:
                    out.positional.extend(args[i + 1 :])
                    break
            i += 1
        for name, vals in out.values.items():
            if len(vals) > 1 and not self.by_long[name].repeatable and self.by_long[name].takes_value:
                # pflag keeps the last value of a scalar flag; Docker does too.
                out.values[name] = vals[-1:]
        return out


def _values(flag: Flag, value: str) -> list[str]:
    if flag.comma_list:
        return [v for v in value.split(",") if v]
    return [value]


def _require_args(command: str, positional: list[str], exactly: int | None = None, at_least: int | None = None):
    if exactly is not None and len(positional) != exactly:
        plural = "argument" if exactly == 1 else "arguments"
        raise CLIError(f'"{command}" requires exactly {exactly} {plural}.')
    if at_least is not None and len(positional) < at_least:
        plural = "argument" if at_least == 1 else "arguments"
        raise CLIError(f'"{command}" requires at least {at_least} {plural}.')


_NETWORK_CREATE = [
    Flag("driver", "d"),
    Flag("subnet", repeatable=True, comma_list=True),
    Flag("gateway", repeatable=True, comma_list=True),
    Flag("ip-range", repeatable=True, comma_list=True),
    Flag("aux-address", repeatable=True),
    Flag("opt", "o", repeatable=True),
    Flag("ipv6", takes_value=False),
    Flag("internal", takes_value=False),
    Flag("attachable", takes_value=False),
    Flag("label", repeatable=True),
    Flag("ipam-driver"),
    Flag("ipam-opt", repeatable=True),
    Flag("scope"),
]

_RUN = [
    Flag("network"),
    Flag("net"),
    Flag("ip"),
    Flag("ip6"),
    Flag("name"),
    Flag("mac-address"),
    Flag("rm", takes_value=False),
    Flag("detach", "d", takes_value=False),
    Flag("interactive", "i", takes_value=False),
    Flag("tty", "t", takes_value=False),
    Flag("privileged", takes_value=False),
    Flag("hostname", "h"),
    Flag("env", "e", repeatable=True),
    Flag("label", "l", repeatable=True),
    Flag("cap-add", repeatable=True),
    Flag("workdir", "w"),
    Flag("user", "u"),
    Flag("init", takes_value=False),
]

_CONNECT = [Flag("ip"), Flag("ip6"), Flag("alias", repeatable=True), Flag("link", repeatable=True)]
_DISCONNECT = [Flag("force", "f", takes_value=False)]
_RM = [Flag("force", "f", takes_value=False), Flag("volumes", "v", takes_value=False), Flag("link", "l", takes_value=False)]


def split_command_line(text: str) -> list[str]:
    """Split like a POSIX shell: backslash-newline joins lines, quotes group, `#` starts a comment."""
    joined = text.replace("\\\r\n", " ").replace("\\\n", " ")
    if "`" in joined or "$(" in joined:
        raise CLIError("command substitution (`...` or $(...)) is not supported; name the networks or containers")
    try:
        return shlex.split(joined, comments=True)
    except ValueError as exc:
        raise CLIError(f"cannot split the command line: {exc}") from exc


def _split_kv(value: str, what: str) -> tuple[str, str]:
    key, eq, val = value.partition("=")
    if not eq:
        raise CLIError(f'invalid argument "{value}" for "{what}" flag: {value} is not a valid key=value pair')
    return key, val


class RunNamer:
    """Names containers started without `--name`: c1, c2, ... in `docker run` order, skipping taken names."""

    def __init__(self, taken: set[str] | None = None):
        self.taken = set(taken or ())
        self.counter = 0

    def next(self) -> str:
        while True:
            self.counter += 1
            name = f"c{self.counter}"
            if name not in self.taken:
                self.taken.add(name)
                return name


def parse_command(text: str, namer: RunNamer | None = None) -> Command:
    """Parse one documented command line into a model command (raises CLIError)."""
    argv = split_command_line(text)
    if not argv:
        raise CLIError("empty command")
    if argv[0] in ("ip", "/sbin/ip", "/usr/sbin/ip"):
        return _parse_ip(argv)
    if argv[0] != "docker":
        raise CLIError(f"unsupported command {argv[0]!r}: expected a `docker ...` or `ip link ...` command line")
    if len(argv) < 2:
        raise CLIError("docker: missing command")
    verb, rest = argv[1], argv[2:]
    if verb == "network":
        if not rest:
            raise CLIError('"docker network" requires a subcommand (create, rm, connect, disconnect)')
        sub, rest = rest[0], rest[1:]
        if sub == "create":
            return _parse_network_create(rest)
        if sub in ("rm", "remove"):
            p = FlagParser("docker network rm", [Flag("force", "f", takes_value=False)]).parse(rest)
            _require_args("docker network rm", p.positional, at_least=1)
            return NetworkRemove(networks=tuple(p.positional))
        if sub == "connect":
            p = FlagParser("docker network connect", _CONNECT).parse(rest)
            _require_args("docker network connect", p.positional, exactly=2)
            return NetworkConnect(p.positional[0], p.positional[1], ip=p.last("ip"), ip6=p.last("ip6"))
        if sub == "disconnect":
            p = FlagParser("docker network disconnect", _DISCONNECT).parse(rest)
            _require_args("docker network disconnect", p.positional, exactly=2)
            return NetworkDisconnect(p.positional[0], p.positional[1])
        raise CLIError(f"unsupported docker network subcommand {sub!r} (create, rm, connect, disconnect)")
    if verb in ("run", "container") and (verb == "run" or rest[:1] == ["run"]):
        return _parse_run(rest if verb == "run" else rest[1:], namer or RunNamer())
    if verb in ("rm",):
        p = FlagParser("docker rm", _RM).parse(rest)
        _require_args("docker rm", p.positional, at_least=1)
        return ContainerRemove(names=tuple(p.positional), force=p.flag("force"))
    raise CLIError(f"unsupported docker command {verb!r} (network create|rm|connect|disconnect, run, rm)")


def _parse_network_create(rest: list[str]) -> NetworkCreate:
    p = FlagParser("docker network create", _NETWORK_CREATE).parse(rest)
    _require_args("docker network create", p.positional, exactly=1)
    options = tuple(_split_kv(o, "-o, --opt") for o in p.all("opt"))
    aux = []
    for a in p.all("aux-address"):
        aux.append(_split_kv(a, "--aux-address"))
    return NetworkCreate(
        name=p.positional[0],
        driver=p.last("driver") or "bridge",
        subnets=tuple(p.all("subnet")),
        gateways=tuple(p.all("gateway")),
        ip_ranges=tuple(p.all("ip-range")),
        aux_addresses=tuple(aux),
        ipv6=p.flag("ipv6"),
        internal=p.flag("internal"),
        options=options,
    )


def _parse_run(rest: list[str], namer: RunNamer) -> ContainerRun:
    p = FlagParser("docker run", _RUN, interspersed=False).parse(rest)
    _require_args("docker run", p.positional, at_least=1)
    image, command = p.positional[0], tuple(p.positional[1:])
    network = p.last("network") or p.last("net")
    if p.last("network") and p.last("net") and p.last("network") != p.last("net"):
        raise CLIError("conflicting options: --net and --network name different networks")
    if command and command[0] not in SHELLS and parse_ping(command) is None:
        raise CLIError(
            f"unsupported container command {' '.join(command)!r}: a container runs a shell "
            "(kept running) or `ping`/`ping6 ... ADDRESS` (a reach check)"
        )
    explicit = p.last("name")
    return ContainerRun(
        name=explicit or namer.next(),
        network=network,
        ip=p.last("ip"),
        ip6=p.last("ip6"),
        detach=p.flag("detach"),
        remove=p.flag("rm"),
        image=image,
        command=command,
        named_by_user=explicit is not None,
    )


def _parse_ip(argv: list[str]) -> Command:
    """The three `ip link` forms the documentation uses to manage a parent by hand."""
    words = argv[1:]
    if words[:1] != ["link"] or len(words) < 3:
        raise CLIError(f"unsupported ip command {' '.join(argv)!r}: only `ip link add|set|del` are understood")
    action, rest = words[1], words[2:]
    if action == "add":
        spec = dict(zip(rest[0::2], rest[1::2]))
        if len(rest) % 2 or spec.get("type") != "vlan" or not {"link", "name", "id"} <= spec.keys():
            raise CLIError("expected `ip link add link PARENT name NAME type vlan id VLAN_ID`")
        if not spec["id"].isdigit():
            raise CLIError(f'vlan id "{spec["id"]}" is not a number')
        return HostLinkAdd(name=spec["name"], parent=spec["link"], vlan_id=int(spec["id"]))
    if action == "set" and len(rest) == 2 and rest[1] == "up":
        return HostLinkUp(name=rest[0])
    if action in ("del", "delete") and len(rest) in (1, 2):
        return HostLinkDelete(name=rest[-1])
    raise CLIError(f"unsupported ip command {' '.join(argv)!r}: expected `ip link set NAME up` or `ip link del NAME`")
