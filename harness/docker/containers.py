"""`ContainersMixin`: the container half of `harness.docker.driver.DockerEmulator`.

docker run, endpoint attach and address allocation, network connect/disconnect, stop/start/restart,
rm and a daemon restart. Mixed into `DockerEmulator`, whose state it uses.
"""

from __future__ import annotations

import ipaddress
import re

from harness.docker import ipam
from harness.docker.common import (
    _hex_id,
    gateway_routes,
)
from harness.docker.run_options import restart_policy, run_settings
from harness.docker.state import ContainerState, Endpoint, NetworkState
from harness.errors import DockerError
from harness.model import (
    ContainerRemove,
    ContainerRun,
    ContainerStop,
    IPAddress,
    NetworkConnect,
    NetworkDisconnect,
    Step,
    is_ip_address,
)
from harness.plan import (
    AddAddress,
    AddLink,
    CompiledStep,
    CreateNode,
    DeleteLink,
    DeleteNode,
    MoveLink,
    Op,
    ReachCheck,
    SetHostname,
    SetLink,
    SetSysctl,
)


class ContainersMixin:
    """Docker's container commands, for `DockerEmulator`."""

    # -- containers -----------------------------------------------------------------------------------

    def _run(self, step: Step, cmd: ContainerRun) -> CompiledStep:
        settings = run_settings(cmd, self.profile)
        # Create-time checks (moby v20.10.24 daemon/create.go, runconfig/hostconfig.go): nothing is left.
        nets = tuple(c["name"] for c in settings)
        if len(nets) > self.profile.networks_per_run:
            key = f"command {step.index} networks"
            named = self.choose(key, list(nets), list(nets),
                                f"`docker run` with several networks: Docker 20.10 names them in Go map order "
                                "(random; daemon/create.go:331-341; seen on a real 20.10 engine), match them with "
                                f"`*`; the emulation takes the command-line order unless `docker_choices: {{{key}: "
                                "[...]}` pins another", seen_in=("command", f"command {step.index}"))
            raise DockerError(f"Container cannot be connected to network endpoints: {', '.join(named)}")
        first = nets[0] if nets else ""
        net_mode = first if first in ("host", "none") or first.startswith("container:") else ""
        if first == "container:":
            raise DockerError("Invalid network mode: invalid container format container:<name|id>")
        if cmd.mac_address and (net_mode == "host" or net_mode.startswith("container:")):
            raise DockerError("conflicting options: mac-address and the network mode")
        if cmd.hostname and net_mode.startswith("container:"):
            raise DockerError("conflicting options: hostname and the network mode")
        for cfg in settings:
            if cfg["ip"] is not None and (not is_ip_address(cfg["ip"]) or ipaddress.ip_address(cfg["ip"]).version != 4):
                raise DockerError(f"invalid IPv4 address: {cfg['ip']}")
            if cfg["ip6"] is not None and (not is_ip_address(cfg["ip6"]) or ipaddress.ip_address(cfg["ip6"]).version != 6):
                raise DockerError(f"invalid IPv6 address: {cfg['ip6']}")
            if not net_mode and cfg["name"] in self.networks:
                refusal = self._ip_outside_subnets(self.networks[cfg["name"]], cfg["ip"])
                if refusal:
                    # moby 27+: the endpoint settings are checked at create, wrapped twice (nothing is left).
                    raise DockerError(f"invalid config for network {cfg['name']}: {refusal}")
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
            name=cmd.name, id=_hex_id(self.seed, "container", cmd.name, str(self.counter)),
            transient=cmd.transient, status="created", net_mode=net_mode,
            gateway_score=self.profile.gateway_score, gateway_select=self.profile.gateway_endpoints,
            config={"networks": [] if net_mode else settings,
                    "mac": cmd.mac_address, "hostname": cmd.hostname,
                    "restart": restart_policy(cmd.restart, self.profile)[0],
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
        if container.config.get("hostname"):  # issue #11 (hostname applied): the container's UTS namespace
            ops.append(SetHostname(name, container.config["hostname"]))
        if not container.ipv6:
            # Docker disables IPv6 in a container none of whose networks has it: no ::1, no link-local.
            ops += [SetSysctl(name, "net.ipv6.conf.all.disable_ipv6", "1"),
                    SetSysctl(name, "net.ipv6.conf.default.disable_ipv6", "1")]
        for net, cfg in nets:
            if mode == "none":
                break
            ops += self._attach(container, net, cfg.get("ip"), cfg.get("ip6"), mac=cfg.get("mac"),
                                aliases=cfg.get("aliases", ()), gw_priority=cfg.get("gw_priority", 0))
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
                self.printed.append(name)
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
        for c in self.stopped.values():
            if c.transient and c.status == "exited" and c.config.get("restart") in ("always", "on-failure"):
                self.notes.append(f"container {c.name}: its ping ran and exited; with --restart "
                                  f"{c.config['restart']} Docker runs it again (on-failure: only if it failed, exit "
                                  "code != 0); the harness does not probe it again")
        restart = [c for c in self.stopped.values() if not c.transient and c.status == "exited"
                   and self._restarts_with_daemon(c)]
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

    @staticmethod
    def _restarts_with_daemon(c: ContainerState) -> bool:
        """restartmanager.ShouldRestart at daemon start (moby v20.10.24 daemon/daemon.go:455-458,
        restartmanager/restartmanager.go:85-96; unchanged in docker-v29.7.2 daemon/daemon.go:557,
        daemon/internal/restartmanager): `always`; `unless-stopped` unless stopped by hand; `on-failure[:N]` when
        the recorded exit code is not 0 (N is not reached: only the daemon's own restarts count). A container the
        daemon shut down, or one `docker stop`ped, was killed (exit 137/143), so on-failure restarts it (moby
        #35166, docker/cli #2271): only an exit 0 keeps it down, and a long-running container never exits 0 here."""
        policy = c.config.get("restart")
        if policy == "always":
            return True
        if policy == "unless-stopped":
            return not c.config.get("manually_stopped")
        if policy == "on-failure":
            return True  # its exit code is 137 or 143, never 0 (see above)
        return False

    def _resolve(self, target: str, net: NetworkState) -> str:
        """Docker's embedded DNS: a container name on the same network resolves to its address."""
        if is_ip_address(target):
            return target
        ep = net.endpoints.get(target)
        if ep is not None and ep.addresses:
            return str(ep.addresses[0][0])
        return target

    def _attach(self, container: ContainerState, net: NetworkState, ip: str | None, ip6: str | None,
                mac: str | None = None, aliases: tuple[str, ...] = (), gw_priority: int = 0) -> list[Op]:
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
            internal=net.internal, aliases=tuple(aliases), static_ip=ip, static_ip6=ip6, gw_priority=gw_priority,
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
            AddLink(self.node, ep.child, net.driver, parent=net.parent, mode=net.mode, flag=net.flag,
                    error_format=f"failed to create the {net.driver} port: {{error}}"),
            MoveLink(self.node, ep.child, name, ep.ifname),
        ]
        if ep.mac:
            ops.append(SetLink(name, ep.ifname, mac=ep.mac))
        ops += [AddAddress(name, ep.ifname, cidr, nodad=True) for cidr in ep.cidrs()]
        ops.append(SetLink(name, ep.ifname, up=True))
        before4, before6 = container.gateway_endpoints()
        container.endpoints.append(ep)
        container.interfaces_made = max(container.interfaces_made, number) + 1
        net.endpoints[container.name] = ep
        after4, after6 = container.gateway_endpoints()
        # An endpoint sorting before the current gateway endpoint(s) takes the default route(s) over.
        ops += gateway_routes(name, ep if after4 is ep else None, ep if after6 is ep else None,
                              replace4=before4 is not None, replace6=before6 is not None)
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

    def _ip_outside_subnets(self, net: NetworkState, ip: str | None) -> str | None:
        """moby 27+'s endpoint-settings refusal of an `--ip` outside the network's subnets (v27.5.1
        daemon/container_operations.go:600-640 validateEndpointSettings; docker-v29.7.2 :540-582): the text
        of the profile, under `invalid endpoint settings:`. None in 20.10 (IPAM refuses it at start)."""
        check = self.profile.ip_outside_subnets
        if check == "ipam" or ip is None or not net.user_subnets4 or not is_ip_address(ip):
            return None
        if any(p.contains(ipaddress.ip_address(ip)) for p in net.pools4):
            return None
        return "invalid endpoint settings:\n" + check.format(ip=ip)

    def _gw_priority(self, text: str | None) -> int:
        """`docker network connect --gw-priority N` (docker/cli v28.0.0 cli/command/network/connect.go:62, an
        int flag); an unknown flag before moby 28's CLI."""
        if text is None:
            return 0
        if not self.profile.gw_priority:
            raise DockerError("unknown flag: --gw-priority")
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise DockerError(f'invalid argument "{text}" for "--gw-priority" flag: strconv.ParseInt: parsing '
                              f'"{text}": invalid syntax')
        return int(text)

    def _connect(self, cmd: NetworkConnect) -> tuple[Op, ...]:
        """moby v20.10.24 daemon/container_operations.go ConnectToNetwork (l.1062-1091) and connectToNetwork."""
        priority = self._gw_priority(cmd.gw_priority)
        container = self._container(cmd.container)
        if container.status != "running":
            # A stopped container: only its configuration changes, even for an unknown network (moby #29754);
            # a network it is on already is silently ignored. moby 27+ validates the endpoint settings against
            # a network that exists (v27.5.1 daemon/container_operations.go:1071-1075 updateNetworkConfig).
            known = self.networks.get(cmd.network)
            refusal = self._ip_outside_subnets(known, cmd.ip) if known is not None else None
            if refusal:
                raise DockerError(refusal)
            if all(n["name"] != cmd.network for n in container.config.setdefault("networks", [])):
                container.config["networks"].append({"name": cmd.network, "ip": cmd.ip, "ip6": cmd.ip6,
                                                     "aliases": cmd.aliases, "gw_priority": priority})
            return ()
        if container.net_mode == "host" or container.net_mode.startswith("container:"):
            raise DockerError("container sharing network namespace with another container or host cannot be "
                              "connected to any other network")
        if container.net_mode == "none":
            raise DockerError("container cannot be connected to multiple networks with one of the networks in "
                              "private (none) mode")
        if cmd.network == "host":
            if self.profile.host_network_texts == "split":
                raise DockerError("cannot connect container to host network - container must be created in host "
                                  "network mode")
            raise DockerError("container cannot be disconnected from host network or connected to host network")
        net = self._network(cmd.network)
        if container.endpoint(net.name) is not None:
            raise DockerError(f"endpoint with name {container.name} already exists in network {net.name}")
        refusal = self._ip_outside_subnets(net, cmd.ip)
        if refusal:
            raise DockerError(refusal)
        ops: list[Op] = []
        if net.ipv6 and not container.ipv6:
            container.ipv6 = True
            ops += [SetSysctl(container.name, "net.ipv6.conf.all.disable_ipv6", "0"),
                    SetSysctl(container.name, "net.ipv6.conf.default.disable_ipv6", "0")]
        ops += self._attach(container, net, cmd.ip, cmd.ip6, aliases=cmd.aliases, gw_priority=priority)
        container.config.setdefault("networks", []).append(
            {"name": net.name, "ip": cmd.ip, "ip6": cmd.ip6, "aliases": cmd.aliases, "gw_priority": priority})
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
            if self.profile.host_network_texts == "split":
                raise DockerError("cannot disconnect container from host network - container was created in host "
                                  "network mode")
            raise DockerError("container cannot be disconnected from host network or connected to host network")
        net = self._network(cmd.network)
        ep = container.endpoint(net.name)
        if ep is None:
            raise DockerError(f"container {container.id} is not connected to network {net.name}")
        before4, before6 = container.gateway_endpoints()
        self._release_endpoint(ep)
        container.endpoints.remove(ep)
        container.config["networks"] = [n for n in configs if n["name"] != net.name]
        ops: list[Op] = [DeleteLink(container.name, ep.ifname)]
        after4, after6 = container.gateway_endpoints()
        # A default route that went with the link, or whose endpoint changed: the next in sandbox order gives it.
        ops += gateway_routes(container.name, after4 if after4 is not before4 else None,
                              after6 if after6 is not before6 else None, replace4=True, replace6=True)
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
            self.printed.append(name)
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
