"""Observation through an independent path: a prober process's own netlink dumps and ICMP echoes, or
`ip -json` and `ping`, run inside each node.

The backend configured the kernel with pyroute2 (or in a VM); here the result is read back by other code
and tested with ICMP echo from inside the source namespace, so a bug in the configuring code cannot
confirm itself. `observe_and_probe` is the entry point: when the session's nodes are namespace files
(`NamespacePaths`: the netns backend, also inside the VM guest, and the docker backend), one batch prober
(`harness/prober.py --batch`) per wave observes every node with its own netlink decoder, sends every probe
and flushes the wave's neighbour entries; otherwise (any session offering only `run_many([(node, argv)],
timeout)`) `observation_jobs` run `ip -json` in each node, `parse_observations` reads them, and the probes
are `ping` processes or one prober per source. Either way the result is a `NodeView` per node (links with
kind and mode, addresses, routes) and a `PingResult` per `PingJob`, with the probe and its output as
evidence. `probe_all` runs the probes in waves of bounded size and rounds that re-ask isolation probes
until the replies of the same wave back them; the rules are stated above `PROBER`. Measured and dropped:
sharing a big wave among two batch probers at once (by source) made the 200-container matrix slower
(checks 24.8 s against 16.7 s, load 5.4-5.7), the probes contend in the kernel. `scan_argv`/`parse_scan` run
harness/arpscan.py in the switch node and read who answered for each address (`ScanResult`): the evidence
of address conflicts between Docker hosts.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

from harness import arpscan, prober, proc
from harness.model import is_ip_address

# How long a probe may take. An expected-reachable probe returns at its first reply (deadline -w, whole
# seconds in iputils); an isolation probe sends ISOLATION_PACKETS and waits ISOLATION_WAIT after the last,
# so it is short, and all probes run at once: the matrix costs about one window, not one per pair.
REACH_DEADLINE = 3
PING_INTERVAL = 0.05
ISOLATION_PACKETS = 2
ISOLATION_WAIT = 0.2
# The batch prober (`harness/prober.py --batch`, see "probing" below) derives its isolation window from the
# replies of the same batch: WINDOW_FACTOR times the slowest first reply, at least ISOLATION_FLOOR, its
# two echoes ISOLATION_GAP apart; in a first round it waits at most BATCH_CAP for slow witnesses.
ISOLATION_FLOOR = 0.025
ISOLATION_GAP = 0.005
WINDOW_FACTOR = 10.0
BATCH_CAP = 1.0
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
    source: str = "ip -json"  # how it was read: iproute2, or the batch prober's own netlink dump

    def query(self, what: str) -> str:
        """The command that showed `what` (addr, route, link), for evidence."""
        if self.source == "ip -json":
            return {"addr": "ip -json addr show", "route": "ip -json route show"}.get(what, "ip -json -details link show")
        return f"prober.py netlink {what} dump"

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


def path_jobs(paths) -> list[tuple[str, list[str]]]:
    """`ip -json route get DST` in the node of each path fact (`harness.oracle.Oracle.paths`): the
    interface, gateway and source address the kernel picks."""
    return [(fact.node, ["ip", "-json", "route", "get", fact.value.split()[0]]) for fact in paths]


# The node's hostname as its UTS namespace has it (uname(2)), read by the host's Python: no `hostname`
# binary is needed in the VM guest, and the session enters the node's UTS namespace for it.
HOSTNAME_ARGV = [sys.executable, "-I", "-S", "-c", "import socket; print(socket.gethostname())"]


def hostname_jobs(facts) -> list[tuple[str, list[str]]]:
    return [(fact.node, HOSTNAME_ARGV) for fact in facts]


def parse_route_get(res) -> str:
    """One `ip -json route get` answer as the oracle writes a path: `DST [via GW] dev IF src SRC`."""
    if not res.ok:
        return f"no route ({(res.stderr.strip().splitlines() or ['exit ' + str(res.exit_code)])[-1]})"
    data = _json(res.stdout)
    if not data:
        return "no answer"
    r = data[0]
    via = f" via {r['gateway']}" if r.get("gateway") else ""
    return f"{r.get('dst', '?')}{via} dev {r.get('dev', '?')} src {r.get('prefsrc', '?')}"


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


def views_from_prober(nodes: Sequence[str], records: dict[str, dict]) -> dict[str, NodeView]:
    """A `NodeView` per node from the batch prober's `observe` records (the `ip -json` shapes)."""
    views = {}
    for node in nodes:
        rec = records.get(node)
        if rec is None:
            views[node] = NodeView(node, errors=("the prober returned no observation",), source="netlink")
            continue
        links = rec.get("links") or []
        views[node] = NodeView(
            node=node, links=_links(links), addresses=_addresses(links),
            routes=_routes(rec.get("routes4") or [], 4) + _routes(rec.get("routes6") or [], 6),
            errors=(rec["error"],) if rec.get("error") else (), source="netlink")
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
    expect_reach: bool | None  # None: no expectation (its outcome is chance: an address in conflict)
    family: int = 0
    isolation_wait: float = 0.0  # an isolation probe's wait for an answer; 0: ISOLATION_WAIT

    @property
    def listens(self) -> bool:
        """Whether it listens for the isolation window instead of waiting out the reach deadline: an isolation
        probe, and one whose outcome is chance (the window's rule already hears any reply the machine would
        give; a reply a conflict sends to the other holder never comes, and waiting 3 s for it only costs)."""
        return self.expect_reach is not True


