"""Statistics for the bench: robust summaries, intervals of paired ratios and of medians, machine load.

`Summary` is the median and spread of one metric of one topology; `Interval` a confidence interval;
`paired_ratio_ci` the ratio of two topologies from per-pair ratios (pairs are samples taken seconds apart,
which cancels slow drifts of machine load; raw throughput drifts far more over minutes): the
Hodges-Lehmann estimate of their logarithms with the exact Wilcoxon signed-rank interval (`PairedRatio`,
which also carries the standard error of the log-ratio that `detectable_change` turns into the smallest
change a comparison could find); `bootstrap_median_ci` a seeded percentile-bootstrap interval of one
topology's median; `MetricStat` one line of the results' statistics. Fewer than `MIN_INTERVAL_N` samples
get no interval (a 95 % interval of so few means nothing). `CpuTimes` and `Load` turn two /proc/stat
readings into busy and steal shares; `NoiseRule` flags a round taken on a busy machine; `StopRule`
decides when the adaptive run has reached its precision target or spent its time budget.

Everything here is pure (no I/O except `read_cpu_times`) and deterministic for a given seed.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

DEFAULT_SEED = 20240611
DEFAULT_RESAMPLES = 4000
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """Median and spread of a sample; `cv` is stdev/mean (None when undefined)."""

    n: int
    median: float
    mean: float
    stdev: float
    cv: float | None
    min: float
    max: float
    q1: float
    q3: float

    def to_json(self) -> dict:
        return asdict(self)


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of already sorted values."""
    if not sorted_values:
        raise ValueError("quantile of an empty sample")
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("cannot summarize an empty sample")
    vs = sorted(float(v) for v in values)
    mean = statistics.fmean(vs)
    stdev = statistics.stdev(vs) if len(vs) > 1 else 0.0
    cv = stdev / abs(mean) if len(vs) > 1 and mean != 0 else None
    return Summary(n=len(vs), median=statistics.median(vs), mean=mean, stdev=stdev, cv=cv, min=vs[0], max=vs[-1],
                   q1=quantile(vs, 0.25), q3=quantile(vs, 0.75))


@dataclass(frozen=True)
class Interval:
    """A confidence interval around `estimate`; low/high are None when the sample is too small (n < 2)."""

    estimate: float
    low: float | None
    high: float | None
    confidence: float = DEFAULT_CONFIDENCE

    @property
    def half_width(self) -> float | None:
        if self.low is None or self.high is None:
            return None
        return (self.high - self.low) / 2

    @property
    def rel_half_width(self) -> float | None:
        """Half-width relative to the estimate (0.03 is "+-3 %"); None when undefined."""
        hw = self.half_width
        if hw is None or self.estimate == 0:
            return None
        return hw / abs(self.estimate)

    def contains(self, value: float) -> bool | None:
        if self.low is None or self.high is None:
            return None
        return self.low <= value <= self.high


