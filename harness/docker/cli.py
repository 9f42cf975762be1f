"""The Docker CLI front end: documented command lines -> model commands, parsed as Docker's CLI would.

`parse_command(text)` splits a command line as a POSIX shell does (quotes, backslash-newline
continuations, comments) and parses it with `FlagParser`, a small re-implementation of the pflag rules
Docker's CLI uses: `--flag=value`, `--flag value`, `-o value`, `-ovalue`, combined short booleans
(`-itd`), repeated flags, and `--` to end flags. Unknown flags are errors naming the flag, worded as
Docker words them (`unknown flag: --foo`). A name Docker's daemon (or iproute2, or the kernel) would
refuse parses to `Refused` with that refusal verbatim, so it can never become a namespace path or a
link. Understood: `docker network create|rm|connect|disconnect|inspect|ls`, `docker run` (also
`docker container run`), `docker rm|stop|start|restart`, `systemctl restart docker`, and the host commands
of the documentation and its common answers (`ip link add ... type vlan|macvlan`, `ip link set N up`,
`ip link del N`, `ip addr add`, `ip route add`), so scenario files can quote them verbatim. A command, flag
or container command Docker has but the harness does not emulate is a `CLIError` that names it and says it
is not emulated (never a silent drop); flags with no effect on networking (`-e`, `-l`, `-v`, ...) are
accepted. README, "The Docker CLI as emulated", lists them.
"""

from __future__ import annotations

import csv
import ipaddress
import re
import shlex
from dataclasses import dataclass, field

from harness.docker.common import MAC_ADDRESS
from harness.model import (
    SHELLS,
    Command,
    ContainerRemove,
    ContainerRun,
    ContainerStop,
    DaemonRestart,
    HostAddressAdd,
    HostLinkAdd,
    HostLinkDelete,
    HostLinkUp,
    HostRouteAdd,
    NetworkAttachment,
    NetworkConnect,
    NetworkCreate,
    NetworkDisconnect,
    NetworkInspect,
    NetworkList,
    NetworkRemove,
    Refused,
    container_name_error,
    ifname_error,
    parse_ping,
)

# Docker 20.10 refuses to create a network named like a predefined one (moby v20.10.24
# runconfig/hostconfig_unix.go IsPreDefinedNetwork; the message is daemon/network.go PredefinedNetworkError,
# trailing space included) or a blank name (vendor/github.com/docker/libnetwork/config/config.go
# IsValidName, error.go ErrInvalidName). Any other network name is accepted; it never reaches a path or an
# interface name (the driver names links by the network id).
PREDEFINED_NETWORKS = ("bridge", "host", "none", "default")


class CLIError(ValueError):
    """The command line is not one Docker's CLI (or `ip`) would accept; the message says why."""


@dataclass(frozen=True)
class Flag:
    long: str
    short: str | None = None
    takes_value: bool = True
    repeatable: bool = False
    comma_list: bool = False  # pflag StringSlice: `--subnet=a,b` is two values
    emulated: bool = True  # False: Docker has the flag, the harness does not emulate it (an error naming it)


def not_emulated(command: str, flag: str, why: str = "") -> CLIError:
    return CLIError(f"`{command}` flag {flag} is not emulated by the harness{': ' + why if why else ''}")


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
                if not flag.emulated:
                    raise not_emulated(self.command, f"--{name}")
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
                    if not flag.emulated:
                        raise not_emulated(self.command, f"-{c} (--{flag.long})")
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
    Flag("label", repeatable=True),  # no effect on networking
    Flag("ipam-driver"),  # only `default` is emulated (checked below)
    Flag("ipam-opt", repeatable=True, emulated=False),
    Flag("scope", emulated=False),
    Flag("config-from", emulated=False),
    Flag("config-only", takes_value=False, emulated=False),
    Flag("ingress", takes_value=False, emulated=False),
]

