"""The conformance matrix: scenario x kernel, pass/fail/skip, and the first fact that differs.

Input is what `harness run --json` writes (one record per scenario and kernel; a `--kernels` run holds
every kernel's records, and several files, one per kernel, are merged). A column is one (backend,
kernel release) pair: `host 6.18.44` for this machine's kernel through the namespace backend,
`vm 6.12.117+deb12-amd64` for a guest. Per scenario the matrix names the first differing fact:

- where verdicts differ between kernels, the first judged fact whose outcome differs (the subject,
  what was expected, what each kernel showed), or the reason of a skip or an error (the missing kernel
  feature, named);
- where every kernel fails alike, the first failed fact (expected vs observed): a broken expectation,
  or a documented behaviour no kernel shows.

`render_markdown` and `render_html` draw it; `exit_status` is 1 when any cell failed or erred.
Records are plain dicts (the JSON), so a file written by an older or newer harness still renders.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Matrix", "build_matrix", "column_of", "exit_status", "first_difference", "is_run_results",
           "load_run_results", "render_html", "render_markdown"]

PASS, FAIL, SKIP, ERROR = "pass", "fail", "skip", "error"
_ORDER = {PASS: 0, SKIP: 1, FAIL: 2, ERROR: 3}


def is_run_results(data: object) -> bool:
    """A `harness run --json` document: a list of scenario records (a bench document is an object)."""
    return isinstance(data, list) and all(isinstance(r, dict) and "scenario" in r and "status" in r for r in data)


def load_run_results(paths: Iterable[str | Path]) -> list[dict]:
    """Every record of every file, in order; ValueError names a file that is not run results."""
    records: list[dict] = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        if not is_run_results(data):
            raise ValueError(f"{path}: not the JSON of `harness run --json` (a list of scenario records)")
        records.extend(data)
    return records


def column_of(record: Mapping) -> str:
    """The kernel column of a record: `host <release>` on the namespace backend, else `<backend> <release>`."""
    backend = str(record.get("backend", "?"))
    kernel = str(record.get("kernel", "?"))
    return f"host {kernel}" if backend == "netns" else f"{backend} {kernel}"


@dataclass
class Row:
    scenario: str
    path: str
    cells: dict[str, dict] = field(default_factory=dict)  # column -> record
    difference: str = ""

    def status(self, column: str) -> str | None:
        record = self.cells.get(column)
        return None if record is None else str(record.get("status"))


@dataclass
class Matrix:
    columns: list[str]
    rows: list[Row]

    def counts(self, column: str) -> dict[str, int]:
        out = {s: 0 for s in (PASS, FAIL, SKIP, ERROR)}
        for row in self.rows:
            status = row.status(column)
            if status in out:
                out[status] += 1
        return out


def _column_key(column: str) -> tuple:
    backend, _, release = column.partition(" ")
    parts = [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.+~-]", release)]
    return (backend != "host", backend, parts)


def build_matrix(records: Sequence[Mapping]) -> Matrix:
    """Rows in scenario order of first appearance, columns host first then by release; a later record of
    the same scenario and column replaces an earlier one."""
    rows: dict[str, Row] = {}
    columns: list[str] = []
    for record in records:
        column = column_of(record)
        if column not in columns:
            columns.append(column)
        name = str(record.get("scenario"))
        row = rows.setdefault(name, Row(name, str(record.get("path", ""))))
        row.cells[column] = dict(record)
    columns.sort(key=_column_key)
    for row in rows.values():
        row.difference = first_difference(row.cells, columns)
    return Matrix(columns, list(rows.values()))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text and text.strip() else ""


def _fact_key(check: Mapping) -> tuple[str, str]:
    return str(check.get("kind", "")), str(check.get("subject", ""))


def first_difference(cells: Mapping[str, Mapping], columns: Sequence[str] | None = None) -> str:
    """The first fact that tells the kernels apart (or, when all fail alike, the first failed fact); "" when
    every kernel passed or skipped for the same reason."""
    columns = [c for c in (columns or list(cells)) if c in cells]
    statuses = {c: str(cells[c].get("status")) for c in columns}
    if len(set(statuses.values())) > 1:
        # A kernel that did not judge: its reason is the difference (an error first, then a skip: the
        # missing feature).
        for wanted in (ERROR, SKIP):
            for c in columns:
                if statuses[c] == wanted:
                    return f"{c}: {wanted}: {_first_line(str(cells[c].get('reason', '')))}"
        judged = {c: {_fact_key(k): k for k in cells[c].get("checks", [])} for c in columns}
        order = [key for c in columns for key in judged[c]]
        seen = set()
        for key in order:
            if key in seen:
                continue
            seen.add(key)
            outcomes = {c: judged[c].get(key) for c in columns}
            oks = {c: (o.get("ok") if o else None) for c, o in outcomes.items()}
            if len(set(oks.values())) > 1:
                some = next(o for o in outcomes.values() if o)
                shown = "; ".join(f"{c}: {'got ' + str(o.get('observed')) if o else 'not judged'}"
                                  f"{' (ok)' if o and o.get('ok') else ''}" for c, o in outcomes.items())
                return f"{some.get('subject')}: expected {some.get('expected')}; {shown}"
        reasons = "; ".join(f"{c}: {statuses[c]}" + (f" ({_first_line(str(cells[c].get('reason', '')))})"
                                                     if cells[c].get("reason") else "") for c in columns)
        return f"verdicts differ with every judged fact alike: {reasons}"
    status = next(iter(statuses.values()), PASS)
    if status in (FAIL, ERROR):
        c = columns[0]
        failed = [k for k in cells[c].get("checks", []) if not k.get("ok")]
        if failed:
            k = failed[0]
            where = f" [{k.get('location')}]" if k.get("location") else ""
            return f"{k.get('subject')}: expected {k.get('expected')}, got {k.get('observed')}{where} (every kernel)"
        return f"{status} on every kernel: {_first_line(str(cells[c].get('reason', '')))}"
    if status == SKIP:
        reasons = {_first_line(str(cells[c].get("reason", ""))) for c in columns}
        if len(reasons) > 1:
            return "; ".join(f"{c}: {_first_line(str(cells[c].get('reason', '')))}" for c in columns)
        return f"skip on every kernel: {reasons.pop()}" if columns else ""
    return ""


def exit_status(matrix: Matrix) -> int:
    return 1 if any(r.status(c) in (FAIL, ERROR) for r in matrix.rows for c in matrix.columns) else 0


def _cell_text(row: Row, column: str) -> str:
    record = row.cells.get(column)
    if record is None:
        return "–"
    status = str(record.get("status"))
    if status == SKIP:
        return f"skip ({_first_line(str(record.get('reason', '')))})"
    return status


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _headline(matrix: Matrix) -> str:
    bad = [(r.scenario, c) for r in matrix.rows for c in matrix.columns if r.status(c) in (FAIL, ERROR)]
    differ = [r for r in matrix.rows if len({r.status(c) for c in matrix.columns}) > 1]
    kernels = f"{len(matrix.columns)} kernel{'s' if len(matrix.columns) != 1 else ''}"
    text = (f"{len(matrix.rows)} scenarios on {kernels}: "
            + (f"{len(bad)} failed or erred" if bad else "nothing failed"))
    return text + (f"; verdicts differ between kernels for {len(differ)}" if differ else "; same verdict on every kernel")


def render_markdown(matrix: Matrix) -> str:
    lines = ["## harness conformance matrix", "", _headline(matrix) + ".", ""]
    lines.append("| scenario | " + " | ".join(matrix.columns) + " | first differing fact |")
    lines.append("|---|" + "---|" * len(matrix.columns) + "---|")
    for row in matrix.rows:
        cells = [row.status(c) or "–" for c in matrix.columns]
        lines.append(f"| {row.scenario} | " + " | ".join(_mark(s) for s in cells)
                     + f" | {_md_escape(row.difference)} |")
    lines += ["", "| kernel | pass | fail | skip | error |", "|---|---:|---:|---:|---:|"]
    for c in matrix.columns:
        n = matrix.counts(c)
        lines.append(f"| {c} | {n[PASS]} | {n[FAIL]} | {n[SKIP]} | {n[ERROR]} |")
    skips = [(r.scenario, c, _first_line(str(r.cells[c].get("reason", "")))) for r in matrix.rows
             for c in matrix.columns if r.status(c) == SKIP]
    if skips:
        lines += ["", "<details><summary>why each skip</summary>", ""]
        lines += [f"- {s} on {c}: {_md_escape(why)}" for s, c, why in skips]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def _mark(status: str) -> str:
    return {FAIL: "**fail**", ERROR: "**error**"}.get(status, status)


def render_html(matrix: Matrix) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in matrix.columns)
    body = []
    for row in matrix.rows:
        tds = []
        for c in matrix.columns:
            status = row.status(c) or "none"
            title = _first_line(str(row.cells[c].get("reason", ""))) if c in row.cells else ""
            tds.append(f"<td class='{e(status)}' title='{e(title)}'>{e(_cell_text(row, c))}</td>")
        body.append(f"<tr><th title='{e(row.path)}'>{e(row.scenario)}</th>{''.join(tds)}"
                    f"<td class='fact'>{e(row.difference)}</td></tr>")
    counts = "".join(
        f"<tr><th>{e(c)}</th>" + "".join(f"<td>{n}</td>" for n in matrix.counts(c).values()) + "</tr>"
        for c in matrix.columns)
    status = "bad" if exit_status(matrix) else "good"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>harness conformance matrix</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }}
td.pass {{ background: #dfd; }} td.fail, td.error {{ background: #fbb; font-weight: bold; }}
td.skip {{ background: #ffd; color: #555; font-size: 90%; }} td.fact {{ font-size: 90%; max-width: 50em; }}
p.good {{ color: #060; }} p.bad {{ color: #a00; font-weight: bold; }}
</style></head><body>
<h1>harness conformance matrix</h1>
<p class="{status}">{e(_headline(matrix))}.</p>
<table><tr><th>scenario</th>{head}<th>first differing fact</th></tr>
{chr(10).join(body)}
</table>
<table><tr><th>kernel</th><th>pass</th><th>fail</th><th>skip</th><th>error</th></tr>
{counts}
</table>
</body></html>
"""
