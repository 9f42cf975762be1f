"""Observation through an independent path: `ip -json` and `ping`, run inside each node.

The backend configured the kernel over netlink (or in a VM); here the result is read back with iproute2's
JSON output and tested with ICMP echo from inside the source namespace, so a bug in the configuring code
cannot confirm itself. All a backend must offer is `run_many([(node, argv)], timeout)`.
`observation_jobs` are the queries for a list of nodes and `parse_observations` turns their answers into
a `NodeView` per node (links with kind and mode, addresses, routes);
`ping_many` runs `PingJob`s concurrently and returns `PingResult`s with the command and its output as
evidence.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.model import is_ip_address

# How long a probe may take. An expected-reachable probe returns at its first reply (deadline -w, whole
# seconds in iputils); an isolation probe sends ISOLATION_PACKETS and waits ISOLATION_WAIT after the last,
# so it is short, and all probes run at once: the matrix costs about one window, not one per pair.
REACH_DEADLINE = 3
PING_INTERVAL = 0.05
ISOLATION_PACKETS = 2
ISOLATION_WAIT = 0.2
# ping exits 2 for these: the source has no route at all, which is isolation, not a broken probe.
NO_ROUTE = ("Network is unreachable", "No route to host", "Cannot assign requested address")


@dataclass(frozen=True)
class LinkView:
    name: str
    kind: str | None  # None for a plain (physical-like) device
    mode: str | None
    mac: str | None
    up: bool
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class RouteView:
    dst: str  # "default" or CIDR
    gateway: str | None
    dev: str | None
    family: int

    def __str__(self) -> str:
        return self.dst + (f" via {self.gateway}" if self.gateway else "") + (f" dev {self.dev}" if self.dev else "")


@dataclass(frozen=True)
class NodeView:
    node: str
    links: dict[str, LinkView] = field(default_factory=dict)
    addresses: tuple[tuple[str, str, str], ...] = ()  # (ifname, cidr, scope)
    routes: tuple[RouteView, ...] = ()
    errors: tuple[str, ...] = ()

    def global_addresses(self) -> list[str]:
        return [cidr for ifname, cidr, scope in self.addresses if scope == "global" and ifname != "lo"]

    def cidrs_on(self, ifname: str) -> list[str]:
        return [cidr for name, cidr, _ in self.addresses if name == ifname]


# `addr show -details` carries every link (kind, mode, MAC, flags) with its addresses: one process
# per node for both, which matters under TCG in the VM, where every exec is expensive.
_QUERIES = {
    "links": ["ip", "-json", "-details", "addr", "show"],
    "routes4": ["ip", "-json", "-4", "route", "show", "table", "main"],
    "routes6": ["ip", "-json", "-6", "route", "show", "table", "main"],
}


def observation_jobs(nodes: Sequence[str]) -> list[tuple[str, list[str]]]:
    return [(node, argv) for node in nodes for argv in _QUERIES.values()]


def parse_observations(nodes: Sequence[str], results) -> dict[str, NodeView]:
    views = {}
    for i, node in enumerate(nodes):
        chunk = dict(zip(_QUERIES, results[i * len(_QUERIES) : (i + 1) * len(_QUERIES)]))
        errors = [f"`{r.command}` exited {r.exit_code}: {r.stderr.strip()}" for r in chunk.values() if not r.ok]
        views[node] = NodeView(
            node=node,
            links=_links(_json(chunk["links"].stdout)),
            addresses=_addresses(_json(chunk["links"].stdout)),
            routes=_routes(_json(chunk["routes4"].stdout), 4) + _routes(_json(chunk["routes6"].stdout), 6),
            errors=tuple(errors),
        )
    return views


def _json(text: str) -> list:
    try:
        data = json.loads(text or "[]")
    except json.JSONDecodeError:
        return []
    return data if isinstance(data, list) else []


def _links(data: list) -> dict[str, LinkView]:
    out = {}
    for item in data:
        info = item.get("linkinfo") or {}
        kind = info.get("info_kind")
        data_ = info.get("info_data") or {}
        mode = data_.get("mode")
        if kind == "ipvlan" and mode:
            mode = str(mode).lower()
        flags = tuple(item.get("flags", ()))
        out[item["ifname"]] = LinkView(
            name=item["ifname"], kind=kind, mode=mode, mac=item.get("address"),
            up="UP" in flags, flags=flags,
        )
    return out


def _addresses(data: list) -> tuple[tuple[str, str, str], ...]:
    out = []
    for item in data:
        for a in item.get("addr_info", ()):
            out.append((item["ifname"], f"{a['local']}/{a['prefixlen']}", a.get("scope", "")))
    return tuple(out)


def _routes(data: list, family: int) -> tuple[RouteView, ...]:
    return tuple(RouteView(r.get("dst", ""), r.get("gateway"), r.get("dev"), family) for r in data)


@dataclass(frozen=True)
class PingJob:
    src: str  # node
    dst: str  # address
    expect_reach: bool | None  # None: no expectation, wait the reach deadline
    family: int = 0
    isolation_wait: float = 0.0  # an isolation probe's wait for an answer; 0: ISOLATION_WAIT


@dataclass(frozen=True)
class PingResult:
    job: PingJob
    reached: bool
    summary: str  # "3 packets transmitted, 0 received" or the error ping printed
    command: str
    exit_code: int
    probe_error: bool = False  # ping itself failed (bad argument, unknown name): neither verdict holds
    rtt_max_ms: float | None = None  # the slowest reply, when there was one

    @property
    def evidence(self) -> str:
        return f"`{self.command}` in {self.job.src}: exit {self.exit_code}: {self.summary}"


def ping_argv(dst: str, family: int, expect_reach: bool | None, isolation_wait: float = 0.0) -> list[str]:
    version = family or (ipaddress.ip_address(dst).version if is_ip_address(dst) else 4)
    head = ["ping", f"-{version}", "-n", "-q", "-i", f"{PING_INTERVAL:g}"]
    if expect_reach is False:
        wait = isolation_wait or ISOLATION_WAIT
        return [*head, "-c", str(ISOLATION_PACKETS), "-W", f"{wait:g}", dst]
    # -c 1 with -w: keep sending until one reply or the deadline; exit 0 iff a reply came.
    return [*head, "-c", "1", "-w", str(REACH_DEADLINE), dst]


PING_TIMEOUT = REACH_DEADLINE + 5


def ping_many(session, jobs: Sequence[PingJob]) -> list[PingResult]:
    return parse_pings(jobs, session.run_many(ping_commands(jobs), timeout=PING_TIMEOUT))


def ping_commands(jobs: Sequence[PingJob]) -> list[tuple[str, list[str]]]:
    return [(j.src, ping_argv(j.dst, j.family, j.expect_reach, j.isolation_wait)) for j in jobs]


_RTT = re.compile(r"= [\d.]+/[\d.]+/([\d.]+)/[\d.]+ ms")


def slow_replies(results: Sequence[PingResult]) -> float:
    """The slowest reply among probes that got one, in seconds (0 when none did)."""
    return max((r.rtt_max_ms or 0.0 for r in results if r.reached), default=0.0) / 1000


def isolation_retry_wait(results: Sequence[PingResult]) -> float | None:
    """A longer wait for the isolation probes when this batch's replies were slow, else None.

    A silent isolation probe only means something if a reply would have come within its wait. When
    the machine is loaded (many probes at once, a TCG guest) and even expected replies took a quarter
    of the wait, the silent ones are asked again with ten times the slowest reply, at least 1 s.
    """
    slowest = slow_replies(results)
    if slowest <= ISOLATION_WAIT / 4:
        return None
    return min(REACH_DEADLINE, max(1.0, 10 * slowest))


def parse_pings(jobs: Sequence[PingJob], results) -> list[PingResult]:
    out = []
    for job, res in zip(jobs, results):
        text = (res.stdout + "\n" + res.stderr).strip()
        summary = next((line.strip() for line in text.splitlines() if "transmitted" in line), "")
        if not summary:
            summary = text.splitlines()[-1] if text else "no output"
        # Exit 0: a reply; 1: none; anything else is ping failing, unless it says there is no route.
        no_route = any(marker in text for marker in NO_ROUTE)
        probe_error = res.exit_code not in (0, 1) and not no_route
        rtt = _RTT.search(text)
        out.append(PingResult(job, res.exit_code == 0, summary, res.command, res.exit_code, probe_error,
                              float(rtt.group(1)) if rtt else None))
    return out
