"""`harness report CURRENT [BASELINE]`: bench results compared with a baseline, as Markdown and HTML.

`load_results` reads and schema-checks one results file (a `ReportInputError` names the file and what is
wrong with it). `Tolerances` holds the explicit limits: relative for ratios (which hardly drift on one
machine), a wider relative one for absolute throughput and latency (which drift ~18 % over minutes on a
noisy VM), and percentage points for UDP loss. `compare` turns two documents into `Comparison`s, one per
metric id: baseline and current medians with their bootstrap intervals, the change, whether it lies
outside the noise and beyond the tolerance, and a verdict. A change is a *regression* only when it goes
the worse way, exceeds its tolerance and is outside the noise: the two 95 % intervals are disjoint when
both runs have `min_n` rounds of the metric, else (a quick run) the current median lies outside the
baseline's interval (the interval alone would flag harmless drift, the tolerance alone mere noise).
`render_markdown` is the CI-log summary; `render_html` a self-contained page with matplotlib plots (Agg
backend, PNGs embedded as base64) of per-round samples, ratio intervals and latency distributions.

`add_arguments(parser)` and `main(args)` are the `harness report` command: exit 0 without regressions,
1 with at least one, 2 when an input cannot be read.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from harness.errors import HarnessError

REGRESSION, IMPROVEMENT, OK, INFO, NEW, MISSING = "regression", "improvement", "ok", "info", "new", "missing"


class ReportInputError(HarnessError):
    """A results file cannot be used; the message names the file."""


# -- input ----------------------------------------------------------------------------------------------


def load_results(path: str | Path) -> dict:
    """Read one bench results file and check it against docs/bench-schema.json."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ReportInputError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportInputError(f"{p}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from None
    if not isinstance(doc, dict) or doc.get("schema") != "harness-bench/1":
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise ReportInputError(f"{p}: not a harness bench results file (schema {found!r}, expected 'harness-bench/1')")
    import jsonschema

    from harness.bench import SCHEMA_PATH

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
                "few_rounds": self.few_rounds}


def _outside(value: float, low: float | None, high: float | None) -> bool | None:
    if low is None or high is None:
        return None
    return not (low <= value <= high)


def judge(metric_base: Mapping | None, metric_cur: Mapping | None, tolerances: Tolerances) -> Comparison:
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
    if strong:
        outside = bci[1] < cci[0] or cci[1] < bci[0]  # type: ignore[operator]
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
                      few_rounds=not strong)


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
    return [judge(base.get(i), cur.get(i), tolerances) for i in ordered]


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
            out.append(f"{label}: the machine stayed busy; its statistics include noisy rounds")
        for t in doc["topologies"]:
            if t["status"] != "ran":
                out.append(f"{label}: {t['name']} {t['status']}: {t['reason']}")
    if baseline:
        for key in ("kernel", "cpu_model", "cpu_count", "iperf3_version"):
            a, b = baseline["machine"].get(key), current["machine"].get(key)
            if a != b:
                out.append(f"{key} differs: baseline {a}, current {b}; absolute figures compare machines, not code")
        pa, pc = baseline["parameters"], current["parameters"]
        for key in ("duration", "omit", "streams", "mtu", "udp_rate", "udp_duration", "rr_count", "rr_size", "rr_pin", "quick"):
            if pa.get(key) != pc.get(key):
                out.append(f"parameter {key} differs: baseline {pa.get(key)}, current {pc.get(key)}")
    return out


def exit_status(comparisons: Sequence[Comparison]) -> int:
    return 1 if any(c.verdict == REGRESSION for c in comparisons) else 0


# -- rendering ------------------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    """About four significant figures, without exponent notation (tables are read by people)."""
    a = abs(v)
    digits = 3 if a < 10 else 2 if a < 100 else 1 if a < 1000 else 0
    return f"{v:.{digits}f}"


def _num(v: float | None, unit: str = "") -> str:
    if v is None:
        return "–"
    return f"{_fmt(v)} {unit}".strip() if unit and unit != "ratio" else _fmt(v)


def _ci(ci: tuple[float | None, float | None]) -> str:
    lo, hi = ci
    return "" if lo is None or hi is None else f" [{_fmt(lo)}, {_fmt(hi)}]"


def _flag(v: bool | None, few: bool = False) -> str:
    return "–" if v is None else ("yes" if v else "no") + ("*" if few else "")