@dataclass(frozen=True)
class PingResult:
    job: PingJob
    reached: bool
    summary: str  # "3 packets transmitted, 0 received" or the error ping printed
    command: str
    exit_code: int
    probe_error: bool = False  # ping itself failed (bad argument, unknown name): neither verdict holds
    rtt_max_ms: float | None = None  # the slowest reply, when there was one
    reply_ms: float | None = None  # from the first echo sent to the first reply (losses included)
    unbacked: str = ""  # a silent isolation probe whose batch cannot vouch for it: why (no verdict)
    timed_out: bool = False  # the probe's process was killed at the batch's deadline (asked again)
    waited_ms: float | None = None  # an isolation probe: how long it listened after its last echo
    no_route: bool = False  # the kernel refused to send (no route, no neighbour): isolation, no window needed

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


def probe_now(session, jobs: Sequence[PingJob]) -> list[PingResult]:
    """Probes asked at once, outside the matrix (a transient container's documented ping, while it exists):
    the batch prober for a session with namespace files (a fork of the harness, not an exec of `ping`:
    about 100 ms less each in the TCG guest), else `ping`."""
    if isinstance(session, NamespacePaths) and all(_has_namespace_file(session, j.src) for j in jobs):
        return probe_all(session, jobs, {})[1]
    return ping_many(session, jobs)


def _has_namespace_file(session: NamespacePaths, node: str) -> bool:
    # A real engine's transient container is gone by now: its own output, kept by the session, is the record.
    try:
        session.netns_path(node)
    except KeyError:
        return False
    return True


def ping_commands(jobs: Sequence[PingJob]) -> list[tuple[str, list[str]]]:
    return [(j.src, ping_argv(j.dst, j.family, not j.listens, j.isolation_wait)) for j in jobs]


_RTT = re.compile(r"= [\d.]+/[\d.]+/([\d.]+)/[\d.]+ ms")
_SENT = re.compile(r"(\d+) packets transmitted")


def slow_replies(results: Sequence[PingResult]) -> float:
    """The slowest first reply among probes that got one, in seconds (0 when none did)."""
    return max((_reply_ms(r) for r in results if r.reached), default=0.0) / 1000


def _reply_ms(r: PingResult) -> float:
    return r.reply_ms if r.reply_ms is not None else (r.rtt_max_ms or 0.0)


def isolation_retry_wait(results: Sequence[PingResult], wait: float = ISOLATION_WAIT) -> float | None:
    """A longer wait for the isolation probes when this batch's replies were slow, else None.

    A silent isolation probe only means something if a reply would have come within its wait: the wait
    must be WINDOW_FACTOR times the slowest expected reply of the batch (`required_listen_ms`). When the
    machine is loaded (many probes at once, a TCG guest) and it was not, the silent ones are asked again
    with ten times the slowest reply, at least 1 s.
    """
    slowest = slow_replies(results)
    if required_listen_ms(slowest * 1000) <= wait * 1000:
        return None
    return retry_wait(slowest, wait)