def bootstrap_median_ci(values: Sequence[float], confidence: float = DEFAULT_CONFIDENCE,
                        resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> Interval:
    """Percentile bootstrap of the median.

    Seeded so that the same samples always give the same interval (tests and re-rendered reports agree).
    With very few rounds the interval is coarse (it can only fall on order statistics) and tends to be
    too narrow; the bench therefore insists on a minimum number of rounds before it trusts it.
    """
    vs = [float(v) for v in values]
    if not vs:
        raise ValueError("cannot bootstrap an empty sample")
    estimate = statistics.median(vs)
    if len(vs) < 2:
        return Interval(estimate, None, None, confidence)
    import numpy as np  # imported here: `harness --help` should not pay for numpy

    rng = np.random.default_rng(seed)
    data = np.asarray(vs)
    idx = rng.integers(0, len(data), size=(resamples, len(data)))
    medians = np.median(data[idx], axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(medians, [alpha, 1 - alpha])
    return Interval(estimate, float(low), float(high), confidence)


def paired_ratios(numerator: Mapping[int, float], denominator: Mapping[int, float]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Ratios of the rounds both sides measured, in round order; a zero denominator drops the round."""
    rounds = sorted(r for r in numerator if r in denominator and denominator[r] != 0)
    return tuple(rounds), tuple(numerator[r] / denominator[r] for r in rounds)


# -- paired ratios: Hodges-Lehmann with the Wilcoxon signed-rank interval ----------------------------------

# The exact signed-rank interval exists from 6 pairs on (below that even the widest interval, from the
# smallest to the largest Walsh average, covers the centre with less than 95 %), and so does the
# order-statistic interval of a median; fewer samples get no interval at all rather than one that means nothing.
MIN_INTERVAL_N = 6


def signed_rank_cdf(n: int) -> list[float]:
    """P(T+ <= t) for t = 0 .. n(n+1)/2, the exact null distribution of Wilcoxon's signed-rank statistic.

    Counting subsets of the ranks 1..n by their sum (a running convolution); floats hold 2^n exactly
    enough for any n the bench reaches (2^1000 is still finite)."""
    import numpy as np

    top = n * (n + 1) // 2
    counts = np.zeros(top + 1)
    counts[0] = 1.0
    for r in range(1, n + 1):
        counts[r:] = counts[r:] + counts[:-r].copy()
    return list(np.cumsum(counts) / 2.0 ** n)


@functools.lru_cache(maxsize=512)
def signed_rank_depth(n: int, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """How many Walsh averages the interval leaves out at each end: the largest k with P(T+ <= k-1) <= alpha/2
    (0: no interval at this confidence)."""
    alpha = (1 - confidence) / 2
    cdf = signed_rank_cdf(n)
    k = 0
    while k < len(cdf) and cdf[k] <= alpha + 1e-12:
        k += 1
    return k


@dataclass(frozen=True)
class PairedRatio:
    """The ratio of two topologies from paired samples: `interval` is on the ratio scale, `se_log` the
    standard error of its logarithm implied by the interval (for detectable changes and comparisons)."""

    interval: Interval
    se_log: float | None
    n: int


def paired_ratio_ci(ratios: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> PairedRatio:
    """The Hodges-Lehmann estimate of per-pair log-ratios with the exact Wilcoxon signed-rank interval,
    returned on the ratio scale.

    Why this estimator: each pair's two samples are taken seconds apart, so the log of their ratio cancels
    slow drifts of machine load; with the order alternating within pairs, the difference of two equally
    noisy log-throughputs is symmetric about the true log-ratio, which is all the signed-rank interval
    assumes. It is distribution-free (a load spike that halves one sample moves it by one Walsh average,
    not by its size) and, with normal scatter, as efficient as a t-interval to within 5 % (the median of
    the ratios, with a bootstrap, needs about 1.5 times the pairs for the same width).
    """
    import numpy as np

    logs = np.log(np.asarray([float(r) for r in ratios if r > 0]))
    n = len(logs)
    if n == 0:
        raise ValueError("no positive ratio to estimate from")
    i, j = np.triu_indices(n)
    walsh = np.sort((logs[i] + logs[j]) / 2)
    estimate = float(np.median(walsh))
    k = signed_rank_depth(n, confidence) if n >= MIN_INTERVAL_N else 0
    if k == 0:
        return PairedRatio(Interval(math.exp(estimate), None, None, confidence), None, n)
    low, high = float(walsh[k - 1]), float(walsh[len(walsh) - k])
    z = _z(confidence)
    return PairedRatio(Interval(math.exp(estimate), math.exp(low), math.exp(high), confidence),
                       (high - low) / (2 * z), n)


def _z(confidence: float) -> float:
    return statistics.NormalDist().inv_cdf(0.5 + confidence / 2)


DETECT_POWER = 0.8  # "detectable": found by the comparison four times out of five


def detectable_change(se_log: float, baseline_se_log: float | None = None, confidence: float = DEFAULT_CONFIDENCE,
                      power: float = DETECT_POWER) -> float:
    """The smallest true relative change of a ratio that a comparison would find with `power`, at the
    two-sided `confidence` level: (z_conf + z_power) times the standard error of the log difference.

    Without a baseline, the baseline is assumed as precise as this run (two runs of the same length), so
    the difference has sqrt(2) times this run's standard error."""
    other = se_log if baseline_se_log is None else baseline_se_log
    se = math.hypot(se_log, other)
    return math.expm1((_z(confidence) + statistics.NormalDist().inv_cdf(power)) * se)


# -- machine load ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuTimes:
    """The aggregate `cpu` line of /proc/stat, in clock ticks."""

    total: int
    idle: int  # idle + iowait: time nobody wanted the CPU
    steal: int  # time the hypervisor gave our vCPUs to someone else

    @classmethod
    def parse(cls, proc_stat: str) -> CpuTimes:
        for line in proc_stat.splitlines():
            if line.startswith("cpu "):
                fields = [int(x) for x in line.split()[1:]]
                fields += [0] * (8 - len(fields))
                # user nice system idle iowait irq softirq steal [guest guest_nice]; guest time is
                # already counted in user/nice, so only the first eight add up to the total.
                total = sum(fields[:8])
                return cls(total=total, idle=fields[3] + fields[4], steal=fields[7])
        raise ValueError("no aggregate 'cpu' line in /proc/stat")


def read_cpu_times(path: str = "/proc/stat") -> CpuTimes:
    with open(path) as f:
        return CpuTimes.parse(f.read())


@dataclass(frozen=True)
class Load:
    """Shares (0..1) of all CPUs' time between two readings: busy (neither idle nor stolen) and steal."""

    busy: float
    steal: float
    seconds: float

    @classmethod
    def between(cls, before: CpuTimes, after: CpuTimes, seconds: float) -> Load:
        total = after.total - before.total
        if total <= 0:
            return cls(0.0, 0.0, seconds)
        steal = (after.steal - before.steal) / total
        idle = (after.idle - before.idle) / total
        return cls(busy=max(0.0, 1.0 - idle - steal), steal=max(0.0, steal), seconds=seconds)

    def to_json(self) -> dict:
        return {"busy": round(self.busy, 4), "steal": round(self.steal, 4), "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class NoiseRule:
    """When a round is not to be trusted.

    Before a round the bench itself is idle, so any busy share is somebody else's work competing with the
    next measurement. During a round the bench keeps the CPUs busy itself, so only steal (the hypervisor
    running other guests on our vCPUs) says something about noise there.
    """

    max_busy_before: float = 0.25
    max_steal_before: float = 0.05
    max_steal_during: float = 0.05

    def before_reasons(self, before: Load) -> list[str]:
        out = []
        if before.busy > self.max_busy_before:
            out.append(f"machine {before.busy:.0%} busy before the round (limit {self.max_busy_before:.0%})")
        if before.steal > self.max_steal_before:
            out.append(f"{before.steal:.1%} CPU steal before the round (limit {self.max_steal_before:.0%})")
        return out

    def reasons(self, before: Load, during: Load) -> list[str]:
        out = self.before_reasons(before)
        if during.steal > self.max_steal_during:
            out.append(f"{during.steal:.1%} CPU steal during the round (limit {self.max_steal_during:.0%})")
        return out


# -- the adaptive stop ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StopRule:
    """Run rounds until the primary ratio's interval is narrow enough, or time or rounds run out.

    `quiet` counts the rounds the statistics can use: the quiet ones of a fixed run, every one of an
    adaptive run (see `usable_rounds`). `rounds` fixes the number of quiet rounds (no precision
    target), replacing at most `max_reruns` noisy ones. Otherwise at least `min_rounds` rounds are run
    (an interval of fewer pairs is not worth trusting), then the run stops as soon as the relative
    half-width is <= `target`, or before a round that would not fit in `budget` seconds.
    """

    target: float = 0.03
    budget: float | None = 120.0
    min_rounds: int = 10
    max_rounds: int = 400
    rounds: int | None = None
    max_reruns: int = 5
    reserve: float = 0.0  # seconds of the budget kept for tearing everything down after the last round

    def decide(self, quiet: int, total: int, half_width: float | None, elapsed: float,
               next_round_estimate: float, missing_full: int = 0) -> str | None:
        """None to go on, else why the run stops (the reason goes into the results as is).

        `missing_full`: full rounds an adaptive run still owes the other metrics; a reached target waits
        for them (the budget does not)."""
        if self.rounds is not None:
            if quiet >= self.rounds:
                return f"ran the requested {self.rounds} rounds"
            if total >= self.rounds + self.max_reruns:
                return (f"ran {total} rounds, {total - quiet} of them noisy: no more reruns allowed "
                        f"(at most {self.max_reruns})")
        elif quiet >= self.min_rounds and half_width is not None and half_width <= self.target and not missing_full:
            return f"target reached: half-width {half_width:.2%} <= {self.target:.2%}"
        if total >= self.max_rounds:
            return f"stopped at the maximum of {self.max_rounds} rounds"
        # The first round always runs: a slow set-up (a TCG guest) must not leave a run with nothing.
        if self.budget is not None and total and elapsed + next_round_estimate + self.reserve > self.budget:
            reason = f"time budget: another round (~{next_round_estimate:.0f} s) would not fit in {self.budget:.0f} s"
            if self.rounds is None and quiet < self.min_rounds:
                reason += f"; only {quiet} rounds ({self.min_rounds} needed to trust an interval)"
            elif self.rounds is None and half_width is not None:
                reason += f"; half-width reached {half_width:.2%} over {quiet} rounds, target {self.target:.2%}"
            if missing_full:
                reason += f"; {missing_full} full round(s) missing"
            return reason
        return None

    def reached(self, quiet: int, half_width: float | None) -> bool:
        """Whether an adaptive run met its target: narrow enough over enough rounds to trust it."""
        return self.rounds is None and quiet >= self.min_rounds and half_width is not None and half_width <= self.target


def usable_rounds(noisy: Sequence[bool], min_quiet: int = MIN_INTERVAL_N,
                  keep_noisy: bool = False) -> tuple[list[int], bool]:
    """Indices of the rounds the statistics use, and whether noisy ones are among them.

    `keep_noisy` (an adaptive run): every round. Its pairs are ratios of two samples seconds apart, which
    cancels the load both saw, and the Hodges-Lehmann estimate shrugs off a pair a spike hit; on this
    machine kind pairs flagged noisy scattered no more than quiet ones (0.084 against 0.119 in one run)
    while leaving them out threw away 12 of 19 rounds and widened the interval from 4.9 % to 11 %.
    Otherwise (a fixed number of rounds): quiet rounds only, as long as there are at least `min_quiet`
    of them (the fewest with an interval); a machine that stayed busy for nearly all of them gets
    statistics over every round, and the results say so.
    """
    every = list(range(len(noisy)))
    if keep_noisy:
        return every, any(noisy)
    quiet = [i for i, n in enumerate(noisy) if not n]
    if len(quiet) >= min_quiet:
        return quiet, False
    return every, any(noisy)


@dataclass(frozen=True)
class MetricStat:
    """One line of the statistics: a per-topology metric or a ratio, ready for the results JSON."""

    id: str
    kind: str  # "topology" | "ratio"
    test: str  # tcp | udp | rr
    quantity: str  # gbps, loss_pct, p50_us, ...
    unit: str
    better: str | None  # "higher" | "lower" | None (informational, never a regression)
    gate: str | None  # which tolerance applies: "ratio" | "absolute" | "points" | None
    summary: Summary
    interval: Interval
    topology: str | None = None
    numerator: str | None = None
    denominator: str | None = None
    rounds: tuple[int, ...] = field(default_factory=tuple)
    values: tuple[float, ...] = field(default_factory=tuple)
    estimator: str = "median"  # "median" (bootstrap interval) | "hodges-lehmann" (of log-ratios, signed-rank interval)
    se_log: float | None = None  # standard error of the log of the estimate (paired ratios)

    def to_json(self) -> dict:
        # "median" is the point estimate: the median, or for a paired ratio the Hodges-Lehmann
        # pseudo-median (the median of the Walsh averages of the log-ratios), as `estimator` says.
        d = {
            "id": self.id, "kind": self.kind, "test": self.test, "quantity": self.quantity, "unit": self.unit,
            "better": self.better, "gate": self.gate, "n": self.summary.n, "median": self.interval.estimate,
            "estimator": self.estimator, "se_log": self.se_log,
            "ci_low": self.interval.low, "ci_high": self.interval.high, "confidence": self.interval.confidence,
            "half_width_pct": None if self.interval.rel_half_width is None else 100 * self.interval.rel_half_width,
            "mean": self.summary.mean, "stdev": self.summary.stdev, "cv": self.summary.cv,
            "min": self.summary.min, "max": self.summary.max,
            "rounds": list(self.rounds), "values": list(self.values),
        }
        if self.kind == "ratio":
            d["numerator"], d["denominator"] = self.numerator, self.denominator
        else:
            d["topology"] = self.topology
        return d


def metric_stat(*, id: str, kind: str, test: str, quantity: str, unit: str, better: str | None,
                gate: str | None, by_round: Mapping[int, float], topology: str | None = None,
                numerator: str | None = None, denominator: str | None = None,
                seed: int = DEFAULT_SEED, confidence: float = DEFAULT_CONFIDENCE,
                resamples: int = DEFAULT_RESAMPLES) -> MetricStat | None:
    """A topology's metric (median, bootstrap interval) or, for kind "ratio", per-pair ratios (Hodges-Lehmann
    with the signed-rank interval); no interval from fewer than MIN_INTERVAL_N values."""
    rounds = tuple(sorted(by_round))
    values = tuple(float(by_round[r]) for r in rounds)
    if not values:
        return None
    se_log = None
    if kind == "ratio" and all(v > 0 for v in values):
        paired = paired_ratio_ci(values, confidence)
        interval, se_log, estimator = paired.interval, paired.se_log, "hodges-lehmann"
    else:
        interval, estimator = bootstrap_median_ci(values, confidence, resamples, seed), "median"
        if len(values) < MIN_INTERVAL_N:
            interval = Interval(interval.estimate, None, None, confidence)
    return MetricStat(id=id, kind=kind, test=test, quantity=quantity, unit=unit, better=better, gate=gate,
                      summary=summarize(values), interval=interval, topology=topology, numerator=numerator,
                      denominator=denominator, rounds=rounds, values=values, estimator=estimator, se_log=se_log)
