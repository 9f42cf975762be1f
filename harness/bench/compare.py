"""Bench results judged against a baseline: `load_results`, `Tolerances`, `judge`, `compare`, `Comparison`.

`load_results` reads and schema-checks one results file (a `ReportInputError` names the file and what is
wrong with it). `Tolerances` holds the explicit limits: relative for ratios (which hardly drift on one
machine), a wider relative one for absolute throughput and latency (which drift ~18 % over minutes on a
noisy VM), and percentage points for UDP loss. `compare` turns two documents into `Comparison`s, one per
metric id: baseline and current estimates with their intervals, the change, whether it lies outside the
noise and beyond the tolerance, and a verdict. A change is a *regression* only when it goes the worse
way, exceeds its tolerance and is outside the noise. Outside the noise means: for the primary ratio
when both runs carry the standard error of its logarithm (`se_log`, results since issue 14) a
two-sided z test of the log difference at the 95 % level, with the smallest change the comparison
would find (`detectable`); for every other metric, as for older results, the
two 95 % intervals are disjoint when both runs have `min_n` rounds of the metric, else (a quick run)
the change exceeds what the scatter of the baseline's rounds predicts for an estimate from that few
rounds (95 %), or, without baseline rounds to tell, the current estimate lies outside the baseline's
interval (the interval alone would flag harmless drift, the tolerance alone mere noise).
`notes` says what makes a comparison less meaningful; `exit_status` is the report's exit status.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import NormalDist

from harness.bench.document import SCHEMA_ID, SCHEMA_PATH
from harness.bench.stats import DEFAULT_CONFIDENCE, DETECT_POWER, MIN_INTERVAL_N
from harness.errors import HarnessError

REGRESSION, IMPROVEMENT, OK, INFO, NEW, MISSING = "regression", "improvement", "ok", "info", "new", "missing"


class ReportInputError(HarnessError):
    """A results file cannot be used; the message names the file."""


# -- input ----------------------------------------------------------------------------------------------


def load_results(path: str | Path) -> dict:
    """Read one bench results file and check it against docs/bench-schema.json."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ReportInputError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReportInputError(f"{p}: not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportInputError(f"{p}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_ID:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise ReportInputError(f"{p}: not a harness bench results file (schema {found!r}, expected {SCHEMA_ID!r})")
    import jsonschema

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(x) for x in e.absolute_path) or "(top level)"
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise ReportInputError(f"{p}: does not follow docs/bench-schema.json at {where}: {e.message}{more}")
    return doc


# -- comparison ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerances:
    ratio: float = 0.05  # relative; within-round ratios hardly drift, so 5 % is a real change
    # relative; raw Gbit/s and microseconds drift: two default runs 7 minutes apart on this 2-vCPU machine
    # differed by up to 25 % in raw Gbit/s while every ratio stayed inside its interval.
    absolute: float = 0.30
    points: float = 1.0  # percentage points of UDP loss
    min_n: int = 5  # rounds on both sides before disjoint intervals judge (the strong test)

    def for_gate(self, gate: str | None) -> float | None:
        return {"ratio": self.ratio, "absolute": self.absolute, "points": self.points}.get(gate or "")


@dataclass(frozen=True)
class Comparison:
    id: str
    kind: str
    unit: str
    better: str | None
    gate: str | None
    baseline: float | None
    baseline_ci: tuple[float | None, float | None]
    current: float | None
    current_ci: tuple[float | None, float | None]
    change: float | None  # relative (0.05 = +5 %), or percentage points for the "points" gate
    outside_ci: bool | None  # None: no interval on either side to judge by
    tolerance: float | None
    beyond_tolerance: bool | None
    verdict: str
    few_rounds: bool = False  # judged by the weaker interval check: fewer than min_n rounds on a side
    # paired ratios: the smallest true change this comparison finds with 80 % power (relative), else None
    detectable: float | None = None

    @property
    def change_text(self) -> str:
        if self.change is None:
            return "–"
        if self.gate == "points":
            return f"{self.change:+.2f} pp"
        return f"{100 * self.change:+.1f} %"

    def to_json(self) -> dict:
        return {"id": self.id, "kind": self.kind, "unit": self.unit, "better": self.better, "gate": self.gate,
                "baseline": self.baseline, "baseline_ci": list(self.baseline_ci), "current": self.current,
                "current_ci": list(self.current_ci), "change": self.change, "outside_ci": self.outside_ci,
                "tolerance": self.tolerance, "beyond_tolerance": self.beyond_tolerance, "verdict": self.verdict,
                "few_rounds": self.few_rounds, "detectable": self.detectable}


