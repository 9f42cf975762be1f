"""Batch backends' shared plumbing (vm, vagrant): scenario files go in, the guest's JSON records come back.

`stage_scenarios` copies scenario files into a directory the guest sees; `adopt_records` turns the
guest's JSON records into this machine's `ScenarioResult`s; `BatchCache` runs one batch per test run
for every pytest-xdist worker (the first worker that needs a result runs the whole batch with
`backend.run_batch`, behind a file lock; the others wait and read), in `batch_dir(run_id)`.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import yaml
from filelock import FileLock

from harness import proc
from harness.model import Scenario
from harness.results import ERROR, ScenarioResult

__all__ = ["BatchCache", "adopt_records", "batch_dir", "stage_scenarios"]


def stage_scenarios(scenarios: Sequence[Scenario], directory: str | Path, guest_dir: str) -> list[str]:
    """Copy scenario files into `directory` (numbered: two files may share a name); their guest paths.

    A scenario pinned to Docker's random choices by the harness (`harness conform` follows a real engine's)
    carries them in its copy: `docker_choices:` appended, so every line keeps its number."""
    paths = []
    for i, s in enumerate(scenarios):
        name = f"{i:03d}-{Path(s.path).name}"
        shutil.copyfile(s.path, Path(directory) / name)
        pinned = {key: list(order) for key, order, location in s.docker_choices if location.file != s.path}
        if pinned:
            with open(Path(directory) / name, "a", encoding="utf-8") as f:
                f.write("\n" + yaml.safe_dump({"docker_choices": pinned}, default_flow_style=None))
        paths.append(f"{guest_dir}/{name}")
    return paths


def adopt_records(scenarios: Sequence[Scenario], guest_paths: Sequence[str], records: Iterable[object],
                  backend: str, kernel: str, missing: Callable[[Scenario], ScenarioResult]) -> list[ScenarioResult]:
    """The guest's JSON records as results for this machine: host paths, this backend, the guest kernel.

    `missing(scenario)` makes the result for a scenario the guest returned no record for.
    """
    by_path = {r.get("path"): r for r in records if isinstance(r, dict)}
    out = []
    for s, guest_path in zip(scenarios, guest_paths):
        record = by_path.get(guest_path)
        if record is None:
            out.append(missing(s))
            continue
        result = ScenarioResult.from_dict(record)
        # Point every location back at the file on this machine, not its copy in the guest.
        checks = [replace(c, location=c.location.replace(guest_path, s.path)) for c in result.checks]
        out.append(replace(result, path=s.path, backend=backend, kernel=kernel or result.kernel, checks=checks))
    return out


def batch_dir(run_id: str) -> Path:
    """Where one test run's batches live (the pytest plugin removes it at the end of the run)."""
    return Path(tempfile.gettempdir()) / f"hxbatch-{run_id}"


class BatchCache:
    """One batch per test run and backend, shared by pytest-xdist workers behind a file lock.

    The first worker that needs a result of `backend` runs every scenario of the run's batch with
    `backend.run_batch` and writes the records to `<batch_dir(run_id)>/<key>.json`; the others
    wait on the lock and read them. `key` is the backend's name, or with several kernels of one backend
    (a kernel matrix) one per kernel, such as `vm-6.12`.
    """

    batch_dir = staticmethod(batch_dir)

    def __init__(self, backend, run_id: str, directory: Path | None = None, key: str | None = None):
        self.backend = backend
        self.dir = Path(directory) if directory is not None else batch_dir(run_id)
        self.dir.mkdir(parents=True, exist_ok=True)
        proc.add_owner(self.dir)  # every worker of the run: `harness clean` removes it only when all are gone
        key = re.sub(r"[^\w.+-]", "_", key or backend.name)  # a file name, whatever the kernel is called
        self.results_file = self.dir / f"{key}.json"
        self.lock_file = self.dir / f"{key}.lock"
        self._memo: dict[str, ScenarioResult] | None = None

    def result(self, scenario: Scenario, batch: Iterable[Scenario], profile: str) -> ScenarioResult:
        if self._memo is None or scenario.path not in self._memo:
            with FileLock(self.lock_file):
                if not self.results_file.is_file():
                    results = self.backend.run_batch(sorted(batch, key=lambda s: s.path), profile)
                    tmp = self.results_file.with_suffix(".tmp")
                    tmp.write_text(json.dumps([r.to_dict() for r in results]))
                    tmp.replace(self.results_file)
                records = json.loads(self.results_file.read_text())
            self._memo = {r["path"]: ScenarioResult.from_dict(r) for r in records}
        found = self._memo.get(scenario.path)
        if found is None:
            return ScenarioResult(scenario.name, scenario.path, self.backend.name, self.backend.kernel_release(),
                                  ERROR, reason=f"not in this run's {self.backend.name} batch (collected after "
                                                "the batch ran)", source=scenario.source)
        return found
