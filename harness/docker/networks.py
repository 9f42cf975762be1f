"""`NetworksMixin`: the network half of `harness.docker.driver.DockerEmulator`.

network create/rm (IPAM pools, driver modes, VLAN parents and their conflicts) and what
`docker network inspect` / `docker network ls` print. Mixed into `DockerEmulator`, whose state it uses.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json

from harness.docker import ipam
from harness.docker.choices import subnet_choice_key
from harness.docker.common import (
    IPVLAN_FLAGS,
    IPVLAN_MODES,
    IPVLAN_MODES_20,
    MACVLAN_MODES,
    _hex_id,
    _natural,
    dummy_parent_name,
    network_resource,
)
from harness.docker.state import ContainerState, HostLink, NetworkState
from harness.errors import DockerError
from harness.model import (
    NetworkCreate,
    NetworkInspect,
    NetworkList,
    NetworkRemove,
)
from harness.plan import (
    AddLink,
    DeleteLink,
    Op,
    SetLink,
)


class NetworksMixin:
    """Docker's network commands, for `DockerEmulator`."""

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
        net_id = _hex_id(self.seed, cmd.name, str(self.counter))
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
            exclude = () if self.profile.pool_allocation == "rotate" else self.host.addresses
            v4 = [ipam.IPAMConfig(subnet=self.address_space.default_v4(
                rotate=self.profile.pool_allocation == "rotate",
                exclude=tuple(a.network for a in exclude)))]
        # Every CLI version so far (docker/cli v20.10.24 to v29.7.2, consolidateIpam) sends the subnets in Go
        # map order: each family's order is one of Docker's random choices.
        v4, v6 = (self._subnet_order(cmd.name, kind, configs) if len(configs) > 1 else configs
                  for kind, configs in (("IPv4", v4), ("IPv6", v6)))
        skip_gateway = self._skip_gateway(cmd, internal)
        pools4 = [self._make_pool(c, skip_gateway) for c in v4]
        pools6 = [self._make_pool(c, skip_gateway) for c in v6]

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
                ops += [AddLink(self.node, parent, "dummy", error_format="{error}"), SetLink(self.node, parent, up=True)]
                self.host_links[parent] = HostLink(parent, "dummy", owner=net_id)
            else:
                lower, vid = self._parse_vlan_parent(parent)
                ops += [
                    AddLink(self.node, parent, "vlan", parent=lower, vlan_id=vid,
                            error_format="failed to create {name} vlan link: {error}"),
                    SetLink(self.node, parent, up=True),
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
        gid = int(hashlib.sha256(self.seed.encode()).hexdigest(), 16) & ((1 << 40) - 1)
        return ipaddress.IPv6Network(((0xFD << 120) | (gid << 80), 48))

    def _subnet_order(self, network: str, kind: str, configs: list) -> list:
        key = subnet_choice_key(network, kind)
        note = (f"network {network}: Docker's CLI sends its {kind} subnets in Go map order (random; docker/cli "
                "v20.10.24 cli/command/network/create.go:222-226, unchanged in v29.7.2), so which subnet a container's dynamic "
                "address comes from is not deterministic; the emulation takes the command-line order unless "
                f"`docker_choices: {{{key}: [...]}}` pins another")
        # `docker network inspect` lists them in the order the daemon received them: the `subnet` facts
        return self.choose(key, configs, [str(c.subnet) for c in configs], note, seen_in=("subnet", network))

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

    def _not_found_text(self, name: str, exc: DockerError) -> str:
        """What `network rm`/`inspect` print for an unknown network: the daemon's text, or the client's own."""
        return f"Error: No such network: {name}" if self.profile.client_wraps_not_found else exc.message

    def _network_remove(self, cmd: NetworkRemove) -> tuple[tuple[Op, ...], list[str]]:
        ops: list[Op] = []
        errors: list[str] = []
        for name in cmd.networks:
            try:
                net = self._network(name)
            except DockerError as exc:
                errors.append(self._not_found_text(name, exc))
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
                ops.append(DeleteLink(self.node, net.parent))
                del self.host_links[net.parent]
            for pool in net.pools:
                self.address_space.release(pool.subnet, pool.ip_range)
            del self.networks[net.name]
            self.printed.append(name)  # docker/cli network/remove.go: each removed name, as given
        return tuple(ops), errors

    # -- what Docker prints ---------------------------------------------------------------------------

    def _inspect(self, cmd: NetworkInspect) -> tuple[str, list[str]]:
        """`docker network inspect`: the network as the profile's daemon builds it (`network_resource`: 20.10,
        28 or 29 shape), a JSON array indented by 4 (docker/cli v20.10.24 and v29.0.0
        cli/command/inspect/inspector.go)."""
        found, errors = [], []
        for name in cmd.networks:
            try:
                net = self._network(name)
            except DockerError as exc:
                errors.append(self._not_found_text(name, exc))
                continue
            found.append(network_resource(net, self._container_by_endpoint, self.profile.inspect_shape))
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
