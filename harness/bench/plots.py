"""The report's plots, drawn with matplotlib and returned as base64 PNGs for a self-contained HTML page.

`plot_rounds` (TCP throughput per round, noisy rounds shaded), `plot_ratios` (each ratio's median with
its 95 % interval, baseline beside current) and `plot_latency` (request/response round-trip
distributions) each take `(label, results document)` pairs. The caller selects the Agg backend first.
"""

from __future__ import annotations

import base64
import io
import statistics
from collections.abc import Mapping, Sequence


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
    ax.set_xlabel("ratio (Hodges-Lehmann of per-pair log-ratios, 95 % signed-rank CI)")
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
