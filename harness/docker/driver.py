"""libnetwork's macvlan/ipvlan driver semantics: Docker commands -> plan operations and Docker's answers.

`DockerEmulator` keeps what a Docker daemon would know (host links and who created them, networks with
their `Pool`s, containers with their `Endpoint`s) and turns each `Step` into a `CompiledStep`: the
operations libnetwork would perform on the kernel, or Docker's error message, verbatim. The emulator is
transactional (`snapshot`/`restore`) so the engine can roll a command back when the kernel refuses one
of its operations, as Docker does. Its state is made of `harness.docker.state`'s classes, which the
oracle and `harness plan --json` (`harness.docker.describe`) read afterwards.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
import random
import re

from harness.docker import ipam
from harness.docker.profiles import DEFAULT_PROFILE, Profile, get_profile
from harness.docker.state import ContainerState, Endpoint, HostLink, NetworkState
from harness.errors import DockerError
from harness.model import (
    ContainerRemove,
    ContainerRun,
    ContainerStop,
    DaemonRestart,
    HostAddressAdd,
    HostLinkAdd,
    HostLinkDelete,
    HostLinkUp,
    HostRouteAdd,
    IPAddress,
    NetworkConnect,
    NetworkCreate,
    NetworkDisconnect,
    NetworkInspect,
    NetworkList,
    NetworkRemove,
    Refused,
    Scenario,
    Step,
    is_ip_address,
)
from harness.plan import (
    AddAddress,
    AddLink,
    AddRoute,
    CompiledStep,
    CreateNode,
    DeleteLink,
    DeleteNode,
    MoveLink,
    Op,
    ReachCheck,
    SetLink,
    SetSysctl,
)

MACVLAN_MODES = ("bridge", "private", "vepa", "passthru")
IPVLAN_MODES = ("l2", "l3", "l3s")
IPVLAN_MODES_20 = ("l2", "l3")  # l3s and ipvlan_flag came with moby v23.0.0 (commit f70a9788c5)
IPVLAN_FLAGS = ("bridge", "private", "vepa")
DRIVERS = ("macvlan", "ipvlan")
HOST = "host"


def _hex_id(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def dummy_parent_name(driver: str, network_id: str) -> str:
    """libnetwork's getDummyName: dm-<12 hex> for macvlan, di-<12 hex> for ipvlan (15 chars: IFNAMSIZ)."""
    return ("dm-" if driver == "macvlan" else "di-") + network_id[:12]


