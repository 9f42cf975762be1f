"""`RealDocker`: the scenario's documented commands, run verbatim by a real Docker 20.10 engine.

Each step's text is split as a shell would (`harness.docker.cli.split_command_line`) and run:
`docker ...` through the 20.10 client against the session's private daemon, the documentation's host
commands (`ip link add|set|del ...`) inside the Docker host's namespace. Three adjustments, all about the
terminal the documentation's user has and the harness has not:

- a container started with a shell (`docker run ... -it --rm alpine /bin/sh`) is started detached
  (`-d`), so it stays up as the user's interactive shell would;
- a transient `docker run ... alpine ping -c 4 X` runs to completion without a TTY (`-t`/`-d` dropped);
  its exit status and output are the documented reach check;
- every `docker run` gets `--cidfile`, so a container the scenario did not name (`c1`, `c2`, ...) is
  known by its id; Docker still names it itself.

Docker's answer on failure (stderr without "docker: " and "Error response from daemon: ", the CLI's
hints and log lines, and a trailing period) is the step's error. `state` is what the engine built, read
back from `docker network inspect`, `docker inspect`, the containers' interfaces and the host's links,
in `harness.docker.state`'s classes, so the same Oracle and Judge judge the real engine and the emulation.
With several Docker hosts (issue #13), `RealFleet` holds one `RealDocker` per host, each talking to its
host's own daemon, and reads their states as one `harness.docker.fleet.Fleet`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import time
from dataclasses import dataclass, field

from harness import proc
from harness.docker import ipam
from harness.docker.base import StepOutcome
from harness.docker.cli import CLIError, split_command_line
from harness.docker.fleet import Fleet
from harness.docker.state import ContainerState, Endpoint, HostLink, NetworkState
from harness.errors import HarnessError
from harness.model import (
    HOST_COMMANDS,
    ContainerRemove,
    ContainerRun,
    DaemonRestart,
    HostLinkAdd,
    NetworkCreate,
    Step,
    is_ip_address,
)
from harness.plan import ReachCheck
from harness.proc import CommandResult

DRIVERS = ("macvlan", "ipvlan")
# How long one client command may take: a `docker run` in a loaded TCG guest can take minutes (the guest
# image raises it through HARNESS_DOCKER_RUN_TIMEOUT).
RUN_TIMEOUT = float(os.environ.get("HARNESS_DOCKER_RUN_TIMEOUT", 60))
_NOISE = re.compile(r"^(time=\"[^\"]*\" level=\w+ .*|See '.*--help'\.?|Run '.*--help' for more information\.?)$")
_PREFIXES = ("docker: ", "Error response from daemon: ")


def docker_error(result: CommandResult) -> str:
    """Docker's answer as the scenarios write it: prefixes, CLI hints, log lines and the final period gone."""
    lines = []
    for line in result.stderr.splitlines():
        line = line.strip()
        if not line or _NOISE.match(line):
            continue
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if line.startswith(prefix):
                    line, changed = line[len(prefix):], True
        lines.append(line.rstrip(".").strip())
    if lines:
        return "\n".join(lines)
    return "timed out" if result.timed_out else f"exited {result.exit_code}"


def dummy_parent_name(driver: str, network_id: str) -> str:
    return ("dm-" if driver == "macvlan" else "di-") + network_id[:12]


@dataclass
class RealState:
    """A `DockerState` read back from a real engine."""

    networks: dict = field(default_factory=dict)  # name -> NetworkState
    containers: dict = field(default_factory=dict)  # name -> ContainerState, running
    history: dict = field(default_factory=dict)  # name -> ContainerState, every container started
    host_links: dict = field(default_factory=dict)  # name -> HostLink

    def vlan_of(self, link_name: str) -> int | None:
        link = self.host_links.get(link_name)
        seen = set()
        while link is not None and link.name not in seen:
            seen.add(link.name)
            if link.kind == "vlan":
                return link.vlan_id
            link = self.host_links.get(link.parent) if link.parent else None
        return None