def retry_wait(slowest: float, wait: float) -> float:
    """The isolation wait of the next round: ten times the slowest reply, at least 1 s and twice the last."""
    return min(float(REACH_DEADLINE), max(1.0, 10 * slowest, 2 * wait))


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
        rtt_ms = float(rtt.group(1)) if rtt else None
        sent = _SENT.search(summary)
        reply_ms = None
        if res.exit_code == 0 and rtt_ms is not None:
            # -c 1 stops at the first reply, which came after the last echo sent (PING_INTERVAL apart)
            # and after its own round trip: at least the larger of the two.
            sent_before = int(sent.group(1)) - 1 if sent and not job.listens else 0
            reply_ms = max(rtt_ms, sent_before * PING_INTERVAL * 1000)
        out.append(PingResult(job, res.exit_code == 0, summary, res.command, res.exit_code, probe_error,
                              rtt_ms, reply_ms, timed_out=bool(getattr(res, "timed_out", False)),
                              waited_ms=_listened_ms(job), no_route=no_route and res.exit_code not in (0, 1)))
    return out


def _listened_ms(job: PingJob) -> float | None:
    """How long `ping -W` (or a per-source prober) listens after an isolation probe's last echo."""
    return (job.isolation_wait or ISOLATION_WAIT) * 1000 if job.listens else None


# -- probing at scale ---------------------------------------------------------------------------------
#
# The rules, in one place:
#   * Waves. Every probe that resolves a neighbour leaves an ARP/ND entry at both ends, and the kernel's
#     neighbour tables are global: about 1024 entries (gc_thresh3) for all namespaces together, and an
#     entry younger than 5 s cannot be reclaimed. The full matrix of N containers needs ~N^2 entries (a
#     60-container matrix run at once overflowed the table 77,000 times: the "no reply" failures of issue
#     #10). So the probes are split into waves: the nodes (sources and the owners of the destinations) go
#     into blocks of B, a wave probes between two blocks (about 2*B^2 entries, below NEIGH_BUDGET), and
#     after each wave the neighbour entries of its nodes are flushed (`ip neigh flush all`: dynamic state
#     the probes created, nothing Docker configured and nothing that is judged). A batch that fits the
#     budget is one wave and flushes nothing: every documented scenario.
#   * Processes. When the session's nodes are namespace files (`NamespacePaths`: the netns backend, also
#     inside the VM's guest, and the docker backend), a wave is one process: the batch prober
#     (`harness/prober.py --batch`) enters each source's namespace to open its ICMP sockets and sends every
#     probe of the wave from one loop, started together with the `ip -json` observations. Otherwise a wave
#     runs one prober per source when the batch needs more than one wave or more than `max_concurrent()`
#     probes, and one `ping` per probe for a small batch.
#   * Window. An isolation probe's silence is judged against the replies of its own wave. Its witnesses
#     are the wave's expected-reachable probes (a source with none gets a witness echo to its own
#     loopback); the slowest witness's first reply (from its first echo, losses and ARP included) sets
#     the time a silent probe must have listened after its last echo: WINDOW_FACTOR times that, at least
#     ISOLATION_FLOOR (`required_listen_ms`). The batch prober listens exactly that long (and longer while
#     a witness is unanswered, up to its cap); `ping -W` and the per-source prober listen a fixed wait.
#     Everything here is local: replies take well under a millisecond, so the floor decides, and a loaded
#     machine, whose replies are slow, lengthens the window by itself.
#   * Trust. A wave is trusted when every witness replied. The silent isolation probes of an untrusted
#     wave, those that did not listen long enough, and the failed witnesses are probed again in a new
#     round with a longer wait (`retry_wait`), up to MAX_ROUNDS rounds. A reply is proof in any round; an
#     isolation verdict comes from the probe's last round.
#   * Backing. A final "isolated" needs, in the same wave, a reply to one of its own source's witnesses
#     and a listening time of at least the required window. Otherwise the probe has no verdict
#     (`PingResult.unbacked`), which fails: a slow machine can make a check fail, never make it pass.

