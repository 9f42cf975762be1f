"""The CI workflow for users (`.github/workflows/conformance.yml`): every step runs a README command or a tox
environment that tox.ini defines (no logic lives only in YAML), one job per kernel, the artifacts; and
actionlint, when installed (tox -e lint installs it)."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "conformance.yml"


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def tox_envs() -> set[str]:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(REPO / "tox.ini")
    return {s.split(":", 1)[1] for s in ini.sections() if s.startswith("testenv:")}


def test_every_run_step_is_a_readme_command_or_a_tox_environment():
    allowed = [r"bash scripts/setup\.sh", r"python -m pip install tox",
               r"tox -e (?P<env>[\w-]+)( -- .*)?"]
    envs = tox_envs()
    for name, job in workflow()["jobs"].items():
        for step in job["steps"]:
            if "run" not in step:
                assert step["uses"].startswith("actions/"), (name, step)
                continue
            command = step["run"].strip()
            match = next((m for m in (re.fullmatch(p, command) for p in allowed) if m), None)
            assert match, f"job {name}: `{command}` is logic that lives only in the workflow"
            if match.groupdict().get("env"):
                assert match["env"] in envs, f"job {name}: tox has no environment {match['env']}"


def test_one_job_per_kernel_with_cache_and_artifacts():
    jobs = workflow()["jobs"]
    assert jobs["scenarios"]["strategy"]["matrix"]["kernel"] == ["6.1", "6.12", "host"]
    assert jobs["scenarios"]["env"]["HARNESS_KERNELS"] == "${{ matrix.kernel }}"
    steps = jobs["scenarios"]["steps"]
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache"))
    assert cache["with"]["path"] == "~/.cache/harness"
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["with"]["path"] == "results/conformance.*"  # JSON, JUnit, Markdown and HTML
    assert jobs["matrix"]["needs"] == "scenarios"
    assert any(s.get("run") == "tox -e bench" for s in jobs["bench"]["steps"])


def test_tox_covers_every_tier():
    assert {"unit", "integration", "scenarios", "vm", "docker", "bench", "lint", "conformance"} <= tox_envs()
    ini = (REPO / "tox.ini").read_text()
    assert "pytest tests/docker -m docker" in ini
    assert "actionlint .github/workflows/conformance.yml" in ini
    assert "bench/baselines/" in ini  # the bench job compares against the committed baseline


@pytest.mark.skipif(shutil.which("actionlint") is None, reason="actionlint not installed (tox -e lint installs it)")
def test_actionlint_passes():
    result = subprocess.run(["actionlint", str(WORKFLOW)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
