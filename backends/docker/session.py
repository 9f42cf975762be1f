"""One scenario's world with a real Docker engine in it: a namespace session plus a private daemon.

`DockerSession` wraps a `NetnsSession` (the backend of the emulated world: switch `up`, router `rt`,
Docker host `host`, built by the engine through `apply`) and adds the containers Docker starts. Every
node answers `run`/`run_many`/`spawn`: a world node in its namespace, a container in its network
namespace, entered by the container's PID (`/proc/<pid>/ns/net`), so observation and probes use the
same `ip -json` and `ping` as on every other backend. A transient container (`docker run ... ping X`)
has already run its documented ping to completion when the engine asks for its reach check: the
session answers that probe with the container's own result (its exit status and output).

The daemon starts when the first Docker command runs (the host namespace must exist first) and is
stopped, with everything it made, when the session closes (see `backends.docker.daemon`). With several
Docker hosts (issue #13) each host gets its own daemon in its own namespace (`ensure_daemon(host)`), and
each container is asked of its own host's daemon (`host_of`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from backends.docker.daemon import Daemon
from harness import proc
from harness.errors import HarnessError
from harness.proc import BackgroundProcess, CommandResult

NETNS_DIR = "/run/netns"


class DockerSession:
    """A `Session` (backends.base) whose containers are real Docker containers."""

    observes = True

    def __init__(self, world, stack: ExitStack, image: Path, base_dir: str = "/tmp"):
        self.world = world  # the NetnsSession holding up, rt and host
        self.stack = stack
        self.image = image
        self.base_dir = base_dir
        self.kernel = world.kernel
        self.daemon: Daemon | None = None  # the first host's (the only one, in a single-host scenario)
        self.daemons: dict[str, Daemon] = {}  # host node -> its dockerd (issue #13: one per Docker host)
        self.containers: dict[str, str] = {}  # scenario name -> container id (running or not)
        self.host_of: dict[str, str] = {}  # scenario name -> the host whose daemon runs it
        self.finished: dict[str, CommandResult] = {}  # a transient container's documented ping
        self._pids: dict[str, int] = {}

    @property
    def prefix(self) -> str:
        return self.world.prefix

    # -- the daemon -------------------------------------------------------------------------------------

    def ensure_daemon(self, host: str = "host") -> Daemon:
        """The dockerd of a Docker host (a node of the world), started in its namespace on first use; the
        first host's is named as ever (`<prefix>-docker`), another's carries its host (`<prefix>-docker-hostb`)."""
        daemon = self.daemons.get(host)
        if daemon is None:
            netns = os.path.join(NETNS_DIR, self.world.physical_name(host))
            name = f"{self.prefix}-docker" if not self.daemons else f"{self.prefix}-docker-{host}"
            daemon = Daemon(name, netns, self.image, self.stack, self.base_dir)
            self.daemons[host] = daemon  # set first: its teardown is already on the stack once start() begins
            if self.daemon is None:
                self.daemon = daemon
            daemon.start()
        return daemon

    def daemon_of(self, container: str) -> Daemon | None:
        return self.daemons.get(self.host_of.get(container, ""), self.daemon)

    # -- containers ---------------------------------------------------------------------------------------

    def bind(self, name: str, container_id: str, host: str | None = None) -> None:
        self.containers[name] = container_id
        if host is not None:
            self.host_of[name] = host
        self._pids.pop(name, None)

    def forget(self, name: str) -> None:
        self.containers.pop(name, None)
        self._pids.pop(name, None)
        self.finished.pop(name, None)

    def invalidate(self) -> None:
        """Docker ran a command: container PIDs may have changed (stopped, removed, restarted)."""
        self._pids.clear()

    def pids(self, names: Sequence[str]) -> dict[str, int]:
        """PID of each named container's process (0: not running)."""
        wanted = [n for n in dict.fromkeys(names) if n not in self._pids and n in self.containers]
        by_daemon: dict[int, tuple[Daemon, list[str]]] = {}
        for n in wanted:  # each container is asked of its own host's daemon
            daemon = self.daemon_of(n)
            if daemon is not None:
                by_daemon.setdefault(id(daemon), (daemon, []))[1].append(n)
        for daemon, group in by_daemon.values():
            ids = [self.containers[n] for n in group]
            res = daemon.client(["inspect", "--format", "{{.Id}} {{.State.Pid}}", *ids], timeout=30)
            by_id = {}
            for line in res.stdout.splitlines():
                cid, _, pid = line.partition(" ")
                by_id[cid] = int(pid) if pid.strip().isdigit() else 0
            for n in group:
                self._pids[n] = by_id.get(self.containers[n], 0)
        return {n: self._pids.get(n, 0) for n in names}

    def container_netns(self, name: str) -> str:
        pid = self.pids([name])[name]
        if not pid:
            raise HarnessError(f"container {name} is not running")
        return f"/proc/{pid}/ns/net"

    # -- Session ------------------------------------------------------------------------------------------

    def apply(self, op) -> None:
        self.world.apply(op)

    def physical_name(self, node: str) -> str:
        if node in self.containers:
            return f"docker:{self.containers[node][:12]}"
        if node in self.finished:
            return f"docker:{node} (exited)"
        return self.world.physical_name(node)

    def netns_path(self, node: str) -> str:
        """A running container's namespace (by its PID), or the world node's file."""
        if node in self.containers and node not in self.finished:
            return self.container_netns(node)
        return os.path.join(NETNS_DIR, self.world.physical_name(node))

    def _job(self, node: str, argv: Sequence[str], pids: dict[str, int]) -> proc.Job | CommandResult:
        if node in self.finished:
            return self.finished[node]
        if node in self.containers:
            pid = pids.get(node, 0)
            if not pid:
                return CommandResult(node, tuple(argv), 127, "", f"container {node} is not running")
            # Its network and UTS namespaces: `hostname` there is the container's own.
            return proc.Job(argv, node=node, netns=f"/proc/{pid}/ns/net", uts=f"/proc/{pid}/ns/uts")
        return proc.Job(argv, node=node, netns=os.path.join(NETNS_DIR, self.world.physical_name(node)))

    def run(self, node: str, argv: Sequence[str], timeout: float = 10.0) -> CommandResult:
        return self.run_many([(node, argv)], timeout)[0]

    def run_many(self, jobs: Sequence[tuple[str, Sequence[str]]], timeout: float = 10.0) -> list[CommandResult]:
        pids = self.pids([n for n, _ in jobs if n in self.containers and n not in self.finished])
        planned = [self._job(node, argv, pids) for node, argv in jobs]
        real = [j for j in planned if isinstance(j, proc.Job)]
        done = iter(proc.run_many(real, timeout) if real else [])
        return [next(done) if isinstance(j, proc.Job) else j for j in planned]

    @contextmanager
    def spawn(self, node: str, argv: Sequence[str]) -> Iterator[BackgroundProcess]:
        if node in self.containers:
            netns = self.container_netns(node)
        else:
            netns = os.path.join(NETNS_DIR, self.world.physical_name(node))
        with proc.spawn(argv, node=node, netns=netns, gentle=True) as handle:
            yield handle
