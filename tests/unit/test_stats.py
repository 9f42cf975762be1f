"""Unit tests of harness.bench.stats: summaries, the seeded bootstrap, /proc/stat load, noise and the stop rule."""

from __future__ import annotations

import random
import statistics

import pytest

from harness.bench.stats import (
    CpuTimes,
    Interval,
    Load,
    NoiseRule,
    StopRule,
    bootstrap_median_ci,
    metric_stat,
    paired_ratios,
    quantile,
    summarize,
    usable_rounds,
)


def test_summary_of_a_small_sample():
    s = summarize([3.0, 1.0, 2.0, 10.0])
    assert s.n == 4
    assert s.median == 2.5
    assert s.min == 1.0 and s.max == 10.0
    assert s.mean == 4.0
    assert s.stdev == pytest.approx(statistics.stdev([1, 2, 3, 10]))
    assert s.cv == pytest.approx(s.stdev / 4.0)
    assert (s.q1, s.q3) == (pytest.approx(1.75), pytest.approx(4.75))


def test_summary_of_one_value_has_no_spread():
    s = summarize([5.0])
    assert (s.median, s.stdev, s.cv) == (5.0, 0.0, None)


def test_summary_refuses_an_empty_sample():
    with pytest.raises(ValueError):
        summarize([])


def test_quantile_matches_linear_interpolation():
    values = [1.0, 2.0, 4.0, 8.0]
    assert quantile(values, 0.0) == 1.0
    assert quantile(values, 1.0) == 8.0
    assert quantile(values, 0.5) == 3.0


def test_bootstrap_is_deterministic_for_a_seed_and_changes_with_it():
    rng = random.Random(1)
    values = [1.0 + rng.gauss(0, 0.05) for _ in range(15)]
    a = bootstrap_median_ci(values, seed=7)
    b = bootstrap_median_ci(values, seed=7)
    c = bootstrap_median_ci(values, seed=8)
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)
    assert a.low <= a.estimate <= a.high
    assert a.estimate == statistics.median(values)


def test_bootstrap_interval_narrows_with_more_rounds():
    rng = random.Random(3)
    pool = [1.12 * (1 + rng.gauss(0, 0.06)) for _ in range(200)]
    few = bootstrap_median_ci(pool[:6])
    many = bootstrap_median_ci(pool[:120])
    assert many.rel_half_width < few.rel_half_width
    # 6 % scatter over 120 rounds: the interval of the median is around +-1.4 %, nowhere near 6 %
    assert many.rel_half_width < 0.03


def test_bootstrap_covers_the_true_median_most_of_the_time():
    # Coverage check of the percentile bootstrap with 20 rounds: about 95 % of intervals hold the truth.
    rng = random.Random(11)
    hits = 0
    trials = 200
    for t in range(trials):
        sample = [rng.gauss(1.0, 0.06) for _ in range(20)]
        ci = bootstrap_median_ci(sample, resamples=1000, seed=t)
        hits += ci.low <= 1.0 <= ci.high
    assert 0.85 <= hits / trials <= 1.0


def test_bootstrap_of_one_value_has_no_interval():
    ci = bootstrap_median_ci([2.0])
    assert ci == Interval(2.0, None, None)
    assert ci.half_width is None and ci.rel_half_width is None and ci.contains(2.0) is None


def test_interval_arithmetic():
    ci = Interval(2.0, 1.9, 2.1)
    assert ci.half_width == pytest.approx(0.1)
    assert ci.rel_half_width == pytest.approx(0.05)
    assert ci.contains(2.05) and not ci.contains(2.2)


def test_ratios_are_paired_by_round():
    num = {0: 12.0, 1: 11.0, 2: 10.0, 4: 9.0}
    den = {0: 10.0, 1: 10.0, 3: 10.0, 4: 0.0}
    rounds, ratios = paired_ratios(num, den)
    assert rounds == (0, 1)  # round 2 and 3 lack a partner, round 4 has a zero denominator
    assert ratios == (pytest.approx(1.2), pytest.approx(1.1))


def test_metric_stat_to_json_carries_interval_and_values():
    ratios = {2: 1.10, 0: 1.12, 1: 1.14, 3: 1.11, 4: 1.13, 5: 1.12, 6: 1.09, 7: 1.15}
    m = metric_stat(id="tcp.gbps[macvlan/bridge]", kind="ratio", test="tcp", quantity="gbps", unit="ratio",
                    better="higher", gate="ratio", numerator="macvlan", denominator="bridge", by_round=ratios)
    d = m.to_json()
    assert d["rounds"] == list(range(8)) and d["values"] == [ratios[r] for r in range(8)]
    assert d["estimator"] == "hodges-lehmann" and d["se_log"] > 0
    assert d["median"] == pytest.approx(1.12, abs=0.002)  # the pseudo-median of the log-ratios, back on the ratio scale
    assert d["ci_low"] <= d["median"] <= d["ci_high"]
    assert d["half_width_pct"] == pytest.approx(100 * (d["ci_high"] - d["ci_low"]) / 2 / d["median"])
    assert d["numerator"] == "macvlan" and "topology" not in d
    # three rounds give a point estimate and no interval
    few = metric_stat(id="x", kind="ratio", test="tcp", quantity="gbps", unit="ratio", better="higher", gate="ratio",
                      by_round={0: 1.1, 1: 1.2, 2: 1.0}).to_json()
    assert few["ci_low"] is None and few["half_width_pct"] is None and few["median"] == pytest.approx(1.1, abs=0.01)
    assert metric_stat(id="x", kind="topology", test="tcp", quantity="gbps", unit="", better=None, gate=None,
                       by_round={}) is None


