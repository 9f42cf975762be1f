"""Module-level pieces the Docker emulator's mixins share: driver/mode names, ids, inspect output, routes.

Used by `harness.docker.driver.DockerEmulator` and its mixins `harness.docker.networks.NetworksMixin` and
`harness.docker.containers.ContainersMixin`; it imports none of them.
"""

from __future__ import annotations

import hashlib
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
HOST = "host"


def _hex_id(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def dummy_parent_name(driver: str, network_id: str) -> str:
    """libnetwork's getDummyName: dm-<12 hex> for macvlan, di-<12 hex> for ipvlan (15 chars: IFNAMSIZ)."""
    return ("dm-" if driver == "macvlan" else "di-") + network_id[:12]

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