PROBER = Path(__file__).resolve().with_name("prober.py")
# A local session runs the prober in a fork of the harness instead of a new interpreter (harness.proc,
# `fork_script`: 9 ms instead of 350 ms per start in the TCG guest); it runs only prober.py's own code.
proc.fork_script(PROBER, prober.main)
NEIGH_BUDGET = 600  # neighbour entries one wave may create: well below the global gc_thresh3 (1024)
MAX_ROUNDS = 3
LOOPBACK = "127.0.0.1"


def max_concurrent() -> int:
    """How many probe processes may run at once: derived from the CPU count (the guest has one)."""
    return max(128, 64 * (os.cpu_count() or 1))


def prober_argv(jobs: Sequence[PingJob], wait: float) -> list[str]:
    specs = [("i:" if j.listens else "r:") + j.dst for j in jobs]
    return [sys.executable, "-I", "-S", str(PROBER), f"{PING_INTERVAL:g}", str(REACH_DEADLINE), f"{wait:g}",
            str(ISOLATION_PACKETS), *specs]


def parse_prober(jobs: Sequence[PingJob], res) -> list[PingResult]:
    """One prober's answer (a CommandResult) as a PingResult per job, in order."""
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    records, sockets = [], {}
    try:
        sockets = json.loads(lines[0])["sockets"] if lines else {}
        records = [json.loads(line) for line in lines[1:]]
    except (json.JSONDecodeError, KeyError, TypeError):
        records = []
    if res.exit_code != 0 or len(records) != len(jobs):
        return _prober_failed(jobs, res, sockets)
    return [_prober_record(job, rec, sockets, _listened_ms(job)) for job, rec in zip(jobs, records)]


@runtime_checkable
class NamespacePaths(Protocol):
    """A session whose nodes are network namespaces with a file each: the batch prober enters them."""

    def netns_path(self, node: str) -> str: ...


def batch_prober_argv(jobs: Sequence[PingJob], paths: dict[str, str], cap: float,
                      observe: Sequence[str] = (), flush: Sequence[str] = ()) -> list[str]:
    """One prober for every source of a wave (and the nodes to observe): its spec, one line per argv
    word (see harness/prober.py)."""
    spec = [f"window {PING_INTERVAL:g} {REACH_DEADLINE} {ISOLATION_FLOOR:g} {cap:g} {WINDOW_FACTOR:g} "
            f"{ISOLATION_PACKETS} {ISOLATION_GAP:g}"]
    spec += [f"ns {node} {paths[node]}" for node in sorted({j.src for j in jobs} | set(observe) | set(flush))]
    spec += [f"probe {j.src} {'i' if j.listens else 'r'} {j.dst}" for j in jobs]
    spec += [f"observe {node}" for node in observe]
    spec += [f"flush {node}" for node in flush]
    return [sys.executable, "-I", "-S", str(PROBER), "--batch", *spec]


def parse_batch_prober(jobs: Sequence[PingJob], res, observed: dict | None = None,
                       stats: ProbeStats | None = None) -> list[PingResult]:
    """The batch prober's answer (a CommandResult) as a PingResult per job, in order; its observation
    records go into `observed` (node -> record) when given."""
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    records, head = [], {}
    try:
        head = json.loads(lines[0]) if lines else {}
        records = [json.loads(line) for line in lines[1:]]
    except (json.JSONDecodeError, TypeError):
        records = []
    if observed is not None:
        observed.update({r["observe"]: r for r in records if isinstance(r, dict) and "observe" in r})
        if res.exit_code != 0 or not lines:
            why = "timed out" if getattr(res, "timed_out", False) else f"exit {res.exit_code}"
            text = (res.stderr.strip().splitlines() or ["no output"])[-1]
            observed["*error*"] = f"the prober failed ({why}): {text}"
    # A failed neighbour flush is not a verdict: an overflowing table loses replies, which makes reach
    # probes fail and isolation probes unbacked, never a false pass.
    records = [r for r in records if not (isinstance(r, dict) and ("observe" in r or "flushed" in r))]
    sockets = head.get("sockets", {}) if isinstance(head, dict) else {}
    if stats is not None and isinstance(head, dict):
        for phase, ms in (head.get("phases_ms") or {}).items():
            stats.phases_ms[phase] = stats.phases_ms.get(phase, 0.0) + ms
    if res.exit_code != 0 or len(records) != len(jobs) or any(
            r.get("src") != j.src or r.get("dst") != j.dst for j, r in zip(jobs, records)):
        return _prober_failed(jobs, res, sockets)
    return [_prober_record(job, rec, sockets, rec.get("waited_ms")) for job, rec in zip(jobs, records)]


