"""What goes into the guest's system layer, and from where on the host.

busybox for the basics, the real programs over the busybox applets of the same name (dash as /bin/sh,
iproute2 `ip`/`bridge`, iputils `ping`, util-linux `nsenter`, iperf3) with their shared libraries (ldd),
the kernel modules the scenarios need in load order (`module_load_order`, from modinfo), and the
Python interpreter running this code with a trimmed stdlib and the requirement closure of exactly the
distributions the project imports in the guest. Every `add_*` function fills a `Manifest`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import struct
import sys
import sysconfig
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from backends.vm.errors import ImageError
from backends.vm.kernel import KernelBundle
from backends.vm.manifest import Entry, Manifest, Memo
from backends.vm.steps import run_step
from harness import proc

__all__ = ["DOCKER_MODULES", "DOCKER_OFFLINE_IMAGE_DIR", "DOCKER_PROGRAMS", "GUEST_DISTRIBUTIONS", "GUEST_MODULES", "GUEST_TOOLS",
           "MODULE_OPTIONS", "add_docker", "add_layer_modules", "add_modules", "add_python", "add_python_file", "add_skeleton", "add_tools", "ldd", "module_load_order"]

# Modules the scenarios need (802.1q, ipvlan, macvlan, dummy, veth, bridge) plus the virtio-9p
# stack that carries the job in and the results out.
GUEST_MODULES: tuple[str, ...] = (
    "8021q", "ipvlan", "macvlan", "dummy", "veth", "bridge", "virtio_pci", "9pnet_virtio", "9p",
)
# dummy creates dummy0 in the root namespace unless told not to (systemd ships the same option).
MODULE_OPTIONS: Mapping[str, str] = {"dummy": "numdummies=0"}

# Distributions the project imports at run time in the guest; their requirement closure is added.
GUEST_DISTRIBUTIONS: tuple[str, ...] = ("pyroute2", "PyYAML", "jsonschema", "rich")

# Real programs that replace busybox applets of the same name: guest name -> (host program,
# Debian package). /bin/sh is dash because busybox ash runs its own applet for a bare command name
# (`ip`, `ping`) even when PATH holds the real binary; dash searches PATH like any shell.
GUEST_TOOLS: Mapping[str, tuple[str, str]] = {
    "sh": ("dash", "dash"),
    "ip": ("ip", "iproute2"),
    "bridge": ("bridge", "iproute2"),
    "ping": ("ping", "iputils-ping"),
    "nsenter": ("nsenter", "util-linux"),
    "iperf3": ("iperf3", "iperf3"),  # `harness bench --backend vm` runs the bench inside the guest
}

# Stdlib parts the guest never needs: tests, GUIs, installers, build configuration.
_STDLIB_SKIP_DIRS = frozenset({
    "test", "tests", "idle_test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
    "pydoc_data", "distutils", "site-packages", "dist-packages", "venv", "__phello__",
})
_STDLIB_SKIP_EXT = re.compile(
    r"^(_test\w*|_tkinter|_ctypes_test|xxlimited\w*|_xxtestfuzz|_xxsubinterpreters)\."
)



def ldd(paths: Iterable[Path]) -> set[Path]:
    """Shared libraries (incl. the dynamic loader) needed by the given ELF files, as ldd resolves
    them on this host; a static binary or a non-ELF file contributes nothing."""
    files = sorted({str(p) for p in paths})
    if not files:
        return set()
    result = proc.run(["ldd", *files], timeout=120)
    if result.timed_out:
        raise ImageError("listing shared libraries: `ldd` timed out after 120 s")
    if result.exit_code == 127 and not result.stdout:
        raise ImageError(f"listing shared libraries: `ldd` not found (package libc-bin): {result.stderr}")
    # ldd exits 1 when any file is static; read its output regardless.
    libs: set[Path] = set()
    missing: list[str] = []
    current = files[0]
    for line in result.stdout.splitlines():
        if not line.startswith(("\t", " ")):
            current = line.rstrip(":")
            continue
        text = line.strip()
        if "=> not found" in text:
            missing.append(f"{current}: {text.split()[0]}")
            continue
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", text)
        if match:
            libs.add(Path(match.group(1)))
    if missing:
        raise ImageError("listing shared libraries: ldd cannot resolve " + "; ".join(missing))
    return libs


def _which(name: str, package: str) -> Path:
    found = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not found:
        raise ImageError(f"`{name}` not found on the host; install the Debian package {package}")
    return Path(found).resolve()


def add_tools(man: Manifest, memo: Memo) -> list[Path]:
    """busybox for everything else, the real programs over the applets of the same name."""
    busybox = _which("busybox", "busybox-static")
    man.file("bin/busybox", busybox, 0o755)
    applets = memo.get("busybox", [busybox], lambda: run_step(
        [str(busybox), "--list"], what="listing busybox applets").stdout.split())
    for applet in applets:  # type: ignore[attr-defined]
        if applet not in GUEST_TOOLS and applet != "busybox":
            man.symlink(f"bin/{applet}", "busybox")
    elves = [busybox]
    for tool, (program, package) in GUEST_TOOLS.items():
        src = _which(program, package)
        man.file(f"bin/{tool}", src, 0o755)
        elves.append(src)
    # One directory for all programs: /sbin, /usr/bin and /usr/sbin point at /bin, so /bin/ip,
    # /sbin/ip and /usr/sbin/ip are all iproute2 and `#!/usr/bin/env python3` works.
    for alias in ("sbin", "usr/bin", "usr/sbin"):
        man.symlink(alias, "/bin")
    return elves


def add_skeleton(man: Manifest) -> None:
    for d in ("dev", "proc", "sys", "run", "tmp", "root", "mnt", "etc", "hx", "hx/ctl", "var",
              "lib", "lib64", "usr"):
        man.dir(d, 0o1777 if d == "tmp" else 0o755)
    man.symlink("var/run", "../run")
    # The kernel opens /dev/console for /init's stdio before /init can mount devtmpfs.
    man.entries["dev/console"] = Entry(mode=0o600, device=(5, 1))
    man.data("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    man.data("etc/group", "root:x:0:\n")
    man.data("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    # Without nsswitch.conf glibc asks DNS first; there is no DNS in the guest.
    man.data("etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files\n")


def _module_index(modules_dir: Path) -> tuple[dict[str, Path], set[str]]:
    index: dict[str, Path] = {}
    for path in sorted(modules_dir.rglob("*.ko*")):
        name = re.sub(r"\.ko(\.(xz|zst|gz))?$", "", path.name)
        if name != path.name:
            index.setdefault(name.replace("-", "_"), path)
    builtin: set[str] = set()
    builtin_file = modules_dir / "modules.builtin"
    if builtin_file.exists():
        for line in builtin_file.read_text().split():
            builtin.add(Path(line).name.removesuffix(".ko").replace("-", "_"))
    return index, builtin


def module_load_order(modules_dir: Path, names: Sequence[str]) -> list[tuple[str, Path]]:
    """Modules to insert, dependencies first, read from each module's own ``depends`` field with
    modinfo (works for any modules tree, with or without modules.dep); built-in ones are skipped."""
    index, builtin = _module_index(modules_dir)
    order: list[tuple[str, Path]] = []
    done: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        key = name.replace("-", "_")
        if key in done:
            return
        if key in chain:
            raise ImageError(f"kernel module dependency cycle: {' -> '.join(chain + (key,))}")
        if key in builtin:
            done.add(key)
            return
        path = index.get(key)
        if path is None:
            raise ImageError(f"kernel module {name} is neither in {modules_dir} nor built in"
                             f"{' (needed by ' + chain[-1] + ')' if chain else ''}")
        depends = run_step(["modinfo", "-F", "depends", str(path)],
                       what=f"reading dependencies of module {name}",
                       hint="modinfo is in the Debian package kmod").stdout.strip()
        for dep in filter(None, depends.split(",")):
            visit(dep, chain + (key,))
        done.add(key)
        order.append((key, path))

    for name in names:
        visit(name, ())
    return order


def add_modules(man: Manifest, kernel: KernelBundle, names: Sequence[str],
                memo: Memo) -> list[str]:
    """Module files (decompressed at write time), /etc/hx/modules in load order; returns the
    guest paths of the module files (depmod runs on them at write time)."""
    if kernel.modules_dir is None:
        return []
    base = f"lib/modules/{kernel.release}"
    lines: list[str] = []
    guest_paths: list[str] = []
    modules_dir = kernel.modules_dir
    stamps = [modules_dir / f for f in ("modules.builtin", "modules.order", "modules.dep")]
    order = memo.get(f"modules {modules_dir} {' '.join(names)}", stamps,
                     lambda: [[n, str(p)] for n, p in module_load_order(modules_dir, names)])
    for name, raw_path in order:  # type: ignore[attr-defined]
        path = Path(raw_path)
        rel = path.relative_to(kernel.modules_dir).as_posix()
        rel = re.sub(r"\.ko\.(xz|zst|gz)$", ".ko", rel)
        man.file(f"{base}/{rel}", path, 0o644)
        guest_paths.append(f"{base}/{rel}")
        opts = MODULE_OPTIONS.get(name, "")
        lines.append(f"/{base}/{rel} {opts}".rstrip())
    for meta in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if (kernel.modules_dir / meta).is_file():
            man.file(f"{base}/{meta}", kernel.modules_dir / meta, 0o644)
    man.data("etc/hx/modules", "\n".join(lines) + "\n")
    return guest_paths


def _requirement_closure(roots: Sequence[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions ``roots`` need at run time (no extras), markers evaluated for
    this interpreter, which is also the guest's."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip vendors packaging; every interpreter that installed our deps has pip
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if norm(name) in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError as exc:
            raise ImageError(f"Python distribution {name} is needed in the guest but is not "
                             f"installed for {sys.executable}") from exc
        seen[norm(name)] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return [seen[k] for k in sorted(seen)]


def _host_pyc_is_valid(pyc: Path, src: Path) -> bool:
    """True when the host's pyc matches its source as the guest will see it (cpio keeps the
    source's mtime in whole seconds, which is what a timestamp pyc records)."""
    try:
        with open(pyc, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return False
    if len(head) < 16 or head[:4] != importlib.util.MAGIC_NUMBER:
        return False
    flags, mtime, size = struct.unpack_from("<III", head, 4)
    if flags & 0b1:
        return True  # hash-based pyc: valid by construction or checked against the source
    st = src.stat()
    return mtime == int(st.st_mtime) & 0xFFFFFFFF and size == st.st_size & 0xFFFFFFFF


def add_python_file(man: Manifest, guest: str, src: Path) -> None:
    man.file(guest, src)
    # Ship the host's pyc or compile one, so the guest never compiles under TCG.
    cache_name = f"{src.stem}.{sys.implementation.cache_tag}.pyc"
    pyc = src.parent / "__pycache__" / cache_name
    if _host_pyc_is_valid(pyc, src):
        man.file(f"{Path(guest).parent.as_posix()}/__pycache__/{cache_name}", pyc, 0o644)
    else:
        man.pyc(guest, src)


def add_python(man: Manifest, distributions: Sequence[str]) -> tuple[list[Path], list[str]]:
    """The running interpreter, its trimmed stdlib and the distributions' files, all at their host
    paths (so the interpreter finds its prefix and RUNPATH as on the host). Returns the ELF files
    (for ldd) and the site directories to put on PYTHONPATH."""
    exe = Path(sys.executable).resolve()
    man.file(exe.as_posix(), exe, 0o755)
    for name in ("python3", f"python{sys.version_info.major}.{sys.version_info.minor}"):
        man.symlink(f"bin/{name}", exe.as_posix())
    elves = [exe]
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    for dirpath, dirnames, filenames in os.walk(stdlib):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d not in _STDLIB_SKIP_DIRS
                             and not d.startswith("config-") and d != "__pycache__")
        for name in sorted(filenames):
            src = here / name
            if name.endswith(".py"):
                add_python_file(man, src.as_posix(), src)
            elif name.endswith(".so"):
                if not _STDLIB_SKIP_EXT.match(name):
                    man.file(src.as_posix(), src)
                    elves.append(src)
            elif not name.endswith((".pyc", ".pyo", ".exe")) and src.is_file():
                man.file(src.as_posix(), src)  # data files: grammar, zoneinfo tzdata, LICENSE...
    site_dirs: list[str] = []
    for dist in _requirement_closure(distributions):
        base = Path(str(dist.locate_file(""))).resolve()
        if base.as_posix() not in site_dirs:
            site_dirs.append(base.as_posix())
        for rel in dist.files or []:
            src = Path(str(dist.locate_file(rel))).resolve()
            # Skip console scripts outside site-packages and the pycs (handled per .py file).
            if not src.is_relative_to(base) or src.suffix == ".pyc" or not src.is_file():
                continue
            if src.suffix == ".py":
                add_python_file(man, src.as_posix(), src)
            else:
                man.file(src.as_posix(), src)
                if src.suffix == ".so" or ".so." in src.name:
                    elves.append(src)
        man.extra_key.append(f"dist {dist.metadata['Name']} {dist.version} {base}")
    return elves, site_dirs