_RUN = [
    Flag("network", repeatable=True),
    Flag("net", repeatable=True),  # C20 opts.go: --net and --network fill the same list
    Flag("ip"),
    Flag("ip6"),
    Flag("name"),
    Flag("mac-address"),
    Flag("restart"),
    Flag("network-alias", repeatable=True),
    Flag("net-alias", repeatable=True),
    # Flags that shape a container's networking in ways the harness does not emulate: an error naming them.
    Flag("publish", "p", repeatable=True, emulated=False),
    *(Flag(f, emulated=False) for f in ("expose", "dns", "dns-search", "dns-option", "add-host",
                                        "link", "link-local-ip", "sysctl", "uts", "ipc", "pid", "userns")),
    Flag("publish-all", "P", takes_value=False, emulated=False),
    # Flags with no effect on networking: accepted.
    Flag("volume", "v", repeatable=True),
    Flag("entrypoint"),
    Flag("memory", "m"),
    Flag("cpus"),
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

_CONNECT = [Flag("ip"), Flag("ip6"), Flag("alias", repeatable=True), Flag("gw-priority"),
            Flag("link", repeatable=True, emulated=False),
            Flag("link-local-ip", repeatable=True, emulated=False), Flag("driver-opt", repeatable=True, emulated=False)]
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


_DOCKER_COMMANDS = ("network create|rm|connect|disconnect|inspect|ls, run, rm, stop, start, restart")


def parse_command(text: str, namer: RunNamer | None = None) -> Command:
    """Parse one documented command line into a model command (raises CLIError)."""
    argv = split_command_line(text)
    if argv[:1] == ["sudo"]:
        argv = argv[1:]
    if not argv:
        raise CLIError("empty command")
    if argv[0] in ("ip", "/sbin/ip", "/usr/sbin/ip"):
        return _parse_ip(argv)
    if argv in (["systemctl", "restart", "docker"], ["systemctl", "restart", "docker.service"],
                ["service", "docker", "restart"]):
        return DaemonRestart()
    if argv[0] != "docker":
        raise CLIError(f"unsupported command {argv[0]!r}: expected a `docker ...` or `ip link|addr|route ...` "
                       "command line, or `systemctl restart docker`")
    if len(argv) < 2:
        raise CLIError("docker: missing command")
    verb, rest = argv[1], argv[2:]
    if verb == "container" and rest and rest[0] in ("run", "rm", "stop", "start", "restart"):
        verb, rest = rest[0], rest[1:]
    if verb == "network":
        if not rest:
            raise CLIError('"docker network" requires a subcommand (create, rm, connect, disconnect, inspect, ls)')
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
            return NetworkConnect(p.positional[0], p.positional[1], ip=p.last("ip"), ip6=p.last("ip6"),
                                  aliases=tuple(p.all("alias")), gw_priority=p.last("gw-priority"))
        if sub == "disconnect":
            p = FlagParser("docker network disconnect", _DISCONNECT).parse(rest)
            _require_args("docker network disconnect", p.positional, exactly=2)
            return NetworkDisconnect(p.positional[0], p.positional[1], force=p.flag("force"))
        if sub == "inspect":
            p = FlagParser("docker network inspect", [Flag("format", "f", emulated=False),
                                                      Flag("verbose", "v", takes_value=False, emulated=False)]).parse(rest)
            _require_args("docker network inspect", p.positional, at_least=1)
            return NetworkInspect(networks=tuple(p.positional))
        if sub in ("ls", "list"):
            p = FlagParser("docker network ls", [Flag("quiet", "q", takes_value=False),
                                                 Flag("no-trunc", takes_value=False),
                                                 Flag("filter", "f", emulated=False),
                                                 Flag("format", emulated=False)]).parse(rest)
            _require_args("docker network ls", p.positional, exactly=0)
            return NetworkList(quiet=p.flag("quiet"), no_trunc=p.flag("no-trunc"))
        raise CLIError(f"unsupported docker network subcommand {sub!r}: `docker network {sub}` is not emulated by "
                       "the harness (create, rm, connect, disconnect, inspect, ls are)")
    if verb == "run":
        return _parse_run(rest, namer or RunNamer())
    if verb == "rm":
        p = FlagParser("docker rm", _RM).parse(rest)
        _require_args("docker rm", p.positional, at_least=1)
        return ContainerRemove(names=tuple(p.positional), force=p.flag("force"))
    if verb in ("stop", "start", "restart"):
        flags = {"stop": [Flag("time", "t")], "restart": [Flag("time", "t")],
                 "start": [Flag("attach", "a", takes_value=False, emulated=False),
                           Flag("interactive", "i", takes_value=False, emulated=False)]}[verb]
        p = FlagParser(f"docker {verb}", flags).parse(rest)
        _require_args(f"docker {verb}", p.positional, at_least=1)
        return ContainerStop(names=tuple(p.positional), action=verb)
    raise CLIError(f"unsupported docker command {verb!r}: `docker {verb}` is not emulated by the harness "
                   f"({_DOCKER_COMMANDS} are)")


def _parse_network_create(rest: list[str]) -> NetworkCreate | Refused:
    p = FlagParser("docker network create", _NETWORK_CREATE).parse(rest)
    _require_args("docker network create", p.positional, exactly=1)
    name = p.positional[0]
    if name in PREDEFINED_NETWORKS:
        return Refused(f"operation is not permitted on predefined {name} network ", "docker network create")
    if not name.strip():
        return Refused(f"invalid name: {name}", "docker network create")
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


# Container commands that keep running until stopped, like a shell under -itd.
def _keeps_running(command: tuple[str, ...]) -> bool:
    if not command or command[0] in SHELLS:
        return True
    name = command[0].rsplit("/", 1)[-1]
    if name == "sleep" and len(command) == 2:
        return True
    if name == "tail" and "-f" in command[1:]:
        return True
    return name == "top" and len(command) == 1


def _parse_run(rest: list[str], namer: RunNamer) -> ContainerRun | Refused:
    p = FlagParser("docker run", _RUN, interspersed=False).parse(rest)
    _require_args("docker run", p.positional, at_least=1)
    image, command = p.positional[0], tuple(p.positional[1:])
    # --net and --network are one list in the CLI (C20 cli/command/container/opts.go netMode), each value a
    # name or the advanced syntax (opts/network.go NetworkOpt).
    attachments = tuple(network_attachment(v) for v in p.all("net") + p.all("network"))
    networks = tuple(dict.fromkeys(a.target for a in attachments))
    network = networks[0] if networks else None
    if not _keeps_running(command) and parse_ping(command) is None:
        raise CLIError(
            f"unsupported container command {' '.join(command)!r}: `docker run ... IMAGE {' '.join(command)}` is "
            "not emulated by the harness: a container "
            "runs a shell, `sleep N`, `tail -f FILE` or `top` (kept running), or `ping`/`ping6 ... ADDRESS` "
            "(a reach check)"
        )
    restart = p.last("restart") or "no"  # checked by the emulated daemon: its texts depend on the version
    if p.all("network-alias") or p.all("net-alias"):
        raise not_emulated("docker run", "--network-alias", "use `docker network connect --alias`")
    explicit = p.last("name")
    if explicit is not None:
        refusal = container_name_error(explicit)
        if refusal:
            return Refused(refusal, "docker run")
        explicit = explicit.removeprefix("/")  # Docker stores "/NAME" either way
    mac = p.last("mac-address")
    if mac is not None and not _MAC.fullmatch(mac):
        # C20 cli/command/container/opts.go:323-326, a CLI check before anything is created.
        return Refused(f"{mac} is not a valid mac address", "docker run")
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
        mac_address=mac.lower() if mac else None,
        hostname=p.last("hostname"),
        restart=restart,
        networks=networks,
        attachments=attachments,
    )


