"""The results document of `harness bench` (docs/bench-schema.json): `build_document`, `validate_document`,
`write_document`.

`SCHEMA_ID` and `SCHEMA_PATH` name the schema (`harness report` checks its inputs against them).
`TopologyStatus` (ran, skipped or failed, and why) and `RoundRecord` (order, tests, machine load, noise)
are what the runner records besides its `Sample`s; `machine_info`, `git_commit` and `rr_cpu` describe
where and with what the run was measured.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from harness import __version__
from harness.bench.metrics import compute_stats, primary_id
from harness.bench.params import ALL_TESTS, BenchParams
from harness.bench.parse import RrResult, Sample
from harness.bench.stats import Load, detectable_change, usable_rounds
from harness.bench.topologies import mtu_method

SCHEMA_ID = "harness-bench/1"
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "bench-schema.json"


# -- what the runner records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopologyStatus:
    name: str
    description: str
    status: str  # "ran" | "skipped" | "failed"
    reason: str | None
    features: tuple[str, ...]

    def to_json(self) -> dict:
        return {"name": self.name, "description": self.description, "status": self.status, "reason": self.reason,
                "features": list(self.features)}


@dataclass(frozen=True)
class RoundRecord:
    index: int
    order: tuple[str, ...]
    start: float
    seconds: float
    load_before: Load
    load_during: Load
    noise: tuple[str, ...]
    tests: tuple[str, ...] = ALL_TESTS
    waited: float = 0.0  # seconds spent waiting for a quiet machine before the round

    @property
    def noisy(self) -> bool:
        return bool(self.noise)

    def to_json(self) -> dict:
        return {"index": self.index, "order": list(self.order), "start": round(self.start, 3),
                "seconds": round(self.seconds, 3), "load_before": self.load_before.to_json(),
                "load_during": self.load_during.to_json(), "noisy": self.noisy, "noise_reasons": list(self.noise),
                "tests": list(self.tests), "waited": round(self.waited, 3)}


# -- machine metadata --------------------------------------------------------------------------------------


def cpu_model(cpuinfo: str) -> str | None:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Processor", "cpu model"):
            return value.strip()
    return None


def git_commit(start: Path | None = None) -> str | None:
    """The checked-out commit, read from .git directly (the bench runs commands only through sessions)."""
    start = start or Path(__file__).resolve().parent
    for d in (start, *start.parents):
        git = d / ".git"
        if git.is_file():  # a worktree: "gitdir: <path>"
            text = git.read_text().strip()
            if text.startswith("gitdir:"):
                git = (d / text.split(":", 1)[1].strip()).resolve()
        if not git.is_dir():
            continue
        try:
            head = (git / "HEAD").read_text().strip()
        except OSError:
            return None
        if not head.startswith("ref:"):
            return head or None
        ref = head.split(":", 1)[1].strip()
        common = git
        if (git / "commondir").is_file():
            common = (git / (git / "commondir").read_text().strip()).resolve()
        for base in (git, common):
            if (base / ref).is_file():
                return (base / ref).read_text().strip() or None
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split()[0]
        return None  # a branch with no commit yet
    return None


def machine_info(kernel: str, iperf3_version: str | None) -> dict:
    try:
        with open("/proc/cpuinfo") as f:
            model = cpu_model(f.read())
    except OSError:
        model = None
    return {"kernel": kernel, "cpu_model": model or platform.processor() or None, "cpu_count": os.cpu_count() or 1,
            "iperf3_version": iperf3_version, "python": platform.python_version(), "machine": platform.machine()}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def rr_cpu() -> int:
    """The CPU both ends of the request/response probe share: the last one this process may use."""
    return sorted(os.sched_getaffinity(0))[-1]


# -- the results document ----------------------------------------------------------------------------------


def build_document(params: BenchParams, *, topologies: Sequence[TopologyStatus], samples: Sequence[Sample],
                   rounds: Sequence[RoundRecord], rr_floor: RrResult | None, kernel: str, iperf3_version: str | None,
                   stop_reason: str, started: float, finished: float) -> dict:
    """The results document (docs/bench-schema.json): every sample, the statistics over the usable rounds
    of the topologies that ran, and the machine and parameters they were measured with."""
    p = params
    ran = [t.name for t in topologies if t.status == "ran"]
    used, includes_noisy = usable_rounds([r.noisy for r in rounds], keep_noisy=p.rounds is None)
    stats = compute_stats(samples, ran, used, seed=p.seed, confidence=p.confidence, resamples=p.resamples)
    primary = primary_id(ran)
    prim = next((m for m in stats if m.id == primary), None)
    half = prim.interval.rel_half_width if prim else None
    detectable = detectable_change(prim.se_log, confidence=p.confidence) if prim and prim.se_log else None
    return {
        "schema": SCHEMA_ID,
        "harness_version": __version__,
        "git_commit": git_commit(),
        "started_at": iso(started),
        "finished_at": iso(finished),
        "wall_seconds": round(finished - started, 3),
        "backend": p.backend,
        "machine": machine_info(kernel or platform.release(), iperf3_version),
        "parameters": {**p.to_json(), "mtu_method": mtu_method(p.mtu), "rr_cpu": rr_cpu() if p.rr_pin else None},
        "topologies": [t.to_json() for t in topologies],
        "rr_floor": rr_floor.metrics() if rr_floor else None,
        "rounds": [r.to_json() for r in rounds],
        "samples": [s.to_json() for s in samples],
        "stats": {
            "primary": primary,
            "confidence": p.confidence,
            "resamples": p.resamples,
            "seed": p.seed,
            "rounds_used": used,
            "rounds_excluded": [r.index for r in rounds if r.index not in set(used)],
            "includes_noisy": includes_noisy,
            "metrics": [m.to_json() for m in stats],
        },
        "stop": {
            "reason": stop_reason,
            "adaptive": p.rounds is None,
            "target_pct": 100 * p.target,
            "half_width_pct": None if half is None else 100 * half,
            "detectable_change_pct": None if detectable is None else 100 * detectable,
            "target_reached": p.stop_rule().reached(len(used), half),
            "used_rounds": len(used),
            "total_rounds": len(rounds),
        },
    }


def validate_document(doc: Mapping) -> None:
    """Raise jsonschema.ValidationError when `doc` does not follow docs/bench-schema.json."""
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.validate(doc, schema)


def write_document(doc: Mapping, path: str | os.PathLike) -> Path:
    out = Path(path)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: NaN is not JSON, and a statistic that became NaN is a bug to see, not to write
    out.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    return out

