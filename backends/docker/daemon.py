"""A private Docker 20.10 daemon inside one namespace, and everything needed to leave nothing behind.

`Daemon.start()` runs `dockerd` the way a default install runs it (default `docker0` bridge, default
address pools, ip_forward), but entered into the emulated world's `host` network namespace (setns
between fork and exec, as `nsenter --net=` does; never `ip netns exec`, which remounts /sys), with
`--iptables=false --ip6tables=false` and everything else private: data root, exec root, pidfile, API
socket, daemon.json, trust key, cgroup parent, all under one directory named after the session's prefix
(`/tmp/hx<run><worker><seq>-docker`). The offline image is imported once the API answers.

Every create pushes its undo onto the session's ExitStack at once. In unwinding order: containers are
removed (`docker rm -f`) and dockerd is asked to stop (SIGTERM, which also stops its containerd);
dockerd's process group is killed; any process that still names this daemon's exec root (dockerd,
containerd, a containerd-shim) or runs in its cgroup parent is SIGKILLed by PID; every mount under the
directory (the data root's bind mount, overlay mounts, the nsfs mounts of the container namespaces and
of `netns/default`) is unmounted; the cgroup parent is removed; the directory is removed.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from harness import proc
from harness.errors import HarnessError
from harness.proc import CommandResult

DOCKER = "/usr/bin/docker"  # the 20.10 client; a newer one elsewhere on PATH speaks a different dialect
DOCKERD_CANDIDATES = ("/usr/sbin/dockerd", "/usr/bin/dockerd")
CONTAINERD_CANDIDATES = ("/usr/bin/containerd", "/usr/sbin/containerd")
START_TIMEOUT = float(os.environ.get("HARNESS_DOCKER_START_TIMEOUT", 60))  # the VM guest allows more (TCG)
STORAGE_DRIVER_ENV = "HARNESS_DOCKER_STORAGE_DRIVER"  # dockerd --storage-driver when set
OWN_CONTAINERD_ENV = "HARNESS_DOCKER_OWN_CONTAINERD"  # set: containerd is started here, dockerd --containerd
STOP_TIMEOUT = 20.0
RESTART_STOP_TIMEOUT = float(os.environ.get("HARNESS_DOCKER_RESTART_STOP_TIMEOUT", 60))
MNT_DETACH = 2
# Directories dockerd (plugin discovery) and containerd-shim (its sockets) create outside the private ones.
# Removed at the end when empty (rmdir: never anyone's content); not only when this daemon created them,
# as a daemon of a parallel run may have created them and ended first.
SHIM_SOCKETS = "/run/containerd/s"
SHARED_DIRS = ("/run/docker/plugins", "/run/docker", "/run/containerd/s", "/run/containerd")
_libc = ctypes.CDLL(None, use_errno=True)


def find_binary(candidates: Sequence[str]) -> str | None:
    return next((p for p in candidates if os.access(p, os.X_OK)), None)


def missing_binaries() -> list[str]:
    """The docker.io pieces that are not installed (empty when the engine can run here)."""
    missing = []
    if not os.access(DOCKER, os.X_OK):
        missing.append(DOCKER)
    if find_binary(DOCKERD_CANDIDATES) is None:
        missing.append("dockerd")
    if find_binary(CONTAINERD_CANDIDATES) is None:
        missing.append("containerd")
    if shutil.which("containerd-shim-runc-v2", path="/usr/bin:/usr/sbin:/bin:/sbin") is None:
        missing.append("containerd-shim-runc-v2")
    if shutil.which("runc", path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
        missing.append("runc")
    return missing


class Daemon:
    """One private dockerd. `start()` pushes every undo onto `stack`; `client()` runs the 20.10 CLI."""

    def __init__(self, name: str, netns_path: str, image: Path, stack: ExitStack, base_dir: str = "/tmp"):
        self.name = name  # the session prefix plus "-docker": every path and the cgroup parent carry it
        self.netns_path = netns_path
        self.image = image
        self.stack = stack
        self.base = Path(base_dir) / name
        self.data = self.base / "d"
        self.exec_root = self.base / "e"
        self.socket = self.exec_root / "docker.sock"
        self.cgroup_parent = name
        self.handle: proc.BackgroundProcess | None = None
        self.argv: list[str] = []
        self._spawned = ExitStack()  # the running dockerd's spawn
        self.own_containerd = 0  # the containerd started here (OWN_CONTAINERD_ENV), 0 when dockerd starts its own
        self.version = ""
        self.timings: dict[str, float] = {}
        self.shim_sockets: set[str] = set()  # every shim socket seen, to prove none is left
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        self.env["DOCKER_CONFIG"] = str(self.base / "client")  # the CLI writes nothing into ~/.docker

    # -- the client -------------------------------------------------------------------------------

    def client(self, args: Sequence[str], timeout: float = 60.0, node: str = "docker") -> CommandResult:
        return proc.run([DOCKER, "-H", f"unix://{self.socket}", *args], timeout=timeout, node=node, env=self.env)

    def client_argv(self, args: Sequence[str]) -> list[str]:
        return [DOCKER, "-H", f"unix://{self.socket}", *args]

    # -- start --------------------------------------------------------------------------------------

    def start(self) -> None:
        dockerd = find_binary(DOCKERD_CANDIDATES)
        if dockerd is None:
            raise HarnessError("dockerd is not installed (apt-get install docker.io)")
        t0 = time.perf_counter()
        try:
            self.base.mkdir(mode=0o700)  # exclusive: a leftover of the same name is never adopted
        except FileExistsError:
            raise HarnessError(f"{self.base} exists already (a killed run's daemon? `harness clean` removes it)") \
                from None
        self.stack.callback(shutil.rmtree, self.base, True)
        self.stack.callback(_remove_if_empty, SHARED_DIRS)
        self.stack.callback(self._unmount_and_uncgroup)
        self.stack.callback(self._kill_strays)
        for d in (self.data, self.exec_root, self.base / "client", self.base / "cid"):
            d.mkdir(mode=0o700)
        config = self.base / "daemon.json"
        # Not /etc/docker/daemon.json: nothing of the machine's setup; the trust key not in /etc/docker.
        config.write_text(json.dumps({"deprecated-key-path": f"{self.data}/key.json"}))
        argv = [
            dockerd, "--iptables=false", "--ip6tables=false",
            f"--data-root={self.data}", f"--exec-root={self.exec_root}", f"--pidfile={self.exec_root}/dockerd.pid",
            "-H", f"unix://{self.socket}", f"--config-file={config}",
            # cgroupfs whatever the host runs (20.10 picks systemd on a cgroup-v2 systemd host, whose
            # parent would have to be a slice): containers land in /sys/fs/cgroup/[<ctl>/]<name>/<id>.
            "--exec-opt", "native.cgroupdriver=cgroupfs", f"--cgroup-parent=/{self.cgroup_parent}",
        ]
        # The VM guest (backends.vm, docker mode) asks for vfs: no overlay module, nothing to mount per
        # container. (It also sets dockerd's own DOCKER_RAMDISK: its root is an initramfs, where
        # pivot_root fails; dockerd inherits this process's environment.)
        storage = os.environ.get(STORAGE_DRIVER_ENV)
        if storage:
            argv.append(f"--storage-driver={storage}")
        if os.environ.get(OWN_CONTAINERD_ENV):
            argv.append(f"--containerd={self._start_containerd()}")
        self.argv = argv
        self._spawn()
        self.timings["daemon_start"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        res = self.client(["import", "--change", 'CMD ["/bin/sh"]', str(self.image), "alpine:latest"], timeout=120)
        if not res.ok:
            raise HarnessError(f"importing the offline image {self.image} failed: {res.stderr.strip()}")
        self.timings["image_import"] = time.perf_counter() - t1

    def _spawn(self) -> None:
        """dockerd with `self.argv` in the host namespace; its graceful stop is on the stack right after.
        Its spawn has a stack of its own, so a restart ends the old one's process group at once (never
        later, when its PID may be another process's)."""
        own = ExitStack()
        self.stack.callback(own.close)  # a no-op once a restart closed it
        self.handle = own.enter_context(
            proc.spawn(self.argv, node="dockerd", netns=self.netns_path, die_with_parent=True, gentle=True))
        self._spawned = own
        self.stack.callback(self._stop)
        self._wait_ready()

    def restart(self) -> None:
        """`systemctl restart docker` (or `dockerd restart`) as the service manager does it: SIGTERM to
        dockerd, which stops every container (live-restore is off) and its containerd, waiting for it to
        exit; then the same dockerd (same data root, exec root, socket and namespace) again, until its
        API answers. On start it restores its networks and restarts the containers whose restart policy
        says so (moby v20.10.24 daemon/daemon.go restore). Container PIDs change: callers re-discover
        them."""
        t0 = time.perf_counter()
        if self.handle is None or self.handle.poll() is not None:
            raise HarnessError(f"dockerd is not running, cannot restart it: {self._log_tail()}")
        self.shim_sockets.update(filter(None, map(shim_socket, self._ours())))
        os.kill(self.handle.pid, signal.SIGTERM)
        # dockerd gives its containers their stop timeout (10 s for a shell that ignores SIGTERM as PID
        # 1) within its own shutdown timeout (15 s), then stops containerd.
        deadline = time.monotonic() + RESTART_STOP_TIMEOUT
        while self.handle.wait(0.1) is None:
            if "Daemon shutdown complete" in self.handle.output()[1]:
                self.handle.wait(2.0)  # only its closed containerd connection left (see _stop)
                break
            if time.monotonic() > deadline:
                raise HarnessError(f"dockerd did not stop within {RESTART_STOP_TIMEOUT:g} s of SIGTERM: "
                                   f"{self._log_tail()}")
        self._spawned.close()  # its process group: nothing of the old daemon may serve the new one's socket
        old = self._ours()
        deadline = time.monotonic() + RESTART_STOP_TIMEOUT
        old = [p for p in old if p != self.own_containerd]
        while [p for p in old if _alive(p) and _is_daemon(p)] and time.monotonic() < deadline:
            time.sleep(0.1)  # its containerd ends after it; a new one must not meet the old socket
        self.timings["daemon_stop_for_restart"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        self._spawn()
        self.timings["daemon_restart"] = time.perf_counter() - t1

    def _start_containerd(self) -> str:
        """containerd started here, not by dockerd (the VM guest asks for it, OWN_CONTAINERD_ENV): dockerd
        gives the containerd it supervises 15 s to answer, which a loaded TCG guest exceeds ("failed to
        start containerd: timeout waiting for containerd to start"); a given one it waits 60 s for. Its
        config, state and socket are under the exec root, so teardown finds it and its shims as ever."""
        containerd = find_binary(CONTAINERD_CANDIDATES)
        if containerd is None:
            raise HarnessError("containerd is not installed (apt-get install docker.io)")
        state = self.exec_root / "containerd"
        state.mkdir(mode=0o700)
        sock = state / "containerd.sock"
        config = self.exec_root / "containerd.toml"
        config.write_text(f'version = 2\nroot = "{self.data}/containerd"\nstate = "{state}/state"\n'
                          'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                          f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n')
        handle = self.stack.enter_context(proc.spawn([containerd, "--config", str(config)], node="containerd",
                                                     netns=self.netns_path, die_with_parent=True, gentle=True))
        self.own_containerd = handle.pid  # outlives a restart of dockerd, as a separate service would
        deadline = time.monotonic() + START_TIMEOUT
        while not sock.is_socket():
            if handle.poll() is not None:
                out, err = handle.output()
                raise HarnessError(f"containerd exited while starting: {' | '.join((out + err).splitlines()[-8:])}")
            if time.monotonic() > deadline:
                raise HarnessError(f"containerd did not listen on {sock} within {START_TIMEOUT:g} s")
            time.sleep(0.1)
        return str(sock)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            res = self.client(["version", "--format", "{{.Server.Version}}"], timeout=10)
            if res.ok and res.stdout.strip():
                self.version = res.stdout.strip()
                return
            code = self.handle.poll()
            if code is not None:
                raise HarnessError(f"dockerd exited {code} while starting: {self._log_tail()}")
            if time.monotonic() > deadline:
                raise HarnessError(f"dockerd did not answer within {START_TIMEOUT:g} s: {self._log_tail()}")
            time.sleep(0.05)

    def _log_tail(self, lines: int = 8) -> str:
        if self.handle is None:
            return ""
        out, err = self.handle.output()
        return " | ".join((out + err).strip().splitlines()[-lines:])

    def tag(self, image: str) -> str | None:
        """Make `image` another name of the offline image; Docker's error, or None."""
        res = self.client(["tag", "alpine:latest", image if ":" in image.rsplit("/", 1)[-1] else f"{image}:latest"])
        return None if res.ok else res.stderr.strip()

    # -- stop ------------------------------------------------------------------------------------------

    def _stop(self) -> None:
        """Containers first (quickly, with SIGKILL), then dockerd, which stops its containerd."""
        t0 = time.perf_counter()
        if self.handle is None or self.handle.poll() is not None:
            return
        self.shim_sockets.update(filter(None, map(shim_socket, self._ours())))
        try:
            ids = self.client(["ps", "-aq"], timeout=20).stdout.split()
            if ids:
                self.client(["rm", "-f", *ids], timeout=60)
        finally:
            try:
                os.kill(self.handle.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            # After "Daemon shutdown complete" (containerd stopped, mounts released) dockerd only retries its
            # closed containerd connection for about a second: nothing worth waiting for.
            deadline = time.monotonic() + STOP_TIMEOUT
            while self.handle.wait(0.05) is None and time.monotonic() < deadline:
                if "Daemon shutdown complete" in self.handle.output()[1]:
                    self.handle.kill()
                    break
            self.timings["daemon_stop"] = time.perf_counter() - t0

    def _ours(self) -> list[int]:
        """PIDs of processes that belong to this daemon: they name its exec root or run in its cgroups."""
        marker = str(self.exec_root).encode()
        cgroup = f"/{self.cgroup_parent}/".encode()
        me = os.getpid()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
                with open(f"/proc/{entry}/cgroup", "rb") as f:
                    groups = f.read()
            except OSError:
                continue
            if (marker in cmdline or cgroup in groups) and _alive(int(entry)):
                found.append(int(entry))
        return found

    def _kill_strays(self) -> None:
        pids = self._ours()
        sockets = [path for path in map(shim_socket, pids) if path]
        self.shim_sockets.update(sockets)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            if pids:
                time.sleep(0.05)
        for path in sockets:  # a killed shim leaves its socket behind
            try:
                os.unlink(path)
            except OSError:
                pass

    def _unmount_and_uncgroup(self) -> None:
        for mount in sorted(mounts_under(self.base), key=len, reverse=True):
            if _libc.umount2(mount.encode(), MNT_DETACH) != 0:
                err = ctypes.get_errno()
                if err not in (22, 2):  # EINVAL: not a mount point any more; ENOENT: gone
                    raise OSError(err, f"umount {mount}: {os.strerror(err)}")
        for top in cgroup_dirs(self.cgroup_parent):
            for root, dirs, _ in os.walk(top, topdown=False):
                for d in dirs:
                    _rmdir(os.path.join(root, d))
            _rmdir(top)

    # -- what is left (for tests and reports) -------------------------------------------------------------

    def leftovers(self) -> list[str]:
        out = [f"process {pid}" for pid in self._ours()]
        out += [f"mount {m}" for m in mounts_under(self.base)]
        out += [f"cgroup {c}" for c in cgroup_dirs(self.cgroup_parent)]
        out += [f"shim socket {s}" for s in sorted(self.shim_sockets) if os.path.exists(s)]
        if self.base.exists():
            out.append(f"directory {self.base}")
        return out


def _is_daemon(pid: int) -> bool:
    """dockerd or containerd (not a shim: a shim of a container that outlives the stop is containerd's
    business and the new daemon's to adopt or reap)."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() in ("dockerd", "containerd")
    except OSError:
        return False


def shim_socket(pid: int) -> str | None:
    """The socket a containerd-shim-runc-v2 listens on: /run/containerd/s/<sha256 of address/namespace/id>
    (containerd 1.6, runtime/v2/shim SocketAddress); None for any other process."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return None
    return shim_socket_of(argv)


def shim_socket_of(argv: Sequence[str]) -> str | None:
    argv = [a for a in argv if a]
    if not argv or not os.path.basename(argv[0]).startswith("containerd-shim"):
        return None
    flags = dict(zip(argv[1::2], argv[2::2])) if len(argv) > 2 else {}
    ns, cid, address = flags.get("-namespace"), flags.get("-id"), flags.get("-address")
    if not (ns and cid and address):
        return None
    digest = hashlib.sha256(os.path.join(address, ns, cid).encode()).hexdigest()
    return os.path.join(SHIM_SOCKETS, digest)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _remove_if_empty(paths: Sequence[str]) -> None:
    for path in paths:  # children before parents, as listed
        _rmdir(path)


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def mounts_under(base: Path) -> list[str]:
    prefix = str(base).rstrip("/") + "/"
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split()[4].encode().decode("unicode_escape")
                if point.startswith(prefix) or point == prefix[:-1]:
                    out.append(point)
    except OSError:
        pass
    return out


def cgroup_dirs(parent: str) -> list[str]:
    """The cgroup parent's directories in every hierarchy (cgroup v1 controllers, or the v2 root)."""
    root = "/sys/fs/cgroup"
    out = []
    candidates = [os.path.join(root, parent)]
    try:
        candidates += [os.path.join(root, c, parent) for c in os.listdir(root)]
    except OSError:
        return []
    for path in candidates:
        if os.path.isdir(path):
            out.append(path)
    return out


LEFTOVER_DIR = re.compile(r"^(hx[0-9a-f]{4}[0-9a-z]{2})-docker$")


def clean_leftovers(base_dir: str = "/tmp", match: str = "hx") -> tuple[list[str], list[str]]:
    """Remove what the daemons of killed runs left (`harness clean`), by the harness prefix only.

    A daemon's directory `<base_dir>/<prefix>-docker` whose owner (the namespace session's owner record,
    backends.netns) is gone: its processes (by exec root and cgroup parent), mounts, cgroups, directory and
    shim sockets are removed. Returns (removed, kept), the kept ones with whose they are.
    """
    from backends.netns import _live_owner  # the owner record the session's namespaces carry

    removed, kept = [], []
    try:
        names = sorted(os.listdir(base_dir))
    except OSError:
        return removed, kept
    for entry in names:
        m = LEFTOVER_DIR.match(entry)
        if not m or not entry.startswith(match):
            continue
        owner = _live_owner(m.group(1))
        if owner is not None:
            kept.append(f"{os.path.join(base_dir, entry)} ({owner.describe()})")
            continue
        stale = Daemon(entry, "", Path(), ExitStack(), base_dir)
        stale._kill_strays()
        stale._unmount_and_uncgroup()
        shutil.rmtree(stale.base, ignore_errors=True)
        _remove_if_empty(SHARED_DIRS)
        removed.append(str(stale.base))
    return removed, kept
