"""Docker behaviour profiles: what differs between Docker versions, as one table of data.

`KNOBS` is the table: each `Knob` names one behaviour the driver, IPAM or CLI consults, its value per
Docker version (the value of the newest version not above the profile's), and where in Docker's source
it was read (moby/moby or docker/cli, tag, file). A `Profile` is a Docker version; `profile.knob_name`
is that knob's value for it, so no code compares version numbers. `PROFILES` names the versions the
harness emulates: `docker-20.10` (the default: the documented behaviour, Debian's docker.io 20.10),
`moby-27`, `moby-28` and `moby-29` (current Docker). `harness plan --profile X` lists them
(`knob_rows`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError

Version = tuple[int, ...]


def version_text(v: Version) -> str:
    return ".".join(map(str, v))


@dataclass(frozen=True)
class Knob:
    name: str
    description: str
    values: tuple[tuple[Version, Any], ...]  # (first version with this value, value), oldest first
    source: str  # where Docker's source shows it (repository @ tag, file)

    def value_at(self, version: Version) -> tuple[Version, Any]:
        """(the version that introduced the value, the value) for a Docker `version`."""
        found = self.values[0]
        for since, value in self.values:
            if since <= version:
                found = (since, value)
        return found


V20 = (20, 10)
KNOBS: tuple[Knob, ...] = (
    Knob("default_gateway",
         "a gateway address is taken from IPAM when --gateway is absent: always | unless-internal (macvlan: "
         "internal or no parent; ipvlan also l3/l3s) | never",
         ((V20, "always"), ((28, 0), "unless-internal"), ((29, 0), "never")),
         "moby v28.0.0 libnetwork/drivers/macvlan/macvlan_network.go GetSkipGwAlloc; docker-v29.7.2 "
         "daemon/libnetwork/drivers/macvlan/macvlan_network.go:65-70 (commit 468e3521b0)"),
    Knob("driver_checks_first", "the driver's mode and `lo` checks run before IPAM (20.10: after, so an "
         "overlapping subnet is reported before a bad mode)",
         ((V20, False), ((28, 0), True)),
         "moby v20.10.24 libnetwork/controller.go NewNetwork (ipamAllocate before addNetwork); docker-v29.7.2 "
         "daemon/libnetwork/controller.go:614-621"),
    Knob("mac", "a container MAC without --mac-address: ip (02:42 + IPv4 bytes) | random",
         ((V20, "ip"), ((28, 0), "random")),
         "moby v20.10.24 libnetwork/drivers/macvlan/macvlan_endpoint.go:27-41; docker-v29.7.2 "
         "macvlan_endpoint.go:34-38 (commit a7a5de676d, v28.0.0)"),
    Knob("parent_sharing", "several macvlan networks on one parent: exclusive | except-passthru (ipvlan stays "
         "exclusive)",
         ((V20, "exclusive"), ((27, 0, 1), "except-passthru")),
         "moby commit 528ffa9cae (v27.0.1); docker-v29.7.2 drivers/macvlan/macvlan_network.go:73-140"),
    Knob("no_parent_internal", "a network without -o parent is internal in the driver (no default route)",
         ((V20, False), ((28, 0), True)),
         "moby v20.10.24 macvlan_network.go:52-55 (dummy parent only); docker-v29.7.2 macvlan_network.go:232-235 "
         "(commits 2f60d15ddf, 8b13cde274, v28.0.0)"),
    Knob("pool_allocation", "default address pools: rotate (the search starts after the last pool handed out) "
         "| first-fit (the lowest free pool, a freed one is reused)",
         ((V20, "rotate"), ((27, 0), "first-fit")),
         "moby v20.10.24 libnetwork/ipam/allocator.go:387-448 getPredefineds/updateStartIndex; "
         "docker-v29.7.2 ipams/defaultipam/address_space.go:136-302"),
    Knob("ipv6_without_subnet", "--ipv6 without an IPv6 --subnet: error | ula (a /64 of a ULA /48)",
         ((V20, "error"), ((27, 0), "ula")),
         "moby v20.10.24 libnetwork/ipam/allocator.go:447; docker-v29.7.2 daemon/daemon.go:1718-1758"),
    Knob("ifname_reuse", "the name of an interface connected later: counter (eth<N>, N only grows) | "
         "lowest-free (the first free eth<N>)",
         ((V20, "counter"), ((28, 0), "lowest-free")),
         "moby v20.10.24 libnetwork/osl/interface_linux.go:220-238; docker-v29.7.2 "
         "daemon/libnetwork/osl/interface_linux.go:397-420 (commit 5a703c2eda, v28.0.0)"),
    Knob("gateway_score", "endpoint order for the default route, after priority and internal: gw4-1-gw6-2 "
         "(an IPv6-only gateway beats an IPv4-only one) | count (IPv4 and IPv6 tie)",
         ((V20, "gw4-1-gw6-2"), ((28, 0), "count")),
         "moby v20.10.24 libnetwork/sandbox.go:1202-1265 Less; docker-v29.7.2 daemon/libnetwork/sandbox.go:618-672"),
    Knob("rfc3021", "a /31 subnet has two usable addresses (no network/broadcast reserved)",
         ((V20, False), ((28, 0), True)),
         "moby v20.10.24 libnetwork/ipam/allocator.go:337-369; docker-v29.7.2 ipams/defaultipam/allocator.go:235-253"),
    Knob("canonical_subnet", "a subnet with host bits set (10.22.0.5/24): accepted (masked) | rejected",
         ((V20, "accepted"), ((25, 0), "rejected")),
         "moby v20.10.24 libnetwork/ipam/allocator.go:324; moby v27.5.1 api/types/network/ipam.go:34-76 ValidateIPAM"),
    Knob("ipvlan_l3s_and_flag", "ipvlan_mode=l3s and -o ipvlan_flag exist (before: l3s is a mode error, the flag "
         "is ignored)",
         ((V20, False), ((23, 0), True)),
         "moby v20.10.24 libnetwork/drivers/ipvlan/ipvlan.go:19-20, ipvlan_network.go:225-235; v23.0.0 "
         "(commit f70a9788c5)"),
    Knob("parent_typo", "the missing lower link error reads `-o parent interface does was not found`",
         ((V20, True), ((23, 0), False)),
         "moby v20.10.24 libnetwork/drivers/macvlan/macvlan_setup.go:154-155"),
    Knob("ip_without_subnet", "--ip on a network without --subnet: refused | in-pool (allowed inside the "
         "allocated pool)",
         ((V20, "refused"), ((29, 0, 4), "in-pool")),
         "moby commit 6280a80f32 (29.0.4); docker-v29.7.2 daemon/container_operations.go:629-640"),
    Knob("networks_per_run", "how many --network one docker run accepts",
         ((V20, 1), ((25, 0), 99)),
         "moby v20.10.24 daemon/create.go:331-341 verifyNetworkingConfig (gone at v25.0.0)"),
    Knob("client_wraps_not_found", "the client prints `Error: No such network: X` for network rm/inspect of "
         "an unknown network (else the daemon's `network X not found`)",
         ((V20, True), ((29, 0), False)),
         "docker/cli v20.10.24 client/network_remove.go:9, client/errors.go:58-59; docker-v29.7.2 "
         "client/network_remove.go:18-26"),
    Knob("ip_outside_subnets", "`--ip` outside every subnet at `docker run`: ipam (a start-time `Invalid address` "
         "that leaves a Created container) | the create-time text of the endpoint-settings check",
         ((V20, "ipam"), ((27, 0), "no configured subnet or ip-range contain the IP address {ip}"),
          ((29, 0, 4), "no configured subnet contains IP address {ip}")),
         "moby v27.5.1 api/types/network/endpoint.go:103-123 validateEndpointIPAddress; docker-v29.7.2 "
         "daemon/container_operations.go:580-582,629-640, daemon/create.go:371-393 (commit 6280a80f32, 29.0.4)"),
    Knob("busy_network_text", "`network rm` of a network with endpoints: id (the 64-hex id) | endpoints "
         "(each endpoint's name and short id; the first version with it is not dated here)",
         ((V20, "id"), ((29, 0), "endpoints")),
         "moby v20.10.24 libnetwork/error.go:132; docker-v29.7.2 daemon/libnetwork/error.go:36-38, network.go:1031-1040"),
    Knob("rm_running_text", "`docker rm` of a running container: the 20.10 text | the moby 29 text (first version "
         "not dated here)",
         ((V20, "20.10"), ((29, 0), "29")),
         "moby v20.10.24 daemon/delete.go:80-89; docker-v29.7.2 daemon/delete.go:55-57,95"),
    Knob("gw_priority", "endpoint gateway priority: `docker network connect --gw-priority N` and `--network "
         "name=X,gw-priority=N` (before: `unknown flag: --gw-priority`, `invalid field key gw-priority`)",
         ((V20, False), ((28, 0), True)),
         "docker/cli commit d4db289eb5 (v28.0.0) cli/command/network/connect.go:62, opts/network.go:101-105; "
         "moby v28.0.0 daemon/network.go:1117 JoinOptionPriority, libnetwork/sandbox.go:651-700 Less"),
    Knob("network_opt_keys", "the keys of `docker run --network name=X,KEY=V,...` (the CLI's NetworkOpt)",
         ((V20, ("name", "alias", "ip", "ip6", "driver-opt")),
          ((25, 0), ("name", "alias", "ip", "ip6", "mac-address", "link-local-ip", "driver-opt")),
          ((28, 0), ("name", "alias", "ip", "ip6", "mac-address", "link-local-ip", "driver-opt", "gw-priority"))),
         "docker/cli v20.10.24 opts/network.go:44-88; commit 9e1b42e642 (v25.0.0); v28.0.0 opts/network.go:58-106"),
    Knob("gateway_endpoints", "which endpoints give the default routes: one (the first in sandbox order with an "
         "IPv4 gateway gives IPv4 and IPv6) | per-family (the first with an IPv4 gateway gives IPv4, the first with "
         "an IPv6 gateway IPv6; the first dual-stack one gives both)",
         ((V20, "one"), ((28, 0), "per-family")),
         "moby v27.5.1 libnetwork/default_gateway.go getGatewayEndpoint; v28.0.0 libnetwork/default_gateway.go:182-215 "
         "selectGatewayEndpoint, libnetwork/sandbox_linux.go updateGateway"),
    Knob("host_network_texts", "`network connect` to `host` / `disconnect` from it: joined (one text for both) | "
         "split (a text each)",
         ((V20, "joined"), ((28, 0, 2), "split")),
         "moby v20.10.24 runconfig/errors.go:9; commit 90a83063ee (v28.0.2) runconfig/errors.go:8-11; "
         "docker-v29.7.2 daemon/container_operations.go:178-179,1111-1112"),
    Knob("restart_policy_texts", "the refusals of a malformed `--restart`: 20.10 | cli-23 (the CLI's texts start "
         "`invalid restart policy format`) | 25 (the daemon's too: `invalid restart policy: ...`)",
         ((V20, "20.10"), ((23, 0), "cli-23"), ((25, 0), "25")),
         "docker/cli v20.10.24 opts/parse.go ParseRestartPolicy, moby v20.10.24 daemon/container.go:355-372; "
         "docker/cli v23.0.0 opts/parse.go; moby v25.0.0 api/types/container/hostconfig.go ValidateRestartPolicy"),
    Knob("inspect_shape", "`docker network inspect`'s JSON: 20.10 | 28 (EnableIPv4 after Driver) | 29 (also "
         "IPAM.Config shows the allocated subnet and gateway, Containers after Labels, Status.IPAM.Subnets)",
         ((V20, "20.10"), ((28, 0), "28"), ((29, 0), "29")),
         "moby v20.10.24 api/types/types.go:430-457; v28.0.0 api/types/network/network.go:74-93; docker-v29.7.2 "
         "api/types/network/network.go, inspect.go, daemon/network.go:686-870, "
         "daemon/server/router/network/network_routes.go:149 (Status from API 1.52)"),
    Knob("reserved_pools", "pools the daemon holds before any user network (docker0)",
         ((V20, ("172.17.0.0/16",)),),
         "moby v20.10.24 libnetwork/ipamutils/utils.go; docker0 requests 172.17.0.0/16 as a preferred pool"),
)
_BY_NAME = {k.name: k for k in KNOBS}


@dataclass(frozen=True)
class Profile:
    name: str
    version: Version
    description: str

    def __getattr__(self, name: str) -> Any:
        knob = _BY_NAME.get(name)
        if knob is None:
            raise AttributeError(name)
        return knob.value_at(self.version)[1]

    def since(self, name: str) -> Version:
        """The Docker version that introduced this profile's value of knob `name`."""
        return _BY_NAME[name].value_at(self.version)[0]


PROFILES: dict[str, Profile] = {
    "docker-20.10": Profile("docker-20.10", (20, 10, 24),
                            "the documented behaviour (libnetwork as in Docker 1.12-20.10; Debian's docker.io)"),
    "moby-27": Profile("moby-27", (27, 5, 1), "moby 27: shared macvlan parents, first-fit pools, ULA for --ipv6"),
    "moby-28": Profile("moby-28", (28, 5, 2), "moby 28: random MACs, no gateway for internal networks, ethN reuse"),
    "moby-29": Profile("moby-29", (29, 7, 2), "current Docker (moby 29): no implicit gateway"),
}

DEFAULT_PROFILE = "docker-20.10"


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise HarnessError(f"unknown profile {name!r}; valid profiles: {', '.join(sorted(PROFILES))}") from None


def knob_rows(profile: Profile) -> list[tuple[str, str, str, str]]:
    """(knob, value, since version, source) for every knob of `profile`: what `plan --profile` lists."""
    rows = []
    for knob in KNOBS:
        since, value = knob.value_at(profile.version)
        shown = ", ".join(value) if isinstance(value, tuple) else str(value).lower() if isinstance(value, bool) else str(value)
        rows.append((knob.name, shown, version_text(since), knob.source))
    return rows
