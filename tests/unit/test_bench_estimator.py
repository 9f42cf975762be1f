"""Unit tests of the bench's paired-ratio estimator (harness.bench.stats.paired_ratio_ci) on synthetic
samples with a known ratio and known noise: the signed-rank distribution itself, coverage, robustness to
load spikes and drift, the sample count the adaptive stop chooses and what that count can detect, and
how `harness report` judges the primary ratio with it."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from harness.bench.compare import OK, REGRESSION, Tolerances, judge
from harness.bench.stats import (
    MIN_INTERVAL_N,
    StopRule,
    bootstrap_median_ci,
    detectable_change,
    paired_ratio_ci,
    signed_rank_cdf,
    signed_rank_depth,
)

TRUE_RATIO = 1.07
# Per-pair scatter of log(macvlan/bridge) measured on this machine kind with -P 1 -t 1 (issue 14):
# 0.065 at load average 6, 0.16-0.18 at load average 9-11. The tests use 0.10.
SD_LOG = 0.10


def _pairs(rng: random.Random, n: int, ratio: float = TRUE_RATIO, sd_log: float = SD_LOG, spikes: float = 0.0,
           drift: bool = True) -> list[float]:
    """n per-pair ratios macvlan/bridge: both samples of a pair share the machine's slow drift (which the
    ratio cancels), each has its own noise, and with probability `spikes` one of them (either) is halved
    by somebody else's load spike."""
    out = []
    for i in range(n):
        level = 10.0 * (1 + 0.5 * math.sin(i / 5)) if drift else 10.0  # raw Gbit/s wander by +-50 %
        mac = level * ratio * math.exp(rng.gauss(0, sd_log / math.sqrt(2)))
        br = level * math.exp(rng.gauss(0, sd_log / math.sqrt(2)))
        if rng.random() < spikes:
            if rng.random() < 0.5:
                mac *= 0.5
            else:
                br *= 0.5
        out.append(mac / br)
    return out


