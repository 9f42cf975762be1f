"""Every process the harness starts: one place, one discipline (deadline, process group, no orphan).

`run(argv, ...)` runs one command to completion and returns a `CommandResult` (tox's `Outcome`:
exit code, stdout, stderr, start, end, `assert_success()`); `run_many(jobs, timeout)` runs `Job`s at
once under one deadline (concurrent probes cost one timeout, not one each); `spawn(argv, ...)` starts a
`BackgroundProcess` whose output goes to files (a chatty server never blocks on a full pipe) and ends it
when its block exits. Each child leads its own process group, so a timeout, an exception or Ctrl-C kills
the child and everything it started; when a later start of a batch fails, the ones already started are
killed before the error propagates. A `Job` may name a network namespace (a /run/netns path): the child
enters it between fork and exec (what `nsenter --net=` does, minus the extra exec, which matters under
TCG where every exec is slow). `die_with_parent` asks the kernel to SIGKILL the child if the harness
itself is SIGKILLed (qemu, dockerd).

No other module of the harness imports subprocess (tests/unit/test_layers.py checks it).
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from harness.errors import CommandFailed

CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class CommandResult:
    """The outcome of one argv: `Outcome(exit_code, out, err, start, end)`, and where it ran."""

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
        return shlex.join(self.argv)

    def assert_success(self) -> CommandResult:
        if not self.ok:
            raise CommandFailed(self.argv, self.exit_code, self.stdout, self.stderr, where=self.node)
        return self


@dataclass(frozen=True)
class Job:
    """One command to start: argv, and optionally the namespace, directory and environment it runs in."""

    argv: Sequence[str]
    node: str = ""  # a label for results and errors ("host", "c1", "vagrant")
    netns: str | None = None  # path of a network namespace file to enter before exec
    cwd: str | os.PathLike | None = None
    env: Mapping[str, str] | None = None
    input: str | None = None


def _enter_netns(fd: int) -> None:
    """In the forked child, before exec: enter the network namespace open on fd."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns into the node's network namespace: {os.strerror(err)}")


def _child_setup(netns_fd: int | None, parent: int | None) -> None:
    if parent is not None:
        # SIGKILL the child when the harness dies without running its finally blocks (SIGKILL, OOM).
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    if netns_fd is not None:
        _enter_netns(netns_fd)


def _popen(job: Job, stdout, stderr, *, text: bool = True, die_with_parent: bool = False) -> subprocess.Popen:
    fd = os.open(job.netns, os.O_RDONLY | os.O_CLOEXEC) if job.netns else None
    parent = os.getpid() if die_with_parent else None
    try:
        preexec = None
        if fd is not None or parent is not None:
            def preexec():
                _child_setup(fd, parent)
        return subprocess.Popen(
            list(job.argv), cwd=job.cwd, env=dict(job.env) if job.env is not None else None,
            stdin=subprocess.PIPE if job.input is not None else subprocess.DEVNULL,
            stdout=stdout, stderr=stderr, text=text, pass_fds=(fd,) if fd is not None else (),
            preexec_fn=preexec, start_new_session=True)
    finally:
        if fd is not None:
            os.close(fd)


