"""The harness's small exception family.

`ScenarioError` is bad input (names the file and line), `DockerError` is what Docker itself would have
answered to a command, `CommandFailed` is a command the harness ran that failed, and
`BackendUnavailable` becomes a skip with its reason. Anything else escaping is a bug in the harness.
"""

from __future__ import annotations

from collections.abc import Sequence


class HarnessError(Exception):
    """Base class of every error the harness raises on purpose."""


class ScenarioError(HarnessError):
    """A scenario file (or a command in it) is wrong; the message names file:line and what is wrong."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        self.file = file
        self.line = line
        self.reason = message
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(f"{where}{message}")


class DockerError(HarnessError):
    """Docker's own answer to a command, verbatim (without the CLI's 'Error response from daemon: ').

    The documented host commands (`ip link add|set|del`) answer through it too, in iproute2's words.
    """

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


class CommandFailed(HarnessError):
    """A command run by the harness exited non-zero; carries argv, exit code, stdout and stderr."""

    def __init__(self, argv: Sequence[str], exit_code: int, stdout: str = "", stderr: str = "", where: str = ""):
        self.argv = list(argv)
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        location = f" in {where}" if where else ""
        detail = (stderr or stdout).strip()
        super().__init__(f"`{' '.join(self.argv)}`{location} exited {exit_code}" + (f": {detail}" if detail else ""))


class BackendUnavailable(HarnessError):
    """A backend cannot run here (or cannot run this scenario); the message is the skip reason."""


class KernelError(HarnessError):
    """The kernel refused a plan operation; `errno_name` and `strerror` are what netlink answered."""

    def __init__(self, op: object, errno: int, strerror: str, node: str = ""):
        self.op = op
        self.errno = errno
        self.strerror = strerror
        self.node = node
        super().__init__(f"{op} failed in {node or 'node'}: [errno {errno}] {strerror}")

    @property
    def go_message(self) -> str:
        """The error as Go's syscall package spells it (lower-case strerror), as Docker prints it."""
        return self.strerror[:1].lower() + self.strerror[1:]