def _prober_failed(jobs: Sequence[PingJob], res, sockets: dict) -> list[PingResult]:
    """Every job of a prober that failed (exited non-zero, timed out, or answered out of step): broken probes."""
    why = "timed out" if getattr(res, "timed_out", False) else f"exit {res.exit_code}"
    text = (res.stderr.strip().splitlines() or ["no output"])[-1]
    return [PingResult(j, False, f"the prober failed ({why}): {text}", _prober_command(j, sockets),
                       res.exit_code or 2, True, timed_out=bool(getattr(res, "timed_out", False))) for j in jobs]


def _prober_record(job: PingJob, rec: dict, sockets: dict, waited_ms: float | None) -> PingResult:
    """One probe's record from a prober (the per-source one or the batch one) as a PingResult."""
    reached = bool(rec.get("received"))
    error = rec.get("error")
    summary = f"{rec.get('sent', 0)} packets transmitted, {rec.get('received', 0)} received"
    if reached:
        summary += f", first reply after {rec.get('first_ms') or 0:.1f} ms"
    elif rec.get("waited_ms") is not None:
        summary += f", listened {rec['waited_ms']:.1f} ms after the last echo"
    if error:
        summary += f": {error}"
    probe_error = bool(error) and not any(marker in error for marker in NO_ROUTE)
    return PingResult(job, reached, summary, _prober_command(job, sockets), 0 if reached else (2 if error else 1),
                      probe_error, rec.get("rtt_ms"), rec.get("first_ms"), waited_ms=waited_ms,
                      no_route=bool(error) and not probe_error)


def _prober_command(job: PingJob, sockets: dict) -> str:
    version = ipaddress.ip_address(job.dst).version if is_ip_address(job.dst) else 4
    kind = sockets.get(str(version), "icmp")
    return f"prober.py {'i' if job.listens else 'r'}:{job.dst} ({kind} ICMP socket)"


