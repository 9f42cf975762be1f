"""What every backend offers, and the registry that finds one by name.

A `Backend` reports `Capability`s (which kernel features it can create) and opens a `Session` per
scenario. A `Session` applies plan operations one at a time (raising `harness.errors.KernelError` when
the kernel refuses one), runs an argv inside a node (`run`, `run_many` concurrently) returning a
`CommandResult`, and starts background processes (`spawn`, a context manager yielding a
`BackgroundProcess`). Everything it created is undone when the session closes, on every path.
`get_backend(name)` returns a registered backend; an unknown name lists the valid ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from harness.errors import BackendUnavailable, CommandFailed
from harness.plan import FEATURES, Op


@dataclass(frozen=True)
class CommandResult:
    """The outcome of one argv run inside a node: `Outcome(exit_code, out, err, start, end)`."""

    node: str
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    start: float = 0.0
    end: float = 0.0
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @property
    def command(self) -> str:
        return " ".join(self.argv)

    def assert_success(self) -> CommandResult:
        if not self.ok:
            raise CommandFailed(self.argv, self.exit_code, self.stdout, self.stderr, where=self.node)
        return self


@dataclass(frozen=True)
class Capability:
    feature: str
    available: bool
    detail: str = ""


class BackgroundProcess(Protocol):
    pid: int

    def output(self) -> tuple[str, str]: ...


@runtime_checkable
class Session(Protocol):
    kernel: str

    def apply(self, op: Op) -> None: ...

    def run(self, node: str, argv: Sequence[str], timeout: float = 10.0) -> CommandResult: ...

    def run_many(self, jobs: Sequence[tuple[str, Sequence[str]]], timeout: float = 10.0) -> list[CommandResult]: ...

    def spawn(self, node: str, argv: Sequence[str]) -> AbstractContextManager[BackgroundProcess]: ...

    def physical_name(self, node: str) -> str: ...


class Backend(Protocol):
    name: str
    description: str

    def available(self) -> str | None:
        """None when the backend can run here, else the reason it cannot."""
        ...

    def capabilities(self) -> dict[str, Capability]: ...

    def kernel_release(self) -> str: ...

    def session(self, label: str) -> AbstractContextManager[Session]: ...


def unavailable_everywhere(reason: str) -> dict[str, Capability]:
    """Every feature missing for one reason: what a backend that cannot run here reports."""
    return {f: Capability(f, False, reason) for f in FEATURES}


# name -> "module:Class", imported on demand so that a backend's dependencies (pyroute2, qemu) are
# only needed when it is used.
_REGISTRY: dict[str, str] = {
    "netns": "backends.netns:NetnsBackend",
    "dry-run": "backends.dryrun:DryRunBackend",
    "vm": "backends.vm:VMBackend",
    "vagrant": "backends.vagrant:VagrantBackend",
}


def register(name: str, target: str) -> None:
    _REGISTRY[name] = target


def backend_names() -> list[str]:
    return sorted(_REGISTRY)


def get_backend(name: str, **options) -> Backend:
    try:
        target = _REGISTRY[name]
    except KeyError:
        valid = ", ".join(["auto", *backend_names()])
        raise BackendUnavailable(f"unknown backend {name!r}; valid backends: {valid}") from None
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(**options)


# -- batch backends (vm, vagrant): scenario files go in, the guest's JSON records come back ---------------


def stage_scenarios(scenarios, directory, guest_dir: str) -> list[str]:
    """Copy scenario files into `directory` (numbered: two files may share a name); their guest paths."""
    import shutil
    from pathlib import Path

    paths = []
    for i, s in enumerate(scenarios):
        name = f"{i:03d}-{Path(s.path).name}"
        shutil.copyfile(s.path, Path(directory) / name)
        paths.append(f"{guest_dir}/{name}")
    return paths


def adopt_records(scenarios, guest_paths, records, backend: str, kernel: str, missing):
    """The guest's JSON records as results for this machine: host paths, this backend, the guest kernel.

    `missing(scenario)` makes the result for a scenario the guest returned no record for.
    """
    from dataclasses import replace

    from harness.results import ScenarioResult

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