# The docker layer (`build_initramfs(..., extras=("docker",))`): docker.io's programs, guest name ->
# the host file. The client is the 20.10 one at /usr/bin/docker, never a newer docker elsewhere on PATH.
# The guest's dockerd uses the vfs storage driver (no overlay module, no mount per container); its bridge
# and veth modules are in GUEST_MODULES already.
DOCKER_PROGRAMS: tuple[str, ...] = ("dockerd", "containerd", "containerd-shim-runc-v2", "runc", "docker")
# dockerd runs with --iptables=false, but its embedded DNS server (127.0.0.11, container names on
# user-defined networks: `ping cid1`) is reached through DNAT/SNAT rules that libnetwork installs with
# `iptables -t nat` inside each container's namespace, whatever --iptables says. Without iptables those
# names do not resolve ("ping: bad address"). iptables-legacy needs the fewest modules.
IPTABLES = Path("/usr/sbin/xtables-legacy-multi")
XTABLES_PLUGINS = Path("/usr/lib/x86_64-linux-gnu/xtables")
# crc32c_generic first: libcrc32c (nf_conntrack's dependency) asks the crypto API for crc32c in its init
# (a soft dependency modinfo's `depends` does not list; without it: "nf_conntrack: Unknown symbol crc32c").
DOCKER_MODULES: tuple[str, ...] = ("crc32c_generic", "nf_conntrack", "nf_nat", "ip_tables", "iptable_nat",
                                   "iptable_filter", "xt_nat", "xt_tcpudp")
