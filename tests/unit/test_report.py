"""Unit tests of `harness report` (harness.bench.compare and harness.bench.report) on synthetic, schema-valid
bench documents (no root, no iperf3)."""

from __future__ import annotations

import argparse
import base64
import json
import random
import re

import jsonschema
import pytest

from harness.bench import report
from harness.bench.compare import (
    IMPROVEMENT,
    INFO,
    MISSING,
    NEW,
    OK,
    REGRESSION,
    ReportInputError,
    Tolerances,
    compare,
    exit_status,
    judge,
    load_results,
)
from harness.bench.document import SCHEMA_PATH, RoundRecord, TopologyStatus, build_document
from harness.bench.params import BenchParams
from harness.bench.parse import RrResult, Sample, TcpResult, UdpResult
from harness.bench.report import render_html, render_markdown
from harness.bench.runner import rotated
from harness.bench.stats import Load

RAN = ("macvlan", "bridge", "veth")


def _rr(p50: float) -> RrResult:
    qs = tuple(p50 * (0.8 + 0.4 * i / 100) for i in range(101))
    return RrResult(count=1000, size=1, p50_us=p50, p90_us=p50 * 1.2, p99_us=p50 * 1.4, mean_us=p50 * 1.05,
                    min_us=p50 * 0.8, max_us=p50 * 3, transactions_per_s=1e6 / p50, timer_overhead_ns=40, quantiles_us=qs)


def synthetic(*, tcp_scale: float = 1.0, macvlan_factor: float = 1.12, loss: float = 0.2, rr_scale: float = 1.0,
              rounds: int = 8, seed: int = 0, noisy: tuple[int, ...] = (), kernel: str = "6.1.0-test") -> dict:
    """A run as the bench would record it: raw throughput drifts from round to round (as on the real
    machine), while macvlan/bridge stays near `macvlan_factor` with 1 % scatter."""
    rng = random.Random(seed)
    params = BenchParams(rounds=rounds, budget=None, topologies=(*RAN, "ipvlan"))
    samples: list[Sample] = []
    records: list[RoundRecord] = []
    t = 1_700_000_000.0
    for r in range(rounds):
        order = rotated(RAN, r)
        drift = 15.0 * (1 + 0.15 * rng.random())
        gbps = {"bridge": drift, "veth": drift * 1.05, "macvlan": drift * macvlan_factor * (1 + rng.gauss(0, 0.01))}
        p50 = {"bridge": 9.0, "veth": 7.0, "macvlan": 7.2}
        for test in params.tests:
            for pos, name in enumerate(order):
                if test == "tcp":
                    res = TcpResult(gbps=gbps[name] * tcp_scale, sender_gbps=gbps[name] * tcp_scale, retransmits=100 + r,
                                    cpu_sender_pct=95.0, cpu_receiver_pct=45.0, seconds=2.0, streams=4, mss=1448)
                elif test == "udp":
                    res = UdpResult(gbps=0.99, sender_gbps=1.0, loss_pct=loss * (1 + 0.1 * rng.random()), lost_packets=170,
                                    packets=85000, jitter_ms=0.002, cpu_sender_pct=20.0, cpu_receiver_pct=10.0, seconds=1.0)
                else:
                    res = _rr(p50[name] * rr_scale * (1 + rng.gauss(0, 0.01)))
                samples.append(Sample(r, pos, name, test, t, t + 1, res))
                t += 1
        reasons = ("machine 60% busy before the round (limit 25%)",) if r in noisy else ()
        records.append(RoundRecord(r, tuple(order), t - 9, 9.0, Load(0.6 if r in noisy else 0.02, 0.0, 0.2),
                                   Load(0.8, 0.0, 9.0), reasons))
    statuses = [TopologyStatus(n, f"{n} topology", "ran", None, ("veth",)) for n in RAN]
    statuses.append(TopologyStatus("ipvlan", "ipvlan L2", "skipped", "kernel lacks ipvlan (CONFIG_IPVLAN)", ("ipvlan", "veth")))
    return build_document(params, topologies=statuses, samples=samples, rounds=records, rr_floor=_rr(6.5),
                          kernel=kernel, iperf3_version="3.12", stop_reason=f"ran the requested {rounds} rounds",
                          started=1_700_000_000.0, finished=t)


def _verdicts(comparisons) -> dict[str, str]:
    return {c.id: c.verdict for c in comparisons}


def test_synthetic_documents_follow_the_schema():
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(synthetic(), schema)
    jsonschema.validate(synthetic(noisy=(1, 2)), schema)


