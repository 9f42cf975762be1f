"""What every backend offers, the two kinds of backend, and the registry that finds one by name.

Every `Backend` says whether it can run here (`available`, cheap and side-effect free: no download, no
boot), which kernel features it can create (`capabilities`, equally cheap or cached), and does its slow
one-time work (a kernel download, an image build) only when asked, in `prepare`. A backend is one of
two declared kinds:

- a `SessionBackend` (`kind = "session"`: netns, dry-run, docker) opens a `Session` per scenario and
  names the Docker under test in it (`docker(compiled, session)`: the emulation, or a real engine); the
  engine builds the world in the session, has that Docker execute the commands, and observes. A `Session` applies plan
  operations one at a time (raising `harness.errors.KernelError` when the kernel refuses one), runs an
  argv inside a node (`run`, `run_many` concurrently) returning a `CommandResult`, and starts background
  processes (`spawn`). Everything it created is undone when the session closes, on every path. A session
  that creates nothing (dry-run) says so: `observes = False`.
- a `BatchBackend` (`kind = "batch"`: vm, vagrant) runs a whole list of scenarios per boot elsewhere and
  returns their results (`run_batch`).

`get_backend(name)` returns a registered backend, checked against its declared kind; an unknown name lists
the valid ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

from harness.errors import BackendUnavailable
from harness.plan import FEATURES, Op
from harness.proc import BackgroundProcess, CommandResult

__all__ = ["BATCH", "SESSION", "Backend", "BackgroundProcess", "BatchBackend", "Capability", "CommandResult",
           "Session", "SessionBackend", "backend_names", "get_backend", "unavailable_everywhere"]

SESSION, BATCH = "session", "batch"


@dataclass(frozen=True)
class Capability:
    feature: str
    available: bool
    detail: str = ""


@runtime_checkable
class Session(Protocol):
    kernel: str
    observes: bool  # False: nothing is created, so there is nothing to observe (dry-run)

    def apply(self, op: Op) -> None: ...

    def run(self, node: str, argv: Sequence[str], timeout: float = 10.0) -> CommandResult: ...

    def run_many(self, jobs: Sequence[tuple[str, Sequence[str]]], timeout: float = 10.0) -> list[CommandResult]: ...

    def spawn(self, node: str, argv: Sequence[str]) -> AbstractContextManager[BackgroundProcess]: ...

    def physical_name(self, node: str) -> str: ...


@runtime_checkable
class Backend(Protocol):
    name: str
    description: str
    kind: ClassVar[str]  # SESSION or BATCH

    def available(self) -> str | None:
        """None when the backend can run here, else the reason it cannot. Cheap, no side effect."""
        ...

    def capabilities(self) -> dict[str, Capability]:
        """What its kernel can create. Cheap or cached; never downloads or builds anything."""
        ...

    def kernel_release(self) -> str: ...

    def prepare(self) -> str:
        """Do the slow one-time work (downloads, image builds) now; says what is ready."""
        ...


@runtime_checkable
class SessionBackend(Backend, Protocol):
    def session(self, label: str) -> AbstractContextManager[Session]:
        """A fresh world for one scenario, labelled with its name (owner records, leftovers)."""
        ...

    def docker(self, compiled, session: Session):
        """The Docker under test in this session (harness.docker.base.DockerUnderTest): the emulation,
        whose operations the session applies, or a real engine the backend started."""
        ...


@runtime_checkable
class BatchBackend(Backend, Protocol):
    def run_batch(self, scenarios, profile: str, matrix: bool = True) -> list:
        """Every scenario run in one boot elsewhere; one `ScenarioResult` per scenario, in order."""
        ...


_KINDS = {SESSION: SessionBackend, BATCH: BatchBackend}


def unavailable_everywhere(reason: str) -> dict[str, Capability]:
    """Every feature missing for one reason: what a backend that cannot run here reports."""
    return {f: Capability(f, False, reason) for f in FEATURES}


# name -> "module:Class", imported on demand so that a backend's dependencies (pyroute2, qemu) are
# only needed when it is used.
_REGISTRY: dict[str, str] = {
    "netns": "backends.netns:NetnsBackend",
    "dry-run": "backends.dryrun:DryRunBackend",
    "docker": "backends.docker:DockerBackend",
    "vm": "backends.vm:VMBackend",
    "vm-docker": "backends.vm:VMDockerBackend",  # the real engine inside the guest (`--backend docker` falls back to it)
    "vagrant": "backends.vagrant:VagrantBackend",
}


def backend_names() -> list[str]:
    return sorted(_REGISTRY)


def backend_class(name: str) -> type:
    """The registered class, checked against the kind it declares (a mismatch is a harness bug)."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        valid = ", ".join(["auto", *backend_names()])
        raise BackendUnavailable(f"unknown backend {name!r}; valid backends: {valid}") from None
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    kind = getattr(cls, "kind", None)
    protocol = _KINDS.get(kind)
    if protocol is None:
        raise TypeError(f"backend {name!r} ({target}) declares kind {kind!r}; expected one of {sorted(_KINDS)}")
    other = [k for k, p in _KINDS.items() if k != kind and _has_methods(cls, p, Backend)]
    if not _has_methods(cls, protocol, Backend) or other:
        raise TypeError(f"backend {name!r} ({target}) declares kind {kind!r} but does not implement exactly "
                        f"{protocol.__name__}")
    return cls


def _has_methods(cls: type, protocol: type, base: type) -> bool:
    own = {n for n in vars(protocol) if not n.startswith("_") and callable(getattr(protocol, n, None))}
    common = {n for n in vars(base) if not n.startswith("_") and callable(getattr(base, n, None))}
    return all(callable(getattr(cls, n, None)) for n in own | common)


def get_backend(name: str, **options) -> Backend:
    return backend_class(name)(**options)