_MARK = {REGRESSION: "**REGRESSION**", IMPROVEMENT: "improvement", OK: "ok", INFO: "info", NEW: "new", MISSING: "missing"}


def _headline(comparisons: Sequence[Comparison], has_baseline: bool) -> str:
    regressions = [c for c in comparisons if c.verdict == REGRESSION]
    if not has_baseline:
        return "No baseline given: the current run alone, nothing judged."
    if regressions:
        return f"**{len(regressions)} regression(s) beyond tolerance:** " + ", ".join(f"`{c.id}` {c.change_text}" for c in regressions)
    return "No regression beyond tolerance."


def _meta_rows(current: Mapping, baseline: Mapping | None) -> list[tuple[str, str, str]]:
    def row(doc: Mapping | None, f) -> str:
        if not doc:
            return "–"
        try:
            v = f(doc)
        except (KeyError, TypeError):
            return "–"
        return "–" if v is None else str(v)

    fields = [
        ("started", lambda d: d["started_at"]),
        ("commit", lambda d: (d["git_commit"] or "")[:12] or None),
        ("harness", lambda d: d["harness_version"]),
        ("kernel", lambda d: d["machine"]["kernel"]),
        ("CPU", lambda d: f"{d['machine']['cpu_count']} × {d['machine']['cpu_model']}"),
        ("iperf3", lambda d: d["machine"]["iperf3_version"]),
        ("rounds used / run", lambda d: f"{d['stop']['used_rounds']} / {d['stop']['total_rounds']}"),
        ("wall time", lambda d: f"{d['wall_seconds']:.0f} s"),
        ("macvlan/bridge half-width", lambda d: None if d["stop"]["half_width_pct"] is None else f"{d['stop']['half_width_pct']:.1f} % (target {d['stop']['target_pct']:.0f} %)"),
        ("probe floor (loopback p50)", lambda d: None if not d["rr_floor"] else f"{d['rr_floor']['p50_us']:.1f} us"),
    ]
    return [(name, row(baseline, f), row(current, f)) for name, f in fields]


def _rule_text(t: Tolerances) -> str:
    return (f"A regression is a change the worse way beyond its tolerance (ratios ±{100 * t.ratio:g} %, absolute "
            f"throughput/latency ±{100 * t.absolute:g} %, UDP loss ±{t.points:g} pp) that is also outside the noise: "
            f"disjoint 95 % intervals when both runs have at least {t.min_n} rounds of the metric, else (marked *) "
            f"the current median outside the baseline's interval.")


def _md_table(comparisons: Sequence[Comparison]) -> list[str]:
    lines = ["| metric | baseline [95 % CI] | current [95 % CI] | change | outside CI | beyond tol. | verdict |",
             "|---|---|---|---|---|---|---|"]
    for c in comparisons:
        lines.append(f"| `{c.id}` | {_num(c.baseline, c.unit)}{_ci(c.baseline_ci)} | {_num(c.current, c.unit)}{_ci(c.current_ci)} "
                     f"| {c.change_text} | {_flag(c.outside_ci, c.few_rounds)} | {_flag(c.beyond_tolerance)} | {_MARK[c.verdict]} |")
    return lines


def render_markdown(current: Mapping, baseline: Mapping | None, comparisons: Sequence[Comparison],
                    tolerances: Tolerances, names: tuple[str, str | None] = ("current", None)) -> str:
    lines = ["## harness bench report", "", _headline(comparisons, baseline is not None), ""]
    lines += [_rule_text(tolerances), ""]
    lines += ["| | baseline | current |", "|---|---|---|"]
    lines += [f"| {n} | {b} | {c} |" for n, b, c in _meta_rows(current, baseline)]
    gated = [c for c in comparisons if c.better is not None or c.verdict in (NEW, MISSING)]
    informational = [c for c in comparisons if c not in gated]
    lines += ["", *_md_table(gated)]
    if informational:
        # Retransmits, CPU, jitter, p99: context for a reader, never a verdict; folded away in CI logs.
        lines += ["", "<details><summary>informational metrics (never a regression)</summary>", "",
                  *_md_table(informational), "", "</details>"]
    n = notes(current, baseline)
    if n:
        lines += ["", "Notes:", ""] + [f"- {x}" for x in n]
    return "\n".join(lines) + "\n"


