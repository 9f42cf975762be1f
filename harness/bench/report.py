"""`harness report CURRENT [BASELINE]`: bench results compared with a baseline, as Markdown and HTML.

Given scenario results instead (`harness run --json`, one file or several, e.g. one per kernel of a CI
job matrix), it renders the conformance matrix (`harness.matrix`): scenario x kernel, pass/fail/skip, and
the first differing fact; exit 1 when a scenario failed or erred.

The judging is `harness.bench.compare`; this module renders it. `render_markdown` is the CI-log summary;
`render_html` a self-contained page with matplotlib plots (`harness.bench.plots`: Agg backend, PNGs
embedded as base64) of per-round samples, ratio intervals and latency distributions.

`add_arguments(parser)` and `main(args)` are the `harness report` command: exit 0 without regressions,
1 with at least one, 2 when an input cannot be read.
"""

from __future__ import annotations

import argparse
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.bench.compare import (
    IMPROVEMENT,
    INFO,
    MISSING,
    NEW,
    OK,
    REGRESSION,
    Comparison,
    ReportInputError,
    Tolerances,
    compare,
    exit_status,
    load_results,
    notes,
)
from harness.bench.plots import plot_latency, plot_ratios, plot_rounds

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
        ("macvlan/bridge detectable change (vs an equal run)",
         lambda d: None if d["stop"].get("detectable_change_pct") is None else f"{d['stop']['detectable_change_pct']:.1f} %"),
        ("probe floor (loopback p50)", lambda d: None if not d["rr_floor"] else f"{d['rr_floor']['p50_us']:.1f} us"),
    ]
    return [(name, row(baseline, f), row(current, f)) for name, f in fields]


def _rule_text(t: Tolerances) -> str:
    return (f"A regression is a change the worse way beyond its tolerance (ratios ±{100 * t.ratio:g} %, absolute "
            f"throughput/latency ±{100 * t.absolute:g} %, UDP loss ±{t.points:g} pp) that is also outside the noise: "
            f"for paired ratios with a standard error on both sides, a z test of the log change at 95 %; else "
            f"disjoint 95 % intervals when both runs have at least {t.min_n} rounds of the metric, else (marked *) "
            f"a change beyond what the baseline's round-to-round scatter predicts for so few rounds (or, without "
            f"baseline rounds, the current estimate outside the baseline's interval).")


def _detectable_text(comparisons: Sequence[Comparison], current: Mapping) -> str | None:
    """The smallest change of the primary ratio this comparison could find, when it can say."""
    primary = current.get("stats", {}).get("primary")
    c = next((c for c in comparisons if c.id == primary), None)
    if c is None or c.detectable is None:
        return None
    return (f"Smallest change of `{primary}` this comparison finds four times out of five: {100 * c.detectable:.1f} % "
            f"(beyond the tolerance and a z test of the log change at 95 %, with both runs' standard errors).")


def _md_table(comparisons: Sequence[Comparison]) -> list[str]:
    lines = ["| metric | baseline [95 % CI] | current [95 % CI] | change | outside CI | beyond tol. | verdict |",
             "|---|---|---|---|---|---|---|"]
    for c in comparisons:
        lines.append(f"| `{c.id}` | {_num(c.baseline, c.unit)}{_ci(c.baseline_ci)} | {_num(c.current, c.unit)}{_ci(c.current_ci)} "
                     f"| {c.change_text} | {_flag(c.outside_ci, c.few_rounds)} | {_flag(c.beyond_tolerance)} | {_MARK[c.verdict]} |")
    return lines


def render_markdown(current: Mapping, baseline: Mapping | None, comparisons: Sequence[Comparison],
                    tolerances: Tolerances) -> str:
    lines = ["## harness bench report", "", _headline(comparisons, baseline is not None), ""]
    lines += [_rule_text(tolerances), ""]
    detectable = _detectable_text(comparisons, current)
    if detectable:
        lines += [detectable, ""]
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


# -- HTML ---------------------------------------------------------------------------------------------------


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
{f"<p>{e(_detectable_text(comparisons, current) or '')}</p>" if _detectable_text(comparisons, current) else ""}
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
    parser.add_argument("current", help="results JSON of the run to judge (bench, or `harness run --json`: the matrix)")
    parser.add_argument("baseline", nargs="?", help="results JSON to compare with (e.g. bench/baselines/NAME.json); "
                        "for scenario results, more results to merge into the matrix")
    parser.add_argument("more", nargs="*", help="scenario results only: further results files (one per kernel)")
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
    if _is_run_results(args.current):
        return _matrix_main(args, err)
    if getattr(args, "more", None):
        err.print("report: a bench report takes CURRENT and at most one BASELINE", markup=False)
        return 2
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


def _is_run_results(path: str) -> bool:
    from harness.matrix import is_run_results

    try:
        return is_run_results(json.loads(Path(path).read_text()))
    except (OSError, ValueError):
        return False  # load_results says what is wrong with it


def _matrix_main(args: argparse.Namespace, err) -> int:
    """Scenario results: the conformance matrix, Markdown on stdout (and --markdown), --html, --json-out."""
    from harness import matrix as mx

    paths = [args.current, *([args.baseline] if args.baseline else []), *(getattr(args, "more", None) or [])]
    try:
        m = mx.build_matrix(mx.load_run_results(paths))
    except (OSError, ValueError) as exc:
        err.print(f"report: unreadable input: {exc}", markup=False)
        return 2
    md = mx.render_markdown(m)
    print(md, end="")
    try:
        if args.markdown:
            Path(args.markdown).write_text(md)
        if args.html:
            Path(args.html).write_text(mx.render_html(m))
        if getattr(args, "json_out", None):
            Path(args.json_out).write_text(json.dumps(
                {"columns": m.columns, "rows": [{"scenario": r.scenario, "path": r.path, "difference": r.difference,
                                                  "status": {c: r.status(c) for c in m.columns}} for r in m.rows]},
                indent=1) + "\n")
    except OSError as exc:
        err.print(f"report: cannot write {exc.filename}: {exc.strerror}", markup=False)
        return 2
    return mx.exit_status(m)
