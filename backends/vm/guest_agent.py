"""The guest side of a VM snapshot: a Python process that loads the harness once, is saved with the guest,
and runs one `python3 -m harness ...` job in-process each time the snapshot is restored.

Runs inside the guest only, started by /init (``guest_init.sh``) when the kernel command line holds
``hx.agent``; `backends.vm.snapshot` is its host side. Its main function is :func:`serve`.

Why: under TCG, booting the kernel and unpacking the initramfs take ~3 s, and Python's start-up with the
imports of pyroute2, rich, jsonschema and the harness ~4 s more, before a scenario's first command. A
guest restored from memory skips both: the snapshot is taken while this process, everything imported,
blocks reading a line from its serial port.

Contract with the host (``backends/vm/snapshot.py``):

* ttyS1 (the guest's second serial port; qemu's ``hxagent`` chardev, a Unix socket on the host) is raw.
  The agent writes ``READY`` when it is loaded; the host then saves the guest. After a restore the host
  writes one JSON line ``{"entropy": HEX, "time": SECONDS}``: a snapshot's RNG state and clock are the
  snapshot's, so the kernel's RNG is reseeded from the host's bytes (and Python's ``random`` after it)
  and the wall clock is set to the host's.
* No 9p share is mounted before the snapshot: qemu refuses to save a guest that has one mounted. After
  the go line the agent mounts ``hxctl`` on /hx/ctl and, if the job asks, ``hxshare``; from there on the
  contract is /init's (``guest_init.sh``): ``job.json`` (argv, cwd, env, share_mount) in, and
  ``kernel_release``, ``started``, ``stdout``, ``stderr``, ``setup_error`` and, last, ``status`` out.
* Only ``python3 -m harness ...`` jobs come here (the host boots the guest for anything else): the job's
  arguments go to ``harness.cli.main`` in this process, with its environment applied first. Nothing the
  preloading touches reads the job's environment (the run id is read on first use).

/init powers the guest off with the status once this process ends.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import termios
import time
import tty

READY = b"READY\n"
AGENT_TTY = "/dev/ttyS1"
CTL = "/hx/ctl"
MS_NOSUID, MS_NODEV = 2, 4
RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07)
HARNESS_ARGV = ("python3", "-m", "harness")
PROFILE_ENV = "HARNESS_AGENT_PROFILE"  # a path in the guest: the job runs under cProfile, its stats written there

# What `python3 -m harness run --backend netns` imports: loaded before the snapshot, not after each restore.
PRELOAD = (
    "harness.cli", "harness.engine", "harness.loader", "harness.observe", "harness.checks", "harness.oracle",
    "harness.docker.emulated", "backends.select", "backends.netns", "backends.netns_owners",
    "pyroute2", "pyroute2.iproute", "pyroute2.netns", "pyroute2.nslink.nspopen",
    "jsonschema", "yaml", "rich.console", "rich.table", "rich.progress", "subprocess", "multiprocessing",
)


def preload() -> None:
    """Import what a scenario run imports, and do the work a run repeats that touches nothing outside
    this process (the argument parser, the scenario schema's validator)."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    from harness import loader
    from harness.cli import build_parser

    build_parser()
    loader.schema()


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def mount_9p(tag: str, target: str) -> None:
    os.makedirs(target, exist_ok=True)
    opts = b"trans=virtio,version=9p2000.L,msize=262144"
    if _libc().mount(tag.encode(), target.encode(), b"9p", MS_NOSUID | MS_NODEV, opts) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount -t 9p {tag} {target}: {os.strerror(err)}")


def reseed(entropy: bytes, now: float) -> None:
    """Mix the host's bytes into the kernel's pool, reseed its CRNG, reseed Python's, set the clock."""
    import fcntl
    import random
    import struct

    with open("/dev/urandom", "wb") as dev:
        fcntl.ioctl(dev, RNDADDENTROPY, struct.pack("ii", len(entropy) * 8, len(entropy)) + entropy)
        fcntl.ioctl(dev, RNDRESEEDCRNG)
    random.seed(os.urandom(32))
    time.clock_settime(time.CLOCK_REALTIME, now)


def _write(name: str, text: str) -> None:
    with open(os.path.join(CTL, name), "w") as fh:
        fh.write(text)


def _uptime() -> str:
    with open("/proc/uptime") as fh:
        return fh.read().split()[0]


def read_line(fd: int) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 256)
        if not chunk:
            raise EOFError("the agent's serial port closed")
        line += chunk
    return line


def run_job(job: dict) -> int:
    """Run one harness job in this process, its output in the control share; its exit status."""
    argv = job["argv"]
    if tuple(argv[:3]) != HARNESS_ARGV:
        _write("setup_error", f"the agent runs only `python3 -m harness ...` jobs, not {argv!r}")
        return 125
    if job.get("share_mount"):
        try:
            mount_9p("hxshare", job["share_mount"])
        except OSError as exc:
            _write("setup_error", f"cannot mount the shared directory on {job['share_mount']}: {exc}")
            return 125
    try:
        os.chdir(job["cwd"])
    except OSError as exc:
        _write("setup_error", f"cannot change to directory {job['cwd']}: {exc}")
        return 125
    os.environ.update(job["env"])
    sys.argv = ["harness", *argv[3:]]
    null = os.open("/dev/null", os.O_RDONLY)
    out = os.open(os.path.join(CTL, "stdout"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(os.path.join(CTL, "stderr"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for fd, target in ((null, 0), (out, 1), (err, 2)):
        os.dup2(fd, target)
        os.close(fd)
    from harness.cli import main

    profile_to = os.environ.get(PROFILE_ENV)  # a diagnosis: where the guest's time goes (pstats file)
    try:
        if profile_to:
            import cProfile

            profiler = cProfile.Profile()
            try:
                status = profiler.runcall(main, argv[3:])
            finally:
                profiler.dump_stats(profile_to)
        else:
            status = main(argv[3:])
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # a harness bug: its traceback goes to the job's stderr, as `python3 -m` would
        import traceback

        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return status


def serve() -> int:
    preload()
    fd = os.open(AGENT_TTY, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd, termios.TCSANOW)
    os.write(fd, READY)
    go = json.loads(read_line(fd))  # the snapshot is taken while this read blocks
    reseed(bytes.fromhex(go["entropy"]), float(go["time"]))
    try:
        mount_9p("hxctl", CTL)
    except OSError as exc:
        print(f"hx-agent: cannot mount the control share: {exc}", file=sys.stderr)
        return 127
    with open(os.path.join(CTL, "job.json")) as fh:
        job = json.load(fh)
    _write("kernel_release", os.uname().release + "\n")
    _write("started", _uptime() + "\n")
    console = os.dup(2)  # run_job points 2 at the job's stderr file
    os.write(console, f"hx-agent: resumed; job starts at uptime {_uptime()}s\n".encode())
    status = run_job(job)
    _write("status", f"{status}\n")
    os.write(console, f"hx-agent: job ended with status {status} at uptime {_uptime()}s\n".encode())
    return status


if __name__ == "__main__":
    sys.exit(serve())
