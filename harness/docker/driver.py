"""libnetwork's macvlan/ipvlan driver semantics: Docker commands -> plan operations and Docker's answers.

`DockerEmulator` keeps what a Docker daemon would know (host links and who created them, networks with
their `Pool`s, containers with their `Endpoint`s) and turns each `Step` into a `CompiledStep`: the
operations libnetwork would perform on the kernel, or Docker's error message, verbatim. The emulator is
transactional (`snapshot`/`restore`) so the engine can roll a command back when the kernel refuses one
of its operations, as Docker does. Its state is made of `harness.docker.state`'s classes, which the
oracle and `harness plan --json` (`harness.docker.describe`) read afterwards.

`DockerEmulator` combines `harness.docker.networks.NetworksMixin` and
`harness.docker.containers.ContainersMixin`; the helpers they share live in `harness.docker.common`
and are re-exported here.
"""

from __future__ import annotations

import ipaddress
import pickle
import random

from harness.docker import ipam
from harness.docker.choices import ChoicePoint, pin
from harness.docker.common import (  # noqa: F401  (re-exported: harness.loader imports DRIVERS from here)
    DRIVERS,
    IPVLAN_FLAGS,
    IPVLAN_MODES,
    IPVLAN_MODES_20,
    MACVLAN_MODES,
    _hex_id,
    _natural,
    default_routes,
    dummy_parent_name,
    network_resource,
)
from harness.docker.containers import ContainersMixin
from harness.docker.networks import NetworksMixin
from harness.docker.profiles import DEFAULT_PROFILE, Profile, get_profile
from harness.docker.state import ContainerState, HostLink, NetworkState
from harness.errors import DockerError
from harness.model import (
    ContainerRemove,
    ContainerRun,
    ContainerStop,
    DaemonRestart,
    DockerHost,
    HostAddressAdd,
    HostLinkAdd,
    HostLinkDelete,
    HostLinkUp,
    HostRouteAdd,
    NetworkConnect,
    NetworkCreate,
    NetworkDisconnect,
    NetworkInspect,
    NetworkList,
    NetworkRemove,
    Refused,
    Scenario,
    Step,
)
from harness.plan import (
    AddAddress,
    AddLink,
    AddRoute,
    CompiledStep,
    DeleteLink,
    Op,
    SetLink,
)


