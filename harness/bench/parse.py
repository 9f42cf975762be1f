"""Parsing what the bench's tools print: iperf3 -J, the request/response probe, /proc/net/tcp.

`TcpResult`, `UdpResult` and `RrResult` are one parsed iperf3 / request-response measurement (`Result` is
any of them) and a `Sample` ties one to its round and topology. `parse_iperf3_tcp`, `parse_iperf3_udp`
and `parse_rr` raise `BenchError` with the tool's own words when its output is an error or incomplete.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from harness.bench.params import BenchError


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
