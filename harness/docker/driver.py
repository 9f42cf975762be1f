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
import random

from harness.docker import ipam
from harness.docker.profiles import DEFAULT_PROFILE, Profile, get_profile
from harness.docker.state import ContainerState, Endpoint, HostLink, NetworkState
from harness.errors import DockerError
from harness.model import (
    ContainerRemove,
    ContainerRun,
    HostLinkAdd,
    HostLinkDelete,
    HostLinkUp,
    IPAddress,
    NetworkConnect,
    NetworkCreate,
    NetworkDisconnect,
    NetworkRemove,
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
        self.networks: dict[str, NetworkState] = {}
        self.containers: dict[str, ContainerState] = {}
        self.stopped: dict[str, ContainerState] = {}  # exited, not removed: they keep their names
        self.history: dict[str, ContainerState] = {}  # every container ever started, last state
        self.address_space = ipam.AddressSpace()
        for pool in self.profile.reserved_pools:
            self.address_space.reserve(ipaddress.ip_network(pool))
        self.counter = 0
        self.rng = random.Random(scenario.name)

    # -- transactions -------------------------------------------------------------------------------

    def snapshot(self) -> dict:
        return copy.deepcopy({k: v for k, v in self.__dict__.items() if k not in ("scenario", "profile")})

    def restore(self, snap: dict) -> None:
        self.__dict__.update(copy.deepcopy(snap))

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
            return CompiledStep(step, ops=self._remove(cmd))
        if isinstance(cmd, HostLinkAdd):
            return CompiledStep(step, ops=self._host_link_add(cmd))
        if isinstance(cmd, HostLinkUp):
            self._host_link(cmd.name)
            return CompiledStep(step, ops=(SetLink(HOST, cmd.name, up=True),))
        if isinstance(cmd, HostLinkDelete):
            self._host_link(cmd.name)
            del self.host_links[cmd.name]
            return CompiledStep(step, ops=(DeleteLink(HOST, cmd.name),))
        raise TypeError(f"no driver semantics for {type(cmd).__name__}")

    # -- networks -------------------------------------------------------------------------------------

    def _network_create(self, cmd: NetworkCreate) -> tuple[Op, ...]:
        configs = ipam.consolidate_ipam(cmd.subnets, cmd.ip_ranges, cmd.gateways, cmd.aux_addresses)
        if cmd.name in self.networks:
            raise DockerError(f"network with name {cmd.name} already exists")
        self.counter += 1
        net_id = _hex_id(self.scenario.name, cmd.name, str(self.counter))

        v4 = [c for c in configs if c.subnet.version == 4]
        v6 = [c for c in configs if c.subnet.version == 6] if cmd.ipv6 else []
        if cmd.ipv6 and not v6:
            raise DockerError(ipam.NO_V6_POOL)
        if not v4:
            v4 = [ipam.IPAMConfig(subnet=self.address_space.default_v4())]
        pools4 = [self._make_pool(c) for c in v4]
        pools6 = [self._make_pool(c) for c in v6]

        # The driver's checks come after IPAM, in libnetwork's order.
        mode, flag = self._driver_mode(cmd)
        parent = cmd.option("parent") or ""
        internal = cmd.internal
        if internal:
            parent = ""  # --internal and an empty parent are the same: an isolated dummy parent
        if parent == "lo":
            raise DockerError(f"loopback interface is not a valid {cmd.driver} parent link")
        if not parent:
            parent = dummy_parent_name(cmd.driver, net_id)
            internal = True
        for other in self.networks.values():
            # Each driver keeps its own network list: macvlan checks macvlan networks only.
            if other.driver == cmd.driver and other.parent == parent and self._parent_conflict(mode, other):
                raise DockerError(
                    f"network {dummy_parent_name(cmd.driver, other.id)} is already using parent interface {parent}"
                )

        ops: list[Op] = []
        created = False
        if parent not in self.host_links:
            created = True
            if internal:
                ops += [AddLink(HOST, parent, "dummy", error_format="failed to create the dummy link: {error}"),
                        SetLink(HOST, parent, up=True)]
                self.host_links[parent] = HostLink(parent, "dummy", owner=net_id)
            else:
                lower, vid = self._parse_vlan_parent(parent)
                ops += [
                    AddLink(HOST, parent, "vlan", parent=lower, vlan_id=vid,
                            error_format="failed to create {name} vlan link: {error}"),
                    SetLink(HOST, parent, up=True),
                ]
                self.host_links[parent] = HostLink(parent, "vlan", parent=lower, vlan_id=vid, owner=net_id)

        self.networks[cmd.name] = NetworkState(
            id=net_id, name=cmd.name, driver=cmd.driver, mode=mode, flag=flag, parent=parent,
            created_parent=created, internal=internal, ipv6=cmd.ipv6, pools4=pools4, pools6=pools6,
            user_subnets4=any(":" not in sub for sub in cmd.subnets),
            user_subnets6=any(":" in sub for sub in cmd.subnets),
        )
        return tuple(ops)

    def _make_pool(self, cfg: ipam.IPAMConfig) -> ipam.Pool:
        self.address_space.reserve(cfg.subnet)
        pool = ipam.Pool(subnet=cfg.subnet, ip_range=cfg.ip_range)
        if cfg.gateway is not None:
            pool.gateway = pool.request(cfg.gateway)
        elif self.profile.default_gateway:
            pool.gateway = pool.request()
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
        if mode not in IPVLAN_MODES:
            raise DockerError(f"requested ipvlan mode '{mode}' is not valid, 'l2' mode is the ipvlan driver default")
        flag = cmd.option("ipvlan_flag") or "bridge"
        if flag not in IPVLAN_FLAGS:
            raise DockerError(f"requested ipvlan flag '{flag}' is not valid, 'bridge' is the ipvlan driver default")
        return mode, flag

    def _parent_conflict(self, mode: str, other: NetworkState) -> bool:
        if self.profile.parent_sharing == "exclusive":
            return True
        return "passthru" in (mode, other.mode)

    def _parse_vlan_parent(self, parent: str) -> tuple[str, int]:
        """libnetwork's createVlanLink/parseVlan checks, in their order and words."""
        if "." not in parent:
            raise DockerError(f"invalid subinterface vlan name {parent}, example formatting is eth0.10")
        parts = parent.split(".")
        if len(parts) != 2:
            raise DockerError(
                "required interface name format is: name.vlan_id, ex. eth0.10 for vlan 10, "
                f"instead received: {parent}"
            )
        lower, vid_text = parts
        try:
            vid = int(vid_text)
        except ValueError:
            raise DockerError(f"unable to parse a valid vlan id from: {vid_text} (ex. eth0.10 for vlan 10)") from None
        if lower not in self.host_links:
            raise DockerError(f"-o parent interface was not found on the host: {lower}")
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
            except DockerError:
                errors.append(f"Error: No such network: {name}")
                continue
            if net.endpoints:
                errors.append(f"error while removing network: network {net.name} id {net.id} has active endpoints")
                continue
            link = self.host_links.get(net.parent)
            still_used = any(n.parent == net.parent for n in self.networks.values() if n is not net)
            if still_used and link is not None and link.owner == net.id:
                # A parent shared by several networks (moby-29) goes with the last of them.
                link.owner = next(n.id for n in self.networks.values() if n is not net and n.parent == net.parent)
            elif net.created_parent and link is not None and link.owner == net.id:
                # Only the links the driver created are deleted; a parent made by hand survives.
                ops.append(DeleteLink(HOST, net.parent))
                del self.host_links[net.parent]
            for pool in net.pools:
                self.address_space.release(pool.subnet)
            del self.networks[net.name]
        return tuple(ops), errors

    # -- containers -----------------------------------------------------------------------------------

    def _run(self, step: Step, cmd: ContainerRun) -> CompiledStep:
        holder = self.containers.get(cmd.name) or self.stopped.get(cmd.name)
        if holder is not None:
            raise DockerError(
                f'Conflict. The container name "/{cmd.name}" is already in use by container "{holder.id}". '
                "You have to remove (or rename) that container to be able to reuse that name."
            )
        if cmd.network is None:
            raise DockerError("the harness emulates macvlan/ipvlan networks only: give --net/--network")
        net = self._network(cmd.network)
        self.counter += 1
        container = ContainerState(name=cmd.name, id=_hex_id(self.scenario.name, "container", cmd.name, str(self.counter)),
                                   ipv6=net.ipv6, transient=cmd.transient)
        ops: list[Op] = [CreateNode(cmd.name, "container")]
        if not net.ipv6:
            # Docker disables IPv6 in a container none of whose networks has it: no ::1, no link-local.
            ops += [SetSysctl(cmd.name, "net.ipv6.conf.all.disable_ipv6", "1"),
                    SetSysctl(cmd.name, "net.ipv6.conf.default.disable_ipv6", "1")]
        ops += self._attach(container, net, cmd.ip, cmd.ip6)
        self.containers[cmd.name] = container
        self.history[cmd.name] = container
        probe = cmd.probe
        if probe is None:
            return CompiledStep(step, ops=tuple(ops))
        # A transient container: it pings, exits, and (with or without --rm) releases its addresses.
        target = self._resolve(probe.target, net)
        family = probe.family or (ipaddress.ip_address(target).version if is_ip_address(target) else 4)
        check = ReachCheck(src=cmd.name, dst=target, family=family, command=" ".join(cmd.command))
        self._release_container(container)
        del self.containers[cmd.name]
        container.running = False
        if not cmd.remove:
            self.stopped[cmd.name] = container  # an exited container keeps its name until `docker rm`
        return CompiledStep(step, ops=tuple(ops), check=check, cleanup=(DeleteNode(cmd.name),))

    def _resolve(self, target: str, net: NetworkState) -> str:
        """Docker's embedded DNS: a container name on the same network resolves to its address."""
        if is_ip_address(target):
            return target
        ep = net.endpoints.get(target)
        if ep is not None and ep.addresses:
            return str(ep.addresses[0][0])
        return target

    def _attach(self, container: ContainerState, net: NetworkState, ip: str | None, ip6: str | None) -> list[Op]:
        """Endpoint creation and join: allocate, create the child in the host, move, address, route."""
        if (ip and not net.user_subnets4) or (ip6 and not net.user_subnets6):
            raise DockerError(ipam.STATIC_IP_NEEDS_SUBNET)
        ep = Endpoint(
            network=net.name,
            ifname=f"eth{container.interfaces_made}",
            child="veth" + _hex_id(container.id, net.id)[:7],
        )
        ep.addresses.append(self._allocate(net.pools4, ip, 4, net))
        if net.ipv6:
            ep.addresses.append(self._allocate(net.pools6, ip6, 6, net))
        elif ip6:
            raise DockerError(ipam.invalid_address(ip6))
        v4 = ep.addresses[0][0]
        if net.driver == "macvlan":
            ep.mac = ipam.mac_from_ip(v4) if self.profile.mac == "ip" else self._random_mac()
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
        container.interfaces_made += 1
        net.endpoints[container.name] = ep
        if container.gateway_endpoint() is ep:
            # A network sorting before the current gateway network takes the default route over.
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

    def _container(self, name: str) -> ContainerState:
        c = self.containers.get(name)
        if c is None:
            raise DockerError(f"No such container: {name}")
        return c

    def _connect(self, cmd: NetworkConnect) -> tuple[Op, ...]:
        container = self._container(cmd.container)
        net = self._network(cmd.network)
        if container.endpoint(net.name) is not None:
            raise DockerError(f"endpoint with name {container.name} already exists in network {net.name}")
        ops: list[Op] = []
        if net.ipv6 and not container.ipv6:
            container.ipv6 = True
            ops += [SetSysctl(container.name, "net.ipv6.conf.all.disable_ipv6", "0"),
                    SetSysctl(container.name, "net.ipv6.conf.default.disable_ipv6", "0")]
        return tuple(ops + self._attach(container, net, cmd.ip, cmd.ip6))

    def _disconnect(self, cmd: NetworkDisconnect) -> tuple[Op, ...]:
        container = self._container(cmd.container)
        net = self._network(cmd.network)
        ep = container.endpoint(net.name)
        if ep is None:
            raise DockerError(f"container {container.id} is not connected to network {net.name}")
        was_gateway = container.gateway_endpoint() is ep
        self._release_endpoint(ep)
        container.endpoints.remove(ep)
        ops: list[Op] = [DeleteLink(container.name, ep.ifname)]
        successor = container.gateway_endpoint()
        if was_gateway and successor is not None:
            # The default route went with the link; the next network in name order provides it.
            ops += default_routes(container.name, successor, self.networks[successor.network].ipv6, replace=True)
        return tuple(ops)

    def _remove(self, cmd: ContainerRemove) -> tuple[Op, ...]:
        ops: list[Op] = []
        for name in cmd.names:
            if name in self.stopped:
                del self.stopped[name]  # its namespace went when it exited
                continue
            container = self._container(name)
            if container.running and not cmd.force:
                raise DockerError(
                    f"You cannot remove a running container {container.id}. "
                    "Stop the container before attempting removal or force remove"
                )
            self._release_container(container)
            del self.containers[name]
            container.running = False
            ops.append(DeleteNode(name))
        return tuple(ops)

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
        if not 0 <= cmd.vlan_id <= 4095:
            raise DockerError(f'vlan id "{cmd.vlan_id}" is invalid')
        self.host_links[cmd.name] = HostLink(cmd.name, "vlan", parent=cmd.parent, vlan_id=cmd.vlan_id, owner="user")
        return (AddLink(HOST, cmd.name, "vlan", parent=cmd.parent, vlan_id=cmd.vlan_id,
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
