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
itself is SIGKILLed (qemu, dockerd). A script registered with `fork_script` (the batch prober, the ARP
scanner) that `run_many` is asked to start as `python3 -I -S SCRIPT ...` runs as the script's `main` in a
fork of this interpreter instead (`_Forked`: 9 ms where an exec costs 350 ms under TCG).

Signals (`handle_signals`, `deferred_signals`, `finish_signals`): SIGINT and SIGTERM unwind the run
(KeyboardInterrupt, SystemExit(128+N)) so every undo runs, and a run that saw one always exits 128+N.
A Python signal handler that runs inside an at-fork hook (logging registers one; `os.fork` and
`subprocess` with a preexec_fn run them) or a `__del__` has its exception printed as "Exception
ignored" and dropped: measured, one SIGINT/SIGTERM in eight sent during a scenario with many
containers was lost that way and the run exited 0 with "passed". So every fork happens inside
`deferred_signals()`: a signal arriving there is only recorded, the fork completes (the child is
ours to kill), and the signal is raised when the section ends. Undos run to their end as well
(`UndoStack`, and the kill at the end of `spawn`): a signal arriving during a teardown waits for it.
Further signals while the first one unwinds are recorded, not raised: an interrupted undo would leak
what it was removing.

Temporary directories of a run carry their owner in their name, `hx<kind>-<pid>.<starttime>-XXXX`
(`temp_dir`, `owner_tag`; a directory shared by several processes lists them in `.owners` instead), so
`clean_temp_dirs` removes those of dead runs after a SIGKILL and never one of a live run.

No other module of the harness imports subprocess (tests/unit/test_layers.py checks it).
"""

from __future__ import annotations

import ctypes
import os
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from harness.errors import CommandFailed

CLONE_NEWNET = 0x40000000
CLONE_NEWUTS = 0x04000000
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
    uts: str | None = None  # path of a UTS namespace file to enter before exec (a container's hostname)
    hostname: str | None = None  # a new UTS namespace with this hostname, made before exec (its keeper)


def _enter_netns(fd: int) -> None:
    """In the forked child, before exec: enter the network namespace open on fd."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns into the node's network namespace: {os.strerror(err)}")


def _own_uts(hostname: str) -> None:
    """In the forked child, before exec: a UTS namespace of its own (unshare), named `hostname`."""
    name = hostname.encode()
    if _libc.unshare(CLONE_NEWUTS) != 0 or _libc.sethostname(name, len(name)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"a UTS namespace named {hostname}: {os.strerror(err)}")