class DockerEmulator:
    """A Docker daemon's view of one host, reduced to what the macvlan and ipvlan drivers do."""

    def __init__(self, scenario: Scenario, profile: str | Profile = DEFAULT_PROFILE):
        self.scenario = scenario
        self.profile = profile if isinstance(profile, Profile) else get_profile(profile)
        self.host_links: dict[str, HostLink] = {scenario.topology.host_parent: HostLink(scenario.topology.host_parent, "veth")}
        for nic, _ in scenario.topology.host_nics:
            self.host_links[nic] = HostLink(nic, "veth")
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
        self.counter = 0
        self.clock = 0  # seconds after 2026-01-01T00:00:00Z: network Created times
        self.rng = random.Random(scenario.name)

    # -- transactions -------------------------------------------------------------------------------

    def snapshot(self) -> dict:
        return copy.deepcopy({k: v for k, v in self.__dict__.items() if k not in ("scenario", "profile")})

    def restore(self, snap: dict) -> None:
        notes = self.notes  # what the plan says about Docker's nondeterminism survives a refused command
        self.__dict__.update(copy.deepcopy(snap))
        self.notes = notes

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
            return CompiledStep(step, ops=(SetLink(HOST, cmd.name, up=True),))
        if isinstance(cmd, HostLinkDelete):
            self._host_link(cmd.name)
            del self.host_links[cmd.name]
            return CompiledStep(step, ops=(DeleteLink(HOST, cmd.name),))
        if isinstance(cmd, HostAddressAdd):
            self._host_link(cmd.dev)
            return CompiledStep(step, ops=(AddAddress(HOST, cmd.dev, cmd.address, nodad=True),))
        if isinstance(cmd, HostRouteAdd):
            self._host_link(cmd.dev)
            family = 6 if ":" in cmd.dst else 4
            return CompiledStep(step, ops=(AddRoute(HOST, cmd.dst, cmd.dev, gateway=cmd.via, family=family),))
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

    # -- networks -------------------------------------------------------------------------------------

    def _network_create(self, cmd: NetworkCreate) -> tuple[Op, ...]:
        configs = ipam.consolidate_ipam(cmd.subnets, cmd.ip_ranges, cmd.gateways, cmd.aux_addresses)
        if cmd.name in self.networks:
            raise DockerError(f"network with name {cmd.name} already exists")
        if self.profile.canonical_subnet == "rejected":
            # moby v27.5.1 api/types/network/ipam.go:34-76 ValidateIPAM (since v25.0).
            wrong = [f"invalid subnet {c.text}: it should be {c.subnet}" for c in configs
                     if c.text and str(ipaddress.ip_interface(c.text).ip) != str(c.subnet.network_address)]
            if wrong:
                raise DockerError("invalid network config:\n" + "\n".join(wrong if len(wrong) == 1 else [f"* {w}" for w in wrong]))
        self.counter += 1
        net_id = _hex_id(self.scenario.name, cmd.name, str(self.counter))
        parent_given = cmd.option("parent") or ""
        # The driver's own internal flag: --internal, or (moby 28+) no parent at all.
        internal = cmd.internal or (not parent_given and self.profile.no_parent_internal)
        if self.profile.driver_checks_first:
            mode, flag = self._driver_mode(cmd)  # moby 28+: parseNetworkOptions runs from GetSkipGwAlloc
            self._check_lo(cmd, parent_given)
        else:
            mode, flag = None, None

        v4 = [c for c in configs if c.subnet.version == 4]
        v6 = [c for c in configs if c.subnet.version == 6] if cmd.ipv6 else []
        if cmd.ipv6 and not v6:
            if self.profile.ipv6_without_subnet == "error":
                raise DockerError(ipam.NO_V6_POOL)
            v6 = [ipam.IPAMConfig(subnet=self.address_space.default_v6(self._ula_base()))]
        if not v4:
            exclude = () if self.profile.pool_allocation == "rotate" else self.scenario.topology.host_addresses
            v4 = [ipam.IPAMConfig(subnet=self.address_space.default_v4(
                rotate=self.profile.pool_allocation == "rotate",
                exclude=tuple(a.network for a in exclude)))]
        skip_gateway = self._skip_gateway(cmd, internal)
        pools4 = [self._make_pool(c, skip_gateway) for c in v4]
        pools6 = [self._make_pool(c, skip_gateway) for c in v6]
        for kind, version in (("IPv4", 4), ("IPv6", 6)):
            if len([c for c in configs if c.subnet.version == version]) > 1:
                self.notes.append(
                    f"network {cmd.name}: Docker's CLI sends its {kind} subnets in Go map order (random; docker/cli "
                    "v20.10.24 cli/command/network/create.go:222-226), so which subnet a container's dynamic "
                    "address comes from is not deterministic; the harness takes the command-line order")

        # The driver's checks come after IPAM in 20.10 (libnetwork controller.go NewNetwork).
        if mode is None:
            mode, flag = self._driver_mode(cmd)
            self._check_lo(cmd, parent_given)
        parent = parent_given or dummy_parent_name(cmd.driver, net_id)
        for other in self.networks.values():
            # Each driver keeps its own network list: macvlan checks macvlan networks only.
            if other.driver == cmd.driver and other.parent == parent:
                conflict = self._parent_conflict(cmd.driver, mode, other, parent)
                if conflict:
                    raise DockerError(conflict)

        ops: list[Op] = []
        created = False
        if parent not in self.host_links:
            created = True
            if not parent_given:
                # A dummy link failure is the bare netlink error (macvlan_setup.go:162-171).
                ops += [AddLink(HOST, parent, "dummy", error_format="{error}"), SetLink(HOST, parent, up=True)]
                self.host_links[parent] = HostLink(parent, "dummy", owner=net_id)
            else:
                lower, vid = self._parse_vlan_parent(parent)
                ops += [
                    AddLink(HOST, parent, "vlan", parent=lower, vlan_id=vid,
                            error_format="failed to create {name} vlan link: {error}"),
                    SetLink(HOST, parent, up=True),
                ]
                self.host_links[parent] = HostLink(parent, "vlan", parent=lower, vlan_id=vid, owner=net_id)
        else:
            # moby 27.0.1+: a network joining a shared parent copies the driver-created flag.
            created = any(n.created_parent for n in self.networks.values() if n.parent == parent and n.driver == cmd.driver)

        self.clock += 1
        self.networks[cmd.name] = NetworkState(
            id=net_id, name=cmd.name, driver=cmd.driver, mode=mode, flag=flag, parent=parent,
            created_parent=created, internal=internal, ipv6=cmd.ipv6, pools4=pools4, pools6=pools6,
            user_subnets4=any(":" not in sub for sub in cmd.subnets),
            user_subnets6=any(":" in sub for sub in cmd.subnets),
            options=cmd.options, user_internal=cmd.internal,
            ipam_config=tuple(self._inspect_config(c) for c in configs), created_at=self.clock,
        )
        return tuple(ops)

    @staticmethod
    def _inspect_config(c: ipam.IPAMConfig) -> dict:
        """network inspect shows the user's subnets as given (moby v20.10.24 daemon/network.go:675-733)."""
        out = {"Subnet": c.text or str(c.subnet)}
        if c.ip_range is not None:
            out["IPRange"] = str(c.ip_range)
        if c.gateway is not None:
            out["Gateway"] = str(c.gateway)
        if c.aux:
            out["AuxiliaryAddresses"] = {k: str(v) for k, v in c.aux}
        return out

    def _ula_base(self) -> ipaddress.IPv6Network:
        """moby 27+'s ULA /48 for --ipv6 without a subnet: fd + 40 bits of sha256(host id). The engine's
        host ID is not known here: the scenario name stands in for it, so the prefix is the harness's own."""
        gid = int(hashlib.sha256(self.scenario.name.encode()).hexdigest(), 16) & ((1 << 40) - 1)
        return ipaddress.IPv6Network(((0xFD << 120) | (gid << 80), 48))

    def _skip_gateway(self, cmd: NetworkCreate, internal: bool) -> bool:
        policy = self.profile.default_gateway
        if policy == "never":
            return True
        if policy == "unless-internal":
            mode = cmd.option("ipvlan_mode") or "l2"
            return internal or (cmd.driver == "ipvlan" and mode in ("l3", "l3s"))
        return False

    def _check_lo(self, cmd: NetworkCreate, parent: str) -> None:
        if parent == "lo":
            raise DockerError(f"loopback interface is not a valid {cmd.driver} parent link")

    def _make_pool(self, cfg: ipam.IPAMConfig, skip_gateway: bool = False) -> ipam.Pool:
        bitmap = self.address_space.reserve(cfg.subnet, cfg.ip_range)
        pool = ipam.Pool(subnet=cfg.subnet, ip_range=cfg.ip_range, allocated=bitmap, rfc3021=self.profile.rfc3021)
        try:
            if cfg.gateway is not None:
                pool.gateway = pool.request(cfg.gateway)
            elif not skip_gateway:
                pool.gateway = pool.request()
        except DockerError as exc:
            # moby v20.10.24 libnetwork/network.go:1663-1669 (the user's --gateway, empty when none).
            raise DockerError(f"failed to allocate gateway ({cfg.gateway or ''}): {exc.message}") from None
        for name, ip in cfg.aux:
            try:
                pool.aux[name] = pool.request(ip)
            except DockerError as exc:
                raise DockerError(f"failed to allocate secondary ip address ({name}:{ip}): {exc.message}") from None
        return pool

    def _driver_mode(self, cmd: NetworkCreate) -> tuple[str, str | None]:
        if cmd.driver == "macvlan":
            mode = cmd.option("macvlan_mode") or "bridge"
            if mode not in MACVLAN_MODES:
                raise DockerError(
                    f"requested macvlan mode '{mode}' is not valid, 'bridge' mode is the macvlan driver default"
                )
            return mode, None
        mode = cmd.option("ipvlan_mode") or "l2"
        modes = IPVLAN_MODES if self.profile.ipvlan_l3s_and_flag else IPVLAN_MODES_20
        if mode not in modes:
            raise DockerError(f"requested ipvlan mode '{mode}' is not valid, 'l2' mode is the ipvlan driver default")
        if not self.profile.ipvlan_l3s_and_flag:
            return mode, None  # 20.10 reads parent and ipvlan_mode only (ipvlan_network.go:225-235)
        flag = cmd.option("ipvlan_flag") or "bridge"
        if flag not in IPVLAN_FLAGS:
            raise DockerError(f"requested ipvlan flag '{flag}' is not valid, 'bridge' is the ipvlan driver default")
        return mode, flag

    def _parent_conflict(self, driver: str, mode: str, other: NetworkState, parent: str) -> str | None:
        """Docker's refusal of a second network on `parent`, or None when the parent may be shared."""
        exclusive = f"network {dummy_parent_name(driver, other.id)} is already using parent interface {parent}"
        if driver == "ipvlan" or self.profile.parent_sharing == "exclusive":
            return exclusive
        # moby 27.0.1+ (docker-v29.7.2 drivers/macvlan/macvlan_network.go:79-90): shared unless passthru.
        if mode == "passthru":
            return f"cannot use mode passthru, macvlan network {other.id} is already using parent interface {parent}"
        if other.mode == "passthru":
            return f"macvlan network {other.id} is already using parent interface {parent} in mode passthru"
        return None

    def _parse_vlan_parent(self, parent: str) -> tuple[str, int]:
        """libnetwork's createVlanLink/parseVlan checks, in their order and words (moby v20.10.24
        libnetwork/drivers/macvlan/macvlan_setup.go:84-155; the 20.10 typo `does was` is its own)."""
        if "." not in parent:
            raise DockerError(f"invalid subinterface vlan name {parent}, example formatting is eth0.10")
        parts = parent.split(".")
        if len(parts) != 2:
            raise DockerError(
                "required interface name format is: name.vlan_id, ex. eth0.10 for vlan 10, "
                f"instead received {parent}"
            )
        lower, vid_text = parts
        try:
            vid = int(vid_text)
        except ValueError:
            raise DockerError(f"unable to parse a valid vlan id from: {vid_text} (ex. eth0.10 for vlan 10)") from None
        if lower not in self.host_links:
            typo = "does was" if self.profile.parent_typo else "was"
            raise DockerError(f"-o parent interface {typo} not found on the host: {lower}")
        if not 1 <= vid <= 4094:
            raise DockerError(f"vlan id must be between 1-4094, received: {vid}")
        return lower, vid

    def _network(self, name: str) -> NetworkState:
        net = self.networks.get(name)
        if net is None:
            net = next((n for n in self.networks.values() if n.id.startswith(name) and len(name) >= 12), None)
        if net is None:
            raise DockerError(f"network {name} not found")
        return net

    def _network_remove(self, cmd: NetworkRemove) -> tuple[tuple[Op, ...], list[str]]:
        ops: list[Op] = []
        errors: list[str] = []
        for name in cmd.networks:
            try:
                net = self._network(name)
            except DockerError as exc:
                errors.append(f"Error: No such network: {name}" if self.profile.client_wraps_not_found else exc.message)
                continue
            if net.endpoints:
                if self.profile.busy_network_text == "id":
                    errors.append(f"error while removing network: network {net.name} id {net.id} has active endpoints")
                else:
                    eps = ", ".join(f'name:"{n}" id:"{_hex_id(net.id, n, "endpoint")[:12]}"' for n in net.endpoints)
                    errors.append(f"error while removing network: network {net.name} has active endpoints ({eps})")
                continue
            link = self.host_links.get(net.parent)
            still_used = any(n.parent == net.parent for n in self.networks.values() if n is not net)
            if still_used and link is not None and link.owner == net.id:
                # A parent shared by several networks (moby 27.0.1+) goes with the last of them.
                link.owner = next(n.id for n in self.networks.values() if n is not net and n.parent == net.parent)
            elif net.created_parent and link is not None and not still_used:
                # Only the links the driver created are deleted; a parent made by hand survives.
                ops.append(DeleteLink(HOST, net.parent))
                del self.host_links[net.parent]
            for pool in net.pools:
                self.address_space.release(pool.subnet, pool.ip_range)
            del self.networks[net.name]
        return tuple(ops), errors

    # -- containers -----------------------------------------------------------------------------------

    def _run(self, step: Step, cmd: ContainerRun) -> CompiledStep:
        # Create-time checks (moby v20.10.24 daemon/create.go, runconfig/hostconfig.go): nothing is left.
        nets = cmd.networks or ((cmd.network,) if cmd.network else ())
        if len(nets) > self.profile.networks_per_run:
            self.notes.append("`docker run` with several networks: Docker 20.10 names them in Go map order (random; "
                              "daemon/create.go:331-341; seen on a real 20.10 engine), match them with `*`")
            raise DockerError(f"Container cannot be connected to network endpoints: {', '.join(nets)}")
        first = nets[0] if nets else ""
        net_mode = first if first in ("host", "none") or first.startswith("container:") else ""
        if first == "container:":
            raise DockerError("Invalid network mode: invalid container format container:<name|id>")
        if cmd.mac_address and (net_mode == "host" or net_mode.startswith("container:")):
            raise DockerError("conflicting options: mac-address and the network mode")
        if cmd.hostname and net_mode.startswith("container:"):
            raise DockerError("conflicting options: hostname and the network mode")
        if cmd.ip is not None and (not is_ip_address(cmd.ip) or ipaddress.ip_address(cmd.ip).version != 4):
            raise DockerError(f"invalid IPv4 address: {cmd.ip}")
        if cmd.ip6 is not None and (not is_ip_address(cmd.ip6) or ipaddress.ip_address(cmd.ip6).version != 6):
            raise DockerError(f"invalid IPv6 address: {cmd.ip6}")
        check = self.profile.ip_outside_subnets
        if check != "ipam" and cmd.ip is not None and not net_mode and nets[0] in self.networks:
            net = self.networks[nets[0]]
            ip = ipaddress.ip_address(cmd.ip)
            if net.user_subnets4 and not any(p.contains(ip) for p in net.pools4):
                # moby 27+: the endpoint settings are checked at create, wrapped twice (nothing is left).
                raise DockerError(f"invalid config for network {net.name}: invalid endpoint settings:\n"
                                  + check.format(ip=cmd.ip))
        holder = next((pool[cmd.name] for pool in (self.containers, self.shared, self.stopped) if cmd.name in pool), None)
        if holder is not None:
            raise DockerError(
                f'Conflict. The container name "/{cmd.name}" is already in use by container "{holder.id}". '
                "You have to remove (or rename) that container to be able to reuse that name."
            )
        if not nets:
            raise DockerError("the harness emulates macvlan/ipvlan networks only: give --net/--network")
        self.counter += 1
        container = ContainerState(
            name=cmd.name, id=_hex_id(self.scenario.name, "container", cmd.name, str(self.counter)),
            transient=cmd.transient, status="created", net_mode=net_mode,
            gateway_score=self.profile.gateway_score,
            config={"networks": [] if net_mode else [
                        {"name": n, "ip": cmd.ip if i == 0 else None, "ip6": cmd.ip6 if i == 0 else None,
                         "aliases": ()} for i, n in enumerate(nets)],
                    "mac": cmd.mac_address, "hostname": cmd.hostname, "restart": cmd.restart,
                    "remove": cmd.remove, "manually_stopped": False})
        # Start: a failure leaves the container Created, holding its name (moby v20.10.24 daemon/start.go:118-141;
        # seen on a real 20.10 engine), unless --rm.
        snap = self.snapshot()
        try:
            ops = self._start(container)
        except DockerError as exc:
            self.restore(snap)
            container.endpoints, container.interfaces_made, container.running = [], 0, False
            if not cmd.remove:
                self.stopped[cmd.name] = container
            return CompiledStep(step, error=exc.message)
        self.history[cmd.name] = container
        probe = cmd.probe
        if probe is None:
            return CompiledStep(step, ops=tuple(ops))
        # A transient container: it pings, exits, and (with or without --rm) releases its addresses.
        net = self._network(nets[0]) if not net_mode else None
        target = self._resolve(probe.target, net) if net else probe.target
        family = probe.family or (ipaddress.ip_address(target).version if is_ip_address(target) else 4)
        check = ReachCheck(src=cmd.name, dst=target, family=family, command=" ".join(cmd.command))
        self._release_container(container)
        self.containers.pop(cmd.name, None)
        container.running, container.status = False, "exited"
        if not cmd.remove:
            self.stopped[cmd.name] = container  # an exited container keeps its name until `docker rm`
        return CompiledStep(step, ops=tuple(ops), check=check, cleanup=(DeleteNode(cmd.name),))

    def _start(self, container: ContainerState) -> list[Op]:
        """Start a created or exited container: a new sandbox (eth0 again), its networks joined in order
        (20.10 ranges over a Go map there, daemon/container_operations.go:529-583; see `notes`)."""
        name = container.name
        container.endpoints, container.interfaces_made = [], 0
        mode = container.net_mode
        if mode == "host" or mode.startswith("container:"):
            if mode.startswith("container:"):
                other_name = mode.removeprefix("container:")
                if other_name == name:
                    raise DockerError("cannot join own network")
                other = self._find_container(other_name)
                if other is None:
                    raise DockerError(f"No such container: {other_name}")
                if other.status != "running":
                    raise DockerError(f"cannot join network of a non running container: {other_name}")
            container.running, container.status = True, "running"
            self.stopped.pop(name, None)
            self.shared[name] = container
            self.history[name] = container
            return []
        configs = container.config.get("networks", [])
        nets = []
        for cfg in configs:
            net = self._network(cfg["name"])
            nets.append((net, cfg))
        if len(nets) > 1:
            self.notes.append(f"container {name}: its {len(nets)} networks are joined in Go map order when it "
                              "starts (moby v20.10.24 daemon/container_operations.go:529-583), so which one is "
                              "eth0 is not deterministic; the harness takes the order they were given")
        container.ipv6 = any(net.ipv6 for net, _ in nets)
        ops: list[Op] = [CreateNode(name, "container")]
        if not container.ipv6:
            # Docker disables IPv6 in a container none of whose networks has it: no ::1, no link-local.
            ops += [SetSysctl(name, "net.ipv6.conf.all.disable_ipv6", "1"),
                    SetSysctl(name, "net.ipv6.conf.default.disable_ipv6", "1")]
        for i, (net, cfg) in enumerate(nets):
            if mode == "none":
                break
            mac = container.config.get("mac") if i == 0 else None
            ops += self._attach(container, net, cfg.get("ip"), cfg.get("ip6"), mac=mac, aliases=cfg.get("aliases", ()))
        container.running, container.status = True, "running"
        self.stopped.pop(name, None)
        self.containers[name] = container
        self.history[name] = container
        return ops

    def _stop(self, container: ContainerState, manual: bool = True) -> list[Op]:
        if container.status != "running":
            return []
        self._release_container(container)
        container.endpoints = []
        container.running, container.status = False, "exited"
        container.config["manually_stopped"] = manual
        own_node = container.name in self.containers
        self.containers.pop(container.name, None)
        self.shared.pop(container.name, None)
        self.stopped[container.name] = container
        return [DeleteNode(container.name)] if own_node else []

    def _stop_start(self, cmd: ContainerStop) -> tuple[tuple[Op, ...], list[str]]:
        ops: list[Op] = []
        errors: list[str] = []
        failed: list[str] = []
        for name in cmd.names:
            snap = self.snapshot()
            try:
                container = self._find_container(name)
                if container is None:
                    raise DockerError(f"No such container: {name}")
                done: list[Op] = []
                if cmd.action in ("stop", "restart"):
                    done += self._stop(container)
                if cmd.action in ("start", "restart") and container.status != "running":
                    if container.transient:
                        self.notes.append(f"`docker {cmd.action} {name}`: its ping runs again and exits; the "
                                          "harness does not probe it again")
                    else:
                        if cmd.action == "start":
                            container.config["manually_stopped"] = False
                        done += self._start(container)
                ops += done
            except DockerError as exc:
                self.restore(snap)
                errors.append(exc.message)
                failed.append(name)
        if failed and cmd.action == "start":
            errors.append(f"Error: failed to start containers: {', '.join(failed)}")  # docker/cli v20.10.24 start.go:188-196
        return tuple(ops), errors

    def _daemon_restart(self, step: Step) -> tuple[Op, ...]:
        """`systemctl restart docker` (moby v20.10.24, live-restore off): every container stops (their
        macvlan/ipvlan children go with their namespaces), `--rm` ones are removed; the networks and the
        parents the driver created stay (the drivers have no shutdown hook; at start they are re-created
        from the store only if missing); IPAM starts empty and re-reserves every network's pools and
        gateway (the default-pool rotation is back at the start); containers restart only with a restart
        policy (`always`, or `unless-stopped` when not stopped by hand; daemon/daemon.go:455-458), each
        requesting its dynamic addresses again (restartmanager/restartmanager.go:50-100)."""
        ops: list[Op] = []
        for container in [*self.containers.values(), *self.shared.values()]:
            ops += self._stop(container, manual=False)
        for name in [n for n, c in self.stopped.items() if c.config.get("remove")]:
            del self.stopped[name]
        self.address_space.start_index = 0
        restart = [c for c in self.stopped.values()
                   if not c.transient and c.status == "exited"
                   and (c.config.get("restart") == "always"
                        or (c.config.get("restart") == "unless-stopped" and not c.config.get("manually_stopped")))]
        dynamic = [c.name for c in restart if any(not n.get("ip") for n in c.config.get("networks", []))]
        if len(dynamic) > 1:
            self.notes.append(f"command {step.index}: containers {', '.join(dynamic)} restart in parallel "
                              "(moby v20.10.24 daemon/daemon.go:510-546), so which dynamic address each gets "
                              "is not deterministic; the harness restarts them in the order they were run")
        for container in restart:
            snap = self.snapshot()
            try:
                ops += self._start(container)
            except DockerError:
                self.restore(snap)  # dockerd only logs it; the container stays exited
        return tuple(ops)

    def _resolve(self, target: str, net: NetworkState) -> str:
        """Docker's embedded DNS: a container name on the same network resolves to its address."""
        if is_ip_address(target):
            return target
        ep = net.endpoints.get(target)
        if ep is not None and ep.addresses:
            return str(ep.addresses[0][0])
        return target

    def _attach(self, container: ContainerState, net: NetworkState, ip: str | None, ip6: str | None,
                mac: str | None = None, aliases: tuple[str, ...] = ()) -> list[Op]:
        """Endpoint creation and join: allocate, create the child in the host, move, address, route."""
        in_pool = self.profile.ip_without_subnet == "in-pool"
        if (ip and not net.user_subnets4 and not in_pool) or (ip6 and not net.user_subnets6 and not in_pool):
            raise DockerError(ipam.STATIC_IP_NEEDS_SUBNET)
        if mac and net.driver == "ipvlan":
            # moby v20.10.24 libnetwork/drivers/ipvlan/ipvlan_endpoint.go:26-27
            raise DockerError("ipvlan interfaces do not support custom mac address assignment")
        if self.profile.ifname_reuse == "lowest-free":
            used = {int(e.ifname[3:]) for e in container.endpoints if e.ifname[3:].isdigit()}
            number = next(i for i in range(len(used) + 1) if i not in used)
        else:
            number = container.interfaces_made
        ep = Endpoint(
            network=net.name,
            ifname=f"eth{number}",
            child="veth" + _hex_id(container.id, net.id)[:7],
            internal=net.internal, aliases=tuple(aliases), static_ip=ip, static_ip6=ip6,
        )
        ep.addresses.append(self._allocate(net.pools4, ip, 4, net))
        if net.ipv6:
            ep.addresses.append(self._allocate(net.pools6, ip6, 6, net))
        elif ip6:
            raise DockerError(ipam.invalid_address(ip6))
        v4 = ep.addresses[0][0]
        if net.driver == "macvlan":
            ep.mac = mac or (ipam.mac_from_ip(v4) if self.profile.mac == "ip" else self._random_mac())
        if net.driver == "ipvlan" and net.mode in ("l3", "l3s"):
            ep.connected_default = True
        elif not net.internal:
            ep.gateway4 = self._pool_of(net.pools4, v4).gateway
            if net.ipv6:
                ep.gateway6 = self._pool_of(net.pools6, ep.addresses[1][0]).gateway

        name = container.name
        ops: list[Op] = [
            AddLink(HOST, ep.child, net.driver, parent=net.parent, mode=net.mode, flag=net.flag,
                    error_format=f"failed to create the {net.driver} port: {{error}}"),
            MoveLink(HOST, ep.child, name, ep.ifname),
        ]
        if ep.mac:
            ops.append(SetLink(name, ep.ifname, mac=ep.mac))
        ops += [AddAddress(name, ep.ifname, cidr, nodad=True) for cidr in ep.cidrs()]
        ops.append(SetLink(name, ep.ifname, up=True))
        previous = container.gateway_endpoint()
        container.endpoints.append(ep)
        container.interfaces_made = max(container.interfaces_made, number) + 1
        net.endpoints[container.name] = ep
        if container.gateway_endpoint() is ep and (ep.gateway4 or ep.gateway6 or ep.connected_default):
            # An endpoint sorting before the current gateway endpoint takes the default route over.
            ops += default_routes(name, ep, net.ipv6, replace=previous is not None)
        return ops

    def _allocate(self, pools: list[ipam.Pool], wanted: str | None, version: int, net: NetworkState) -> tuple[IPAddress, int]:
        if wanted is not None:
            try:
                ip = ipaddress.ip_address(wanted)
            except ValueError:
                raise DockerError(f"invalid IPv{version} address: {wanted}") from None
            for pool in pools:
                if pool.contains(ip):
                    return pool.request(ip), pool.subnet.prefixlen
            raise DockerError(ipam.invalid_address(wanted))
        for pool in pools:
            try:
                return pool.request(), pool.subnet.prefixlen
            except DockerError as exc:
                if exc.message != ipam.NO_AVAILABLE_IPS:
                    raise
        raise DockerError(f"no available IPv{version} addresses on this network's address pools: {net.name} ({net.id})")

    @staticmethod
    def _pool_of(pools: list[ipam.Pool], ip: IPAddress) -> ipam.Pool:
        return next(p for p in pools if p.contains(ip))

    def _random_mac(self) -> str:
        octets = [self.rng.randrange(256) for _ in range(6)]
        octets[0] = (octets[0] & 0xFC) | 0x02  # unicast, locally administered
        return ":".join(f"{o:02x}" for o in octets)

    def _find_container(self, name: str) -> ContainerState | None:
        """A container by name or id prefix, whatever its state (running, exited, created, host mode)."""
        for pool in (self.containers, self.shared, self.stopped):
            if name in pool:
                return pool[name]
        for pool in (self.containers, self.shared, self.stopped):
            for c in pool.values():
                # By id prefix (the harness's ids are its own: only a 12-character prefix or more is taken).
                if len(name) >= 12 and c.id.startswith(name):
                    return c
        return None

    def _container(self, name: str) -> ContainerState:
        c = self._find_container(name)
        if c is None:
            raise DockerError(f"No such container: {name}")
        return c

    def _connect(self, cmd: NetworkConnect) -> tuple[Op, ...]:
        """moby v20.10.24 daemon/container_operations.go ConnectToNetwork (l.1062-1091) and connectToNetwork."""
        container = self._container(cmd.container)
        if container.status != "running":
            # A stopped container: only its configuration changes, even for an unknown network (moby #29754);
            # a network it is on already is silently ignored.
            if all(n["name"] != cmd.network for n in container.config.setdefault("networks", [])):
                container.config["networks"].append({"name": cmd.network, "ip": cmd.ip, "ip6": cmd.ip6,
                                                     "aliases": cmd.aliases})
            return ()
        if container.net_mode == "host" or container.net_mode.startswith("container:"):
            raise DockerError("container sharing network namespace with another container or host cannot be "
                              "connected to any other network")
        if container.net_mode == "none":
            raise DockerError("container cannot be connected to multiple networks with one of the networks in "
                              "private (none) mode")
        if cmd.network == "host":
            raise DockerError("container cannot be disconnected from host network or connected to host network")
        net = self._network(cmd.network)
        if container.endpoint(net.name) is not None:
            raise DockerError(f"endpoint with name {container.name} already exists in network {net.name}")
        ops: list[Op] = []
        if net.ipv6 and not container.ipv6:
            container.ipv6 = True
            ops += [SetSysctl(container.name, "net.ipv6.conf.all.disable_ipv6", "0"),
                    SetSysctl(container.name, "net.ipv6.conf.default.disable_ipv6", "0")]
        ops += self._attach(container, net, cmd.ip, cmd.ip6, aliases=cmd.aliases)
        container.config.setdefault("networks", []).append(
            {"name": net.name, "ip": cmd.ip, "ip6": cmd.ip6, "aliases": cmd.aliases})
        return tuple(ops)

    def _disconnect(self, cmd: NetworkDisconnect) -> tuple[Op, ...]:
        container = self._container(cmd.container)
        configs = container.config.setdefault("networks", [])
        if container.status != "running":
            if all(n["name"] != cmd.network for n in configs):
                raise DockerError(f"container {container.id} is not connected to the network {cmd.network}")
            container.config["networks"] = [n for n in configs if n["name"] != cmd.network]
            return ()
        if cmd.network == "host" and container.net_mode == "host":
            raise DockerError("container cannot be disconnected from host network or connected to host network")
        net = self._network(cmd.network)
        ep = container.endpoint(net.name)
        if ep is None:
            raise DockerError(f"container {container.id} is not connected to network {net.name}")
        was_gateway = container.gateway_endpoint() is ep
        self._release_endpoint(ep)
        container.endpoints.remove(ep)
        container.config["networks"] = [n for n in configs if n["name"] != net.name]
        ops: list[Op] = [DeleteLink(container.name, ep.ifname)]
        successor = container.gateway_endpoint()
        if was_gateway and successor is not None:
            # The default route went with the link; the next endpoint in sandbox order provides it.
            ops += default_routes(container.name, successor, self.networks[successor.network].ipv6, replace=True)
        return tuple(ops)

    def _remove(self, cmd: ContainerRemove) -> tuple[tuple[Op, ...], list[str]]:
        ops: list[Op] = []
        errors: list[str] = []
        for name in cmd.names:
            container = self._find_container(name)
            if container is None:
                # The 20.10 client wraps the 404 (seen on a real 20.10 engine: `Error: No such container: nosuch`).
                errors.append(f"Error: No such container: {name}")
                continue
            if container.status == "running" and not cmd.force:
                if self.profile.rm_running_text == "20.10":
                    errors.append(f"You cannot remove a running container {container.id}. "
                                  "Stop the container before attempting removal or force remove")
                else:
                    errors.append(f'cannot remove container "{name}": container is running: stop the container '
                                  "before removing or force remove")
                continue
            ops += self._stop(container, manual=True)
            self.stopped.pop(container.name, None)
        return tuple(ops), errors

    def _release_container(self, container: ContainerState) -> None:
        for ep in container.endpoints:
            self._release_endpoint(ep)

    def _release_endpoint(self, ep: Endpoint) -> None:
        net = self.networks.get(ep.network)
        if net is None:
            return
        for ip, _ in ep.addresses:
            for pool in net.pools:
                if pool.contains(ip):
                    pool.release(ip)
        net.endpoints.pop(next(k for k, v in net.endpoints.items() if v is ep), None)

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
            return (AddLink(HOST, cmd.name, "macvlan", parent=cmd.parent, mode=cmd.mode,
                            error_format="RTNETLINK answers: {strerror}"),)
        if not 0 <= cmd.vlan_id <= 4095:
            raise DockerError(f'vlan id "{cmd.vlan_id}" is invalid')
        self.host_links[cmd.name] = HostLink(cmd.name, "vlan", parent=cmd.parent, vlan_id=cmd.vlan_id, owner="user")
        return (AddLink(HOST, cmd.name, "vlan", parent=cmd.parent, vlan_id=cmd.vlan_id,
                        error_format="RTNETLINK answers: {strerror}"),)

    # -- what Docker prints ---------------------------------------------------------------------------

    def _inspect(self, cmd: NetworkInspect) -> tuple[str, list[str]]:
        """`docker network inspect`: types.NetworkResource as the 20.10 daemon builds it (moby v20.10.24
        api/types/types.go:430-457, daemon/network.go:586-733), a JSON array indented by 4 (docker/cli
        v20.10.24 cli/command/inspect/inspector.go:164-185)."""
        found, errors = [], []
        for name in cmd.networks:
            try:
                net = self._network(name)
            except DockerError as exc:
                errors.append(f"Error: No such network: {name}" if self.profile.client_wraps_not_found else exc.message)
                continue
            found.append(network_resource(net, self._container_by_endpoint))
        if errors and not found:
            return "[]", errors
        return json.dumps(found, indent=4), errors

    def _container_by_endpoint(self, name: str) -> ContainerState | None:
        return self._find_container(name)

    def _list(self, cmd: NetworkList) -> str:
        """`docker network ls` (docker/cli v20.10.24 cli/command/network/list.go, formatter.go): the predefined
        networks and the user's, by natural name order; IDs truncated to 12 unless --no-trunc."""
        rows = [(_hex_id("predefined", n), n, d, "local") for n, d in
                (("bridge", "bridge"), ("host", "host"), ("none", "null"))]
        rows += [(n.id, n.name, n.driver, "local") for n in self.networks.values()]
        rows.sort(key=lambda r: _natural(r[1]))
        ids = [r[0] if cmd.no_trunc else r[0][:12] for r in rows]
        if cmd.quiet:
            return "\n".join(ids)
        table = [("NETWORK ID", "NAME", "DRIVER", "SCOPE"), *((i, r[1], r[2], r[3]) for i, r in zip(ids, rows))]
        widths = [max(len(row[c]) for row in table) for c in range(3)]
        # tabwriter: minwidth 10, padding 3 (cli/command/formatter/formatter.go:74)
        return "\n".join("".join(cell.ljust(max(widths[c] + 3, 10)) for c, cell in enumerate(row[:3])) + row[3]
                         for row in table)

    # -- views ----------------------------------------------------------------------------------------

    def vlan_of(self, link_name: str) -> int | None:
        """The VLAN a host link tags with (following a parent chain), None when untagged or internal."""
        link = self.host_links.get(link_name)
        while link is not None:
            if link.kind == "vlan":
                return link.vlan_id
            link = self.host_links.get(link.parent) if link.parent else None
        return None