_MAC = MAC_ADDRESS

# Keys of the advanced --network syntax that Docker has (some versions) but the harness does not emulate.
_NETWORK_KEYS_NOT_EMULATED = ("driver-opt", "link-local-ip")


def network_attachment(value: str) -> NetworkAttachment:
    """One `--network` value as docker/cli's NetworkOpt.Set reads it (v20.10.24 and v28.0.0 opts/network.go):
    the advanced syntax when the value matches `\\w+=\\w+` anywhere (an unanchored Go regexp), split as one
    CSV record into lower-cased `key=value` fields; else a plain network name. Which keys are valid depends on
    the Docker version, so the fields are checked by the emulated daemon's profile (`network_opt_error`)."""
    if not re.search(r"\w+=\w+", value, flags=re.ASCII):
        return NetworkAttachment(target=value, text=value)
    try:
        fields = next(csv.reader([value]), [])
    except csv.Error as exc:
        raise CLIError(f'invalid argument "{value}" for "--network" flag: {exc}') from None
    target = ""
    for item in fields:
        key, _, val = item.lower().partition("=")
        if key.strip() in _NETWORK_KEYS_NOT_EMULATED:
            raise not_emulated("docker run", f"--network ...,{key.strip()}=", "name, ip, ip6, alias, mac-address "
                               "and gw-priority are")
        if key.strip() == "name":
            target = val.strip()
    return NetworkAttachment(target=target, text=value, fields=tuple(fields))


