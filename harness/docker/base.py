"""The interface of the Docker that executes a scenario's documented commands.

`DockerUnderTest` runs one documented step at a time inside a backend session and returns a
`StepOutcome`: Docker's answer (None when the command succeeded) and, for a transient
`docker run ... ping X`, the reach check to probe while that container exists; `finish(outcome)` then
removes the transient container. `state` is what Docker built, as a `DockerState` (networks, running and
exited containers with their endpoints, the host links it manages): the oracle derives the expected
facts from it. Two implementations: the emulation (`harness.docker.emulated.EmulatedDocker`) and, with
the docker backend, a real engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from harness.model import Step
from harness.plan import ReachCheck


@dataclass(frozen=True)
class StepOutcome:
    step: Step
    error: str | None = None  # Docker's answer, verbatim; None when the command succeeded
    reach: ReachCheck | None = None  # a transient container's documented ping, to probe now


class DockerState(Protocol):
    """What Docker has built (the emulator's own state has exactly these attributes)."""

    networks: dict  # id -> harness.docker.driver.NetworkState
    containers: dict  # name -> ContainerState, running
    history: dict  # name -> ContainerState, every container ever started
    host_links: dict  # name -> HostLink: the host's parent, sub-interfaces and dummy parents

    def vlan_of(self, link_name: str) -> int | None: ...


class DockerUnderTest(Protocol):
    name: str  # e.g. "emulated docker-20.10"

    def execute(self, step: Step) -> StepOutcome: ...

    def finish(self, outcome: StepOutcome) -> None:
        """After the reach check of a transient container: remove it, as `--rm` does."""
        ...

    @property
    def state(self) -> DockerState: ...
