"""What one `harness bench` run measures: `BenchParams` (with `QUICK`, the CI preset) and the bench's errors.

`BenchParams` holds the tests, topologies, iperf3 and probe settings, the round and stop rules
(`stop_rule()` gives the `harness.bench.stats.StopRule`) and the statistics' seed and confidence;
`BenchError` is a measurement that failed, `BenchUnavailable` a bench that cannot run here at all.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from harness.bench.stats import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_SEED, NoiseRule, StopRule
from harness.errors import HarnessError

DEFAULT_MTU = 1500  # what veth, bridge and macvlan links get from the kernel
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