def kill_group(proc: subprocess.Popen, gentle: bool = False, grace: float = 2.0) -> None:
    """End a child we started and its process group (it leads one): TERM first when gentle, then KILL."""
    if proc.poll() is None and gentle:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # The group may outlive its leader (a daemon's children): KILL it whatever the leader did.
    _signal_group(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _not_found(job: Job, exc: OSError, start: float) -> CommandResult:
    return CommandResult(job.node, tuple(job.argv), 127, "", f"cannot run {job.argv[0]!r}: {exc.strerror or exc}",
                         start, time.time())


def run_many(jobs: Sequence[Job], timeout: float = 10.0) -> list[CommandResult]:
    """Start every job at once and wait for all under one deadline; a job past it is killed (timed_out).

    A command that cannot start (no such program) is a result with exit code 127, not an exception. If
    anything else interrupts the batch (Ctrl-C, a failed fork), every started child is killed first.
    """
    started: list[tuple[Job, subprocess.Popen | None, float, CommandResult | None]] = []
    try:
        for job in jobs:
            start = time.time()
            try:
                started.append((job, _popen(job, subprocess.PIPE, subprocess.PIPE), start, None))
            except (FileNotFoundError, PermissionError) as exc:
                started.append((job, None, start, _not_found(job, exc, start)))
        deadline = time.monotonic() + timeout
        results = []
        for job, proc, start, failed in started:
            if proc is None:
                results.append(failed)
                continue
            timed_out = False
            try:
                out, err = proc.communicate(job.input, timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
                kill_group(proc)
                out, err = _drain(proc)
            results.append(CommandResult(job.node, tuple(job.argv), -signal.SIGKILL if timed_out else proc.returncode,
                                         out or "", err or "", start, time.time(), timed_out))
        return results
    except BaseException:
        for _, proc, _, _ in started:
            if proc is not None:
                kill_group(proc)
        raise


def _drain(proc: subprocess.Popen) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # a grandchild that left the group still holds the pipes
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait()
        return "", ""


def run(argv: Sequence[str], *, timeout: float = 60.0, node: str = "", netns: str | None = None,
        cwd: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
        input: str | None = None) -> CommandResult:
    """Run one command to completion (see `run_many`)."""
    return run_many([Job(argv, node, netns, cwd, env, input)], timeout)[0]


def run_bytes(argv: Sequence[str], *, input: bytes, timeout: float = 120.0) -> CommandResult:
    """Run a filter over binary data (a decompressor): stdout is returned as latin-1 text, byte for byte."""
    start = time.time()
    try:
        proc = _popen(Job(argv, input=""), subprocess.PIPE, subprocess.PIPE, text=False)
    except (FileNotFoundError, PermissionError) as exc:
        return _not_found(Job(argv), exc, start)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.communicate()
        return CommandResult("", tuple(argv), -signal.SIGKILL, "", "", start, time.time(), True)
    except BaseException:
        kill_group(proc)
        raise
    return CommandResult("", tuple(argv), proc.returncode, out.decode("latin-1"),
                         err.decode(errors="replace"), start, time.time())


@dataclass
class BackgroundProcess:
    """A process started by `spawn`; its output goes to files until its block exits."""

    pid: int
    popen: subprocess.Popen
    stdout_path: str
    stderr_path: str
    final: tuple[str, str] | None = field(default=None)  # kept when the files go

    def output(self) -> tuple[str, str]:
        """What it printed so far (complete once the spawn block has exited)."""
        if self.final is not None:
            return self.final
        return _read_text(self.stdout_path), _read_text(self.stderr_path)

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float) -> int | None:
        """Its exit status, or None if it still runs after `timeout` seconds."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        kill_group(self.popen)


def _read_text(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


@contextmanager
def spawn(argv: Sequence[str], *, node: str = "", netns: str | None = None, cwd: str | os.PathLike | None = None,
          env: Mapping[str, str] | None = None, die_with_parent: bool = False, gentle: bool = True,
          output_dir: str | os.PathLike | None = None) -> Iterator[BackgroundProcess]:
    """Start argv in the background; on leaving the block (any path) end its process group.

    Output goes to `stdout`/`stderr` files in `output_dir` (kept: the caller owns it) or in a temporary
    directory removed at the end (the output is then kept in memory, `BackgroundProcess.final`).
    """
    with tempfile.TemporaryDirectory(prefix="hxspawn-") as tmp:
        where = os.fspath(output_dir) if output_dir is not None else tmp
        out_path, err_path = os.path.join(where, "stdout"), os.path.join(where, "stderr")
        with open(out_path, "w") as out, open(err_path, "w") as err:
            try:
                proc = _popen(Job(argv, node, netns, cwd, env), out, err, die_with_parent=die_with_parent)
            except OSError as exc:
                raise CommandFailed(tuple(argv), 127, "", f"cannot start: {exc.strerror or exc}", where=node) from None
        handle = BackgroundProcess(proc.pid, proc, out_path, err_path)
        try:
            yield handle
        finally:
            kill_group(proc, gentle=gentle)
            handle.final = handle.output()
