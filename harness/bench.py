"""`harness bench`: macvlan against a Linux bridge (and a bare veth pair) on this kernel, measured with iperf3.

`BenchParams` holds what a run measures and how long it may take; `Topology` is one way of connecting two
endpoint nodes `a` (client) and `b` (server), as a list of `harness.plan` operations that a backend
`Session` applies exactly as it applies a scenario (`TOPOLOGIES` maps names to their builders: macvlan
bridge mode, the docker0-style bridge, a direct veth pair, ipvlan L2, macvlan VEPA with a hairpin switch
port). `TcpResult`, `UdpResult` and `RrResult` are one parsed iperf3 / request-response measurement and a
`Sample` ties one to its round and topology. `BenchRunner` builds every topology in its own session, keeps
one iperf3 server and one request/response server per topology running, and runs rounds: every test on
every topology, the order rotated each round, so that ratios are taken between measurements seconds
apart. Before each round it measures the idle machine (/proc/stat) and waits a little for somebody else's
load to pass; a round that was noisy anyway is flagged, left out of the statistics and replaced. An
adaptive run, once it has a few full rounds, focuses on TCP macvlan/bridge and stops
(`harness.stats.StopRule`) when that ratio's interval is narrow enough or the time budget is spent.
`build_document` turns everything into the results JSON described by `docs/bench-schema.json`.

`add_arguments(parser)` and `main(args)` are the `harness bench` command.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from harness import __version__
from harness.errors import BackendUnavailable, HarnessError, KernelError
from harness.plan import FEATURES, AddAddress, AddLink, CreateNode, MoveLink, Op, SetLink, required_features
from harness.stats import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    Load,
    MetricStat,
    NoiseRule,
    StopRule,
    metric_stat,
    paired_ratios,
    read_cpu_times,
    usable_rounds,
)

SCHEMA_ID = "harness-bench/1"
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "bench-schema.json"
RRPROBE = Path(__file__).resolve().parent / "rrprobe.py"

CLIENT, SERVER = "a", "b"
CLIENT_ADDR, SERVER_ADDR, PREFIXLEN = "10.77.0.1", "10.77.0.2", 24
IPERF_PORT, RR_PORT, RR_FLOOR_PORT = 5201, 5301, 5302
DEFAULT_MTU = 1500  # what veth, bridge and macvlan links get from the kernel
PRIMARY = ("macvlan", "bridge")  # the documentation's claim, and the ratio the adaptive stop watches
REQUIRED_RATIOS = (("macvlan", "bridge"), ("macvlan", "veth"), ("bridge", "veth"))
ALL_TESTS = ("tcp", "udp", "rr")
TEARDOWN_RESERVE = 1.5  # seconds the budget keeps for stopping servers and removing namespaces


class BenchError(HarnessError):
    """The bench could not measure: a tool is missing, a server did not start, a client failed."""


class BenchUnavailable(BenchError):
    """The bench cannot run here at all (no iperf3, no usable backend); exit status 2."""


# -- parameters ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchParams:
    """What one run measures. Defaults come from measurements on a 2-vCPU VM with iperf3 3.12:
    TCP with 4 streams, MTU 1500, unpinned and the first second omitted gave the steadiest ratios."""

    topologies: tuple[str, ...] = ("macvlan", "bridge", "veth", "ipvlan", "macvlan-vepa")
    tests: tuple[str, ...] = ALL_TESTS
    duration: int = 2  # seconds of each TCP test that count (iperf3 -t; whole seconds only)
    omit: int = 1  # leading seconds iperf3 discards (-O): slow start and wake-up noise
    streams: int = 4
    mtu: int = DEFAULT_MTU
    udp_rate: str = "1G"
    udp_duration: int = 1
    udp_blocks: int | None = None  # when set, a UDP test is this many datagrams (iperf3 -k) instead of -t seconds
    rr_count: int = 2000
    rr_warmup: int = 200
    rr_size: int = 1
    rr_pin: bool = True  # client and server of the probe on one CPU: measures the path, not IPI wake-ups
    rounds: int | None = None  # fixed number of quiet rounds; None = adaptive
    min_rounds: int = 5
    max_rounds: int = 200
    # adaptive: full rounds (every test, every topology) before focusing; as many as `harness report`
    # needs to judge a metric by disjoint intervals, so no metric of a default run is judged on too few
    full_rounds: int = 5
    focus: bool = True  # adaptive: after full_rounds, only TCP on the primary pair (macvlan, bridge)
    budget: float | None = 120.0
    target: float = 0.03
    max_reruns: int = 5  # noisy rounds a fixed-rounds run may replace (an adaptive run is bounded by its budget)
    load_window: float = 0.2
    quiet_wait: float = 6.0  # seconds to wait for a busy machine to calm down before running a round anyway
    noise: NoiseRule = field(default_factory=NoiseRule)
    seed: int = DEFAULT_SEED
    confidence: float = DEFAULT_CONFIDENCE
    resamples: int = DEFAULT_RESAMPLES
    backend: str = "netns"
    quick: bool = False

    def stop_rule(self) -> StopRule:
        return StopRule(target=self.target, budget=self.budget, min_rounds=self.min_rounds,
                        max_rounds=self.max_rounds, rounds=self.rounds, max_reruns=self.max_reruns,
                        reserve=TEARDOWN_RESERVE)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["topologies"] = list(self.topologies)
        d["tests"] = list(self.tests)
        return d


# CI exercises the whole path, not the precision: short tests, no waiting for a quiet machine, and UDP
# by datagram count (20000 at 1 Gbit/s is ~0.25 s; iperf3 -t only takes whole seconds).
QUICK = dict(rounds=2, duration=1, omit=0, udp_blocks=20000, rr_count=300, rr_warmup=50, budget=None,
             max_reruns=0, load_window=0.1, min_rounds=2, quiet_wait=0.0)


# -- topologies ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topology:
    """Two endpoints `a` and `b`, and every operation that connects them, parents first."""

    name: str
    description: str
    ops: tuple[Op, ...]
    links: tuple[tuple[str, str], ...]  # (node, link) in final place, lower devices before upper ones

    @property
    def features(self) -> tuple[str, ...]:
        return required_features(self.ops)


def _endpoint_ops() -> list[Op]:
    ops: list[Op] = []
    for node, addr in ((CLIENT, CLIENT_ADDR), (SERVER, SERVER_ADDR)):
        ops += [AddAddress(node, "eth0", f"{addr}/{PREFIXLEN}"), SetLink(node, "eth0", up=True)]
    return ops


def _switch_and_host(bridge_in_switch: bool) -> list[Op]:
    """An `up` node standing for the physical switch and a `host` whose eth0 is its veth to the switch.

    macvlan/ipvlan children only pass traffic while their lower device has carrier, which a veth has
    only when its peer is up; the VEPA topology also needs a real switch (a bridge) to reflect frames.
    """
    ops: list[Op] = [
        CreateNode("up", "switch"), CreateNode("host", "host"),
        CreateNode(CLIENT, "container"), CreateNode(SERVER, "container"),
        AddLink("host", "eth0", "veth", peer="p0", peer_node="up"),
    ]
    if bridge_in_switch:
        ops += [AddLink("up", "br0", "bridge"), SetLink("up", "br0", up=True),
                # hairpin: the port sends frames back where they came from, which VEPA relies on
                SetLink("up", "p0", master="br0", hairpin=True, up=True)]
    else:
        ops += [SetLink("up", "p0", up=True)]
    ops += [SetLink("host", "eth0", up=True)]
    return ops


def _children(kind: str, mode: str) -> list[Op]:
    ops: list[Op] = []
    for child, node in (("cha", CLIENT), ("chb", SERVER)):
        ops += [AddLink("host", child, kind, parent="eth0", mode=mode), MoveLink("host", child, node, "eth0")]
    return ops


def macvlan_topology(mode: str = "bridge") -> Topology:
    vepa = mode == "vepa"
    ops = _switch_and_host(bridge_in_switch=vepa) + _children("macvlan", mode) + _endpoint_ops()
    links = (("up", "p0"),) + ((("up", "br0"),) if vepa else ()) + (("host", "eth0"), (CLIENT, "eth0"), (SERVER, "eth0"))
    if vepa:
        return Topology("macvlan-vepa", "macvlan VEPA children of host eth0; the switch port hairpins frames back",
                        tuple(ops), links)
    return Topology("macvlan", "macvlan bridge-mode children of host eth0 (a veth to the switch), moved into a and b",
                    tuple(ops), links)


def ipvlan_topology() -> Topology:
    ops = _switch_and_host(bridge_in_switch=False) + _children("ipvlan", "l2") + _endpoint_ops()
    return Topology("ipvlan", "ipvlan L2 children of host eth0, moved into a and b", tuple(ops),
                    (("up", "p0"), ("host", "eth0"), (CLIENT, "eth0"), (SERVER, "eth0")))


def bridge_topology() -> Topology:
    """The docker0 way: a bridge in the host, one veth pair per container, the far end moved and renamed."""
    ops: list[Op] = [CreateNode("host", "host"), CreateNode(CLIENT, "container"), CreateNode(SERVER, "container"),
                     AddLink("host", "br0", "bridge"), SetLink("host", "br0", up=True)]
    for host_end, peer, node in (("vetha", "pa", CLIENT), ("vethb", "pb", SERVER)):
        ops += [AddLink("host", host_end, "veth", peer=peer, peer_node="host"),
                SetLink("host", host_end, master="br0", up=True),
                MoveLink("host", peer, node, "eth0")]
    ops += _endpoint_ops()
    return Topology("bridge", "Linux bridge in host with a veth pair per endpoint (as docker0 does)", tuple(ops),
                    (("host", "br0"), ("host", "vetha"), ("host", "vethb"), (CLIENT, "eth0"), (SERVER, "eth0")))


def veth_topology() -> Topology:
    ops: list[Op] = [CreateNode(CLIENT, "container"), CreateNode(SERVER, "container"),
                     AddLink(CLIENT, "eth0", "veth", peer="eth0", peer_node=SERVER)] + _endpoint_ops()
    return Topology("veth", "a direct veth pair between a and b: the floor", tuple(ops),
                    ((CLIENT, "eth0"), (SERVER, "eth0")))


TOPOLOGIES: dict[str, Callable[[], Topology]] = {
    "macvlan": macvlan_topology,
    "bridge": bridge_topology,
    "veth": veth_topology,
    "ipvlan": ipvlan_topology,
    "macvlan-vepa": lambda: macvlan_topology("vepa"),
}


def link_mtu_supported() -> bool:
    """Whether the plan can set a link's MTU (a `SetLink.mtu` field); else MTUs below 1500 are emulated."""
    return "mtu" in {f.name for f in dataclasses.fields(SetLink)}