class DockerEmulator(NetworksMixin, ContainersMixin):
    """A Docker daemon's view of one host, reduced to what the macvlan and ipvlan drivers do."""

    def __init__(self, scenario: Scenario, profile: str | Profile = DEFAULT_PROFILE, host: DockerHost | None = None):
        self.scenario = scenario
        self.profile = profile if isinstance(profile, Profile) else get_profile(profile)
        # The Docker host this daemon runs on (the first, or the only one): its node and NICs.
        self.host = host if host is not None else scenario.topology.hosts[0]
        self.node = self.host.name
        # What ids, MACs drawn at random and ULA prefixes derive from: the scenario for the first host (as
        # ever), the scenario and the host for the others, so two daemons never make the same ids.
        first = scenario.topology.hosts[0].name
        self.seed = scenario.name if self.host.name == first else f"{scenario.name}@{self.host.name}"
        self.host_links: dict[str, HostLink] = {nic.name: HostLink(nic.name, "veth") for nic in self.host.nics}
        self.networks: dict[str, NetworkState] = {}
        self.containers: dict[str, ContainerState] = {}
        self.stopped: dict[str, ContainerState] = {}  # exited, not removed: they keep their names
        self.history: dict[str, ContainerState] = {}  # every container ever started, last state
        self.address_space = ipam.AddressSpace()
        for pool in self.profile.reserved_pools:
            self.address_space.reserve(ipaddress.ip_network(pool))
        self.shared: dict[str, ContainerState] = {}  # --net=host / container:X: no namespace of their own
        self.outputs: dict[int, str] = {}  # step index -> what the command prints (network inspect, ls)
        self.notes: list[str] = []  # where Docker's own choice is not deterministic
        self.choice_points: dict[str, ChoicePoint] = {}  # the random choices met, by key
        self.printed: list[str] = []  # the names the current command prints (network rm, rm, stop, ...)
        self.counter = 0
        self.clock = 0  # seconds after 2026-01-01T00:00:00Z: network Created times
        self.rng = random.Random(self.seed)

    # -- transactions -------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        # A pickle round trip is a deep copy at 2.4x deepcopy's speed (measured on every shipped scenario's
        # compile: 0.18 s against 0.075 s on the host; it is most of the compile time, and a TCG guest pays 10x).
        return pickle.dumps({k: v for k, v in self.__dict__.items() if k not in ("scenario", "profile", "host")},
                            protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, snap: bytes) -> None:
        # What the plan says about Docker's nondeterminism survives a refused command.
        notes, points = self.notes, self.choice_points
        self.__dict__.update(pickle.loads(snap))
        self.notes, self.choice_points = notes, points

    def choose(self, key: str, items: list, labels: list[str], note: str, seen_in: tuple[str, str] = ("", "")
               ) -> list:
        """One of Docker's random choices: recorded, and taken in command-line order unless pinned.
        `seen_in` is the fact (kind, node) whose value shows the order a real engine took."""
        self.choice_points.setdefault(key, ChoicePoint(key, tuple(labels), note, seen_in))
        self.notes.append(note)
        return pin(self.scenario, key, items, labels)

    # -- entry point ----------------------------------------------------------------------------------

    def compile(self, step: Step) -> CompiledStep:
        """Docker's reaction to one command: the operations it performs, or its error message."""
        snap = self.snapshot()
        try:
            return self._dispatch(step)
        except DockerError as exc:
            self.restore(snap)
            return CompiledStep(step=step, error=exc.message)

    def _dispatch(self, step: Step) -> CompiledStep:
        """One command; what the CLI prints on success goes to `outputs` (docker/cli v20.10.24 and v29.0.0:
        network create prints the new network's full id (network/create.go:122, :128), `run -d` the
        container's full id (container/run.go:148, :166), network rm, rm, stop, start and restart each name
        they acted on, as given (network/remove.go:46, container/rm.go:72, stop.go:61, start.go:192))."""
        cmd = step.command
        self.printed = []
        compiled = self._dispatch_command(step)
        if compiled.error is None and isinstance(cmd, NetworkCreate):
            self.outputs[step.index] = self.networks[cmd.name].id
        elif compiled.error is None and isinstance(cmd, ContainerRun) and cmd.detach:
            self.outputs[step.index] = self.history[cmd.name].id
        elif self.printed:
            self.outputs[step.index] = "\n".join(self.printed)
        return compiled

    def _dispatch_command(self, step: Step) -> CompiledStep:
        cmd = step.command
        if isinstance(cmd, Refused):  # refused before anything happens (a name Docker or iproute2 refuses)
            raise DockerError(cmd.message)
        if isinstance(cmd, NetworkCreate):
            return CompiledStep(step, ops=self._network_create(cmd))
        if isinstance(cmd, NetworkRemove):
            # docker network rm reports every failure but still removes the others.
            ops, errors = self._network_remove(cmd)
            return CompiledStep(step, ops=ops, error="\n".join(errors) or None)
        if isinstance(cmd, ContainerRun):
            return self._run(step, cmd)
        if isinstance(cmd, NetworkConnect):
            return CompiledStep(step, ops=self._connect(cmd))
        if isinstance(cmd, NetworkDisconnect):
            return CompiledStep(step, ops=self._disconnect(cmd))
        if isinstance(cmd, ContainerRemove):
            ops, errors = self._remove(cmd)
            return CompiledStep(step, ops=ops, error="\n".join(errors) or None)
        if isinstance(cmd, HostLinkAdd):
            return CompiledStep(step, ops=self._host_link_add(cmd))
        if isinstance(cmd, HostLinkUp):
            self._host_link(cmd.name)
            return CompiledStep(step, ops=(SetLink(self.node, cmd.name, up=True),))
        if isinstance(cmd, HostLinkDelete):
            self._host_link(cmd.name)
            del self.host_links[cmd.name]
            return CompiledStep(step, ops=(DeleteLink(self.node, cmd.name),))
        if isinstance(cmd, HostAddressAdd):
            self._host_link(cmd.dev)
            return CompiledStep(step, ops=(AddAddress(self.node, cmd.dev, cmd.address, nodad=True),))
        if isinstance(cmd, HostRouteAdd):
            self._host_link(cmd.dev)
            family = 6 if ":" in cmd.dst else 4
            return CompiledStep(step, ops=(AddRoute(self.node, cmd.dst, cmd.dev, gateway=cmd.via, family=family),))
        if isinstance(cmd, ContainerStop):
            ops, errors = self._stop_start(cmd)
            return CompiledStep(step, ops=ops, error="\n".join(errors) or None)
        if isinstance(cmd, NetworkInspect):
            text, errors = self._inspect(cmd)
            self.outputs[step.index] = text
            return CompiledStep(step, error="\n".join(errors) or None)
        if isinstance(cmd, NetworkList):
            self.outputs[step.index] = self._list(cmd)
            return CompiledStep(step)
        if isinstance(cmd, DaemonRestart):
            return CompiledStep(step, ops=self._daemon_restart(step))
        raise TypeError(f"no driver semantics for {type(cmd).__name__}")

    # -- host links -----------------------------------------------------------------------------------

    def _host_link(self, name: str) -> HostLink:
        link = self.host_links.get(name)
        if link is None:
            raise DockerError(f'Cannot find device "{name}"')
        return link

    def _host_link_add(self, cmd: HostLinkAdd) -> tuple[Op, ...]:
        self._host_link(cmd.parent)
        if cmd.name in self.host_links:
            raise DockerError("RTNETLINK answers: File exists")
        if cmd.kind == "macvlan":
            # The host-side macvlan shim of the documentation's workaround (the host reaches its containers).
            self.host_links[cmd.name] = HostLink(cmd.name, "macvlan", parent=cmd.parent, owner="user")
            return (AddLink(self.node, cmd.name, "macvlan", parent=cmd.parent, mode=cmd.mode,
                            error_format="RTNETLINK answers: {strerror}"),)
        if not 0 <= cmd.vlan_id <= 4095:
            raise DockerError(f'vlan id "{cmd.vlan_id}" is invalid')
        self.host_links[cmd.name] = HostLink(cmd.name, "vlan", parent=cmd.parent, vlan_id=cmd.vlan_id, owner="user")
        return (AddLink(self.node, cmd.name, "vlan", parent=cmd.parent, vlan_id=cmd.vlan_id,
                        error_format="RTNETLINK answers: {strerror}"),)

    # -- views ----------------------------------------------------------------------------------------

    def vlan_of(self, link_name: str) -> int | None:
        """The VLAN a host link tags with (following a parent chain), None when untagged or internal."""
        link = self.host_links.get(link_name)
        while link is not None:
            if link.kind == "vlan":
                return link.vlan_id
            link = self.host_links.get(link.parent) if link.parent else None
        return None