def _child_setup(netns_fd: int | None, parent: int | None, uts_fd: int | None = None,
                 hostname: str | None = None) -> None:
    if parent is not None:
        # SIGKILL the child when the harness dies without running its finally blocks (SIGKILL, OOM).
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    if netns_fd is not None:
        _enter_netns(netns_fd)
    if uts_fd is not None and _libc.setns(uts_fd, CLONE_NEWUTS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns into the node's UTS namespace: {os.strerror(err)}")
    if hostname is not None:
        _own_uts(hostname)


def _popen(job: Job, stdout, stderr, *, text: bool = True, die_with_parent: bool = False) -> subprocess.Popen:
    main = _forkable_main(job) if stdout is subprocess.PIPE and stderr is subprocess.PIPE and text else None
    fd = os.open(job.netns, os.O_RDONLY | os.O_CLOEXEC) if job.netns else None
    uts_fd = os.open(job.uts, os.O_RDONLY | os.O_CLOEXEC) if job.uts else None
    parent = os.getpid() if die_with_parent else None
    child = None
    try:
        preexec = None
        if fd is not None or parent is not None or uts_fd is not None or job.hostname is not None:
            def preexec():
                _child_setup(fd, parent, uts_fd, job.hostname)
        # A signal during the fork is raised when the section ends, once `child` is known: a
        # signal raised inside Popen would lose the child (started, never killed) or be swallowed.
        with deferred_signals():
            if main is not None:
                child = _Forked(job, main, lambda: _child_setup(fd, parent, uts_fd, job.hostname))
                return child
            child = subprocess.Popen(
                list(job.argv), cwd=job.cwd, env=dict(job.env) if job.env is not None else None,
                stdin=subprocess.PIPE if job.input is not None else subprocess.DEVNULL,
                stdout=stdout, stderr=stderr, text=text, pass_fds=tuple(x for x in (fd, uts_fd) if x is not None),
                preexec_fn=preexec, start_new_session=True)
        return child
    except BaseException:
        if child is not None:
            kill_group(child)
        raise
    finally:
        for opened in (fd, uts_fd):
            if opened is not None:
                os.close(opened)


# -- scripts run in a fork of this interpreter -----------------------------------------------------------
#
# Under TCG in the VM guest an exec of `python3 -I -S prober.py` costs about 350 ms (interpreter start,
# compiling the script, importing ctypes) where a fork of the loaded harness costs 9 ms (measured in the
# guest, 2026-11-30). A script registered here (`fork_script`) keeps its command line, which stays the
# evidence and what a remote session (vagrant) runs, but a local `run_many` of `python3 -I -S SCRIPT ARGS`
# forks this process and calls the script's `main` in the child instead of exec'ing a new interpreter.
# The child runs only the script's own code (its own netlink decoder, its own sockets): a different path
# from the code that configured the kernel, as with an exec. It leads its own process group, enters the
# job's namespace as an exec'd child would, writes to the pipes as fds 1 and 2, and leaves with
# os._exit (no parent buffer flushed twice, no undo run twice).

_FORKABLE: dict[str, Callable[[list[str]], int]] = {}


def fork_script(script: str | os.PathLike, main: Callable[[list[str]], int]) -> None:
    """Run `python3 -I -S SCRIPT ARGS...` started by `run_many` as `main([SCRIPT, *ARGS])` in a fork of
    this interpreter (the script's own `main(argv)`, argv as `sys.argv` would be)."""
    _FORKABLE[os.fspath(script)] = main


def _forkable_main(job: Job) -> Callable[[list[str]], int] | None:
    argv = list(job.argv)
    if len(argv) < 4 or argv[0] != sys.executable or argv[1:3] != ["-I", "-S"]:
        return None
    if job.env is not None or job.cwd is not None or job.input is not None:
        return None  # an environment or directory of its own: exec, as asked
    return _FORKABLE.get(argv[3])


class _Forked:
    """A registered script's `main` running in a forked child: what `run_many` and `kill_group` use of a
    `subprocess.Popen` (pid, args, returncode, communicate, poll, wait, stdout, stderr)."""

    def __init__(self, job: Job, main: Callable[[list[str]], int], setup: Callable[[], None]):
        self.args = list(job.argv)
        self.returncode: int | None = None
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            _forked_child(main, self.args[3:], setup, (out_r, err_r), out_w, err_w)
        self.pid = pid
        _own_group(pid)  # also in the child: whichever runs first, the group exists before any kill
        os.close(out_w)
        os.close(err_w)
        self.stdout = os.fdopen(out_r, "rb", buffering=0)
        self.stderr = os.fdopen(err_r, "rb", buffering=0)
        self._chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}

    def communicate(self, input=None, timeout: float | None = None) -> tuple[str, str]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            for pipe in (self.stdout, self.stderr):
                if not pipe.closed:
                    sel.register(pipe, selectors.EVENT_READ)
            while sel.get_map():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout)
                for key, _ in sel.select(left):
                    data = os.read(key.fd, 1 << 16)
                    if data:
                        self._chunks[key.fd].append(data)
                    else:
                        sel.unregister(key.fileobj)
                        key.fileobj.close()
        self.wait()
        out, err = (b"".join(self._chunks[k]).decode(errors="replace") for k in self._chunks)
        return out, err

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is None:
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.005)
        return self.returncode


def _own_group(pid: int) -> None:
    try:
        os.setpgid(pid, pid)
    except (ProcessLookupError, PermissionError):
        pass  # the child has exited already, or made the group itself


def _forked_child(main: Callable[[list[str]], int], args: list[str], setup: Callable[[], None],
                  parent_ends: tuple[int, int], out_w: int, err_w: int) -> None:
    """In the forked child: its own process group, the pipes as fds 1 and 2, the job's namespaces, then main."""
    code = 1
    try:
        _own_group(0)
        for fd in parent_ends:
            os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        for fd in (null, out_w, err_w):
            os.close(fd)
        # Fresh streams on fds 1 and 2: the parent's may hold buffered text, which is the parent's to write.
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
        setup()
        code = main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        try:
            sys.stderr.write(traceback.format_exc())
        except BaseException:
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) and 0 <= code < 256 else 1)


