"""Host-side steps shared by the kernel cache and the image builder: where the cache lives
(`default_cache_dir`), running one host command as a named step (`run_step`, through `harness.proc`,
raising `ImageError` with the step, the command and its stderr), decompressing with an external tool
(`decompress_external`: zstd, lz4), and writing a cache file atomically (`write_atomic`).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from backends.vm.errors import ImageError
from harness import proc
from harness.proc import CommandResult

__all__ = ["CMD_TIMEOUT", "decompress_external", "default_cache_dir", "run_step", "write_atomic"]

CMD_TIMEOUT = 300.0


def default_cache_dir() -> Path:
    """``$HARNESS_CACHE``, else ``$XDG_CACHE_HOME/harness/vm``, else ``~/.cache/harness/vm``."""
    env = os.environ.get("HARNESS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "harness" / "vm"


def run_step(argv: Sequence[str], *, what: str, timeout: float = CMD_TIMEOUT, cwd: Path | None = None,
             hint: str = "") -> CommandResult:
    """Run argv to completion; on failure raise ImageError naming the step, the command and its stderr."""
    cmd = shlex.join(argv)
    result = proc.run(argv, timeout=timeout, cwd=cwd)
    if result.timed_out:
        raise ImageError(f"{what}: `{cmd}` timed out after {timeout:.0f} s")
    if result.exit_code == 127 and not result.stdout and result.stderr.startswith("cannot run"):
        raise ImageError(f"{what}: `{cmd}` {result.stderr}{' (' + hint + ')' if hint else ''}")
    if result.exit_code != 0:
        detail = result.stderr.strip() or result.stdout.strip() or "(no output)"
        raise ImageError(f"{what}: `{cmd}` failed with exit code {result.exit_code}: {detail}"
                         f"{chr(10) + hint if hint else ''}")
    return result


def decompress_external(argv: Sequence[str], payload: bytes, path: Path) -> bytes:
    """``payload`` through a decompressing filter (``zstd -d -c``); ImageError when it yields nothing."""
    result = proc.run_bytes(argv, input=payload, timeout=120)
    if result.exit_code == 127 and not result.stdout:
        raise ImageError(f"{path}: `{argv[0]}` is needed to decompress this file: {result.stderr}")
    if result.timed_out:
        raise ImageError(f"{path}: `{shlex.join(argv)}` timed out")
    # zstd/lz4 complain about the trailing size word of a kernel payload but still write the whole stream.
    if not result.stdout:
        raise ImageError(f"{path}: `{shlex.join(argv)}` failed: {result.stderr.strip()}")
    return result.stdout.encode("latin-1")


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".hx-{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