class RealDocker:
    """Docker as it is: a private 20.10 daemon in the session's host namespace runs every command."""

    def __init__(self, compiled, session, host: str | None = None):
        # The Docker host whose daemon this is (the only one, or one of several: `RealFleet`).
        self.node = host if host is not None else compiled.scenario.hosts[0].name
        self.compiled = compiled
        self.session = session
        self.name = "real docker"
        self._next = 0
        self._creates: dict[str, NetworkCreate] = {}  # network name -> the command that created it
        self._created_links: dict[str, set[str]] = {}  # network name -> host links its create made
        self._user_links: set[str] = set()
        self._history: dict[str, ContainerState] = {}
        self._images: set[str] = {"alpine", "alpine:latest"}
        self._state: RealState | None = None

    @property
    def version(self) -> str:
        """The engine's server version (`docker version`) once its daemon runs ("" before): what
        `harness conform` reports as the real side's Docker."""
        daemon = self._daemon  # None until the first docker command
        return daemon.version if daemon is not None else ""

    @property
    def _daemon(self):
        return self.session.daemons.get(self.node)

    # -- commands ---------------------------------------------------------------------------------------

    def execute(self, step: Step) -> StepOutcome:
        steps = [s for s in self.compiled.scenario.steps if s.host == self.node]
        if steps.index(step) != self._next:
            raise HarnessError(f"steps must run in order: expected command {steps[self._next].index}, "
                               f"got {step.index}")
        self._next += 1
        self._state = None
        try:
            argv = split_command_line(step.text)
        except CLIError as exc:
            raise HarnessError(f"command {step.index} `{step.text}`: {exc}") from None
        cmd = step.command
        if isinstance(cmd, HOST_COMMANDS):
            if argv[:1] == ["sudo"]:  # the documentation's `sudo ip ...`: the harness is root already
                argv = argv[1:]
            res = self.session.run(self.node, argv, timeout=30)
            if res.ok and isinstance(cmd, HostLinkAdd):
                self._user_links.add(cmd.name)
            return StepOutcome(step, error=None if res.ok else docker_error(res))
        if isinstance(cmd, DaemonRestart):
            # The service manager's restart of the private daemon: SIGTERM, wait, start it again with the
            # same roots in the same namespace; the containers' PIDs are found anew afterwards.
            daemon = self.session.ensure_daemon(self.node)
            self._read_state()  # what the containers were, kept in `history`, before they stop
            try:
                daemon.restart()
            finally:
                self.session.invalidate()
            return StepOutcome(step)
        if not argv or argv[0] != "docker":
            raise HarnessError(f"command {step.index} `{step.text}`: not a docker or ip command")
        daemon = self.session.ensure_daemon(self.node)
        self.name = f"real docker {daemon.version}"
        try:
            if isinstance(cmd, ContainerRun):
                return self._run(step, cmd, argv)
            before = self._host_link_names() if isinstance(cmd, NetworkCreate) else set()
            if isinstance(cmd, ContainerRemove):
                self._read_state()  # what the containers were, kept in `history`, before they go
            res = daemon.client(argv[1:], timeout=RUN_TIMEOUT)
            if res.ok and isinstance(cmd, NetworkCreate):
                self._creates[cmd.name] = cmd
                self._created_links[cmd.name] = self._host_link_names() - before
            if isinstance(cmd, ContainerRemove):
                for name in cmd.names:
                    self.session.forget(name)
            return StepOutcome(step, error=None if res.ok else docker_error(res))
        finally:
            self.session.invalidate()

    def _run(self, step: Step, cmd: ContainerRun, argv: list[str]) -> StepOutcome:
        daemon = self._daemon
        image = cmd.image
        if image not in self._images:
            daemon.tag(image)
            self._images.add(image)
        cidfile = daemon.base / "cid" / f"{step.index}"
        run_at = 2 if argv[1] == "run" else 3  # `docker run` or `docker container run`
        image_at = len(argv) - len(cmd.command) - 1
        flags = argv[run_at:image_at] if argv[image_at:image_at + 1] == [image] else None
        if flags is None:
            raise HarnessError(f"command {step.index} `{step.text}`: cannot find the image {image!r} in it")
        if cmd.transient:
            flags = _without_terminal(flags)
        elif not cmd.detach:
            flags = ["-d", *flags]
        args = [*argv[1:run_at], f"--cidfile={cidfile}", *flags, *argv[image_at:]]
        seen = None
        if cmd.transient:
            res, seen = self._run_watched(args, cidfile, cmd.name)
        else:
            res = daemon.client(args, timeout=RUN_TIMEOUT, node=cmd.name)
        cid = _read(cidfile)
        if not cmd.transient:
            if not res.ok:
                return StepOutcome(step, error=docker_error(res))
            cid = cid or res.stdout.strip().splitlines()[-1]
            self.session.bind(cmd.name, cid, self.node)
            self._history[cmd.name] = ContainerState(cmd.name, cid, running=True)
            return StepOutcome(step)
        # A transient container: the daemon refused it (125), or its command could not run (126, 127),
        # or ping ran and its status is the reach check.
        if res.exit_code >= 125 or res.timed_out or (res.exit_code != 0 and not cid):
            return StepOutcome(step, error=docker_error(res))
        probe = cmd.probe
        target = self._resolve(probe.target, cmd.network)
        family = probe.family or (ipaddress.ip_address(target).version if is_ip_address(target) else 4)
        shown = CommandResult(cmd.name, tuple(daemon.client_argv(args)), res.exit_code, res.stdout, res.stderr,
                              res.start, res.end, res.timed_out)
        self.session.finished[cmd.name] = shown
        if seen is not None:  # what it was while it ran; a transient attaches to one network: eth0
            networks = {n.name: n for n in self.state.networks.values()}
            transient = self._container(cmd.name, seen, networks, {}, default_ifname="eth0")
            for net in networks.values():
                net.endpoints.pop(cmd.name, None)  # it is gone: no endpoint of the network any more
        else:
            transient = ContainerState(cmd.name, cid)
        transient.running, transient.transient = False, True
        self._history[cmd.name] = transient
        self._state = None
        check = ReachCheck(src=cmd.name, dst=target, family=family, command=" ".join(cmd.command))
        return StepOutcome(step, reach=check)

    def _run_watched(self, args: list[str], cidfile, name: str) -> tuple[CommandResult, dict | None]:
        """A transient `docker run` to completion, inspected while it runs (best effort: a ping that ends
        within milliseconds may be gone before it is seen), so its endpoint is known afterwards."""
        daemon = self._daemon
        seen = None
        start = time.time()
        deadline = time.monotonic() + RUN_TIMEOUT
        timed_out = False
        with proc.spawn(daemon.client_argv(args), node=name, env=daemon.env) as handle:
            while handle.wait(0.02) is None:
                if time.monotonic() > deadline:
                    timed_out = True
                    break
                cid = _read(cidfile) if seen is None else ""
                if cid:
                    found = self._inspect(["inspect"], [cid])
                    if found and (found[0].get("State") or {}).get("Running"):
                        seen = found[0]
            code = handle.poll()
        out, err = handle.output()
        result = CommandResult(name, tuple(daemon.client_argv(args)), -9 if timed_out or code is None else code,
                               out, err, start, time.time(), timed_out)
        return result, seen

    def finish(self, outcome: StepOutcome) -> None:
        """The transient container is gone already (`--rm`) or exited (it keeps its name, as in Docker)."""
        cmd = outcome.step.command
        if isinstance(cmd, ContainerRun):
            self.session.finished.pop(cmd.name, None)

    def _resolve(self, target: str, network: str | None) -> str:
        """What a name resolves to through Docker's DNS: the address of a running container on the network."""
        if is_ip_address(target):
            return target
        state = self.state
        container = state.containers.get(target)
        if container is not None:
            ep = container.endpoint(network) if network else None
            ep = ep or (container.endpoints[0] if container.endpoints else None)
            if ep is not None and ep.addresses:
                return str(ep.addresses[0][0])
        return target

    # -- state --------------------------------------------------------------------------------------------

    @property
    def state(self) -> RealState:
        if self._state is None:
            self._state = self._read_state()
        return self._state

    def _host_link_names(self) -> set[str]:
        return {link["ifname"] for link in self._host_links_json()}

    def _host_links_json(self) -> list[dict]:
        res = self.session.run(self.node, ["ip", "-json", "-details", "link", "show"], timeout=10)
        res.assert_success()
        return json.loads(res.stdout or "[]")

    def _inspect(self, kind: list[str], ids: list[str]) -> list[dict]:
        if not ids:
            return []
        res = self._daemon.client([*kind, *ids], timeout=30)
        try:
            return json.loads(res.stdout or "[]")
        except json.JSONDecodeError:
            raise HarnessError(f"`docker {' '.join(kind)}` answered no JSON: {res.stderr.strip()}") from None

    def _read_state(self) -> RealState:
        state = RealState(history=dict(self._history))
        host = self.compiled.scenario.topology.host(self.node)
        nics = {nic.name for nic in host.nics}
        created_by: dict[str, str] = {}
        daemon = self._daemon
        nets: list[dict] = []
        if daemon is not None:
            ids = daemon.client(["network", "ls", "-q", "--no-trunc"], timeout=30).stdout.split()
            nets = [n for n in self._inspect(["network", "inspect"], ids) if n.get("Driver") in DRIVERS]
        for n in nets:
            net = self._network(n)
            state.networks[net.name] = net
            for link in self._created_links.get(net.name, ()):
                created_by[link] = net.id
            net.created_parent = net.parent in self._created_links.get(net.name, ())
        for link in self._host_links_json():
            name = link["ifname"]
            if name == "lo":
                continue
            info = link.get("linkinfo") or {}
            kind = info.get("info_kind") or "device"
            data = info.get("info_data") or {}
            owner = ("topology" if name in nics else "user" if name in self._user_links
                     else created_by.get(name, "daemon"))
            if owner == "daemon" and kind not in ("vlan", "dummy"):
                continue  # docker0 and the children on their way into a container: not a parent Docker manages
            state.host_links[name] = HostLink(name, kind, parent=link.get("link"),
                                              vlan_id=data.get("id") if kind == "vlan" else None, owner=owner)
        if daemon is None:
            return state
        names_by_id = {cid: name for name, cid in self.session.containers.items()}
        running = daemon.client(["ps", "-q", "--no-trunc"], timeout=30).stdout.split()
        inspected = self._inspect(["inspect"], running)
        names = [names_by_id.get(c["Id"], c["Name"].lstrip("/")) for c in inspected]
        for name, c in zip(names, inspected):
            if name not in self.session.containers:
                self.session.bind(name, c["Id"], self.node)
        ifnames = self._ifnames(names)
        for name, c in zip(names, inspected):
            container = self._container(name, c, state.networks, ifnames.get(name, {}))
            state.containers[name] = container
            state.history[name] = container
            self._history[name] = container  # kept when the container goes (`docker rm -f`)
        for name, c in state.history.items():
            c.running = name in state.containers
        for net in state.networks.values():
            # `docker network inspect` shows only the gateways the user gave; the endpoints show the rest.
            for pool in net.pools:
                if pool.gateway is None:
                    pool.gateway = next((gw for ep in net.endpoints.values() for gw in (ep.gateway4, ep.gateway6)
                                         if gw is not None and pool.contains(gw)), None)
        return state

    def _network(self, n: dict) -> NetworkState:
        driver, options = n["Driver"], n.get("Options") or {}
        if driver == "macvlan":
            mode, flag = options.get("macvlan_mode") or "bridge", None
        else:
            mode, flag = options.get("ipvlan_mode") or "l2", options.get("ipvlan_flag") or "bridge"
        parent = options.get("parent") or ""
        # What the engine says: 20.10 gives a parentless network's containers a default route (not internal).
        internal = bool(n.get("Internal"))
        if not parent:
            parent = dummy_parent_name(driver, n["Id"])
        ipv6 = bool(n.get("EnableIPv6"))
        pools4, pools6 = [], []
        for cfg in (n.get("IPAM") or {}).get("Config") or []:
            subnet = ipaddress.ip_network(cfg["Subnet"], strict=False)
            pool = ipam.Pool(subnet=subnet,
                             ip_range=ipaddress.ip_network(cfg["IPRange"], strict=False) if cfg.get("IPRange") else None,
                             gateway=ipaddress.ip_address(cfg["Gateway"]) if cfg.get("Gateway") else None,
                             aux={k: ipaddress.ip_address(v) for k, v in (cfg.get("AuxiliaryAddresses") or {}).items()})
            (pools4 if subnet.version == 4 else pools6).append(pool)
        if not ipv6:
            pools6 = []
        create = self._creates.get(n["Name"])
        subnets = create.subnets if create else ()
        return NetworkState(id=n["Id"], name=n["Name"], driver=driver, mode=mode, flag=flag, parent=parent,
                            created_parent=False, internal=internal, ipv6=ipv6, pools4=pools4, pools6=pools6,
                            user_subnets4=any(":" not in s for s in subnets),
                            user_subnets6=any(":" in s for s in subnets))

    def _ifnames(self, names: list[str]) -> dict[str, dict[str, str]]:
        """Each container's interfaces by address: which eth<N> Docker gave each endpoint."""
        results = self.session.run_many([(n, ["ip", "-json", "addr", "show"]) for n in names], timeout=10)
        out: dict[str, dict[str, str]] = {}
        for name, res in zip(names, results):
            table: dict[str, str] = {}
            try:
                links = json.loads(res.stdout or "[]") if res.ok else []
            except json.JSONDecodeError:
                links = []
            for link in links:
                table[f"mac {link.get('address', '')}"] = link["ifname"]
                for a in link.get("addr_info", ()):
                    table[a["local"]] = link["ifname"]
            out[name] = table
        return out

    def _container(self, name: str, c: dict, networks: dict, ifnames: dict[str, str],
                   default_ifname: str = "?") -> ContainerState:
        settings = (c.get("NetworkSettings") or {}).get("Networks") or {}
        container = ContainerState(name=name, id=c["Id"], running=bool((c.get("State") or {}).get("Running")))
        hostname = (c.get("Config") or {}).get("Hostname") or ""
        mode = str((c.get("HostConfig") or {}).get("NetworkMode") or "")
        # One the user gave (`--hostname`), not Docker's short id, nor the name Docker copies into a container
        # that shares the host's or another container's namespaces (`--net=host`, `--net=container:X`).
        if hostname and hostname != c["Id"][:12] and mode != "host" and not mode.startswith("container:"):
            container.config = {"hostname": hostname}
        endpoints = []
        for net_name, s in settings.items():
            net = networks.get(net_name)
            if net is None:
                continue  # not a macvlan/ipvlan network: outside what the harness judges
            addresses = []
            if s.get("IPAddress"):
                addresses.append((ipaddress.ip_address(s["IPAddress"]), int(s.get("IPPrefixLen") or 0)))
            if s.get("GlobalIPv6Address"):
                addresses.append((ipaddress.ip_address(s["GlobalIPv6Address"]), int(s.get("GlobalIPv6PrefixLen") or 0)))
            ifname = next((ifnames[str(ip)] for ip, _ in addresses if str(ip) in ifnames), None)
            if ifname is None and s.get("MacAddress"):
                ifname = ifnames.get(f"mac {s['MacAddress']}")
            ep = Endpoint(network=net_name, ifname=ifname or default_ifname, child="", addresses=addresses,
                          mac=s.get("MacAddress") or None,
                          gateway4=ipaddress.ip_address(s["Gateway"]) if s.get("Gateway") else None,
                          gateway6=ipaddress.ip_address(s["IPv6Gateway"]) if s.get("IPv6Gateway") else None,
                          connected_default=net.driver == "ipvlan" and net.mode in ("l3", "l3s"))
            net.endpoints[name] = ep
            endpoints.append(ep)
            container.ipv6 = container.ipv6 or net.ipv6
        container.endpoints = sorted(endpoints, key=lambda e: _ifname_order(e.ifname))
        container.interfaces_made = len(endpoints)
        return container