def _outside(value: float, low: float | None, high: float | None) -> bool | None:
    if low is None or high is None:
        return None
    return not (low <= value <= high)


def _scatter_noise(metric_base: Mapping, n_cur: int, gate: str | None) -> float | None:
    """The standard error of (current estimate - baseline estimate) when the current run has only
    `n_cur` rounds: the scatter of the baseline's rounds (logarithms, or percentage points) over
    sqrt(n_cur), a median of three or more being 1.25 times less precise than a mean, and the
    baseline's own error. None without enough baseline rounds to know the scatter."""
    values = [float(v) for v in metric_base.get("values") or []]
    if len(values) < MIN_INTERVAL_N or n_cur < 1:
        return None
    if gate != "points":
        if min(values) <= 0:
            return None
        values = [math.log(v) for v in values]
    sd = statistics.stdev(values)
    cur = sd / math.sqrt(n_cur) * (1.2533 if n_cur >= 3 else 1.0)
    base = sd / math.sqrt(len(values)) * 1.2533
    return math.hypot(cur, base)


def judge(metric_base: Mapping | None, metric_cur: Mapping | None, tolerances: Tolerances,
          primary: bool = False) -> Comparison:
    """One metric's comparison; `primary`: the ratio the run was designed to measure, tested by its
    standard errors when both sides have one (every other metric keeps the stricter disjoint intervals,
    so that a report over dozens of them does not cry wolf)."""
    m = metric_cur or metric_base
    assert m is not None
    base = metric_base["median"] if metric_base else None
    cur = metric_cur["median"] if metric_cur else None
    bci = (metric_base["ci_low"], metric_base["ci_high"]) if metric_base else (None, None)
    cci = (metric_cur["ci_low"], metric_cur["ci_high"]) if metric_cur else (None, None)
    gate = m.get("gate")
    tol = tolerances.for_gate(gate) if m.get("better") else None
    common = dict(id=m["id"], kind=m["kind"], unit=m["unit"], better=m.get("better"), gate=gate,
                  baseline=base, baseline_ci=bci, current=cur, current_ci=cci, tolerance=tol)
    if base is None or cur is None:
        return Comparison(**common, change=None, outside_ci=None, beyond_tolerance=None,
                          verdict=NEW if base is None else MISSING)
    if gate == "points":
        change = cur - base
    else:
        change = (cur - base) / abs(base) if base else (0.0 if cur == base else None)
    # Is the change more than noise? With enough rounds on both sides: the two 95 % intervals are
    # disjoint (roughly a two-sample test well below the 5 % level, so a report over dozens of metrics
    # does not cry wolf between two runs of the same code). With fewer rounds (a quick run) no test can
    # show much; then the weaker check the tolerance leans on: the current median lies outside the
    # baseline's interval. With no interval at all (single rounds) the tolerance alone judges.
    n_base, n_cur = metric_base.get("n", 0), metric_cur.get("n", 0)
    strong = min(n_base, n_cur) >= tolerances.min_n and None not in (*bci, *cci)
    se_b, se_c = metric_base.get("se_log"), metric_cur.get("se_log")
    detectable = None
    if primary and se_b and se_c and base > 0 and cur > 0:
        # Paired ratios carry the standard error of their logarithm: the change is tested as it is
        # (a two-sided z test of the log difference at the intervals' level), which sees a change
        # about 1.4 times smaller than disjoint intervals can, and says the smallest it would find.
        conf = metric_cur.get("confidence", DEFAULT_CONFIDENCE)
        z = NormalDist().inv_cdf(0.5 + conf / 2)
        se = math.hypot(se_b, se_c)
        outside = abs(math.log(cur / base)) > z * se
        # flagged needs both: beyond the tolerance and beyond z standard errors; found with 80 % power
        # when the true change exceeds the larger of the two by another 0.84 standard errors
        floor = max(math.log1p(tol), z * se) if tol is not None else z * se
        detectable = math.expm1(floor + NormalDist().inv_cdf(DETECT_POWER) * se)
        strong = True
    elif strong:
        outside = bci[1] < cci[0] or cci[1] < bci[0]  # type: ignore[operator]
    else:
        noise = _scatter_noise(metric_base, n_cur, gate)
        if noise is not None and (gate == "points" or (base > 0 and cur > 0)):
            # Too few rounds on the current side for an interval of its own: its estimate's noise is
            # predicted from the scatter of the baseline's rounds (one round of a ratio scatters ~15 %,
            # far more than the baseline's interval, which would call every such change real).
            diff = cur - base if gate == "points" else math.log(cur / base)
            conf = metric_base.get("confidence", DEFAULT_CONFIDENCE)
            outside = abs(diff) > NormalDist().inv_cdf(0.5 + conf / 2) * noise
        else:
            outside = _outside(cur, *bci)
            if outside is None:
                outside = _outside(base, *cci)
    beyond = None if tol is None or change is None else abs(change) > tol
    verdict = INFO
    if m.get("better") and change is not None:
        verdict = OK
        if beyond and outside is not False and change != 0:
            worse = change < 0 if m["better"] == "higher" else change > 0
            verdict = REGRESSION if worse else IMPROVEMENT
    return Comparison(**common, change=change, outside_ci=outside, beyond_tolerance=beyond, verdict=verdict,
                      few_rounds=not strong, detectable=detectable)


