"""Which statistics a bench run's samples yield, and their ids (`tcp.gbps[macvlan]`, `tcp.gbps[macvlan/bridge]`).

`TOPOLOGY_METRICS` lists what each test contributes per topology, `RATIO_METRICS` the within-round ratios;
`ratio_pairs` names the ratios a set of topologies has, `primary_id` the one the adaptive stop watches, and
`compute_stats` turns `Sample`s of the given rounds into `harness.bench.stats.MetricStat`s in a stable order.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.bench.parse import Sample
from harness.bench.stats import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    MetricStat,
    metric_stat,
    paired_ratios,
)

PRIMARY = ("macvlan", "bridge")  # the documentation's claim, and the ratio the adaptive stop watches
REQUIRED_RATIOS = (("macvlan", "bridge"), ("macvlan", "veth"), ("bridge", "veth"))

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


def primary_stat(samples: Sequence[Sample], primary: str, rounds: Sequence[int], *,
                 confidence: float = DEFAULT_CONFIDENCE) -> MetricStat | None:
    """The TCP ratio `primary` (an id from `primary_id`) alone: what the adaptive stop looks at after every
    round, without the bootstrap of every other metric."""
    num, den = primary[primary.index("[") + 1:-1].split("/")
    use = set(rounds)
    rs, values = paired_ratios(by_round(samples, num, "tcp", "gbps", use), by_round(samples, den, "tcp", "gbps", use))
    return metric_stat(id=primary, kind="ratio", test="tcp", quantity="gbps", unit="ratio", better="higher",
                       gate="ratio", numerator=num, denominator=den, by_round=dict(zip(rs, values, strict=True)),
                       confidence=confidence)