def _parse_ip(argv: list[str]) -> Command:
    """The host commands of the documentation and its common answers: `ip link add` (vlan, macvlan),
    `ip link set N up`, `ip link del N`, `ip addr add CIDR dev N`, `ip route add DST dev N [via GW]`."""
    words = argv[1:]
    obj = words[0] if words else ""
    if obj in ("addr", "address", "a") and words[1:2] == ["add"]:
        spec = dict(zip(words[3::2], words[4::2]))
        if len(words) != 5 or "dev" not in spec:
            raise CLIError(f"unsupported ip command: `{' '.join(argv)}` is not emulated: expected `ip addr add CIDR dev NAME`")
        try:
            ipaddress.ip_interface(words[2])
        except ValueError:
            return Refused(f'Error: any valid prefix is expected rather than "{words[2]}".', "ip addr add")
        return HostAddressAdd(dev=spec["dev"], address=words[2])
    if obj in ("route", "r", "ro") and words[1:2] == ["add"]:
        spec = dict(zip(words[3::2], words[4::2]))
        if len(words) % 2 == 0 or "dev" not in spec or set(spec) - {"dev", "via"}:
            raise CLIError(f"unsupported ip command: `{' '.join(argv)}` is not emulated: expected `ip route add DST dev NAME [via GATEWAY]`")
        return HostRouteAdd(dst=words[2], dev=spec["dev"], via=spec.get("via"))
    if obj not in ("link", "l") or len(words) < 3:
        raise CLIError(f"unsupported ip command: `{' '.join(argv)}` is not emulated: only `ip link add|set|del`, `ip addr add` and "
                       "`ip route add` are")
    action, rest = words[1], words[2:]
    if action == "add":
        spec: dict[str, str] = {}
        i = 0
        while i < len(rest):
            word = rest[i]
            if word in ("link", "name", "type") and i + 1 < len(rest):
                spec[word] = rest[i + 1]
                i += 2
                if word == "type":
                    spec.update(zip(rest[i::2], rest[i + 1::2]))
                    if len(rest[i:]) % 2:
                        raise CLIError(f"`{' '.join(argv)}`: an option of type {spec['type']} has no value")
                    break
            elif "name" not in spec:
                spec["name"] = word  # `ip link add NAME link P type ...`
                i += 1
            else:
                raise CLIError(f"unsupported ip command: `{' '.join(argv)}` is not emulated: unexpected {word!r}")
        kind = spec.get("type")
        if kind not in ("vlan", "macvlan") or not {"link", "name"} <= spec.keys():
            raise CLIError("expected `ip link add link PARENT name NAME type vlan id VLAN_ID` or "
                           "`ip link add NAME link PARENT type macvlan mode MODE`")
        # iproute2 checks the new name itself; an unknown `link` is the driver's `Cannot find device`.
        refusal = _iproute2_ifname("name", spec["name"])
        if refusal:
            return Refused(refusal, "ip link add")
        if ifname_error(spec["name"]):
            return Refused("RTNETLINK answers: Invalid argument", "ip link add")  # the kernel's dev_valid_name
        if kind == "macvlan":
            mode = spec.get("mode", "vepa")  # iproute2's and the kernel's default macvlan mode
            if mode not in ("private", "vepa", "bridge", "passthru", "source") or set(spec) - {"link", "name", "type", "mode"}:
                raise CLIError(f"unsupported ip command: `{' '.join(argv)}` is not emulated: expected `type macvlan mode bridge|private|vepa|passthru`")
            return HostLinkAdd(name=spec["name"], parent=spec["link"], kind="macvlan", mode=mode)
        if "id" not in spec:
            raise CLIError("expected `ip link add link PARENT name NAME type vlan id VLAN_ID`")
        if not (spec["id"].isascii() and spec["id"].isdigit()):
            raise CLIError(f'vlan id "{spec["id"]}" is not a number')
        return HostLinkAdd(name=spec["name"], parent=spec["link"], vlan_id=int(spec["id"]))
    if action == "set" and rest[:1] == ["dev"]:
        rest = rest[1:]
    if action == "set" and len(rest) == 2 and rest[1] == "up":
        refusal = _iproute2_ifname("dev", rest[0])
        return Refused(refusal, "ip link set") if refusal else HostLinkUp(name=rest[0])
    if action in ("del", "delete") and len(rest) in (1, 2) and (len(rest) == 1 or rest[0] == "dev"):
        refusal = _iproute2_ifname("dev", rest[-1])
        return Refused(refusal, "ip link del") if refusal else HostLinkDelete(name=rest[-1])
    raise CLIError(f"unsupported ip command: `{' '.join(argv)}` is not emulated: expected `ip link set NAME up` or `ip link del NAME`")


def _iproute2_ifname(what: str, name: str) -> str | None:
    """iproute2's check_ifname (6.1 lib/utils.c): empty, 16 bytes or more, '/' or whitespace; its words."""
    if not name or len(name.encode()) >= 16 or any(c == "/" or c.isspace() for c in name):
        return f'Error: argument "{name}" is wrong: "{what}" not a valid ifname'
    return None
