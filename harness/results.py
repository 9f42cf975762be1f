"""Results: `Check` (one judged fact) and `ScenarioResult` (one scenario on one backend), as JSON and JUnit.

A `ScenarioResult` carries the status (pass, fail, skip, error), the reason, every check with expected,
observed and evidence, the commands with Docker's answers, the durations of setup, checks and
teardown, and the facts `harness conform` compares (`harness.conform.record_facts`). `write_json` writes
the list (one record per scenario); `write_junit` writes JUnit XML for CI.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

PASS, FAIL, SKIP, ERROR = "pass", "fail", "skip", "error"


@dataclass(frozen=True)
class Check:
    kind: str  # reach | isolate | address | route | mac | link | error | state
    subject: str
    expected: str
    observed: str
    ok: bool
    evidence: str = ""
    location: str = ""
    origin: str = "expect"  # expect | matrix | model | command
    # False: not judged, the probe depends on an address conflict (issue #13): reported, never a pass or a
    # failure of its own (`ok` stays True); the conflict is judged by its own check (kind `conflict`).
    judged: bool = True

    @property
    def message(self) -> str:
        """The domain sentence: `c1 (172.16.86.10) -> host (172.16.86.250): expected isolated, got ...`."""
        return f"{self.subject}: expected {self.expected}, got {self.observed}"


def mark(check: Check) -> str:
    """ok, FAIL, or n/v (no verdict: the check depends on an address conflict)."""
    return "n/v " if not check.judged else "ok  " if check.ok else "FAIL"


@dataclass
class StepRecord:
    index: int
    command: str
    error: str | None = None
    expected_error: str | None = None


@dataclass
class ScenarioResult:
    scenario: str
    path: str
    backend: str
    kernel: str
    status: str
    reason: str = ""
    profile: str = "docker-20.10"
    checks: list[Check] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)
    source: str = ""
    # What Docker built and what was seen, as {kind, node, interface, value} dicts that the emulation and a
    # real engine share (harness.conform: what `harness conform` compares); empty in older records.
    facts: list[dict] = field(default_factory=list)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def failure_report(self) -> str:
        """Every failed check in domain words, each followed by its evidence."""
        lines = []
        if self.reason:
            lines.append(self.reason)
        for c in self.failures:
            where = f" [{c.location}]" if c.location else ""
            lines.append(f"- {c.message}{where}")
            if c.evidence:
                lines.extend(f"    {line}" for line in c.evidence.splitlines())
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, d: dict) -> ScenarioResult:
        """The inverse of to_dict (a VM guest's records come back this way)."""
        fields = {k: v for k, v in d.items() if k not in ("checks", "steps", "facts")}
        checks = [Check(**{k: v for k, v in c.items() if k != "message"}) for c in d.get("checks", [])]
        steps = [StepRecord(**s) for s in d.get("steps", [])]
        facts = [dict(f) for f in d.get("facts") or []]
        return cls(**fields, checks=checks, steps=steps, facts=facts)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["checks"] = [{**asdict(c), "message": c.message} for c in self.checks]
        d["durations"] = {k: round(v, 4) for k, v in self.durations.items()}
        return d


def write_json(results: Sequence[ScenarioResult], path: str | Path) -> None:
    Path(path).write_text(json.dumps([r.to_dict() for r in results], indent=2) + "\n")


def write_junit(results: Sequence[ScenarioResult], path: str | Path, name: str = "harness") -> None:
    suite = ET.Element(
        "testsuite",
        name=name,
        tests=str(len(results)),
        failures=str(sum(r.status == FAIL for r in results)),
        errors=str(sum(r.status == ERROR for r in results)),
        skipped=str(sum(r.status == SKIP for r in results)),
        time=f"{sum(sum(r.durations.values()) for r in results):.3f}",
    )
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"scenario.{r.backend}", name=r.scenario,
                             file=r.path, time=f"{sum(r.durations.values()):.3f}")
        if r.status == FAIL:
            ET.SubElement(case, "failure", message=(r.failures[0].message if r.failures else r.reason)).text = r.failure_report()
        elif r.status == ERROR:
            ET.SubElement(case, "error", message=r.reason.splitlines()[0] if r.reason else "error").text = r.reason
        elif r.status == SKIP:
            ET.SubElement(case, "skipped", message=r.reason)
        ET.SubElement(case, "system-out").text = "\n".join(
            f"{mark(c)} {c.kind:8} {c.message}" for c in r.checks)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