def test_the_signed_rank_distribution_is_exact():
    n = 7
    sums = [sum(r for r, sign in zip(range(1, n + 1), signs, strict=True) if sign)
            for signs in itertools.product((0, 1), repeat=n)]
    cdf = signed_rank_cdf(n)
    for t in range(n * (n + 1) // 2 + 1):
        assert cdf[t] == pytest.approx(sum(s <= t for s in sums) / 2 ** n)


@pytest.mark.parametrize("n, critical", [(6, 0), (8, 3), (10, 8), (20, 52), (30, 137)])
def test_the_interval_depth_follows_the_published_critical_values(n, critical):
    # two-sided 5 % critical values of Wilcoxon's T (reject when T <= critical): the interval leaves out
    # critical + 1 Walsh averages at each end
    assert signed_rank_depth(n) == critical + 1


def test_too_few_pairs_give_an_estimate_and_no_interval():
    assert MIN_INTERVAL_N == 6
    few = paired_ratio_ci([1.1, 1.0, 1.2, 1.05, 1.15])
    assert few.interval.low is None and few.se_log is None
    assert few.interval.estimate == pytest.approx(1.1, abs=0.01)
    six = paired_ratio_ci([1.1, 1.0, 1.2, 1.05, 1.15, 1.12])
    assert six.interval.low == pytest.approx(1.0) and six.interval.high == pytest.approx(1.2)  # the extreme Walsh averages


@pytest.mark.parametrize("spikes", [0.0, 0.1])
def test_the_interval_covers_the_true_ratio_95_times_in_100(spikes):
    rng = random.Random(14 + int(100 * spikes))
    trials, hits = 400, 0
    for _ in range(trials):
        ci = paired_ratio_ci(_pairs(rng, 30, spikes=spikes)).interval
        hits += ci.low <= TRUE_RATIO <= ci.high
    assert 0.92 <= hits / trials <= 0.985


def test_a_load_spike_moves_the_estimate_by_a_rank_not_by_its_size():
    rng = random.Random(3)
    clean = _pairs(rng, 40, drift=False)
    hit = list(clean)
    hit[5], hit[17] = clean[5] * 0.3, clean[17] * 0.3  # two macvlan samples cut to a third by somebody's load
    a, b = paired_ratio_ci(clean).interval, paired_ratio_ci(hit).interval
    assert abs(math.log(b.estimate / a.estimate)) < 0.015
    # the mean of the log-ratios (a t-interval's centre) moves by 6 %
    mean_shift = sum(math.log(h / c) for h, c in zip(hit, clean, strict=True)) / len(hit)
    assert mean_shift < -0.05


def test_it_needs_fewer_pairs_than_the_median_with_a_bootstrap():
    rng = random.Random(5)
    hl, med = [], []
    for t in range(40):
        pairs = _pairs(rng, 30)
        hl.append(paired_ratio_ci(pairs).interval.rel_half_width)
        med.append(bootstrap_median_ci(pairs, resamples=1000, seed=t).rel_half_width)
    # the same pairs give a narrower interval: (width ratio)^2 is the factor in pairs
    assert sum(hl) / sum(med) < 0.9


def _adaptive_run(rng: random.Random, ratio: float, rule: StopRule) -> tuple[int, object]:
    """Pairs one at a time until the stop rule is satisfied, as the runner does (no budget)."""
    pairs: list[float] = []
    while True:
        pairs.append(_pairs(rng, 1, ratio=ratio, drift=False)[0])
        half = paired_ratio_ci(pairs).interval.rel_half_width if len(pairs) >= rule.min_rounds else None
        if rule.decide(len(pairs), len(pairs), half, 0.0, 0.0):
            return len(pairs), paired_ratio_ci(pairs)


def test_the_run_stops_at_3_percent_and_then_sees_a_5_percent_shift():
    rule = StopRule(target=0.03, budget=None, min_rounds=10)
    rng = random.Random(20)
    trials, seen, covered, counts = 150, 0, 0, []
    for _ in range(trials):
        n, est = _adaptive_run(rng, TRUE_RATIO * 0.95, rule)  # the code under test lost 5 %
        counts.append(n)
        assert est.interval.rel_half_width <= 0.03
        seen += not (est.interval.low <= TRUE_RATIO <= est.interval.high)  # the old ratio is ruled out
        covered += est.interval.low <= TRUE_RATIO * 0.95 <= est.interval.high
    # (1.96 * 0.10 / 0.03)^2 ~ 43 pairs with a t-interval; the signed-rank interval about the same
    assert 30 <= sum(counts) / trials <= 60
    assert seen / trials >= 0.85
    assert covered / trials >= 0.88
    # what the run says it can detect against a fixed value agrees: below 5 %
    _, est = _adaptive_run(random.Random(1), TRUE_RATIO, rule)
    assert detectable_change(est.se_log, 0.0) < 0.05
    # against a baseline as precise as itself it can detect less: the difference of two has sqrt(2) the error
    assert detectable_change(est.se_log) == pytest.approx(math.expm1(2.8016 * math.sqrt(2) * est.se_log), rel=1e-3)


def _metric(estimate: float, se_log: float | None, n: int = 40) -> dict:
    half = 1.96 * (se_log or 0.05)
    return {"id": "tcp.gbps[macvlan/bridge]", "kind": "ratio", "unit": "ratio", "better": "higher", "gate": "ratio",
            "median": estimate, "ci_low": estimate * math.exp(-half), "ci_high": estimate * math.exp(half), "n": n,
            "confidence": 0.95, "se_log": se_log}


def test_the_report_tests_the_primary_ratio_by_its_standard_errors():
    tol = Tolerances()
    se = 0.03 / 1.96  # two runs at +-3 %
    # 5.5 % worse: beyond the 5 % tolerance and 2.6 standard errors of the difference: a regression
    c = judge(_metric(1.07, se), _metric(1.07 * 0.945, se), tol, primary=True)
    assert c.verdict == REGRESSION and c.outside_ci
    # ... which disjoint intervals would not have called (they overlap)
    assert c.current_ci[1] > c.baseline_ci[0]
    assert judge(_metric(1.07, se), _metric(1.07 * 0.945, se), tol, primary=False).verdict == OK
    # the smallest change it finds 4 times in 5: the larger of tolerance and 1.96 se, plus 0.84 se
    assert c.detectable == pytest.approx(math.expm1(max(math.log1p(0.05), 1.96 * math.hypot(se, se)) + 0.8416 * math.hypot(se, se)), rel=1e-3)
    # 4 % worse: inside the tolerance; 8 % worse but with +-10 % intervals: noise
    assert judge(_metric(1.07, se), _metric(1.07 * 0.96, se), tol, primary=True).verdict == OK
    assert judge(_metric(1.07, 0.05), _metric(1.07 * 0.92, 0.05), tol, primary=True).verdict == OK
    # an old baseline without se_log is judged as before (disjoint intervals)
    old = _metric(1.07, None)
    assert judge(old, _metric(1.07 * 0.92, se), tol, primary=True).detectable is None


def test_a_quick_run_is_judged_against_the_scatter_of_the_baselines_rounds_not_its_interval():
    rng = random.Random(8)
    values = _pairs(rng, 40, drift=False)
    est = paired_ratio_ci(values)
    baseline = dict(_metric(est.interval.estimate, est.se_log), id="tcp.gbps[bridge/veth]", values=values)
    baseline["ci_low"], baseline["ci_high"] = est.interval.low, est.interval.high
    tol = Tolerances()
    # one round 12 % below: outside the baseline's +-3 % interval, but one round scatters 10 % (SD_LOG)
    one = dict(_metric(est.interval.estimate * 0.88, None, n=1), ci_low=None, ci_high=None)
    c = judge(baseline, one, tol)
    assert c.few_rounds and not c.outside_ci and c.verdict == OK
    assert not (baseline["ci_low"] <= one["median"] <= baseline["ci_high"])  # the old check would have cried wolf
    # 35 % below is more than one round's scatter explains: a regression
    assert judge(baseline, dict(one, median=est.interval.estimate * 0.65), tol).verdict == REGRESSION