# Where the guest finds the offline container image: $HARNESS_CACHE/docker, HARNESS_CACHE=/hx/cache.
DOCKER_OFFLINE_IMAGE_DIR = "hx/cache/docker"


def add_docker(man: Manifest) -> list[Path]:
    """docker.io's programs in /bin (the guest's /usr/bin and /usr/sbin point there) and the offline
    image the docker backend imports; returns the ELF files (for ldd)."""
    from backends.docker.daemon import (
        CONTAINERD_CANDIDATES,
        DOCKER,
        DOCKERD_CANDIDATES,
        find_binary,
        missing_binaries,
    )
    from backends.docker.image import build_image, default_cache_dir
    from harness.errors import BackendUnavailable

    missing = missing_binaries()
    if missing:
        raise ImageError(f"the guest's docker layer needs docker.io on this machine ({', '.join(missing)} missing; "
                         "apt-get install docker.io)")
    found = {
        "dockerd": find_binary(DOCKERD_CANDIDATES),
        "containerd": find_binary(CONTAINERD_CANDIDATES),
        "containerd-shim-runc-v2": shutil.which("containerd-shim-runc-v2", path="/usr/bin:/usr/sbin:/bin:/sbin"),
        "runc": shutil.which("runc", path="/usr/sbin:/usr/bin:/sbin:/bin"),
        "docker": DOCKER,
    }
    elves = []
    for name in DOCKER_PROGRAMS:
        src = Path(str(found[name])).resolve()
        man.file(f"bin/{name}", src, 0o755)
        elves.append(src)
    try:
        image = build_image(default_cache_dir())  # cached on this machine; built from its static busybox
    except BackendUnavailable as exc:  # no static busybox
        raise ImageError(f"the guest's docker layer needs the offline container image: {exc}") from None
    man.file(f"{DOCKER_OFFLINE_IMAGE_DIR}/{image.name}", image, 0o644)
    if not IPTABLES.is_file():
        raise ImageError(f"the guest's docker layer needs {IPTABLES} (Debian package iptables): Docker's embedded "
                         "DNS is wired with iptables rules in each container")
    man.file("bin/xtables-legacy-multi", IPTABLES, 0o755)
    elves.append(IPTABLES)
    for name in ("iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"):
        man.symlink(f"bin/{name}", "xtables-legacy-multi")
    for plugin in sorted(XTABLES_PLUGINS.glob("*.so")):
        man.file(plugin.as_posix(), plugin, 0o644)
        elves.append(plugin.resolve())
    # dockerd copies the host's resolv.conf into containers (no DNS anywhere here: an empty one).
    man.data("etc/resolv.conf", "")
    man.dir("var/lib", 0o755)
    return elves


def add_layer_modules(man: Manifest, kernel: KernelBundle, names: Sequence[str], memo: Memo, listing: str,
                      present: Mapping[str, object]) -> None:
    """Modules of an optional layer (those the system layer lacks), in load order, listed in `listing`
    (/init inserts them by path; no depmod needed)."""
    if kernel.modules_dir is None:
        return
    base = f"lib/modules/{kernel.release}"
    stamps = [kernel.modules_dir / f for f in ("modules.builtin", "modules.order", "modules.dep")]
    order = memo.get(f"modules {kernel.modules_dir} {' '.join(names)}", stamps,
                     lambda: [[n, str(p)] for n, p in module_load_order(kernel.modules_dir, names)])
    lines = []
    for name, raw_path in order:  # type: ignore[attr-defined]
        path = Path(raw_path)
        rel = re.sub(r"\.ko\.(xz|zst|gz)$", ".ko", path.relative_to(kernel.modules_dir).as_posix())
        if f"{base}/{rel}" in present:
            continue  # already inserted by the system layer's list
        man.file(f"{base}/{rel}", path, 0o644)
        lines.append(f"/{base}/{rel} {MODULE_OPTIONS.get(name, '')}".rstrip())
    man.data(listing, "\n".join(lines) + "\n")

