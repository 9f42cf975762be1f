"""The dry-run backend: renders a plan as the equivalent `ip` commands, touches nothing, needs no root.

`DryRunBackend` offers every feature and a `DryRunSession` that records the rendered commands and
observes nothing, so `harness run --backend dry-run` shows what would be done.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from backends.base import SESSION, BackgroundProcess, Capability, CommandResult
from harness.docker.emulated import CompiledScenario, EmulatedDocker
from harness.plan import FEATURES, Op, render


@dataclass
class DryRunSession:
    kernel: str
    commands: list[str]
    observes: bool = False  # nothing is created, so nothing can be observed

    def apply(self, op: Op) -> None:
        self.commands.extend(render(op))

    def run(self, node: str, argv: Sequence[str], timeout: float = 10.0) -> CommandResult:
        now = time.time()
        self.commands.append(f"ip netns exec {node} {' '.join(argv)}")
        return CommandResult(node, tuple(argv), 0, "", "", now, now)

    def run_many(self, jobs, timeout: float = 10.0) -> list[CommandResult]:
        return [self.run(node, argv, timeout) for node, argv in jobs]

    @contextmanager
    def spawn(self, node: str, argv: Sequence[str]) -> Iterator[BackgroundProcess | None]:
        """Records the command; nothing starts, so there is no process to hand back (None)."""
        self.commands.append(f"ip netns exec {node} {' '.join(argv)} &")
        yield None

    def physical_name(self, node: str) -> str:
        return node


class DryRunBackend:
    name = "dry-run"
    description = "renders the plan as `ip` commands; creates nothing, observes nothing"
    kind = SESSION

    def available(self) -> str | None:
        return None

    def capabilities(self) -> dict[str, Capability]:
        return {f: Capability(f, True, "rendered only") for f in FEATURES}

    def kernel_release(self) -> str:
        return platform.release()

    def prepare(self) -> str:
        return "nothing to prepare: the dry run only renders commands"

    def docker(self, compiled: CompiledScenario, session) -> EmulatedDocker:
        """The Docker under test here: the emulation, whose plan operations the session applies."""
        return EmulatedDocker(compiled, session)

    @contextmanager
    def session(self, label: str) -> Iterator[DryRunSession]:
        yield DryRunSession(kernel=self.kernel_release(), commands=[])