def plan_waves(jobs: Sequence[PingJob], owners: dict[str, str], budget: int | None = None) -> list[list[int]]:
    """Indices of `jobs` in waves, each creating at most about `budget` neighbour entries (see above)."""
    budget = NEIGH_BUDGET if budget is None else budget
    pairs = {(j.src, owners.get(j.dst, j.src)) for j in jobs}
    if 2 * len(pairs) <= budget:
        return [list(range(len(jobs)))] if jobs else []
    nodes = sorted({j.src for j in jobs} | {owners[j.dst] for j in jobs if j.dst in owners})
    size = max(1, math.isqrt(budget // 2))
    block = {node: i // size for i, node in enumerate(nodes)}
    waves: dict[tuple[int, int], list[int]] = {}
    for i, j in enumerate(jobs):
        a = block[j.src]
        b = block.get(owners.get(j.dst, j.src), a)
        waves.setdefault((min(a, b), max(a, b)), []).append(i)
    return [waves[k] for k in sorted(waves)]


@dataclass
class ProbeStats:
    """What probing cost: for the caller to print (the scale test) or ignore."""

    probes: int = 0  # probes judged (witness echoes to loopback not counted)
    sent: int = 0  # probes run, retries and witnesses included
    waves: int = 0
    rounds: int = 0
    processes: int = 0
    prober: bool = False
    phases_ms: dict = field(default_factory=dict)  # the batch probers' time per phase (observe, open, probe, flush)


def required_listen_ms(slowest_ms: float) -> float:
    """How long a silent isolation probe must have listened after its last echo, given the slowest first
    reply among its wave's witnesses (ms): WINDOW_FACTOR times it, at least ISOLATION_FLOOR."""
    return max(ISOLATION_FLOOR * 1000, WINDOW_FACTOR * slowest_ms)


# The batch prober prints times rounded to a microsecond: a comparison of its figures allows for that.
_ROUNDING_MS = 0.01


def _wave_verdicts(wave: Sequence[PingJob], results: Sequence[PingResult]) -> tuple[bool, float, set[str]]:
    """(trusted, slowest first reply of a witness in ms, sources with a witness that replied) of one wave."""
    witnesses = [r for j, r in zip(wave, results) if j.expect_reach is True]
    slowest = max((_reply_ms(r) for r in witnesses if r.reached), default=0.0)
    trusted = all(r.reached and not r.probe_error for r in witnesses)
    backed = {r.job.src for r in witnesses if r.reached and not r.probe_error}
    return trusted, slowest, backed


def isolation_backing(result: PingResult, slowest_ms: float, backed: set[str]) -> str:
    """Why a silent isolation probe's silence proves nothing in its wave, or "" when it is backed."""
    if result.no_route:
        return ""  # the kernel's own answer, at once: nothing was sent, so nothing could come back
    need = required_listen_ms(slowest_ms)
    if result.job.src not in backed:
        return (f"{result.job.src} got no timely reply of its own in the same batch "
                f"(slowest first reply {slowest_ms:.1f} ms)")
    waited = result.waited_ms or 0.0
    if waited + _ROUNDING_MS < need:
        return (f"it listened {waited:.1f} ms after its last echo, less than {WINDOW_FACTOR:g} times the slowest "
                f"first reply of its batch ({slowest_ms:.1f} ms) or {ISOLATION_FLOOR * 1000:g} ms")
    return ""


def _with_witnesses(jobs: Sequence[PingJob]) -> list[PingJob]:
    """A loopback echo for every source whose only probes in this wave are isolation probes."""
    reach = {j.src for j in jobs if j.expect_reach is True}
    lonely = sorted({j.src for j in jobs if j.expect_reach is False} - reach)
    return [*jobs, *(PingJob(src, LOOPBACK, True, 4) for src in lonely)]


def observe_and_probe(session, nodes: Sequence[str], jobs: Sequence[PingJob], owners: dict[str, str],
                      stats: ProbeStats | None = None, extra: Sequence[tuple[str, list[str]]] = (),
                      ) -> tuple[dict[str, NodeView], list[PingResult], list]:
    """Observe every node and run every probe: (a NodeView per node, a PingResult per job in order, the
    CommandResult of each `extra` command: `path_jobs`, `hostname_jobs`).

    A session with namespace files is observed by the batch prober's own netlink dumps, in the process
    that runs the first wave; any other session by `ip -json` in each node, started with the first wave.
    The extra commands start with the first wave too.
    """
    extra = list(extra)
    if isinstance(session, NamespacePaths):
        observed: dict = {}
        done, results = probe_all(session, jobs, owners, extra, stats, observe=nodes, observed=observed)
        views = views_from_prober(nodes, observed)
        if "*error*" in observed:
            views = {n: replace(v, errors=(*v.errors, observed["*error*"])) if not v.links else v
                     for n, v in views.items()}
        return views, results, list(done)
    observations = observation_jobs(nodes)
    done, results = probe_all(session, jobs, owners, observations + extra, stats)
    return parse_observations(nodes, done[:len(observations)]), results, list(done[len(observations):])


def probe_all(session, jobs: Sequence[PingJob], owners: dict[str, str], extra: Sequence[tuple[str, list[str]]] = (),
              stats: ProbeStats | None = None, observe: Sequence[str] = (), observed: dict | None = None):
    """Run `extra` commands (the observations) and every probe; (extra's CommandResults, PingResults in order).

    `owners` maps a destination address to the node that holds it (for the waves and the flushes). With
    a batch prober (`NamespacePaths`), the nodes in `observe` are observed by the first wave's prober and
    its records go into `observed`.
    """
    stats = stats if stats is not None else ProbeStats()
    stats.probes = len(jobs)
    limit = max_concurrent()
    first = plan_waves(jobs, owners)
    batch = isinstance(session, NamespacePaths)
    use_prober = batch or len(first) > 1 or len(jobs) > limit
    stats.prober = use_prober
    extra = list(extra)
    extra_results: list = []
    together = len(extra) + 1 <= limit if batch else not (use_prober or len(extra) + len(jobs) > limit)
    observe = list(observe) if batch else []
    if batch and observe and not jobs:
        paths = {node: session.netns_path(node) for node in observe}
        done = session.run_many([(observe[0], batch_prober_argv([], paths, BATCH_CAP, observe))], timeout=PING_TIMEOUT)
        parse_batch_prober([], done[0], observed)
        stats.processes += 1
        observe = []
    if not jobs or not together:
        for i in range(0, len(extra), limit):
            extra_results += session.run_many(extra[i:i + limit], timeout=PING_TIMEOUT)
            stats.processes += len(extra[i:i + limit])
        extra = []
    final: list[PingResult | None] = [None] * len(jobs)
    todo = list(range(len(jobs)))
    # The isolation wait: the cap of the batch prober's window, or what ping and the per-source prober wait.
    wait = BATCH_CAP if batch else ISOLATION_WAIT
    for round_ in range(MAX_ROUNDS):
        stats.rounds = round_ + 1
        subset = [replace(jobs[i], isolation_wait=wait) if jobs[i].listens else jobs[i] for i in todo]
        waves = plan_waves(subset, owners) if round_ else first
        flushing = len(waves) > 1
        retry, slowest = [], 0.0
        for wave_idx in waves:
            wave = _with_witnesses([subset[k] for k in wave_idx])
            stats.waves += 1
            stats.sent += len(wave)
            touched = sorted({j.src for j in wave} | {owners[j.dst] for j in wave if j.dst in owners}) \
                if flushing else []
            if batch:
                # The same process flushes the wave's neighbour entries after its probes.
                nodes = {j.src for j in wave} | set(observe) | set(touched)
                paths = {node: session.netns_path(node) for node in sorted(nodes)}
                commands = [(wave[0].src, batch_prober_argv(wave, paths, wait, observe, touched))]
                done = session.run_many(extra + commands, timeout=REACH_DEADLINE + wait + 10)
                results = parse_batch_prober(wave, done[len(extra)], observed if observe else None, stats)
                observe = []
            elif use_prober:
                by_src: dict[str, list[int]] = {}
                for k, j in enumerate(wave):
                    by_src.setdefault(j.src, []).append(k)
                commands = [(src, prober_argv([wave[k] for k in ks], wait)) for src, ks in by_src.items()]
                done = session.run_many(extra + commands, timeout=REACH_DEADLINE + wait + 10)
                results: list[PingResult | None] = [None] * len(wave)
                for (_src, ks), res in zip(by_src.items(), done[len(extra):]):
                    for k, r in zip(ks, parse_prober([wave[k] for k in ks], res)):
                        results[k] = r
            else:
                done = session.run_many(extra + ping_commands(wave), timeout=PING_TIMEOUT + wait)
                results = parse_pings(wave, done[len(extra):])
                commands = wave
            stats.processes += len(extra) + len(commands)
            if extra:
                extra_results, extra = done[:len(extra)], []
            if flushing and not batch:
                session.run_many([(node, ["ip", "neigh", "flush", "all"]) for node in touched], timeout=PING_TIMEOUT)
                stats.processes += len(touched)
            trusted, wave_slowest, backed = _wave_verdicts(wave, results)
            slowest = max(slowest, wave_slowest)
            for k, r in zip(wave_idx, results):
                i = todo[k]
                job = jobs[i]
                if r.timed_out and not r.reached:
                    retry.append(i)  # killed at the deadline: the machine was too slow, not the probe wrong
                    final[i] = r
                elif job.expect_reach is False:
                    if not r.reached and not r.probe_error:
                        why = isolation_backing(r, wave_slowest, backed)
                        if not trusted or why:
                            retry.append(i)  # not trusted or not backed: asked again, with more time
                        if why:
                            r = replace(r, unbacked=why)
                    final[i] = r
                elif job.expect_reach is None:
                    final[i] = r  # no verdict to back (a probe that depends on an address conflict): asked once
                else:
                    prev = final[i]
                    final[i] = prev if prev is not None and prev.reached else r
                    if not final[i].reached and not final[i].probe_error:
                        retry.append(i)
        if not retry:
            break
        todo = sorted(retry)
        wait = retry_wait(slowest / 1000, wait)
    assert all(r is not None for r in final)
    return extra_results, final


# -- address conflicts: the ARP view of the switch ------------------------------------------------------
#
# Who answers for an address on a segment, asked from the switch's monitor port (harness.world: `mon<k>`,
# `mon<k>.<vlan>`) by harness/arpscan.py: ARP probes (IPv4) and neighbour solicitations (IPv6), SCAN_ROUNDS
# rounds, each listening WINDOW_FACTOR times the slowest first answer of the scan (at least SCAN_FLOOR) once
# every address has answered it, else up to SCAN_INTERVAL, then a final wait by the same rule (up to
# SCAN_WAIT) for late answers. A second answer to one request is a second node holding the address (MACs
# alone would not tell: Docker 20.10 derives them from the address).

ARPSCAN = Path(__file__).resolve().with_name("arpscan.py")
proc.fork_script(ARPSCAN, lambda argv: arpscan.main(argv[1:]))
SCAN_ROUNDS = 3
SCAN_INTERVAL = 0.3  # a round's cap, while an address is unanswered
SCAN_WAIT = 1.0  # the final wait's cap
SCAN_FLOOR = 0.05  # a round's least window once every address answered (FACTOR x the slowest answer, above)


@dataclass(frozen=True)
class ScanResult:
    """What the monitor heard for one address on one segment: the answering MACs, per request."""

    iface: str
    ip: str
    rounds: tuple[tuple[str, ...], ...]
    error: str | None = None
    command: str = ""

    @property
    def answers(self) -> int:
        """How many nodes answered one request (the most of any round)."""
        return max((len(r) for r in self.rounds), default=0)

    @property
    def macs(self) -> tuple[str, ...]:
        return tuple(sorted({m for r in self.rounds for m in r}))

    def describe(self) -> str:
        if self.error:
            return f"no ARP view ({self.error})"
        what = "ARP request" if ":" not in self.ip else "neighbour solicitation"
        if not self.answers:
            return f"no answer to {len(self.rounds)} {what}s"
        return (f"{self.answers} answer{'s' if self.answers > 1 else ''} per {what} "
                f"(from {', '.join(self.macs)})")

    @property
    def evidence(self) -> str:
        heard = "; ".join(f"round {i + 1}: {', '.join(r) or 'no answer'}" for i, r in enumerate(self.rounds))
        return f"`{self.command}` in the switch on {self.iface}: {heard or self.error or 'nothing'}"


def scan_argv(targets: Sequence[tuple[str, str]]) -> list[str]:
    """The scanner's command line for (monitor interface, address) pairs."""
    return [sys.executable, "-I", "-S", str(ARPSCAN), str(SCAN_ROUNDS), f"{SCAN_INTERVAL:g}", f"{SCAN_WAIT:g}",
            f"{SCAN_FLOOR:g}", f"{WINDOW_FACTOR:g}",
            *(f"{iface},{ip}" for iface, ip in targets)]


SCAN_TIMEOUT = SCAN_ROUNDS * SCAN_INTERVAL + SCAN_WAIT + 20


def parse_scan(targets: Sequence[tuple[str, str]], res) -> dict[tuple[str, str], ScanResult]:
    """The scanner's answer (a CommandResult) by (interface, address); a failed scan is an error on each."""
    found: dict[tuple[str, str], ScanResult] = {}
    command = f"arpscan.py {SCAN_ROUNDS} rounds"
    for line in res.stdout.splitlines():
        try:
            rec = json.loads(line)
            key = (rec["iface"], rec["ip"])
            found[key] = ScanResult(key[0], key[1], tuple(tuple(r) for r in rec["rounds"]), rec.get("error"), command)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    why = "timed out" if getattr(res, "timed_out", False) else f"exit {res.exit_code}"
    text = (res.stderr.strip().splitlines() or ["no output"])[-1]
    for iface, ip in targets:
        found.setdefault((iface, ip), ScanResult(iface, ip, (), f"the scanner failed ({why}): {text}", command))
    return found
