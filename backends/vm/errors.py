"""The VM backend's errors, members of the harness's error family (`harness.errors.HarnessError`).

`VMError`: the guest could not run a command (qemu failed, the guest crashed or set up nothing);
`VMTimeout` (a `VMError`): the guest did not power off in time and qemu was killed; `ImageError` (a
`VMError`): a kernel or guest image could not be fetched or built, the message naming the failed step,
command and stderr. One family, so a caller catches `VMError` (or `HarnessError`) for all of them.
"""

from __future__ import annotations

from harness.errors import HarnessError

__all__ = ["ImageError", "VMError", "VMTimeout"]


class VMError(HarnessError):
    """The guest could not run the command; ``console_tail`` holds the last console lines, if any."""

    def __init__(self, message: str, *, console_tail: str = "", stdout: str = "", stderr: str = "") -> None:
        super().__init__(message)
        self.console_tail = console_tail
        self.stdout = stdout
        self.stderr = stderr


class VMTimeout(VMError):
    """The guest did not power off in time; qemu was killed."""


class ImageError(VMError):
    """A kernel or guest image could not be fetched or built (a VMError: callers catch one family)."""