# -- plots --------------------------------------------------------------------------------------------------


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _topologies(doc: Mapping) -> list[str]:
    return [t["name"] for t in doc["topologies"] if t["status"] == "ran"]


def plot_rounds(docs: Sequence[tuple[str, Mapping]]) -> str:
    """TCP throughput of every topology per round; noisy rounds shaded, so a dip can be told from noise."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(docs), figsize=(6 * len(docs), 3.6), squeeze=False, sharey=True)
    for ax, (label, doc) in zip(axes[0], docs, strict=True):
        for r in doc["rounds"]:
            if r["noisy"]:
                ax.axvspan(r["index"] - 0.5, r["index"] + 0.5, color="0.9", zorder=0)
        for topo in _topologies(doc):
            pts = sorted((s["round"], s["gbps"]) for s in doc["samples"] if s["topology"] == topo and s["test"] == "tcp")
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=topo)
        ax.set_title(f"{label}: TCP per round (grey = noisy)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("round")
        ax.set_ylabel("Gbit/s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _png(fig)


def plot_ratios(docs: Sequence[tuple[str, Mapping]]) -> str:
    """Each ratio's median with its 95 % interval, baseline beside current."""
    import matplotlib.pyplot as plt

    ids: list[str] = []
    for _, doc in docs:
        ids += [m["id"] for m in doc["stats"]["metrics"] if m["kind"] == "ratio" and m["id"] not in ids]
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * max(1, len(ids)) * len(docs)))
    offsets = [0.0] if len(docs) == 1 else [-0.15, 0.15]
    for (label, doc), off in zip(docs, offsets, strict=False):
        by_id = {m["id"]: m for m in doc["stats"]["metrics"]}
        ys, xs, lo, hi = [], [], [], []
        for i, mid in enumerate(ids):
            m = by_id.get(mid)
            if not m:
                continue
            ys.append(i + off)
            xs.append(m["median"])
            lo.append(m["median"] - (m["ci_low"] if m["ci_low"] is not None else m["median"]))
            hi.append((m["ci_high"] if m["ci_high"] is not None else m["median"]) - m["median"])
        ax.errorbar(xs, ys, xerr=[lo, hi], fmt="o", capsize=3, label=label)
    ax.axvline(1.0, color="0.5", lw=0.8)
    ax.set_yticks(range(len(ids)), ids)
    ax.invert_yaxis()
    ax.set_xlabel("ratio (median of per-round ratios, 95 % bootstrap CI)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize="small")
    return _png(fig)


def plot_latency(docs: Sequence[tuple[str, Mapping]]) -> str | None:
    """Round-trip distributions (CDF from each test's p0..p100, pointwise median over rounds)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    styles = ["--", "-"] if len(docs) == 2 else ["-"]  # the current run solid, the baseline dashed
    drew = False
    for (label, doc), style in zip(docs, styles, strict=False):
        used = set(doc["stats"]["rounds_used"])
        for k, topo in enumerate(_topologies(doc)):
            qs = [s["quantiles_us"] for s in doc["samples"] if s["test"] == "rr" and s["topology"] == topo and s["round"] in used]
            if not qs:
                continue
            curve = [statistics.median(col) for col in zip(*qs, strict=True)]
            ax.plot(curve, [i / (len(curve) - 1) for i in range(len(curve))], style, color=f"C{k}", label=f"{topo} ({label})")
            drew = True
        if doc.get("rr_floor"):
            q = doc["rr_floor"]["quantiles_us"]
            ax.plot(q, [i / (len(q) - 1) for i in range(len(q))], style, color="0.5", label=f"probe floor, loopback ({label})")
    if not drew:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel("request/response round trip (us, log)")
    ax.set_ylabel("fraction of transactions")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _png(fig)


def render_html(current: Mapping, baseline: Mapping | None, comparisons: Sequence[Comparison],
                tolerances: Tolerances) -> str:
    import matplotlib

    matplotlib.use("Agg")  # no display on CI machines; must precede pyplot
    docs = [("baseline", baseline), ("current", current)] if baseline else [("current", current)]
    plots = [("TCP throughput per round", plot_rounds(docs)), ("Ratios with 95 % intervals", plot_ratios(docs))]
    lat = plot_latency(docs)
    if lat:
        plots.append(("Request/response latency distribution", lat))
    e = html.escape
    rows = "\n".join(
        f"<tr class='{c.verdict}'><td><code>{e(c.id)}</code></td><td>{e(_num(c.baseline, c.unit) + _ci(c.baseline_ci))}</td>"
        f"<td>{e(_num(c.current, c.unit) + _ci(c.current_ci))}</td><td>{e(c.change_text)}</td><td>{_flag(c.outside_ci, c.few_rounds)}</td>"
        f"<td>{_flag(c.beyond_tolerance)}</td><td>{e(c.verdict)}</td></tr>" for c in comparisons)
    meta = "\n".join(f"<tr><th>{e(n)}</th><td>{e(b)}</td><td>{e(c)}</td></tr>" for n, b, c in _meta_rows(current, baseline))
    headline = _headline(comparisons, baseline is not None).replace("**", "").replace("`", "")
    note_items = "".join(f"<li>{e(n)}</li>" for n in notes(current, baseline))
    figures = "\n".join(f"<h2>{e(t)}</h2><img alt='{e(t)}' src='data:image/png;base64,{png}'>" for t, png in plots)
    status = "bad" if exit_status(comparisons) else "good"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>harness bench report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1200px; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
tr.regression {{ background: #fdd; }} tr.improvement {{ background: #dfd; }} tr.info {{ color: #777; }}
p.good {{ color: #060; }} p.bad {{ color: #a00; font-weight: bold; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>harness bench report</h1>
<p class="{status}">{e(headline)}</p>
<p>{e(_rule_text(tolerances))}</p>
<table><tr><th></th><th>baseline</th><th>current</th></tr>
{meta}
</table>
<table><tr><th>metric</th><th>baseline [95 % CI]</th><th>current [95 % CI]</th><th>change</th><th>outside CI</th><th>beyond tolerance</th><th>verdict</th></tr>
{rows}
</table>
{f"<h2>Notes</h2><ul>{note_items}</ul>" if note_items else ""}
{figures}
</body></html>
"""


# -- the command ------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Tolerances()
    parser.description = ("Compare bench results with a baseline: a table of every metric, Markdown on stdout, "
                          "optionally an HTML page with plots. Exit 1 on a regression beyond tolerance, "
                          "2 when an input cannot be read, else 0.")
    parser.add_argument("current", help="results JSON of the run to judge")
    parser.add_argument("baseline", nargs="?", help="results JSON to compare with (e.g. bench/baselines/NAME.json)")
    parser.add_argument("--tolerance", type=float, default=100 * d.ratio, metavar="PCT",
                        help="allowed change of a ratio, in %% (default %(default)g)")
    parser.add_argument("--abs-tolerance", type=float, default=100 * d.absolute, metavar="PCT",
                        help="allowed change of absolute throughput and latency, in %% (default %(default)g: raw "
                             "figures drift far more than ratios)")
    parser.add_argument("--loss-tolerance", type=float, default=d.points, metavar="PP",
                        help="allowed change of UDP loss, in percentage points (default %(default)g)")
    parser.add_argument("--min-rounds", type=int, default=d.min_n, metavar="N",
                        help="rounds a metric needs in both runs to be judged by disjoint intervals (default %(default)s)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the Markdown summary here")
    parser.add_argument("--html", metavar="FILE", help="write an HTML page with plots here")
    parser.add_argument("--json-out", metavar="FILE", help="write the comparisons as JSON here")


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        current = load_results(args.current)
        baseline = load_results(args.baseline) if args.baseline else None
    except ReportInputError as exc:
        err.print("[red]report: unreadable input[/red]: ", end="")
        err.print(str(exc), markup=False)
        return 2
    tolerances = Tolerances(ratio=args.tolerance / 100, absolute=args.abs_tolerance / 100, points=args.loss_tolerance,
                            min_n=args.min_rounds)
    comparisons = compare(current, baseline, tolerances)
    md = render_markdown(current, baseline, comparisons, tolerances)
    print(md, end="")
    try:
        if args.markdown:
            Path(args.markdown).write_text(md)
        if args.html:
            Path(args.html).write_text(render_html(current, baseline, comparisons, tolerances))
        if getattr(args, "json_out", None):
            Path(args.json_out).write_text(json.dumps([c.to_json() for c in comparisons], indent=1) + "\n")
    except OSError as exc:
        err.print(f"report: cannot write {exc.filename}: {exc.strerror}", markup=False)
        return 2
    return exit_status(comparisons)