class RealFleet:
    """Several Docker hosts, each with its own real dockerd in its namespace (issue #13): every command goes
    to the `RealDocker` of the host it names, and what they built is read as a `Fleet`."""

    def __init__(self, compiled, session):
        self.compiled = compiled
        self.hosts = {h.name: RealDocker(compiled, session, h.name) for h in compiled.scenario.hosts}
        self.name = "real docker"

    @property
    def version(self) -> str:
        return next(iter(self.hosts.values())).version

    def execute(self, step: Step) -> StepOutcome:
        docker = self.hosts[step.host]
        outcome = docker.execute(step)
        self.name = docker.name
        return outcome

    def finish(self, outcome: StepOutcome) -> None:
        self.hosts[outcome.step.host].finish(outcome)

    @property
    def state(self) -> Fleet:
        return Fleet({host: docker.state for host, docker in self.hosts.items()})


def _read(path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _ifname_order(ifname: str) -> tuple[int, str]:
    digits = "".join(ch for ch in ifname if ch.isdigit())
    return (int(digits) if digits else 1 << 30, ifname)


def _without_terminal(flags: list[str]) -> list[str]:
    """A transient run's flags without -t and -d: it runs in the foreground and needs no TTY."""
    out = []
    for flag in flags:
        if re.fullmatch(r"-[a-zA-Z]+", flag) and set(flag[1:]) <= set("itd"):
            kept = flag[1:].replace("t", "").replace("d", "")
            if kept:
                out.append("-" + kept)
            continue
        if flag in ("--tty", "--detach") or flag.startswith(("--tty=", "--detach=")):
            continue
        out.append(flag)
    return out