def test_a_run_against_itself_has_no_regression():
    doc = synthetic()
    comps = compare(doc, doc)
    assert exit_status(comps) == 0
    assert {c.verdict for c in comps} <= {OK, INFO}
    assert all(c.change == 0 for c in comps if c.change is not None)
    ids = [c.id for c in comps]
    # the three ratios the issue asks for come first, then the gated absolutes, informational last
    assert ids[:3] == ["tcp.gbps[macvlan/bridge]", "tcp.gbps[macvlan/veth]", "tcp.gbps[bridge/veth]"]
    assert ids.index("tcp.retransmits[macvlan]") > ids.index("rr.p50_us[veth]")


def test_a_baseline_50_percent_faster_is_a_throughput_regression():
    current, baseline = synthetic(), synthetic(tcp_scale=1.5)
    comps = compare(current, baseline)
    v = _verdicts(comps)
    assert exit_status(comps) == 1
    for t in RAN:
        assert v[f"tcp.gbps[{t}]"] == REGRESSION
    # everything slowed down alike: the within-round ratios did not move
    assert v["tcp.gbps[macvlan/bridge]"] == OK
    c = next(c for c in comps if c.id == "tcp.gbps[macvlan]")
    assert c.change == pytest.approx(1 / 1.5 - 1)
    assert c.outside_ci and c.beyond_tolerance


def test_macvlan_losing_its_lead_is_a_ratio_regression_while_absolutes_stay_in_tolerance():
    comps = compare(synthetic(macvlan_factor=1.00), synthetic(macvlan_factor=1.12))
    v = _verdicts(comps)
    assert v["tcp.gbps[macvlan/bridge]"] == REGRESSION
    assert v["tcp.gbps[macvlan/veth]"] == REGRESSION
    assert v["tcp.gbps[bridge/veth]"] == OK
    assert v["tcp.gbps[macvlan]"] == OK  # -11 %: within the 20 % absolute tolerance
    assert exit_status(comps) == 1
    # with a tolerance of 15 % the same change is accepted
    assert exit_status(compare(synthetic(macvlan_factor=1.00), synthetic(macvlan_factor=1.12), Tolerances(ratio=0.15))) == 0


def test_getting_faster_is_an_improvement_not_a_failure():
    comps = compare(synthetic(tcp_scale=1.5), synthetic())
    assert _verdicts(comps)["tcp.gbps[bridge]"] == IMPROVEMENT
    assert exit_status(comps) == 0


def test_latency_and_loss_regress_upwards():
    comps = compare(synthetic(rr_scale=1.5, loss=3.0), synthetic())
    v = _verdicts(comps)
    assert v["rr.p50_us[bridge]"] == REGRESSION
    assert v["udp.loss_pct[macvlan]"] == REGRESSION  # +2.8 pp > 1 pp
    assert v["rr.p99_us[bridge]"] == INFO  # informational, never gating
    loss = next(c for c in comps if c.id == "udp.loss_pct[macvlan]")
    assert loss.change_text.endswith("pp")


def _metric(median, low, high, better="higher", gate="absolute", n=3):
    return {"id": "tcp.gbps[x]", "kind": "topology", "unit": "Gbit/s", "better": better, "gate": gate,
            "median": median, "ci_low": low, "ci_high": high, "n": n}


def test_judge_needs_both_the_tolerance_and_the_intervals():
    tol = Tolerances(absolute=0.20)
    # -30 % but the intervals overlap widely: not shown to be a change, so not a regression
    wide = judge(_metric(10.0, 5.0, 15.0), _metric(7.0, 3.0, 12.0), tol)
    assert wide.beyond_tolerance and wide.outside_ci is False and wide.verdict == OK
    # -10 %, clearly outside the narrow intervals, but within tolerance: fine
    small = judge(_metric(10.0, 9.9, 10.1), _metric(9.0, 8.9, 9.1), tol)
    assert small.outside_ci and not small.beyond_tolerance and small.verdict == OK
    # both: a regression
    both = judge(_metric(10.0, 9.9, 10.1), _metric(7.0, 6.9, 7.1), tol)
    assert both.verdict == REGRESSION
    # no interval on either side (single rounds): the tolerance alone decides
    single = judge(_metric(10.0, None, None), _metric(7.0, None, None), tol)
    assert single.outside_ci is None and single.verdict == REGRESSION