PROC_STAT = """cpu  {user} 0 {system} {idle} {iowait} 0 0 {steal} 0 0
cpu0 1 2 3 4 5 6 7 8 0 0
intr 12345
"""


def _times(user, system, idle, iowait=0, steal=0):
    return CpuTimes.parse(PROC_STAT.format(user=user, system=system, idle=idle, iowait=iowait, steal=steal))


def test_cpu_times_parse_the_aggregate_line():
    t = _times(100, 50, 800, iowait=30, steal=20)
    assert t.total == 1000 and t.idle == 830 and t.steal == 20


def test_cpu_times_reject_text_without_a_cpu_line():
    with pytest.raises(ValueError):
        CpuTimes.parse("intr 1\n")


def test_load_between_two_readings():
    before = _times(100, 50, 800, steal=0)
    after = _times(100 + 30, 50 + 20, 800 + 140, steal=10)  # 200 ticks: 50 busy, 140 idle, 10 steal
    load = Load.between(before, after, 1.0)
    assert load.busy == pytest.approx(0.25)
    assert load.steal == pytest.approx(0.05)
    assert Load.between(before, before, 0.0).busy == 0.0


def test_noise_rule_flags_a_busy_machine_and_steal():
    rule = NoiseRule()
    quiet = Load(0.02, 0.0, 0.2)
    assert rule.reasons(quiet, Load(0.95, 0.0, 10)) == []  # the bench's own load during a round is expected
    busy = rule.reasons(Load(0.5, 0.0, 0.2), Load(0.9, 0.0, 10))
    assert len(busy) == 1 and "50% busy before" in busy[0]
    stolen = rule.reasons(quiet, Load(0.9, 0.12, 10))
    assert len(stolen) == 1 and "steal during" in stolen[0]


def test_usable_rounds_leave_noisy_ones_out_while_enough_quiet_ones_exist():
    assert usable_rounds([False] * 6 + [True, False]) == ([0, 1, 2, 3, 4, 5, 7], False)
    # five quiet rounds cannot make an interval: every round is used, and the results say so
    assert usable_rounds([False, True, False, False, False, False]) == ([0, 1, 2, 3, 4, 5], True)
    assert usable_rounds([]) == ([], False)
    # an adaptive run keeps every round (its pairs cancel the load), and says that noisy ones are in
    assert usable_rounds([False] * 6 + [True, False], keep_noisy=True) == (list(range(8)), True)


def test_stop_rule_adaptive_waits_for_min_rounds_then_the_target():
    rule = StopRule(target=0.03, budget=120, min_rounds=5)
    assert rule.decide(3, 3, 0.01, 30, 10) is None  # narrow already, but too few rounds to trust
    assert "target reached" in rule.decide(5, 5, 0.029, 50, 10)
    assert rule.decide(5, 5, 0.05, 50, 10) is None


def test_stop_rule_budget_says_what_was_reached():
    rule = StopRule(target=0.03, budget=120, min_rounds=5)
    assert rule.decide(0, 0, None, 130, 0) is None  # a set-up longer than the budget still gets one round
    reason = rule.decide(9, 9, 0.046, 112, 12)
    assert reason.startswith("time budget") and "4.60%" in reason


def test_stop_rule_fixed_rounds_replaces_noisy_ones_up_to_a_limit():
    rule = StopRule(rounds=3, budget=None, max_reruns=2)
    assert rule.decide(2, 3, None, 0, 5) is None  # one noisy round: run a replacement
    assert "requested 3 rounds" in rule.decide(3, 4, None, 0, 5)
    assert "no more reruns" in rule.decide(1, 5, None, 0, 5)
    assert "no more reruns" in StopRule(rounds=2, budget=None, max_reruns=0).decide(1, 2, None, 0, 5)
    assert "maximum" in StopRule(max_rounds=4, budget=None).decide(0, 4, None, 0, 1)


def test_stop_rule_does_not_trust_a_narrow_interval_from_too_few_usable_rounds():
    rule = StopRule(target=0.03, budget=120, min_rounds=5)
    reason = rule.decide(2, 7, 0.022, 118, 17)
    assert "only 2 rounds (5 needed to trust an interval)" in reason
    assert not rule.reached(2, 0.022)
    assert rule.reached(5, 0.022) and not rule.reached(5, 0.04)
    assert not StopRule(rounds=3).reached(3, 0.0)  # a fixed-rounds run has no target to reach
