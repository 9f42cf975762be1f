"""Several Docker hosts, each with its own daemon: `Fleet` (their states, read together) and `FleetEmulator`.

Issue #13: macvlan's main use is putting the containers of several hosts on one LAN or VLAN. Every host
runs its own Docker daemon, with its own IPAM, networks, parent sub-interfaces, dummy parents and MAC
derivation; the same network name on two hosts is two networks. `Fleet` holds one `DockerState` per host
(in topology order) and offers the views the judge needs across them: every running container (names are
unique across a scenario's hosts, the loader sees to it) and which host each lives on. `FleetEmulator` is
the emulated Docker of a multi-host scenario: one `DockerEmulator` per host, each command compiled by the
daemon of the host it names (`Step.host`). `as_fleet` wraps a single host's state, so the oracle reads one
shape whatever the scenario.
"""

from __future__ import annotations

from collections.abc import Mapping

from harness.docker.base import DockerState
from harness.docker.driver import DockerEmulator
from harness.docker.profiles import DEFAULT_PROFILE, Profile
from harness.docker.state import ContainerState
from harness.model import DEFAULT_HOST, Scenario, Step
from harness.plan import CompiledStep


class Fleet:
    """The Docker states of every host, by host name (a node of the run), in topology order."""

    def __init__(self, hosts: Mapping[str, DockerState]):
        self.hosts: dict[str, DockerState] = dict(hosts)

    @property
    def containers(self) -> dict[str, ContainerState]:
        """Every running container of every host, by name."""
        return {name: c for state in self.hosts.values() for name, c in state.containers.items()}

    @property
    def history(self) -> dict[str, ContainerState]:
        return {name: c for state in self.hosts.values() for name, c in state.history.items()}

    def host_of(self, container: str) -> str:
        """The host a container runs (or ran) on."""
        for host, state in self.hosts.items():
            if container in state.containers or container in state.history:
                return host
        raise KeyError(container)

    @property
    def multi_host(self) -> bool:
        return len(self.hosts) > 1


def as_fleet(state) -> Fleet:
    """A `Fleet` as it is, or a single host's `DockerState` as a fleet of one (named by its node, if it has one)."""
    if isinstance(state, Fleet):
        return state
    return Fleet({getattr(state, "node", DEFAULT_HOST): state})


class FleetEmulator(Fleet):
    """The emulated Docker daemons of a multi-host scenario: each command goes to its host's daemon."""

    def __init__(self, scenario: Scenario, profile: str | Profile = DEFAULT_PROFILE):
        self.scenario = scenario
        self.emulators = {h.name: DockerEmulator(scenario, profile, h) for h in scenario.topology.hosts}
        super().__init__(self.emulators)
        self.profile = next(iter(self.emulators.values())).profile

    def compile(self, step: Step) -> CompiledStep:
        return self.emulators[step.host].compile(step)

    @property
    def notes(self) -> list[str]:
        return [note for emulator in self.emulators.values() for note in emulator.notes]

    @property
    def outputs(self) -> dict[int, str]:
        return {k: v for emulator in self.emulators.values() for k, v in emulator.outputs.items()}

    def vlan_of_host(self, host: str, link_name: str) -> int | None:
        return self.emulators[host].vlan_of(link_name)


def make_emulator(scenario: Scenario, profile: str | Profile = DEFAULT_PROFILE) -> DockerEmulator | FleetEmulator:
    """The emulated Docker of a scenario: one daemon, or one per host when it names several."""
    if scenario.topology.multi_host:
        return FleetEmulator(scenario, profile)
    return DockerEmulator(scenario, profile)