def test_with_enough_rounds_the_intervals_must_be_disjoint():
    tol = Tolerances(absolute=0.20, min_n=5)
    # current median below the baseline interval, but the intervals overlap: within noise of two runs
    overlap = judge(_metric(10.0, 9.0, 11.0, n=8), _metric(7.5, 6.0, 9.5, n=8), tol)
    assert not overlap.few_rounds and overlap.outside_ci is False and overlap.verdict == OK
    disjoint = judge(_metric(10.0, 9.0, 11.0, n=8), _metric(7.5, 6.5, 8.5, n=8), tol)
    assert disjoint.outside_ci and disjoint.verdict == REGRESSION
    # the same numbers from a 3-round run fall back to the weaker check, and say so
    few = judge(_metric(10.0, 9.0, 11.0, n=3), _metric(7.5, 6.0, 9.5, n=8), tol)
    assert few.few_rounds and few.outside_ci and few.verdict == REGRESSION


def test_metrics_present_on_one_side_only():
    assert judge(None, _metric(1.0, 0.9, 1.1), Tolerances()).verdict == NEW
    assert judge(_metric(1.0, 0.9, 1.1), None, Tolerances()).verdict == MISSING


def test_without_a_baseline_nothing_is_judged():
    comps = compare(synthetic(), None)
    assert {c.verdict for c in comps} <= {OK, INFO}
    md = render_markdown(synthetic(), None, comps, Tolerances())
    assert "No baseline given" in md


def test_markdown_has_the_table_the_headline_and_the_notes():
    current, baseline = synthetic(kernel="6.2.0-other"), synthetic(tcp_scale=1.5)
    comps = compare(current, baseline)
    md = render_markdown(current, baseline, comps, Tolerances())
    assert "3 regression(s) beyond tolerance" in md
    row = next(line for line in md.splitlines() if line.startswith("| `tcp.gbps[macvlan]`"))
    assert "**REGRESSION**" in row and "-33.3 %" in row
    assert "<details>" in md and "`tcp.retransmits[macvlan]`" in md
    assert "kernel differs: baseline 6.1.0-test, current 6.2.0-other" in md
    assert "ipvlan skipped: kernel lacks ipvlan" in md


def test_html_embeds_three_png_plots():
    current, baseline = synthetic(noisy=(2,)), synthetic(tcp_scale=1.5)
    page = render_html(current, baseline, compare(current, baseline), Tolerances())
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(images) == 3  # per-round samples, ratio intervals, latency distributions
    for img in images:
        assert base64.b64decode(img).startswith(b"\x89PNG\r\n\x1a\n")
    assert "<tr class='regression'><td><code>tcp.gbps[macvlan]</code>" in page
    import matplotlib

    assert matplotlib.get_backend().lower() == "agg"


def _write(tmp_path, name, doc):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def _run(argv) -> int:
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    return report.main(parser.parse_args([str(a) for a in argv]))


def test_main_exit_codes_and_outputs(tmp_path, capsys):
    cur = _write(tmp_path, "cur.json", synthetic())
    fast = _write(tmp_path, "fast.json", synthetic(tcp_scale=1.5))
    assert _run([cur, cur]) == 0
    md, html_out = tmp_path / "r.md", tmp_path / "r.html"
    assert _run([cur, fast, "--markdown", md, "--html", html_out]) == 1
    out = capsys.readouterr().out
    assert "regression(s) beyond tolerance" in out
    assert md.read_text() in out
    assert html_out.read_text().startswith("<!doctype html>")
    # a generous tolerance accepts the same change
    assert _run([cur, fast, "--abs-tolerance", "40"]) == 0


def test_unreadable_inputs_exit_2_naming_the_file(tmp_path, capsys):
    good = _write(tmp_path, "good.json", synthetic())
    missing = tmp_path / "nope.json"
    assert _run([good, missing]) == 2
    assert "nope.json: cannot read" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": "harness-bench/1",\n  oops}')
    assert _run([broken]) == 2
    assert "broken.json:2:" in capsys.readouterr().err


def test_load_results_explains_what_is_wrong(tmp_path):
    other = _write(tmp_path, "other.json", {"schema": "something-else"})
    with pytest.raises(ReportInputError, match=r"other.json: not a harness bench results file"):
        load_results(other)
    doc = synthetic()
    doc["samples"][0]["gbps"] = "fast"
    bad = _write(tmp_path, "bad.json", doc)
    with pytest.raises(ReportInputError, match=r"bad.json: does not follow docs/bench-schema.json at samples/0/gbps"):
        load_results(bad)
    assert load_results(_write(tmp_path, "ok.json", synthetic()))["schema"] == "harness-bench/1"


def test_a_results_file_that_is_not_utf8_is_a_clean_error(tmp_path):
    bad = tmp_path / "bin.json"
    bad.write_bytes(b'{"schema": "\xff\xfe"}')
    with pytest.raises(ReportInputError, match=r"bin.json: not UTF-8 text: byte 0xff at offset 12"):
        load_results(bad)