# -- signals ---------------------------------------------------------------------------------------------

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class _SignalState:
    main_pid: int = 0  # the process whose handler unwinds; a forked helper exits instead
    received: int | None = None  # the first SIGINT/SIGTERM of this run
    raised: bool = False  # whether an exception was raised for it
    deferring: int = 0  # depth of deferred_signals() sections
    finished: bool = False  # the run is over: record, never raise


_signals = _SignalState()


def _on_signal(signum: int, frame) -> None:
    if os.getpid() != _signals.main_pid:
        # A forked helper (pyroute2 forks to open a socket in a namespace; a preexec_fn child before
        # exec) inherits this handler: it must die quietly, never unwind the parent's stacks.
        os._exit(128 + signum)
    if _signals.received is None:
        _signals.received = signum
    if _signals.deferring or _signals.finished or _signals.raised:
        return
    _raise_signal(signum)


def _raise_signal(signum: int) -> None:
    _signals.raised = True
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)  # SIGTERM unwinds like Ctrl-C: every ExitStack undo runs


def handle_signals() -> dict[int, object]:
    """Install the run's SIGINT/SIGTERM handler (main thread only); returns the previous handlers."""
    global _signals
    _signals = _SignalState(main_pid=os.getpid())
    return {sig: signal.signal(sig, _on_signal) for sig in SIGNALS}


def signal_received() -> int | None:
    """The first SIGINT/SIGTERM this run saw (whether or not its exception reached the top), or None."""
    return _signals.received