def mtu_method(mtu: int) -> str:
    """How --mtu is applied: `default` (1500, nothing to do), `link` (SetLink mtu on every link), or
    `mss` (TCP MSS and UDP datagram size clamped to what that MTU would carry; the links stay at 1500)."""
    if mtu == DEFAULT_MTU:
        return "default"
    if link_mtu_supported():
        return "link"
    if 576 <= mtu < DEFAULT_MTU:
        return "mss"
    raise BenchUnavailable(f"--mtu {mtu}: the plan cannot set a link MTU on this version (no SetLink.mtu), "
                           f"so only MTUs from 576 to 1500 can be emulated (by clamping the TCP MSS)")


def topology_for(name: str, mtu: int = DEFAULT_MTU) -> Topology:
    try:
        topo = TOPOLOGIES[name]()
    except KeyError:
        raise BenchUnavailable(f"unknown topology {name!r}; valid topologies: {', '.join(TOPOLOGIES)}") from None
    if mtu_method(mtu) == "link":
        mtu_ops = tuple(SetLink(node, link, mtu=mtu) for node, link in topo.links)  # type: ignore[call-arg]
        topo = dataclasses.replace(topo, ops=topo.ops + mtu_ops)
    return topo


# -- measurements ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TcpResult:
    gbps: float  # received, as the server counted it: what actually crossed the path
    sender_gbps: float
    retransmits: int | None
    cpu_sender_pct: float | None
    cpu_receiver_pct: float | None
    seconds: float
    streams: int
    mss: int | None

    def metrics(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class UdpResult:
    gbps: float  # received
    sender_gbps: float
    loss_pct: float
    lost_packets: int
    packets: int
    jitter_ms: float
    cpu_sender_pct: float | None
    cpu_receiver_pct: float | None
    seconds: float

    def metrics(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RrResult:
    count: int
    size: int
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    min_us: float
    max_us: float
    transactions_per_s: float | None
    timer_overhead_ns: int
    quantiles_us: tuple[float, ...]

    def metrics(self) -> dict:
        d = dataclasses.asdict(self)
        d["quantiles_us"] = list(self.quantiles_us)
        return d


Result = TcpResult | UdpResult | RrResult


@dataclass(frozen=True)
class Sample:
    round: int
    position: int  # index of the topology within this round's order
    topology: str
    test: str
    start: float  # Unix time
    end: float
    result: Result

    def to_json(self) -> dict:
        return {"round": self.round, "position": self.position, "topology": self.topology, "test": self.test,
                "start": round(self.start, 3), "end": round(self.end, 3), **self.result.metrics()}


def _load_json(text: str, what: str) -> dict:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        snippet = text.strip()[:200] or "<no output>"
        raise BenchError(f"{what} did not print JSON ({exc.msg}): {snippet}") from None
    if not isinstance(doc, dict):
        raise BenchError(f"{what} printed JSON that is not an object")
    return doc


def _iperf3_doc(text: str) -> dict:
    doc = _load_json(text, "iperf3")
    if doc.get("error"):
        raise BenchError(f"iperf3: {doc['error']}")
    if not doc.get("end"):
        raise BenchError("iperf3 printed no end-of-test summary")
    return doc


def _cpu(end: dict) -> tuple[float | None, float | None]:
    cpu = end.get("cpu_utilization_percent") or {}
    return cpu.get("host_total"), cpu.get("remote_total")


def parse_iperf3_tcp(text: str) -> TcpResult:
    """The client's `iperf3 -J` output of a TCP test (not reversed: the client sends)."""
    doc = _iperf3_doc(text)
    end = doc["end"]
    try:
        sent, received = end["sum_sent"], end["sum_received"]
        start = doc.get("start", {})
        streams = int(start.get("test_start", {}).get("num_streams", len(end.get("streams", [])) or 1))
        host, remote = _cpu(end)
        return TcpResult(gbps=received["bits_per_second"] / 1e9, sender_gbps=sent["bits_per_second"] / 1e9,
                         retransmits=sent.get("retransmits"), cpu_sender_pct=host, cpu_receiver_pct=remote,
                         seconds=float(received.get("seconds", sent.get("seconds", 0.0))), streams=streams,
                         mss=start.get("tcp_mss") or start.get("tcp_mss_default"))
    except (KeyError, TypeError) as exc:
        raise BenchError(f"iperf3 TCP summary lacks {exc}") from None


def parse_iperf3_udp(text: str) -> UdpResult:
    """The client's `iperf3 -u -J` output; loss and jitter are the server's, reported back to the client."""
    doc = _iperf3_doc(text)
    end = doc["end"]
    try:
        # iperf3 >= 3.11 splits sum_sent/sum_received; older versions only have `sum` (the receiver's view).
        received = end.get("sum_received") or end["sum"]
        sent = end.get("sum_sent") or end["sum"]
        host, remote = _cpu(end)
        return UdpResult(gbps=received["bits_per_second"] / 1e9, sender_gbps=sent["bits_per_second"] / 1e9,
                         loss_pct=float(received.get("lost_percent", 0.0)), lost_packets=int(received.get("lost_packets", 0)),
                         packets=int(received.get("packets", 0)), jitter_ms=float(received.get("jitter_ms", 0.0)),
                         cpu_sender_pct=host, cpu_receiver_pct=remote, seconds=float(received.get("seconds", 0.0)))
    except (KeyError, TypeError) as exc:
        raise BenchError(f"iperf3 UDP summary lacks {exc}") from None


def parse_rr(text: str) -> RrResult:
    doc = _load_json(text, "the request/response probe")
    try:
        return RrResult(count=int(doc["count"]), size=int(doc["size"]), p50_us=doc["p50_us"], p90_us=doc["p90_us"],
                        p99_us=doc["p99_us"], mean_us=doc["mean_us"], min_us=doc["min_us"], max_us=doc["max_us"],
                        transactions_per_s=doc.get("transactions_per_s"), timer_overhead_ns=int(doc["timer_overhead_ns"]),
                        quantiles_us=tuple(float(q) for q in doc["quantiles_us"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise BenchError(f"request/response probe output lacks {exc}") from None


def parse_iperf3_version(text: str) -> str | None:
    """`iperf 3.12 (cJSON 1.7.15)` -> `3.12`."""
    for word in text.split():
        if word[:1].isdigit() and "." in word:
            return word
    return None


def listening_ports(proc_net_tcp: str) -> set[int]:
    """Ports in LISTEN state (st 0A) in the text of /proc/net/tcp and /proc/net/tcp6 of one namespace."""
    ports: set[int] = set()
    for line in proc_net_tcp.splitlines():
        parts = line.split()
        if len(parts) > 3 and ":" in parts[1] and parts[3] == "0A":
            try:
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
            except ValueError:
                continue
    return ports


def rotated(names: Sequence[str], round_index: int) -> list[str]:
    """Round r starts with topology r mod n, so every topology runs first, middle and last equally often."""
    if not names:
        return []
    k = round_index % len(names)
    return list(names[k:]) + list(names[:k])


# -- statistics over samples -----------------------------------------------------------------------------

# (test, quantity, unit, better, gate): what each test's samples contribute to the statistics.
TOPOLOGY_METRICS: tuple[tuple[str, str, str, str | None, str | None], ...] = (
    ("tcp", "gbps", "Gbit/s", "higher", "absolute"),
    ("tcp", "retransmits", "segments", None, None),
    ("tcp", "cpu_sender_pct", "%", None, None),
    ("tcp", "cpu_receiver_pct", "%", None, None),
    ("udp", "gbps", "Gbit/s", None, None),
    ("udp", "loss_pct", "%", "lower", "points"),
    ("udp", "jitter_ms", "ms", None, None),
    ("rr", "p50_us", "us", "lower", "absolute"),
    ("rr", "p99_us", "us", None, None),
)
RATIO_METRICS: tuple[tuple[str, str, str], ...] = (("tcp", "gbps", "higher"), ("rr", "p50_us", "lower"))


def metric_id(test: str, quantity: str, subject: str) -> str:
    return f"{test}.{quantity}[{subject}]"


def ratio_pairs(topologies: Sequence[str]) -> list[tuple[str, str]]:
    """The three ratios the issue asks for, then every other topology against the bridge and the floor."""
    present = set(topologies)
    pairs = [p for p in REQUIRED_RATIOS if p[0] in present and p[1] in present]
    for t in topologies:
        for den in ("bridge", "veth"):
            if t not in ("macvlan", "bridge", "veth") and den in present and (t, den) not in pairs:
                pairs.append((t, den))
    return pairs


def by_round(samples: Sequence[Sample], topology: str, test: str, quantity: str,
             rounds: set[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for s in samples:
        if s.topology == topology and s.test == test and s.round in rounds:
            value = getattr(s.result, quantity, None)
            if value is not None:
                out[s.round] = float(value)
    return out


def compute_stats(samples: Sequence[Sample], topologies: Sequence[str], rounds: Sequence[int], *,
                  seed: int = DEFAULT_SEED, confidence: float = DEFAULT_CONFIDENCE,
                  resamples: int = DEFAULT_RESAMPLES) -> list[MetricStat]:
    """Per-topology metrics and within-round ratios over the given (good) rounds, in a stable order."""
    use = set(rounds)
    kw = dict(seed=seed, confidence=confidence, resamples=resamples)
    out: list[MetricStat] = []
    for test, quantity, unit, better, gate in TOPOLOGY_METRICS:
        for topo in topologies:
            m = metric_stat(id=metric_id(test, quantity, topo), kind="topology", test=test, quantity=quantity,
                            unit=unit, better=better, gate=gate, topology=topo,
                            by_round=by_round(samples, topo, test, quantity, use), **kw)
            if m:
                out.append(m)
    for test, quantity, better in RATIO_METRICS:
        for num, den in ratio_pairs(topologies):
            rs, values = paired_ratios(by_round(samples, num, test, quantity, use),
                                       by_round(samples, den, test, quantity, use))
            m = metric_stat(id=metric_id(test, quantity, f"{num}/{den}"), kind="ratio", test=test, quantity=quantity,
                            unit="ratio", better=better, gate="ratio", numerator=num, denominator=den,
                            by_round=dict(zip(rs, values, strict=True)), **kw)
            if m:
                out.append(m)
    return out


def primary_id(topologies: Sequence[str]) -> str | None:
    """The ratio the adaptive stop watches: macvlan/bridge TCP, else the first TCP ratio there is."""
    pairs = ratio_pairs(topologies)
    if not pairs:
        return None
    pair = PRIMARY if PRIMARY in pairs else pairs[0]
    return metric_id("tcp", "gbps", "/".join(pair))


# -- machine metadata --------------------------------------------------------------------------------------


def cpu_model(cpuinfo: str) -> str | None:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Processor", "cpu model"):
            return value.strip()
    return None


def git_commit(start: Path | None = None) -> str | None:
    """The checked-out commit, read from .git directly (the bench runs commands only through sessions)."""
    start = start or Path(__file__).resolve().parent
    for d in (start, *start.parents):
        git = d / ".git"
        if git.is_file():  # a worktree: "gitdir: <path>"
            text = git.read_text().strip()
            if text.startswith("gitdir:"):
                git = (d / text.split(":", 1)[1].strip()).resolve()
        if not git.is_dir():
            continue
        try:
            head = (git / "HEAD").read_text().strip()
        except OSError:
            return None
        if not head.startswith("ref:"):
            return head or None
        ref = head.split(":", 1)[1].strip()
        common = git
        if (git / "commondir").is_file():
            common = (git / (git / "commondir").read_text().strip()).resolve()
        for base in (git, common):
            if (base / ref).is_file():
                return (base / ref).read_text().strip() or None
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split()[0]
        return None  # a branch with no commit yet
    return None


def machine_info(kernel: str, iperf3_version: str | None) -> dict:
    try:
        with open("/proc/cpuinfo") as f:
            model = cpu_model(f.read())
    except OSError:
        model = None
    return {"kernel": kernel, "cpu_model": model or platform.processor() or None, "cpu_count": os.cpu_count() or 1,
            "iperf3_version": iperf3_version, "python": platform.python_version(), "machine": platform.machine()}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


# -- running ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopologyStatus:
    name: str
    description: str
    status: str  # "ran" | "skipped" | "failed"
    reason: str | None
    features: tuple[str, ...]

    def to_json(self) -> dict:
        return {"name": self.name, "description": self.description, "status": self.status, "reason": self.reason,
                "features": list(self.features)}


@dataclass(frozen=True)
class RoundRecord:
    index: int
    order: tuple[str, ...]
    start: float
    seconds: float
    load_before: Load
    load_during: Load
    noise: tuple[str, ...]
    tests: tuple[str, ...] = ALL_TESTS
    waited: float = 0.0  # seconds spent waiting for a quiet machine before the round

    @property
    def noisy(self) -> bool:
        return bool(self.noise)

    def to_json(self) -> dict:
        return {"index": self.index, "order": list(self.order), "start": round(self.start, 3),
                "seconds": round(self.seconds, 3), "load_before": self.load_before.to_json(),
                "load_during": self.load_during.to_json(), "noisy": self.noisy, "noise_reasons": list(self.noise),
                "tests": list(self.tests), "waited": round(self.waited, 3)}


class Progress:
    """What the runner tells its display; the default says nothing (tests, --quiet)."""

    def start(self, total: float | None, unit: str) -> None: ...

    def step(self, text: str) -> None: ...

    def advance(self, completed: float, status: str) -> None: ...

    def stop(self) -> None: ...


class RichProgress(Progress):
    """A rich progress bar on stderr: over the time budget (adaptive) or over rounds (fixed)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as _Progress

        self._bar = _Progress(TextColumn("[bold]bench[/bold]"), BarColumn(), TextColumn("{task.description}"),
                              TimeElapsedColumn(), console=Console(stderr=True), transient=False)
        self._task = None
        self._status = ""

    def start(self, total: float | None, unit: str) -> None:
        self._bar.start()
        self._task = self._bar.add_task("setting up", total=total)

    def step(self, text: str) -> None:
        if self._task is not None:
            self._bar.update(self._task, description=f"{text}  {self._status}")

    def advance(self, completed: float, status: str) -> None:
        self._status = status
        if self._task is not None:
            self._bar.update(self._task, completed=completed, description=status)

    def stop(self) -> None:
        self._bar.stop()


@dataclass
class _Live:
    """A built topology with its servers running."""

    topology: Topology
    session: object


def rr_cpu() -> int:
    """The CPU both ends of the request/response probe share: the last one this process may use."""
    return sorted(os.sched_getaffinity(0))[-1]


def _process_exited(pid: int) -> bool:
    """True when `pid` is gone or a zombie (exited, not yet reaped by the backend)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


class BenchRunner:
    """Builds the topologies, keeps their servers running and runs interleaved rounds until told to stop."""

    def __init__(self, params: BenchParams, backend, progress: Progress | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.params = params
        self.backend = backend
        self.progress = progress or Progress()
        self.clock = clock
        self.statuses: dict[str, TopologyStatus] = {}
        self.samples: list[Sample] = []
        self.rounds: list[RoundRecord] = []
        self.rr_floor: RrResult | None = None
        self.iperf3_version: str | None = None
        self.kernel: str = ""
        self.stop_reason = ""
        self.error: str | None = None  # a measurement that failed mid-run (the samples before it are kept)
        self._gave_up_waiting = False
        self._live: dict[str, _Live] = {}
        self._logdir = ""
        self._mss: int | None = None
        self._udp_len = self.params.mtu - 28  # one datagram per packet: IPv4 (20) + UDP (8) headers
        if mtu_method(params.mtu) == "mss":
            self._mss = params.mtu - 40

    # -- set-up --------------------------------------------------------------------------------------------

    def check_tools(self) -> None:
        needs_iperf = any(t in self.params.tests for t in ("tcp", "udp"))
        if needs_iperf and shutil.which("iperf3") is None:
            raise BenchUnavailable("iperf3 is not installed: install the Debian package `iperf3` (apt-get install iperf3)")
        reason = self.backend.available() if hasattr(self.backend, "available") else None
        if reason:
            raise BenchUnavailable(f"backend {self.params.backend}: {reason}")

    def plan_topologies(self) -> list[Topology]:
        """Every requested topology, with those the backend cannot build recorded as skipped (and why)."""
        caps = self.backend.capabilities()
        runnable = []
        for name in self.params.topologies:
            topo = topology_for(name, self.params.mtu)
            missing = [f for f in topo.features if not (f in caps and caps[f].available)]
            if missing:
                why = "; ".join(caps[f].detail if f in caps and caps[f].detail else f"kernel lacks {FEATURES.get(f, f)}"
                                for f in missing)
                self.statuses[name] = TopologyStatus(name, topo.description, "skipped",
                                                     f"{self.params.backend} backend cannot build it: {why}", topo.features)
                continue
            runnable.append(topo)
        return runnable

    def _build(self, stack: ExitStack, topo: Topology) -> None:
        session = stack.enter_context(self.backend.session(f"bench-{topo.name}"))
        self.kernel = self.kernel or getattr(session, "kernel", "")
        try:
            for op in topo.ops:
                session.apply(op)
        except KernelError as exc:
            # The capability probe said yes but this exact topology was refused (a mode, a hairpin flag):
            # the others still measure, and the reason is recorded.
            self.statuses[topo.name] = TopologyStatus(topo.name, topo.description, "skipped",
                                                      f"kernel refused a step: {exc}", topo.features)
            return
        # A topology that was built but passes no traffic (a flag the backend did not set) is recorded as
        # failed with the evidence, instead of ending the whole run with a connect timeout later.
        res = session.run(CLIENT, ["ping", "-c", "1", "-W", "2", SERVER_ADDR], timeout=10)
        if not res.ok:
            lines = [x for x in (res.stdout + res.stderr).strip().splitlines() if x.strip()]
            self.statuses[topo.name] = TopologyStatus(
                topo.name, topo.description, "failed",
                f"built, but {CLIENT} cannot reach {SERVER} ({SERVER_ADDR}): `{res.command}` exited {res.exit_code}"
                + (f": {lines[-1].strip()}" if lines else ""), topo.features)
            return
        self._live[topo.name] = _Live(topo, session)
        self.statuses[topo.name] = TopologyStatus(topo.name, topo.description, "ran", None, topo.features)

    @contextmanager
    def server(self, session, node: str, argv: Sequence[str], port: int, what: str, log: str | None = None,
               timeout: float = 10.0) -> Iterator[object]:
        """A background server in `node`, yielded once its port is listening (polled, with a deadline).

        If it exits first, or is not listening by the deadline, it is stopped and the error carries its
        stderr (and its log file, where iperf3 writes even its errors when given --logfile)."""
        with ExitStack() as stack:
            proc = stack.enter_context(session.spawn(node, list(argv)))
            problem = self._wait_listening(session, node, proc.pid, port, timeout)
            if problem:
                stack.close()
                out, err = proc.output()
                logged = Path(log).read_text(errors="replace").strip() if log and os.path.exists(log) else ""
                detail = "\n".join(x for x in (err.strip(), out.strip(), logged) if x) or "(it printed nothing)"
                raise BenchError(f"{what} in node {node} ({' '.join(argv)}) {problem}; its output:\n{detail}")
            yield proc

    def _wait_listening(self, session, node: str, pid: int, port: int, timeout: float) -> str | None:
        deadline = self.clock() + timeout
        delay = 0.005
        while True:
            if _process_exited(pid):
                return "exited before it was ready"
            res = session.run(node, ["cat", "/proc/net/tcp", "/proc/net/tcp6"], timeout=5)
            if port in listening_ports(res.stdout):
                return None
            if self.clock() > deadline:
                return f"was not listening on port {port} after {timeout:.0f} s"
            time.sleep(delay)  # a poll interval with a deadline, growing so a slow start costs few probes
            delay = min(delay * 2, 0.1)

    def _start_servers(self, stack: ExitStack, live: _Live) -> None:
        s = live.session
        if any(t in self.params.tests for t in ("tcp", "udp")):
            log = os.path.join(self._logdir, f"iperf3-{live.topology.name}.log")
            # --logfile keeps the server off its stdout pipe (nobody drains it while it runs), -i 0 keeps it short
            argv = ["iperf3", "-s", "-B", SERVER_ADDR, "-p", str(IPERF_PORT), "-i", "0", "--forceflush", "--logfile", log]
            stack.enter_context(self.server(s, SERVER, argv, IPERF_PORT, f"the iperf3 server of {live.topology.name}", log))
        if "rr" in self.params.tests:
            argv = self._rr_argv("serve", "--bind", SERVER_ADDR, "--port", str(RR_PORT), "--size", str(self.params.rr_size))
            stack.enter_context(self.server(s, SERVER, argv, RR_PORT, f"the request/response server of {live.topology.name}"))

    def _rr_argv(self, *args: str) -> list[str]:
        argv = [sys.executable, "-I", str(RRPROBE), *args]
        if self.params.rr_pin:
            argv += ["--cpu", str(rr_cpu())]
        return argv

    # -- one measurement -------------------------------------------------------------------------------------

    def _iperf3(self, session, extra: Sequence[str], timeout: float) -> str:
        argv = ["iperf3", "-c", SERVER_ADDR, "-p", str(IPERF_PORT), "-J", "--connect-timeout", "3000", *extra]
        deadline = self.clock() + 5
        while True:
            res = session.run(CLIENT, argv, timeout=timeout)
            if res.timed_out:
                raise BenchError(f"`{res.command}` in node {CLIENT} did not finish within {timeout:.0f} s")
            busy = '"the server is busy' in res.stdout
            # The server may still be closing the previous test for a moment; anything else is a failure.
            if busy and self.clock() < deadline:
                time.sleep(0.05)
                continue
            if not res.ok and not res.stdout.strip():
                raise BenchError(f"`{res.command}` in node {CLIENT} exited {res.exit_code}: {res.stderr.strip()}")
            return res.stdout

    def measure(self, live: _Live, test: str) -> Result:
        p = self.params
        s = live.session
        if test == "tcp":
            extra = ["-t", str(p.duration), "-O", str(p.omit), "-P", str(p.streams)]
            if self._mss:
                extra += ["-M", str(self._mss)]
            return parse_iperf3_tcp(self._iperf3(s, extra, timeout=p.duration + p.omit + 20))
        if test == "udp":
            length = ["-k", str(p.udp_blocks)] if p.udp_blocks else ["-t", str(p.udp_duration)]
            extra = ["-u", "-b", p.udp_rate, *length, "-l", str(self._udp_len)]
            return parse_iperf3_udp(self._iperf3(s, extra, timeout=p.udp_duration + 30))
        if test == "rr":
            argv = self._rr_argv("client", "--host", SERVER_ADDR, "--port", str(RR_PORT), "--count", str(p.rr_count),
                                 "--warmup", str(p.rr_warmup), "--size", str(p.rr_size))
            res = s.run(CLIENT, argv, timeout=30 + p.rr_count / 1000)
            if not res.ok:
                raise BenchError(f"request/response probe in node {CLIENT} exited {res.exit_code}: {res.stderr.strip()}")
            return parse_rr(res.stdout)
        raise ValueError(f"unknown test {test!r}")

    def measure_rr_floor(self, live: _Live) -> RrResult:
        """The probe over 127.0.0.1 inside one node: its own cost, without any link in the path."""
        s = live.session
        serve = self._rr_argv("serve", "--bind", "127.0.0.1", "--port", str(RR_FLOOR_PORT), "--size", str(self.params.rr_size))
        with self.server(s, CLIENT, serve, RR_FLOOR_PORT, "the request/response loopback server"):
            argv = self._rr_argv("client", "--host", "127.0.0.1", "--port", str(RR_FLOOR_PORT), "--count",
                                 str(self.params.rr_count), "--warmup", str(self.params.rr_warmup), "--size", str(self.params.rr_size))
            res = s.run(CLIENT, argv, timeout=30 + self.params.rr_count / 1000)
        if not res.ok:
            raise BenchError(f"request/response probe on loopback exited {res.exit_code}: {res.stderr.strip()}")
        return parse_rr(res.stdout)

    # -- the run -----------------------------------------------------------------------------------------------

    def _load_before(self) -> Load:
        t0, c0 = self.clock(), read_cpu_times()
        time.sleep(self.params.load_window)  # a deliberate measurement window of an idle bench
        return Load.between(c0, read_cpu_times(), self.clock() - t0)

    def used_rounds(self) -> tuple[list[int], bool]:
        """The rounds the statistics use, and whether noisy ones had to be included (see usable_rounds)."""
        return usable_rounds([r.noisy for r in self.rounds])

    def rounds_in_stats(self) -> list[int]:
        return self.used_rounds()[0]

    def current_stats(self) -> list[MetricStat]:
        p = self.params
        return compute_stats(self.samples, list(self._live), self.rounds_in_stats(), seed=p.seed,
                             confidence=p.confidence, resamples=p.resamples)

    def run(self) -> None:
        p = self.params
        self.check_tools()
        rule = p.stop_rule()
        t_start = self.clock()
        self.progress.start(p.budget if p.rounds is None else p.rounds, "s" if p.rounds is None else "rounds")
        try:
            with ExitStack() as stack:
                self._logdir = tempfile.mkdtemp(prefix="harness-bench-")
                stack.callback(shutil.rmtree, self._logdir, True)
                self.progress.step("checking kernel features")
                for topo in self.plan_topologies():
                    self.progress.step(f"building {topo.name}")
                    self._build(stack, topo)
                for live in self._live.values():
                    self.progress.step(f"starting servers in {live.topology.name}")
                    self._start_servers(stack, live)
                if not self._live:
                    raise BenchUnavailable("no topology could be built: " + "; ".join(
                        f"{s.name}: {s.reason}" for s in self.statuses.values()))
                first = next(iter(self._live.values()))
                if any(t in p.tests for t in ("tcp", "udp")):
                    res = first.session.run(CLIENT, ["iperf3", "--version"], timeout=10)
                    self.iperf3_version = parse_iperf3_version(res.stdout)
                if "rr" in p.tests:
                    self.progress.step("measuring the probe's own overhead on loopback")
                    self.rr_floor = self.measure_rr_floor(first)
                self._rounds(rule, t_start)
        finally:
            self.progress.stop()

    def _wait_for_quiet(self, rule: StopRule, t_start: float, estimate: float) -> tuple[Load, float]:
        """The idle load before a round; while somebody else keeps the machine busy, wait (polling) rather
        than spend a whole round on numbers that would be thrown away, up to `quiet_wait` seconds and
        never past the budget. Then the round runs anyway and is flagged if it is noisy."""
        p = self.params
        began = self.clock()
        # Once a wait ran out, the machine is busy for a while: do not pay the wait again every round
        # until a quiet window has been seen.
        limit = 0.0 if self._gave_up_waiting else p.quiet_wait
        if rule.budget is not None:
            limit = min(limit, max(0.0, rule.budget - (began - t_start) - estimate))
        while True:
            before = self._load_before()
            waited = self.clock() - began
            reasons = p.noise.before_reasons(before)
            if not reasons:
                self._gave_up_waiting = False
                return before, waited
            if waited >= limit:
                self._gave_up_waiting = True
                return before, waited
            self.progress.step(f"waiting for a quiet machine: {reasons[0]}")
            time.sleep(0.3)

    def _round_plan(self, names: Sequence[str], index: int) -> tuple[tuple[str, ...], list[str]]:
        """The tests and the topology order of round `index`.

        A fixed-rounds run measures everything every round. An adaptive run does that until the statistics
        hold `full_rounds` full rounds (enough for UDP, latency and the other ratios), then focuses:
        TCP on the primary pair only, so the time left buys the most rounds of the ratio whose interval
        the target is about (a focus round costs two TCP tests instead of every test on every topology).
        The order still rotates every round."""
        p = self.params
        # full rounds the statistics use: quiet ones, or every one on a machine that never was quiet
        used = set(self.rounds_in_stats())
        full = sum(1 for r in self.rounds if r.index in used and len(r.order) == len(names) and len(r.tests) == len(p.tests))
        primary = PRIMARY if all(t in names for t in PRIMARY) else None
        if p.rounds is not None or not p.focus or "tcp" not in p.tests or full < p.full_rounds:
            return p.tests, rotated(names, index)
        pair = list(primary) if primary else list(names)
        return ("tcp",), rotated(pair, index)

    def _rounds(self, rule: StopRule, t_start: float) -> None:
        p = self.params
        names = list(self._live)
        primary = primary_id(names)
        index = 0
        durations: list[float] = []
        while True:
            half = self._half_width(primary)
            # the last round of the same kind (full or focused) predicts the next one best
            estimate = durations[-1] if durations else 0.0
            quiet = sum(not r.noisy for r in self.rounds)
            reason = rule.decide(quiet, len(self.rounds), half, self.clock() - t_start, estimate)
            if reason:
                if reason.startswith("time budget"):
                    reason += self._what_target_needs(primary, rule, quiet, half, estimate)
                self.stop_reason = reason
                return
            before, waited = self._wait_for_quiet(rule, t_start, estimate)
            tests, order = self._round_plan(names, index)
            r_start_wall, r_start, c0 = time.time(), self.clock(), read_cpu_times()
            for test in tests:
                for pos, name in enumerate(order):
                    self.progress.step(f"round {index + 1}: {test} {name}")
                    t0 = time.time()
                    try:
                        result = self.measure(self._live[name], test)
                    except BenchError as exc:
                        # Keep what was measured: the results so far are written, with the failure.
                        self.error = f"round {index + 1}, {test} on {name}: {exc}"
                        self.stop_reason = f"failed: {self.error}"
                        return
                    self.samples.append(Sample(index, pos, name, test, t0, time.time(), result))
            seconds = self.clock() - r_start
            during = Load.between(c0, read_cpu_times(), seconds)
            record = RoundRecord(index, tuple(order), r_start_wall, seconds, before, during,
                                 tuple(p.noise.reasons(before, during)), tuple(tests), waited)
            self.rounds.append(record)
            durations.append(seconds + p.load_window)
            index += 1
            self.progress.advance(len(self.rounds_in_stats()) if p.rounds is not None else self.clock() - t_start,
                                  self._status(primary, record))

    def _what_target_needs(self, primary: str | None, rule: StopRule, quiet: int, half: float | None,
                           round_seconds: float) -> str:
        """When the budget ran out first: how much scatter the ratio showed and what the target would take."""
        if rule.rounds is not None or rule.reached(quiet, half) or not primary or not round_seconds:
            return ""
        stat = next((m for m in self.current_stats() if m.id == primary), None)
        if not stat or not stat.summary.cv or stat.summary.n < 3:
            return ""
        # The median's standard error is ~1.25 sigma/sqrt(n) for roughly normal scatter; z = 1.96 for 95 %.
        needed = math.ceil((1.96 * 1.2533 * stat.summary.cv / rule.target) ** 2)
        return (f"; per-round scatter of {primary} is {stat.summary.cv:.1%} (CV), so ±{rule.target:.0%} needs about "
                f"{needed} rounds (~{needed * round_seconds:.0f} s at {round_seconds:.0f} s per round)")

    def _half_width(self, primary: str | None) -> float | None:
        if not primary:
            return None
        stat = next((m for m in self.current_stats() if m.id == primary), None)
        return stat.interval.rel_half_width if stat else None

    def document(self, started: float, finished: float) -> dict:
        statuses = [self.statuses[n] for n in self.params.topologies if n in self.statuses]
        return build_document(self.params, topologies=statuses, samples=self.samples, rounds=self.rounds,
                              rr_floor=self.rr_floor, kernel=self.kernel, iperf3_version=self.iperf3_version,
                              stop_reason=self.stop_reason, started=started, finished=finished)

    def _status(self, primary: str | None, record: RoundRecord) -> str:
        from rich.markup import escape

        text = f"round {record.index + 1}" + (" [yellow]noisy[/yellow]" if record.noisy else "")
        if primary:
            stat = next((m for m in self.current_stats() if m.id == primary), None)
            if stat:
                hw = stat.interval.rel_half_width
                text += f"  {escape(primary)} {stat.summary.median:.3f}" + (f" ±{hw:.1%}" if hw is not None else "")
                text += f" (target ±{self.params.target:.0%})" if self.params.rounds is None else ""
        return text


# -- the results document ----------------------------------------------------------------------------------


def build_document(params: BenchParams, *, topologies: Sequence[TopologyStatus], samples: Sequence[Sample],
                   rounds: Sequence[RoundRecord], rr_floor: RrResult | None, kernel: str, iperf3_version: str | None,
                   stop_reason: str, started: float, finished: float) -> dict:
    """The results document (docs/bench-schema.json): every sample, the statistics over the usable rounds
    of the topologies that ran, and the machine and parameters they were measured with."""
    p = params
    ran = [t.name for t in topologies if t.status == "ran"]
    used, includes_noisy = usable_rounds([r.noisy for r in rounds])
    stats = compute_stats(samples, ran, used, seed=p.seed, confidence=p.confidence, resamples=p.resamples)
    primary = primary_id(ran)
    prim = next((m for m in stats if m.id == primary), None)
    half = prim.interval.rel_half_width if prim else None
    return {
        "schema": SCHEMA_ID,
        "harness_version": __version__,
        "git_commit": git_commit(),
        "started_at": iso(started),
        "finished_at": iso(finished),
        "wall_seconds": round(finished - started, 3),
        "backend": p.backend,
        "machine": machine_info(kernel or platform.release(), iperf3_version),
        "parameters": {**p.to_json(), "mtu_method": mtu_method(p.mtu), "rr_cpu": rr_cpu() if p.rr_pin else None},
        "topologies": [t.to_json() for t in topologies],
        "rr_floor": rr_floor.metrics() if rr_floor else None,
        "rounds": [r.to_json() for r in rounds],
        "samples": [s.to_json() for s in samples],
        "stats": {
            "primary": primary,
            "confidence": p.confidence,
            "resamples": p.resamples,
            "seed": p.seed,
            "rounds_used": used,
            "rounds_excluded": [r.index for r in rounds if r.index not in set(used)],
            "includes_noisy": includes_noisy,
            "metrics": [m.to_json() for m in stats],
        },
        "stop": {
            "reason": stop_reason,
            "adaptive": p.rounds is None,
            "target_pct": 100 * p.target,
            "half_width_pct": None if half is None else 100 * half,
            "target_reached": p.stop_rule().reached(sum(not r.noisy for r in rounds), half),
            "used_rounds": len(used),
            "total_rounds": len(rounds),
        },
    }


def validate_document(doc: Mapping) -> None:
    """Raise jsonschema.ValidationError when `doc` does not follow docs/bench-schema.json."""
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.validate(doc, schema)


def write_document(doc: Mapping, path: str | os.PathLike) -> Path:
    out = Path(path)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: NaN is not JSON, and a statistic that became NaN is a bug to see, not to write
    out.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    return out


# -- the command -------------------------------------------------------------------------------------------


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = BenchParams()
    parser.description = ("Measure macvlan against a Linux bridge and a bare veth pair with iperf3, in rounds that "
                          "interleave the topologies, until the macvlan/bridge ratio is known to the target precision.")
    parser.add_argument("--json", metavar="FILE", help="write the results here (default results/bench-<time>.json)")
    parser.add_argument("--save-baseline", metavar="PATH", help="also save the results as a baseline (e.g. bench/baselines/NAME.json)")
    parser.add_argument("--quick", action="store_true", help="two short rounds (well under 30 s), for CI")
    parser.add_argument("--rounds", type=int, metavar="N", help="exactly N quiet rounds (noisy ones replaced, up to 5) instead of the adaptive stop")
    parser.add_argument("--duration", type=int, metavar="S", help=f"seconds per TCP test after the omitted ones (default {d.duration})")
    parser.add_argument("--omit", type=int, metavar="S", help=f"leading seconds iperf3 omits (-O; default {d.omit})")
    parser.add_argument("--streams", type=int, metavar="N", help=f"parallel TCP streams (-P; default {d.streams})")
    parser.add_argument("--mtu", type=int, metavar="N",
                        help=f"MTU (default {d.mtu}); below 1500 it is emulated by clamping the TCP MSS and UDP "
                             f"datagram size while the plan cannot set a link MTU")
    parser.add_argument("--udp-rate", metavar="RATE", help=f"UDP sending rate, iperf3 -b syntax (default {d.udp_rate})")
    parser.add_argument("--udp-duration", type=int, metavar="S", help=f"seconds per UDP test (default {d.udp_duration})")
    parser.add_argument("--rr-count", type=int, metavar="N", help=f"timed request/response transactions per test (default {d.rr_count})")
    parser.add_argument("--no-rr-pin", action="store_true",
                        help="do not put the request/response client and server on one CPU (then wake-ups dominate)")
    parser.add_argument("--budget", type=float, metavar="SECONDS",
                        help=f"time budget of an adaptive run, set-up included (default {d.budget:.0f})")
    parser.add_argument("--target", type=float, metavar="PCT",
                        help=f"stop once the macvlan/bridge 95%% CI half-width is at most PCT %% (default {100 * d.target:.0f})")
    parser.add_argument("--min-rounds", type=int, metavar="N", help=f"rounds before the adaptive stop may stop (default {d.min_rounds})")
    parser.add_argument("--full-rounds", type=int, metavar="N",
                        help=f"adaptive: rounds of every test on every topology before focusing on TCP macvlan/bridge (default {d.full_rounds})")
    parser.add_argument("--no-focus", action="store_true", help="adaptive: run every test on every topology in every round")
    parser.add_argument("--tests", metavar="LIST", help=f"comma-separated tests from {','.join(ALL_TESTS)} (default all)")
    parser.add_argument("--topologies", metavar="LIST", help=f"comma-separated, from {','.join(TOPOLOGIES)} (default all)")
    parser.add_argument("--backend", default="netns", help="backend to build the topologies with (default netns)")
    parser.add_argument("--seed", type=int, help=f"bootstrap RNG seed (default {d.seed})")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress display")


VM_NOTE = ("measured inside a qemu TCG guest (no KVM): every CPU instruction is emulated, so absolute "
           "figures say nothing about the kernel's speed; compare ratios only with runs of the same kind")


def _forwarded(args: argparse.Namespace) -> list[str]:
    """The bench options the user gave, as command-line words for the bench inside the guest."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    words: list[str] = []
    for action in parser._actions:
        if action.dest in ("json", "save_baseline", "backend", "quiet") or not action.option_strings:
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default or value is None:
            continue
        flag = next(o for o in action.option_strings if o.startswith("--"))
        words += [flag] if isinstance(action, argparse._StoreTrueAction) else [flag, str(value)]
    return words


def _main_in_vm(args: argparse.Namespace, err) -> int:
    """`--backend vm`: the whole bench runs inside one guest on Debian's kernel (which has ipvlan),
    with the namespace backend there, and its results document comes back through the share."""
    from backends.base import get_backend
    from backends.qemu import VMError

    budget = getattr(args, "budget", None) or BenchParams().budget or 120
    try:
        backend = get_backend("vm")
        guest, files = backend.run_tool(["bench", "--backend", "netns", "--json", "/out/bench.json", "-q",
                                         *_forwarded(args)], ["bench.json"], timeout=budget * 3 + 180,
                                        # numpy for the statistics; the larger image needs more guest memory
                                        extra_distributions=("numpy",), memory_mb=1024)
    except (BackendUnavailable, VMError) as exc:
        err.print(f"bench unavailable: {exc}", markup=False)
        return 2
    if "bench.json" not in files:
        err.print(f"bench failed in the VM (exit {guest.exit_code}):\n{guest.stderr[-3000:]}", markup=False)
        return 1
    doc = json.loads(files["bench.json"])
    doc["backend"] = "vm"
    doc["stop"]["reason"] = f"{doc['stop']['reason']}; {VM_NOTE}"
    validate_document(doc)
    path = args.json or f"results/bench-vm-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out = write_document(doc, path)
    if getattr(args, "save_baseline", None):
        write_document(doc, args.save_baseline)
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    console.print(summary_table(doc))
    for t in doc["topologies"]:
        if t["status"] != "ran":
            console.print(f"{t['name']}: {t['status']} — {t['reason']}", markup=False)
    console.print(f"kernel {doc['machine'].get('kernel', '?')} in the VM; {VM_NOTE}", markup=False)
    console.print(f"results: {out}", markup=False)
    return 0 if guest.exit_code == 0 else 1


def params_from_args(args: argparse.Namespace) -> BenchParams:
    values: dict = dict(QUICK) if getattr(args, "quick", False) else {}
    values["quick"] = bool(getattr(args, "quick", False))
    simple = {"rounds": "rounds", "duration": "duration", "omit": "omit", "streams": "streams", "mtu": "mtu",
              "udp_rate": "udp_rate", "udp_duration": "udp_duration", "rr_count": "rr_count", "budget": "budget",
              "min_rounds": "min_rounds", "seed": "seed"}
    for attr, key in simple.items():
        v = getattr(args, attr, None)
        if v is not None:
            values[key] = v
    if getattr(args, "target", None) is not None:
        values["target"] = args.target / 100
    if getattr(args, "no_rr_pin", False):
        values["rr_pin"] = False
    if getattr(args, "no_focus", False):
        values["focus"] = False
    if getattr(args, "full_rounds", None) is not None:
        values["full_rounds"] = args.full_rounds
    if getattr(args, "topologies", None):
        values["topologies"] = _csv(args.topologies)
    if getattr(args, "tests", None):
        values["tests"] = _csv(args.tests)
    values["backend"] = getattr(args, "backend", None) or "netns"
    if values.get("rounds") is not None and getattr(args, "budget", None) is None:
        values["budget"] = None  # a fixed number of rounds is not cut short by the default budget
    params = BenchParams(**values)
    _check(params)
    return params


def _check(p: BenchParams) -> None:
    unknown = [t for t in p.topologies if t not in TOPOLOGIES]
    if unknown:
        raise BenchUnavailable(f"unknown topology {', '.join(unknown)}; valid topologies: {', '.join(TOPOLOGIES)}")
    bad = [t for t in p.tests if t not in ALL_TESTS]
    if bad or not p.tests:
        raise BenchUnavailable(f"unknown test {', '.join(bad) or '(none)'}; valid tests: {', '.join(ALL_TESTS)}")
    if p.duration < 1 or p.udp_duration < 1 or p.omit < 0:
        raise BenchUnavailable("--duration and --udp-duration are whole seconds >= 1 (iperf3 -t 0 means forever)")
    if p.streams < 1 or (p.rounds is not None and p.rounds < 1) or p.rr_count < 1:
        raise BenchUnavailable("--streams, --rounds and --rr-count must be at least 1")
    mtu_method(p.mtu)


def summary_table(doc: Mapping):
    from rich.table import Table
    from rich.text import Text

    stop = doc["stop"]
    table = Table(title=f"bench: {stop['used_rounds']} rounds in {doc['wall_seconds']:.0f} s — {stop['reason']}")
    for col in ("metric", "median", "95% CI", "±", "n"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for m in doc["stats"]["metrics"]:
        if m["kind"] != "ratio" and m["quantity"] not in ("gbps", "loss_pct", "p50_us"):
            continue
        ci = "-" if m["ci_low"] is None else f"{m['ci_low']:.3f} – {m['ci_high']:.3f}"
        hw = "-" if m["half_width_pct"] is None else f"{m['half_width_pct']:.1f}%"
        table.add_row(Text(m["id"]), f"{m['median']:.3f} {m['unit'] if m['unit'] != 'ratio' else ''}".strip(), ci, hw, str(m["n"]))
    return table


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape  # reasons and metric ids contain [brackets] rich would take for markup

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if getattr(args, "backend", None) == "vm":
        return _main_in_vm(args, err)
    try:
        params = params_from_args(args)
        from backends.base import get_backend

        backend = get_backend(params.backend)
        runner = BenchRunner(params, backend, None if getattr(args, "quiet", False) else RichProgress())
        started = time.time()
        runner.run()
        doc = runner.document(started, time.time())
    except (BenchUnavailable, BackendUnavailable) as exc:
        err.print(f"[red]bench unavailable[/red]: {escape(str(exc))}")
        return 2
    except HarnessError as exc:
        err.print("[red]bench failed[/red]: ", end="", markup=True)
        err.print(str(exc), markup=False)
        return 1
    path = args.json or f"results/bench-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out = write_document(doc, path)
    if runner.error:
        err.print("[red]bench failed[/red]: ", end="", markup=True)
        err.print(f"{runner.error}\nthe samples measured before the failure are in {out}", markup=False)
        return 1
    out_console = Console(highlight=False, soft_wrap=True)
    out_console.print(summary_table(doc))
    for t in doc["topologies"]:
        if t["status"] != "ran":
            out_console.print(f"{t['name']}: {t['status']} — {t['reason']}", markup=False)
    if doc["stop"]["adaptive"] and not doc["stop"]["target_reached"]:
        hw = doc["stop"]["half_width_pct"]
        out_console.print(f"[yellow]target not reached[/yellow]: macvlan/bridge half-width "
                          f"{'unknown' if hw is None else f'{hw:.1f} %'} (target {doc['stop']['target_pct']:.0f} %); "
                          f"{escape(doc['stop']['reason'])}")
    noisy = [r["index"] + 1 for r in doc["rounds"] if r["noisy"]]
    if doc["stats"]["includes_noisy"]:
        out_console.print(f"[yellow]the machine stayed busy[/yellow]: the statistics include noisy rounds "
                          f"{', '.join(map(str, noisy))} (see rounds\\[].noise_reasons)")
    elif noisy:
        out_console.print(f"noisy rounds left out of the statistics and replaced: {', '.join(map(str, noisy))}")
    out_console.print(f"results: {out}", markup=False)
    if getattr(args, "save_baseline", None):
        out_console.print(f"baseline: {write_document(doc, args.save_baseline)}", markup=False)
    return 0
