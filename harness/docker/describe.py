"""What Docker would have created, as `harness plan --json` prints it (`describe`)."""

from __future__ import annotations

import ipaddress

from harness.docker.base import DockerState
from harness.docker.fleet import Fleet, as_fleet
from harness.docker.state import ContainerState, Endpoint


def describe(emulator: DockerState | Fleet, steps) -> dict:
    """What Docker would have created, as `harness plan --json` prints it; with several hosts, every
    network, container and host link says which host (`host`) it belongs to."""
    fleet = as_fleet(emulator)
    networks, containers, links = [], [], []
    for host, state in fleet.hosts.items():
        tag = {"host": host} if fleet.multi_host else {}
        networks += [{**tag, **n} for n in _networks(state)]
        containers += [{**tag, **c} for c in _containers(state)]
        links += [{**tag, "name": link.name, "kind": link.kind, "parent": link.parent, "vlan_id": link.vlan_id,
                   "created_by": "driver" if link.owner not in ("topology", "user") else link.owner}
                  for link in state.host_links.values()]
    errors = [{"command": s.step.index, "text": s.step.text, "error": s.error} for s in steps if s.error]
    outputs = getattr(emulator, "outputs", {})
    notes = list(dict.fromkeys(getattr(emulator, "notes", [])))
    return {"networks": networks, "containers": containers, "errors": errors,
            **({"outputs": {str(k): v for k, v in outputs.items()}} if outputs else {}),
            **({"notes": notes} if notes else {}),
            "host_links": links}


def _networks(emulator: DockerState) -> list[dict]:
    networks = []
    for net in emulator.networks.values():
        networks.append({
            "name": net.name,
            "id": net.id,
            "driver": net.driver,
            "mode": net.mode,
            **({"ipvlan_flag": net.flag} if net.driver == "ipvlan" else {}),
            "parent": net.parent,
            "parent_created_by_driver": net.created_parent,
            "internal": net.internal,
            "ipv6": net.ipv6,
            "subnets": [
                {"subnet": str(p.subnet), "gateway": str(p.gateway) if p.gateway else None,
                 "ip_range": str(p.ip_range) if p.ip_range else None,
                 "aux_addresses": {k: str(v) for k, v in p.aux.items()}}
                for p in net.pools
            ],
        })
    return networks


def _containers(emulator: DockerState) -> list[dict]:
    containers = []
    for c in emulator.history.values():
        containers.append({
            "name": c.name,
            "running": c.running,
            "status": getattr(c, "status", "running" if c.running else "exited"),
            "transient": c.transient,
            **({"network_mode": c.net_mode} if getattr(c, "net_mode", "") else {}),
            **({"hostname": c.config["hostname"]} if getattr(c, "config", {}).get("hostname") else {}),
            "interfaces": [
                {"name": ep.ifname, "network": ep.network, "addresses": ep.cidrs(), "mac": ep.mac,
                 "routes": _routes_of(c, ep)}
                for ep in c.endpoints
            ],
        })
    return containers


def _routes_of(container: ContainerState, ep: Endpoint) -> list[str]:
    routes = [f"{ipaddress.ip_interface(c).network} dev {ep.ifname}" for c in ep.cidrs()]
    ep4, ep6 = container.gateway_endpoints()
    if ep4 is ep:
        if ep.connected_default:
            routes.insert(0, f"default dev {ep.ifname}")
        if ep.gateway4:
            routes.insert(0, f"default via {ep.gateway4} dev {ep.ifname}")
    if ep6 is ep and ep.gateway6:
        routes.append(f"default via {ep.gateway6} dev {ep.ifname}")
    return routes
