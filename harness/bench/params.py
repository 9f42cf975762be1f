"""What one `harness bench` run measures: `BenchParams` (with `QUICK`, the CI preset) and the bench's errors.

`BenchParams` holds the tests, topologies, iperf3 and probe settings, the round and stop rules
(`stop_rule()` gives the `harness.bench.stats.StopRule`) and the statistics' seed and confidence;
`BenchError` is a measurement that failed, `BenchUnavailable` a bench that cannot run here at all.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from harness.bench.stats import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    MIN_INTERVAL_N,
    NoiseRule,
    StopRule,
)
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
    """What one run measures. Defaults come from measurements on a 2-vCPU VM with iperf3 3.12 (issue 14,
    docs/performance.md): one TCP stream for 1 s, nothing omitted, gave the steadiest macvlan/bridge
    ratio per second spent (per-pair log-ratio scatter 0.065 against 0.085 with -P 2 and 0.17 with
    -P 4; omitting a second doubled a sample's cost without making it steadier)."""

    topologies: tuple[str, ...] = ("macvlan", "bridge", "veth", "ipvlan", "macvlan-vepa")
    tests: tuple[str, ...] = ALL_TESTS
    duration: int = 1  # seconds of each TCP test that count (iperf3 -t; whole seconds only)
    omit: int = 0  # leading seconds iperf3 discards (-O); on a veth path slow start is over in milliseconds
    streams: int = 1
    mtu: int = DEFAULT_MTU
    udp_rate: str = "1G"
    udp_duration: int = 1
    udp_blocks: int | None = 40000  # when set, a UDP test is this many datagrams (iperf3 -k) instead of -t seconds
    rr_count: int = 2000
    rr_warmup: int = 200
    rr_size: int = 1
    rr_pin: bool = True  # client and server of the probe on one CPU: measures the path, not IPI wake-ups
    rounds: int | None = None  # fixed number of quiet rounds; None = adaptive
    min_rounds: int = 10  # adaptive: rounds (pairs) before the target may stop the run
    max_rounds: int = 400
    # adaptive: full rounds (every test, every topology), spread over the budget; six, the fewest that
    # give every other metric an interval (stats.MIN_INTERVAL_N), so none is judged on a bare median
    full_rounds: int = 6
    focus: bool = True  # adaptive: between full rounds, only TCP pairs of the primary topologies (macvlan, bridge)
    budget: float | None = 120.0
    target: float = 0.03
    max_reruns: int = 5  # noisy rounds a fixed-rounds run may replace (an adaptive run is bounded by its budget)
    load_window: float = 0.2
    pair_load_window: float = 0.1  # the idle window before a pair (a pair takes ~2 s: 0.2 s would be 10 %)
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


# CI exercises the whole path and still gets a primary ratio worth comparing: one full round (every test
# on every topology, short), then macvlan/bridge pairs for the rest of a 25 s budget, set-up included:
# 6-8 pairs, the fewest with a 95 % interval (stats.MIN_INTERVAL_N), whose standard error lets `harness
# report` test the ratio against the baseline. Every other metric has one round: an estimate, no interval.
# A machine too busy for 6 pairs in 25 s gets no interval at all rather than one that means nothing.
# Every test is measured as in a default run (a baseline is a default run: fewer request/response
# transactions alone moved their p50 ratios by 14 %), only less often.
QUICK = dict(budget=25.0, full_rounds=1, min_rounds=MIN_INTERVAL_N, max_reruns=0, load_window=0.1,
             pair_load_window=0.05, quiet_wait=0.0)