_KIND_ORDER = {"ratio": 0, "topology": 1}


def _sort_key(m: Mapping) -> tuple:
    informational = m.get("better") is None
    return (informational, _KIND_ORDER.get(m["kind"], 2), ["tcp", "udp", "rr"].index(m["test"]) if m["test"] in ("tcp", "udp", "rr") else 3)


def compare(current: Mapping, baseline: Mapping | None, tolerances: Tolerances = Tolerances()) -> list[Comparison]:
    """One comparison per metric id of either document; gated metrics first, ratios before absolutes."""
    cur = {m["id"]: m for m in current["stats"]["metrics"]}
    base = {m["id"]: m for m in baseline["stats"]["metrics"]} if baseline else {}
    ids = list(cur) + [i for i in base if i not in cur]
    metrics = {i: cur.get(i) or base[i] for i in ids}
    ordered = sorted(ids, key=lambda i: (_sort_key(metrics[i]), ids.index(i)))
    if not baseline:
        # Nothing to compare with: every metric is shown, and judged as nothing.
        return [replace(judge(None, cur[i], tolerances), verdict=INFO if cur[i].get("better") is None else OK)
                for i in ordered]
    primary = current["stats"].get("primary")
    return [judge(base.get(i), cur.get(i), tolerances, primary=i == primary) for i in ordered]


def notes(current: Mapping, baseline: Mapping | None) -> list[str]:
    """What makes a comparison less meaningful: a different machine, kernel, tool or parameters; noise."""
    out: list[str] = []
    for label, doc in (("current", current), ("baseline", baseline)):
        if not doc:
            continue
        stop = doc["stop"]
        if stop["adaptive"] and not stop["target_reached"]:
            hw = stop["half_width_pct"]
            out.append(f"{label}: precision target not reached (half-width "
                       f"{'unknown' if hw is None else f'{hw:.1f} %'}, target {stop['target_pct']:.0f} %): {stop['reason']}")
        if doc["stats"]["includes_noisy"]:
            noisy = sum(1 for r in doc["rounds"] if r["noisy"])
            out.append(f"{label}: {noisy} of {len(doc['rounds'])} rounds began on a busy machine; its statistics include them")
        for t in doc["topologies"]:
            if t["status"] != "ran":
                out.append(f"{label}: {t['name']} {t['status']}: {t['reason']}")
    if baseline:
        for key in ("kernel", "cpu_model", "cpu_count", "iperf3_version"):
            a, b = baseline["machine"].get(key), current["machine"].get(key)
            if a != b:
                out.append(f"{key} differs: baseline {a}, current {b}; absolute figures compare machines, not code")
        pa, pc = baseline["parameters"], current["parameters"]
        for key in ("duration", "omit", "streams", "mtu", "udp_rate", "udp_duration", "udp_blocks", "rr_count", "rr_size", "rr_pin", "quick"):
            if pa.get(key) != pc.get(key):
                out.append(f"parameter {key} differs: baseline {pa.get(key)}, current {pc.get(key)}")
    return out


def exit_status(comparisons: Sequence[Comparison]) -> int:
    return 1 if any(c.verdict == REGRESSION for c in comparisons) else 0