def _natural(name: str) -> list:
    """sortorder.NaturalLess: runs of digits compare as numbers."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.findall(r"\d+|\D+", name)]


def network_resource(net: NetworkState, find_container) -> dict:
    """One network as `docker network inspect` shows it (20.10 key order)."""
    containers = {}
    for cname, ep in net.endpoints.items():
        c = find_container(cname)
        v4 = next((f"{ip}/{plen}" for ip, plen in ep.addresses if ip.version == 4), "")
        v6 = next((f"{ip}/{plen}" for ip, plen in ep.addresses if ip.version == 6), "")
        key = c.id if c is not None else f"ep-{_hex_id(net.id, cname)}"
        containers[key] = {"Name": cname, "EndpointID": _hex_id(net.id, cname, "endpoint"),
                           "MacAddress": ep.mac or "", "IPv4Address": v4, "IPv6Address": v6}
    if net.ipam_config and any(":" not in c["Subnet"] for c in net.ipam_config):
        config = [dict(c) for c in net.ipam_config]
    else:
        # No IPv4 subnet given: the pool and gateway IPAM chose are shown (daemon/network.go:675-733).
        config = [{"Subnet": str(p.subnet), **({"Gateway": str(p.gateway)} if p.gateway else {})} for p in net.pools4]
        config += [dict(c) for c in net.ipam_config]
    created = f"2026-01-01T00:{net.created_at // 60:02d}:{net.created_at % 60:02d}.000000000Z"
    return {
        "Name": net.name, "Id": net.id, "Created": created, "Scope": "local", "Driver": net.driver,
        "EnableIPv6": net.ipv6, "IPAM": {"Driver": "default", "Options": {}, "Config": config},
        "Internal": net.user_internal, "Attachable": False, "Ingress": False, "ConfigFrom": {"Network": ""},
        "ConfigOnly": False, "Containers": containers, "Options": dict(net.options), "Labels": {},
    }


def default_routes(node: str, ep: Endpoint, ipv6: bool, replace: bool = False) -> list[Op]:
    """The default route(s) Docker gives a container through its gateway endpoint."""
    ops: list[Op] = []
    if ep.connected_default:
        ops.append(AddRoute(node, "default", ep.ifname, family=4, replace=replace))
        if ipv6:
            ops.append(AddRoute(node, "default", ep.ifname, family=6, replace=replace))
    if ep.gateway4 is not None:
        ops.append(AddRoute(node, "default", ep.ifname, gateway=str(ep.gateway4), family=4, replace=replace))
    if ep.gateway6 is not None:
        ops.append(AddRoute(node, "default", ep.ifname, gateway=str(ep.gateway6), family=6, replace=replace))
    return ops
