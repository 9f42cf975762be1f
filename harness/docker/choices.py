"""Docker's own random choices, made explicit: `ChoicePoint` and `pin`.

Some of Docker's decisions are random. Docker 20.10's CLI sends a network's `--subnet` flags to the daemon
in Go map order (docker/cli v20.10.24 cli/command/network/create.go:222-226, consolidateIpam), and
libnetwork allocates a container's dynamic address from the first pool it was given, so with two IPv4
subnets a real engine starts from either. The emulation meets such a choice through
`DockerEmulator.choose`, which records a `ChoicePoint` (a key such as `mcv0 IPv4 subnets`, the options in
command-line order, and why the choice is random) and takes the command-line order unless the scenario
pins another (`docker_choices:` in the scenario file, `Scenario.docker_choices`). The other random choice
met so far: the networks of a `docker run` given several, which 20.10 refuses naming them in map order.

`harness.docker.emulated.alternatives` compiles a scenario under every order Docker could take, so that
a scenario's expectations can be checked to accept each of them, and `harness conform` pins the order a
real engine took (read back from `docker network inspect`) before it compares the emulation with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from harness.errors import ScenarioError
from harness.model import Scenario

T = TypeVar("T")


@dataclass(frozen=True)
class ChoicePoint:
    key: str  # "mcv0 IPv4 subnets": what is chosen, as `docker_choices:` names it
    options: tuple[str, ...]  # in the order the command line gives them (the emulation's default)
    note: str  # why Docker's choice is random, with the source
    seen_in: tuple[str, str] = ("", "")  # the fact (kind, node) whose values show the order a real engine took


def subnet_choice_key(network: str, family: str) -> str:
    return f"{network} {family} subnets"


def pin(scenario: Scenario, key: str, items: Sequence[T], labels: Sequence[str]) -> list[T]:
    """`items` in the order the scenario pins for `key` (by their labels), else as given."""
    for pinned_key, order, location in scenario.docker_choices:
        if pinned_key != key:
            continue
        if sorted(order) != sorted(labels) or len(set(order)) != len(order):
            raise ScenarioError(f"docker_choices: {key!r} must order exactly {', '.join(labels)}, "
                                f"got {', '.join(order)}", location.file, location.line)
        return [items[list(labels).index(label)] for label in order]
    return list(items)


def check_pinned(scenario: Scenario, points: dict[str, ChoicePoint]) -> None:
    """A pinned key that names no random choice of this scenario is a mistake in the file: say so."""
    for key, _order, location in scenario.docker_choices:
        if key not in points:
            known = ", ".join(f"`{k}`" for k in sorted(points)) or "none"
            raise ScenarioError(f"docker_choices: {key!r} is not one of Docker's random choices in this scenario "
                                f"(its random choices: {known})", location.file, location.line)
