"""Module-level pieces the Docker emulator's mixins share: driver/mode names, ids, inspect output, routes.

Used by `harness.docker.driver.DockerEmulator` and its mixins `harness.docker.networks.NetworksMixin` and
`harness.docker.containers.ContainersMixin`; it imports none of them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

from harness.docker.state import Endpoint, NetworkState
from harness.plan import (
    AddRoute,
    Op,
)

MACVLAN_MODES = ("bridge", "private", "vepa", "passthru")
IPVLAN_MODES = ("l2", "l3", "l3s")
IPVLAN_MODES_20 = ("l2", "l3")  # l3s and ipvlan_flag came with moby v23.0.0 (commit f70a9788c5)
IPVLAN_FLAGS = ("bridge", "private", "vepa")
DRIVERS = ("macvlan", "ipvlan")
MAC_ADDRESS = re.compile(r"([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}")  # the CLI's ValidateMACAddress (net.ParseMAC, 6 bytes)
HOST = "host"


def _hex_id(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def dummy_parent_name(driver: str, network_id: str) -> str:
    """libnetwork's getDummyName: dm-<12 hex> for macvlan, di-<12 hex> for ipvlan (15 chars: IFNAMSIZ)."""
    return ("dm-" if driver == "macvlan" else "di-") + network_id[:12]

def _natural(name: str) -> list:
    """sortorder.NaturalLess: runs of digits compare as numbers."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.findall(r"\d+|\D+", name)]


def network_resource(net: NetworkState, find_container, shape: str = "20.10") -> dict:
    """One network as `docker network inspect` shows it, in the profile's `inspect_shape`:

    - 20.10 (moby v20.10.24 api/types/types.go:430-457, daemon/network.go:586-733): the user's subnets as
      given; the pool IPAM chose only when no IPv4 subnet was given.
    - 28 (v28.0.0 api/types/network/network.go:74-93): `EnableIPv4` after `Driver`.
    - 29 (docker-v29.7.2 api/types/network/network.go, inspect.go; daemon/network.go:686-870): each subnet
      shows what IPAM allocated, with IPAM's gateway when none was given (none when the profile allocates
      none); a family without user subnets shows its allocated pools; `Containers` follows `Labels`;
      `Status.IPAM.Subnets` (API 1.52, network_routes.go:149) gives each subnet's `IPsInUse` (reserved
      addresses included) and `DynamicIPsAvailable` (defaultipam/address_space.go:399-418)."""
    containers = {}
    for cname, ep in net.endpoints.items():
        c = find_container(cname)
        v4 = next((f"{ip}/{plen}" for ip, plen in ep.addresses if ip.version == 4), "")
        v6 = next((f"{ip}/{plen}" for ip, plen in ep.addresses if ip.version == 6), "")
        key = c.id if c is not None else f"ep-{_hex_id(net.id, cname)}"
        containers[key] = {"Name": cname, "EndpointID": _hex_id(net.id, cname, "endpoint"),
                           "MacAddress": ep.mac or "", "IPv4Address": v4, "IPv6Address": v6}
    if shape == "29":
        config = _allocated_config(net)
    elif net.ipam_config and any(":" not in c["Subnet"] for c in net.ipam_config):
        config = [dict(c) for c in net.ipam_config]
    else:
        # No IPv4 subnet given: the pool and gateway IPAM chose are shown (daemon/network.go:675-733).
        config = [{"Subnet": str(p.subnet), **({"Gateway": str(p.gateway)} if p.gateway else {})} for p in net.pools4]
        config += [dict(c) for c in net.ipam_config]
    created = f"2026-01-01T00:{net.created_at // 60:02d}:{net.created_at % 60:02d}.000000000Z"
    head = {"Name": net.name, "Id": net.id, "Created": created, "Scope": "local", "Driver": net.driver}
    if shape in ("28", "29"):
        head["EnableIPv4"] = True
    head.update({"EnableIPv6": net.ipv6, "IPAM": {"Driver": "default", "Options": {}, "Config": config},
                 "Internal": net.user_internal, "Attachable": False, "Ingress": False,
                 "ConfigFrom": {"Network": ""}, "ConfigOnly": False})
    if shape == "29":
        status = {str(p.subnet): {"IPsInUse": len(p.allocated), "DynamicIPsAvailable": _dynamic_available(p)}
                  for p in net.pools}
        return {**head, "Options": dict(net.options), "Labels": {}, "Containers": containers,
                "Status": {"IPAM": {"Subnets": status}}}
    return {**head, "Containers": containers, "Options": dict(net.options), "Labels": {}}


def _allocated_config(net: NetworkState) -> list[dict]:
    """moby 29's IPAM.Config (docker-v29.7.2 daemon/network.go:820-870 buildIPAMResources): per user subnet,
    the allocated pool with the user's range and aux addresses and IPAM's gateway when none was given; for a
    family without user subnets, what IPAM allocated."""
    given = {ipaddress.ip_network(c["Subnet"], strict=False): c for c in net.ipam_config}
    out = []
    for pools, user in ((net.pools4, net.user_subnets4), (net.pools6, net.user_subnets6)):
        for p in pools:
            cfg = given.get(p.subnet) if user else None
            entry = {"Subnet": str(p.subnet)}
            if cfg is not None and "IPRange" in cfg:
                entry["IPRange"] = cfg["IPRange"]
            if p.gateway is not None:
                entry["Gateway"] = str(p.gateway)
            if cfg is not None and "AuxiliaryAddresses" in cfg:
                entry["AuxiliaryAddresses"] = dict(cfg["AuxiliaryAddresses"])
            out.append(entry)
    return out


def _dynamic_available(pool) -> int:
    """DynamicIPsAvailable: the addresses of the range (the subnet without one) not allocated, saturating at
    2^64-1 (uint128 Uint64Sat)."""
    rng = pool.ip_range or pool.subnet
    start = int(rng.network_address) - int(pool.subnet.network_address)
    used = sum(1 for o in pool.allocated if start <= o < start + rng.num_addresses)
    return min(rng.num_addresses - used, 2**64 - 1)


def default_routes(node: str, ep: Endpoint, ipv6: bool = True, replace: bool = False) -> list[Op]:
    """The default route(s) Docker gives a container through one gateway endpoint (both families)."""
    return gateway_routes(node, ep, ep, replace4=replace, replace6=replace)


def gateway_routes(node: str, ep4: Endpoint | None, ep6: Endpoint | None,
                   replace4: bool = False, replace6: bool = False) -> list[Op]:
    """The IPv4 default route through `ep4` and the IPv6 one through `ep6` (moby v28.0.0
    libnetwork/sandbox_linux.go updateGateway: a gateway when the endpoint has one, else a route via the
    interface, as ipvlan l3's connected default)."""
    ops: list[Op] = []
    if ep4 is not None:
        if ep4.gateway4 is not None:
            ops.append(AddRoute(node, "default", ep4.ifname, gateway=str(ep4.gateway4), family=4, replace=replace4))
        elif ep4.connected_default:
            ops.append(AddRoute(node, "default", ep4.ifname, family=4, replace=replace4))
    if ep6 is not None:
        if ep6.gateway6 is not None:
            ops.append(AddRoute(node, "default", ep6.ifname, gateway=str(ep6.gateway6), family=6, replace=replace6))
        elif ep6.connected_default and ep6.has_default()[1]:
            ops.append(AddRoute(node, "default", ep6.ifname, family=6, replace=replace6))
    return ops