@contextmanager
def deferred_signals() -> Iterator[None]:
    """A section no signal interrupts (a fork, a namespace create and recording what it made):
    a signal arriving inside is raised when the outermost section ends. Only the main thread's sections
    count: Python runs signal handlers there, so another thread's fork cannot swallow one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _signals.deferring += 1
    try:
        yield
    finally:
        _signals.deferring -= 1
        if not _signals.deferring and _signals.received is not None and not _signals.raised \
                and not _signals.finished and os.getpid() == _signals.main_pid:
            _raise_signal(_signals.received)


class UndoStack(ExitStack):
    """An ExitStack whose undos run to their end: a signal arriving while they run (a normal teardown, or
    one a first signal started) is raised after the last one, never in the middle of one, which would
    skip it and leak what it was removing."""

    def __exit__(self, *exc_details):
        with deferred_signals():
            return super().__exit__(*exc_details)


def finish_signals(status: int, previous: Mapping[int, object]) -> int:
    """The run's exit status: 128+N if it saw signal N at any time, whatever became of its exception.

    Handlers go back to `previous` with the signals blocked, so no signal falls between two handlers:
    one arriving after this is handled by `previous` (SIG_DFL: the process dies of it, never exit 0).
    """
    _signals.finished = True
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)  # runs every handler already due, first
    try:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if _signals.received is not None:
            status = 128 + _signals.received
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    return status


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
            with deferred_signals():  # started and listed (to be killed) with no signal between
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
    proc = None
    try:
        with deferred_signals():  # started and in `proc` (to be killed) with no signal between
            proc = _popen(Job(argv, input=""), subprocess.PIPE, subprocess.PIPE, text=False)
    except (FileNotFoundError, PermissionError) as exc:
        return _not_found(Job(argv), exc, start)
    except BaseException:
        if proc is not None:
            kill_group(proc)
        raise
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
          output_dir: str | os.PathLike | None = None, hostname: str | None = None) -> Iterator[BackgroundProcess]:
    """Start argv in the background; on leaving the block (any path) end its process group.

    With `hostname`, the process gets a UTS namespace of its own with that name (a container's keeper).

    Output goes to `stdout`/`stderr` files in `output_dir` (kept: the caller owns it) or in a temporary
    directory removed at the end (the output is then kept in memory, `BackgroundProcess.final`).
    """
    with tempfile.TemporaryDirectory(prefix=f"hxspawn-{owner_tag()}-") as tmp:
        where = os.fspath(output_dir) if output_dir is not None else tmp
        out_path, err_path = os.path.join(where, "stdout"), os.path.join(where, "stderr")
        proc = handle = None
        try:
            # Started and in `proc` (killed below, whatever happens) with no signal between.
            with deferred_signals():
                with open(out_path, "w") as out, open(err_path, "w") as err:
                    try:
                        proc = _popen(Job(argv, node, netns, cwd, env, hostname=hostname), out, err,
                                      die_with_parent=die_with_parent)
                    except OSError as exc:
                        raise CommandFailed(tuple(argv), 127, "", f"cannot start: {exc.strerror or exc}",
                                            where=node) from None
                handle = BackgroundProcess(proc.pid, proc, out_path, err_path)
            yield handle
        finally:
            with deferred_signals():  # a signal now must not cut the kill short
                if proc is not None:
                    kill_group(proc, gentle=gentle)
                if handle is not None:
                    handle.final = handle.output()


# -- temporary directories and their owners -----------------------------------------------------------

_TAGGED = re.compile(r"^hx(spawn|vm-share|vm|ctl|bench)-(\d+)\.(\d+)-")  # hx<kind>-<pid>.<starttime>-XXXX
_SHARED = re.compile(r"^hxbatch-")  # shared by a run's processes, who are listed in OWNERS_FILE
OWNERS_FILE = ".owners"


def process_start(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (when the process started, in clock ticks after boot); None if it is
    gone or a zombie (dead, only not yet reaped). With the PID it names a process: PIDs are reused."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 2, the command name, is in parentheses and may itself hold spaces and parentheses.
    rest = stat[stat.rfind(")") + 2:].split()
    if not rest or rest[0] in ("Z", "X"):  # field 3: the state
        return None
    try:
        return int(rest[22 - 3])
    except (IndexError, ValueError):
        return None


def owner_tag(pid: int | None = None) -> str:
    """`<pid>.<starttime>`: this process (or `pid`) as the owner of a temporary directory."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}.{process_start(pid) or 0}"


def _tag_alive(tag: str) -> bool:
    pid, _, start = tag.strip().partition(".")
    if not (pid.isdigit() and start.isdigit()):
        return False
    return process_start(int(pid)) == int(start)


def temp_dir(kind: str) -> str:
    """A new temporary directory `hx<kind>-<owner>-XXXX` (kind: vm, vm-share, ctl, bench) owned by this
    process: `harness clean` removes it once the process is gone."""
    return tempfile.mkdtemp(prefix=f"hx{kind}-{owner_tag()}-")


def add_owner(directory: str | os.PathLike) -> None:
    """Add this process to the owners of a directory several processes share (a pytest-xdist run's batch)."""
    with open(os.path.join(directory, OWNERS_FILE), "a") as f:
        f.write(owner_tag() + "\n")  # one short append: atomic among concurrent writers


def temp_dir_alive(path: str | os.PathLike) -> bool | None:
    """Whether a harness temporary directory's owner still runs; None when it names no owner (not ours)."""
    name = os.path.basename(os.fspath(path))
    tagged = _TAGGED.match(name)
    if tagged:
        return _tag_alive(f"{tagged.group(2)}.{tagged.group(3)}")
    if _SHARED.match(name):
        try:
            with open(os.path.join(path, OWNERS_FILE)) as f:
                tags = f.read().split()
        except OSError:
            return None
        return any(_tag_alive(tag) for tag in tags) if tags else None
    return None


def clean_temp_dirs(directory: str | None = None) -> tuple[list[str], list[str]]:
    """Remove the harness's temporary directories whose owners are all dead; (removed, kept) paths, kept
    ones being live runs'. Directories that name no owner (made by an older version) are left alone."""
    directory = directory or tempfile.gettempdir()
    removed, kept = [], []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return removed, kept
    for name in names:
        path = os.path.join(directory, name)
        if not name.startswith("hx") or os.path.islink(path) or not os.path.isdir(path):
            continue
        alive = temp_dir_alive(path)
        if alive is None:
            continue
        if alive:
            kept.append(path)
        else:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed, kept
