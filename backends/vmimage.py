"""Kernel and guest-image cache for the VM backend.

Main objects:

* :class:`KernelBundle`: a bootable kernel (an ELF ``vmlinux`` whenever the bzImage could be
  decompressed) and its modules tree. :func:`fetch_kernel` makes one from Debian's own
  ``linux-image-*-amd64`` package (downloaded with ``apt-get download`` and unpacked with
  ``dpkg-deb -x`` into the cache: nothing is installed, nothing lands in /boot);
  :meth:`KernelBundle.from_path` wraps a user-supplied kernel (``--kernel PATH``).
* :func:`build_initramfs`: the guest's whole root filesystem as a cpio initramfs: busybox, dash as
  /bin/sh, the real iproute2 ``ip``/``bridge``, iputils ``ping``, util-linux ``nsenter``, the kernel
  modules the scenarios need, the Python interpreter running this code with a trimmed stdlib and
  the site-packages of exactly the distributions the project imports in the guest, the project's
  own packages, and ``/init`` (``backends/guest_init.sh``).
* :class:`ImageError` (a :class:`backends.qemu.VMError`): a kernel or image could not be made; the
  message names the failed command and its stderr.

Cache layout, under :func:`default_cache_dir`::

    kernels/<release>/{boot,lib,usr}/             dpkg-deb -x of the Debian package
    kernels/<release>/vmlinux                     the decompressed ELF that qemu boots
    kernels/<release>/bundle.json                 written last: the entry is complete
    kernels/user-<sha256>/vmlinux                 decompressed user-supplied bzImage
    images/<release>/base-<key>.cpio              system layer: tools, libraries, modules, Python
    images/<release>/project-<key>.cpio           project layer: harness/, backends/, /init
    images/<release>/initramfs-<base>-<project>.cpio   both concatenated: what qemu boots

Why two layers: the system layer (~75 MB) depends on the host's packages and interpreter and almost
never changes; the project layer (a few hundred kB) changes with every edit of the project. The
kernel unpacks concatenated cpio archives in order, later files winning, so an edit costs only a
new small archive and one file concatenation. Keys are sha256 digests over everything that goes
in: contents for project files and generated files; path, size and mtime for the system files (as
make does; hashing 75 MB on every run would cost more than it protects). Slow host queries (ldd,
modinfo, busybox --list) are remembered in ``memo.json`` under the same kind of key, so a warm
build runs no subprocess and takes about 0.2 s.

Why uncompressed: qemu hands the initramfs to the guest through fw_cfg DMA at memory speed, while
the guest decompresses under TCG. Measured on this machine kind (75 MB image, median of 3 boots):
uncompressed 3.1 s to the guest command, ``zstd -3`` 3.85 s, ``gzip -1`` 4.2 s. Unpacking still
costs about 1 s per 75 MB, hence the trimmed stdlib and ``strip --strip-debug`` on every ELF file
(pyenv's libpython alone carries 17 MB of debug information).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import lzma
import marshal
import os
import re
import shlex
import shutil
import stat
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from backends.qemu import VMError

log = logging.getLogger(__name__)

__all__ = [
    "GUEST_DISTRIBUTIONS",
    "GUEST_MODULES",
    "GUEST_PROJECT_DIR",
    "GUEST_TOOLS",
    "PROJECT_PACKAGES",
    "ImageError",
    "KernelBundle",
    "build_initramfs",
    "default_cache_dir",
    "fetch_kernel",
    "module_load_order",
    "resolve_kernel_package",
]

# Bump when the image layout or the builder's logic changes: it is part of every cache key.
BUILDER_VERSION = "1"

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

PROJECT_PACKAGES: tuple[str, ...] = ("harness", "backends")
GUEST_PROJECT_DIR = "/hx/project"

GUEST_INIT = Path(__file__).with_name("guest_init.sh")

# Stdlib parts the guest never needs: tests, GUIs, installers, build configuration.
_STDLIB_SKIP_DIRS = frozenset({
    "test", "tests", "idle_test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
    "pydoc_data", "distutils", "site-packages", "dist-packages", "venv", "__phello__",
})
_STDLIB_SKIP_EXT = re.compile(
    r"^(_test\w*|_tkinter|_ctypes_test|xxlimited\w*|_xxtestfuzz|_xxsubinterpreters)\."
)

_KERNEL_PACKAGE_RE = re.compile(r"^linux-image-(?P<release>\d[\w.+~]*-[\w.+~-]+)$")
_APT_TIMEOUT = 900
_CMD_TIMEOUT = 300
_KEEP_IMAGES = 3  # combined images kept per kernel release (75 MB each); older ones are pruned
_PRUNE_GRACE_SECONDS = 900


class ImageError(VMError):
    """A kernel or guest image could not be fetched or built (a VMError: callers catch one family)."""


# --------------------------------------------------------------------------------------------
# helpers


def default_cache_dir() -> Path:
    """``$HARNESS_CACHE``, else ``$XDG_CACHE_HOME/harness/vm``, else ``~/.cache/harness/vm``."""
    env = os.environ.get("HARNESS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "harness" / "vm"


def _run(argv: Sequence[str], *, what: str, timeout: float = _CMD_TIMEOUT,
         cwd: Path | None = None, hint: str = "") -> subprocess.CompletedProcess[str]:
    """Run argv; on failure raise ImageError naming the step, the command and its stderr."""
    cmd = shlex.join(argv)
    try:
        proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise ImageError(f"{what}: `{cmd}` cannot run: {exc.strerror}: {argv[0]}"
                         f"{' (' + hint + ')' if hint else ''}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ImageError(f"{what}: `{cmd}` timed out after {timeout:.0f} s") from exc
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip() or "(no output)")
        raise ImageError(f"{what}: `{cmd}` failed with exit code {proc.returncode}: {detail}"
                         f"{chr(10) + hint if hint else ''}")
    return proc


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Exclusive lock so parallel runs (pytest-xdist workers) build each cache entry once."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# kernel


@dataclass(frozen=True)
class KernelBundle:
    """A kernel qemu can boot, with the modules built for it.

    ``boot_image`` is what ``qemu -kernel`` gets: the decompressed ELF vmlinux when the bzImage
    could be decompressed (qemu then boots it through PVH, which saves 6-7 s of in-guest
    decompression under TCG), else the bzImage itself. ``modules_dir`` is ``.../lib/modules/<release>``
    or None for a kernel with everything built in.
    """

    release: str
    boot_image: Path
    modules_dir: Path | None
    vmlinuz: Path | None = None
    package: str | None = None  # "linux-image-6.1.0-56-amd64=6.1.192-2" when fetched from Debian

    @classmethod
    def from_path(cls, kernel: str | os.PathLike[str], modules_dir: str | os.PathLike[str] | None,
                  cache_dir: Path | None = None) -> KernelBundle:
        """Wrap a user-supplied kernel (a bzImage/vmlinuz or an ELF vmlinux).

        A bzImage is decompressed once into ``cache_dir/kernels/user-<sha256>/vmlinux``. The
        release is read from the kernel image itself and must match ``modules_dir``'s name when
        that is a ``lib/modules/<release>`` directory.
        """
        path = Path(kernel).expanduser().resolve()
        if not path.is_file():
            raise ImageError(f"kernel image {path} does not exist")
        mods = Path(modules_dir).expanduser().resolve() if modules_dir is not None else None
        if mods is not None and not mods.is_dir():
            raise ImageError(f"kernel modules directory {mods} does not exist")
        data = path.read_bytes()
        release = _kernel_release_of(data, path)
        if mods is not None and (mods / "modules.builtin").exists() and mods.name != release:
            raise ImageError(f"kernel {path} is release {release} but its modules directory {mods} "
                             f"is for {mods.name}: modules would not load")
        if data[:4] == b"\x7fELF":
            return cls(release=release, boot_image=path, modules_dir=mods, vmlinuz=None)
        cache = (cache_dir or default_cache_dir()) / "kernels"
        target = cache / f"user-{hashlib.sha256(data).hexdigest()[:16]}" / "vmlinux"
        with _locked(cache / ".lock"):
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                _write_atomic(target, _decompress_bzimage(data, path))
        return cls(release=release, boot_image=target, modules_dir=mods, vmlinuz=path)

    def to_json(self) -> dict[str, str | None]:
        return {"release": self.release, "boot_image": str(self.boot_image),
                "modules_dir": str(self.modules_dir) if self.modules_dir else None,
                "vmlinuz": str(self.vmlinuz) if self.vmlinuz else None, "package": self.package}


def _kernel_release_of(data: bytes, path: Path) -> str:
    """The release string (``uname -r``) of a bzImage or an ELF vmlinux."""
    if data[0x202:0x206] == b"HdrS":
        # boot protocol: kernel_version at 0x20e points (minus 0x200) at "6.1.0-56-amd64 (...) #1 ..."
        (offset,) = struct.unpack_from("<H", data, 0x20E)
        if offset:
            text = data[offset + 0x200: offset + 0x200 + 256].split(b"\0", 1)[0]
            if text:
                return text.split()[0].decode("ascii", "replace")
    match = re.search(rb"Linux version (\S+) \(", data)
    if match:
        return match.group(1).decode("ascii", "replace")
    raise ImageError(f"{path}: neither a bzImage nor a vmlinux with a Linux version banner")


def _decompress_bzimage(data: bytes, path: Path) -> bytes:
    """Decompress the payload of a bzImage to its ELF vmlinux (see Documentation/x86/boot.rst)."""
    if data[:4] == b"\x7fELF":
        return data
    if data[0x202:0x206] != b"HdrS":
        raise ImageError(f"{path} is not a bzImage (no HdrS boot header)")
    (version,) = struct.unpack_from("<H", data, 0x206)
    if version < 0x208:
        raise ImageError(f"{path}: boot protocol {version:#x} has no payload fields (needs 2.08+)")
    setup_sects = data[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    # Decompressors stop at the end of their stream, so the 4-byte size the build appends is ignored.
    payload = data[start:start + payload_length]
    try:
        if payload.startswith(b"\xfd7zXZ\x00"):
            out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
        elif payload.startswith(b"\x1f\x8b"):
            out = zlib.decompressobj(wbits=31).decompress(payload)
        elif payload.startswith(b"\x5d\x00\x00"):
            out = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(payload)
        elif payload.startswith(b"BZh"):
            import bz2
            out = bz2.BZ2Decompressor().decompress(payload)
        elif payload.startswith(b"\x28\xb5\x2f\xfd"):
            out = _decompress_external(["zstd", "-d", "-c", "-q"], payload, path)
        elif payload.startswith(b"\x02\x21\x4c\x18"):
            out = _decompress_external(["lz4", "-d", "-c", "-q"], payload, path)
        else:
            raise ImageError(f"{path}: unknown kernel payload compression {payload[:6].hex()}")
    except (lzma.LZMAError, zlib.error, OSError) as exc:
        raise ImageError(f"{path}: cannot decompress the kernel payload: {exc}") from exc
    if out[:4] != b"\x7fELF":
        raise ImageError(f"{path}: decompressed payload is not an ELF image")
    return out


def _decompress_external(argv: list[str], payload: bytes, path: Path) -> bytes:
    try:
        proc = subprocess.run(argv, input=payload, capture_output=True, timeout=120, check=False)
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: `{argv[0]}` is needed to decompress this kernel") from exc
    # zstd/lz4 complain about the trailing size word but still write the whole stream.
    if not proc.stdout:
        raise ImageError(f"{path}: `{shlex.join(argv)}` failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".hx-{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _apt_index_stamp() -> str:
    """Changes whenever apt's answer can change: the package lists and the pinning."""
    digest = hashlib.sha256()
    for folder in (Path("/var/lib/apt/lists"), Path("/etc/apt/preferences.d")):
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.is_file():
                    st = path.stat()
                    digest.update(f"{path} {st.st_size} {st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def resolve_kernel_package(package: str = "linux-image-amd64", cache_dir: Path | None = None) -> str:
    """The concrete ``linux-image-<release>`` package that ``package`` (a metapackage such as
    ``linux-image-amd64``) depends on, as apt resolves it (local, no network).

    With ``cache_dir`` the answer is remembered until apt's package lists change: without a
    package cache (as in Debian's container images) every apt-cache call re-reads the lists.
    """
    if _KERNEL_PACKAGE_RE.match(package):
        return package
    memo_path = cache_dir / "kernels" / "resolved.json" if cache_dir else None
    stamp = _apt_index_stamp()
    memo: dict[str, dict[str, str]] = {}
    if memo_path is not None and memo_path.is_file():
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            memo = {}
        hit = memo.get(package, {})
        if hit.get("stamp") == stamp and _KERNEL_PACKAGE_RE.match(hit.get("concrete", "")):
            return hit["concrete"]
    hint = "is the package index current? run `apt-get update` first"
    out = _run(["apt-cache", "depends", package], what=f"resolving kernel package {package}",
               hint=hint).stdout
    found = [m.group(1) for m in re.finditer(r"^\s*\|?Depends:\s*(\S+)", out, re.MULTILINE)
             if _KERNEL_PACKAGE_RE.match(m.group(1))]
    if not found:
        raise ImageError(f"resolving kernel package {package}: `apt-cache depends {package}` "
                         f"names no linux-image-<release> package:\n{out.strip()}\n{hint}")
    if memo_path is not None:
        memo[package] = {"stamp": stamp, "concrete": found[0]}
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(memo_path, (json.dumps(memo, indent=2) + "\n").encode())
    return found[0]


def fetch_kernel(cache_dir: Path | None = None, package: str = "linux-image-amd64") -> KernelBundle:
    """Debian's kernel ``package`` unpacked into the cache, with its bzImage decompressed once.

    A metapackage is resolved to its concrete ``linux-image-<release>`` package with apt-cache
    (local, no network); a release already in the cache is returned without downloading. If apt
    cannot resolve the package but the cache holds kernels, the newest cached one is used with a
    warning, so that a machine whose apt lists were cleaned still runs.
    """
    root = cache_dir or default_cache_dir()
    cache = root / "kernels"
    cache.mkdir(parents=True, exist_ok=True)
    try:
        concrete = resolve_kernel_package(package, root)
    except ImageError:
        cached = _cached_kernels(cache)
        if not cached:
            raise
        log.warning("cannot resolve %s with apt; using cached kernel %s", package, cached[-1].release)
        return cached[-1]
    release = _KERNEL_PACKAGE_RE.match(concrete).group("release")  # type: ignore[union-attr]
    entry = cache / release
    with _locked(cache / ".lock"):
        bundle = _load_bundle(entry)
        if bundle is not None:
            return bundle
        if entry.exists():
            shutil.rmtree(entry)  # an interrupted earlier fetch
        work = Path(tempfile.mkdtemp(prefix="hx", dir=cache))
        try:
            return _download_kernel(concrete, release, work, entry)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _download_kernel(concrete: str, release: str, work: Path, entry: Path) -> KernelBundle:
    argv = ["apt-get", "download", "-q"]
    if os.geteuid() == 0:
        # As root apt drops to the _apt user, which cannot write into our private temp dir.
        argv += ["-o", "APT::Sandbox::User=root"]
    _run(argv + [concrete], what=f"downloading kernel package {concrete}",
         cwd=work, timeout=_APT_TIMEOUT,
         hint="is the package index current? run `apt-get update` first")
    debs = sorted(work.glob("*.deb"))
    if len(debs) != 1:
        raise ImageError(f"downloading kernel package {concrete}: expected one .deb in {work}, "
                         f"found {[d.name for d in debs]}")
    version = _run(["dpkg-deb", "-f", str(debs[0]), "Version"],
                   what=f"reading the version of {debs[0].name}").stdout.strip()
    root = work / "root"
    _run(["dpkg-deb", "-x", str(debs[0]), str(root)], what=f"unpacking {debs[0].name}")
    debs[0].unlink()
    vmlinuz = root / "boot" / f"vmlinuz-{release}"
    modules = root / "lib" / "modules" / release
    if not vmlinuz.is_file() or not modules.is_dir():
        raise ImageError(f"unpacking {concrete}: no boot/vmlinuz-{release} or "
                         f"lib/modules/{release} in the package")
    data = vmlinuz.read_bytes()
    _write_atomic(root / "vmlinux", _decompress_bzimage(data, vmlinuz))
    meta = {"release": release, "package": f"{concrete}={version}", "builder": BUILDER_VERSION}
    # bundle.json is written last: its presence marks a complete entry.
    (root / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n")
    os.rename(root, entry)
    bundle = _load_bundle(entry)
    assert bundle is not None
    return bundle


def _load_bundle(entry: Path) -> KernelBundle | None:
    meta_path = entry / "bundle.json"
    if not meta_path.is_file() or not (entry / "vmlinux").is_file():
        return None
    meta = json.loads(meta_path.read_text())
    release = meta["release"]
    return KernelBundle(release=release, boot_image=entry / "vmlinux",
                        modules_dir=entry / "lib" / "modules" / release,
                        vmlinuz=entry / "boot" / f"vmlinuz-{release}", package=meta.get("package"))


def _version_key(release: str) -> list[tuple[int, str]]:
    return [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.-]", release)]


def _cached_kernels(cache: Path) -> list[KernelBundle]:
    found = [b for e in cache.iterdir() if e.is_dir() and not e.name.startswith(("hx", "user-"))
             for b in [_load_bundle(e)] if b is not None] if cache.is_dir() else []
    return sorted(found, key=lambda b: _version_key(b.release))


# --------------------------------------------------------------------------------------------
# image manifest: what goes where in the guest


@dataclass(frozen=True)
class _Entry:
    """One archive member. Exactly one of source/data/target/device is used."""

    mode: int  # permission bits; the file type follows from the other fields
    source: Path | None = None  # regular file copied from the host (dereferenced)
    data: bytes | None = None  # regular file with generated content
    target: str | None = None  # symlink
    device: tuple[int, int] | None = None  # character device (major, minor)
    is_dir: bool = False
    pyc_of: Path | bytes | None = None  # a pyc compiled at write time from this source
    strip: bool = False  # ELF whose debug sections are dropped at write time (when strip exists)

    def fingerprint(self) -> str:
        if self.source is not None:
            st = self.source.stat()
            what = f"file {self.source} {st.st_size} {st.st_mtime_ns} strip={self.strip}"
        elif self.data is not None:
            what = f"data {hashlib.sha256(self.data).hexdigest()}"
        elif self.target is not None:
            what = f"link {self.target}"
        elif self.device is not None:
            what = f"dev {self.device}"
        elif isinstance(self.pyc_of, bytes):
            what = f"pyc {hashlib.sha256(self.pyc_of).hexdigest()}"
        elif self.pyc_of is not None:
            st = self.pyc_of.stat()
            what = f"pyc {self.pyc_of} {st.st_size} {st.st_mtime_ns}"
        else:
            what = "dir"
        return f"{self.mode:o} {what}"


@dataclass
class _Manifest:
    entries: dict[str, _Entry] = field(default_factory=dict)  # guest path (no leading /) -> entry
    extra_key: list[str] = field(default_factory=list)

    def file(self, guest: str, source: Path, mode: int | None = None) -> None:
        st = source.stat()  # follows symlinks: the guest gets the content, not the host's layout
        self.entries[guest.lstrip("/")] = _Entry(mode=stat.S_IMODE(st.st_mode) if mode is None
                                                 else mode, source=source)

    def pyc(self, guest_py: str, source: Path | bytes) -> None:
        """An unchecked-hash pyc for the guest's ``guest_py``, compiled when the image is written."""
        parent, _, name = guest_py.lstrip("/").rpartition("/")
        stem = name.removesuffix(".py")
        self.entries[f"{parent}/__pycache__/{stem}.{sys.implementation.cache_tag}.pyc"] = (
            _Entry(mode=0o644, pyc_of=source))

    def strip_elves(self, elves: Iterable[Path]) -> None:
        """Mark these ELF files for stripping (pyenv builds libpython with 17 MB of debug info)."""
        # Never libraries vendored into a wheel by auditwheel (`numpy.libs/` and the like): they are
        # patched with patchelf, and strip breaks them ("ELF load command address/offset not page-aligned").
        wanted = {p for p in elves if not any(part.endswith(".libs") for part in Path(p).parts)}
        for path, entry in self.entries.items():
            if entry.source is not None and entry.source in wanted:
                self.entries[path] = dataclasses.replace(entry, strip=True)

    def data(self, guest: str, content: bytes | str, mode: int = 0o644) -> None:
        raw = content.encode() if isinstance(content, str) else content
        self.entries[guest.lstrip("/")] = _Entry(mode=mode, data=raw)

    def symlink(self, guest: str, target: str) -> None:
        self.entries[guest.lstrip("/")] = _Entry(mode=0o777, target=target)

    def dir(self, guest: str, mode: int = 0o755) -> None:
        self.entries[guest.lstrip("/")] = _Entry(mode=mode, is_dir=True)

    def key(self) -> str:
        digest = hashlib.sha256(f"hx-initramfs {BUILDER_VERSION}\n".encode())
        for line in self.extra_key:
            digest.update(f"{line}\n".encode())
        for path in sorted(self.entries):
            digest.update(f"{path} {self.entries[path].fingerprint()}\n".encode())
        return digest.hexdigest()


class _Memo:
    """Answers of slow host queries (ldd, modinfo), remembered per cache dir and keyed by the
    size and mtime of every file the answer depends on: a warm build runs no subprocess."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, object] = {}
        self.dirty = False
        if path is not None and path.is_file():
            try:
                self.data = json.loads(path.read_text())
            except (OSError, ValueError):
                self.data = {}

    def get(self, kind: str, files: Iterable[Path], compute: Callable[[], object]) -> object:
        digest = hashlib.sha256(kind.encode())
        for path in sorted({str(p) for p in files}):
            try:
                st = os.stat(path)
                digest.update(f"{path} {st.st_size} {st.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{path} missing\n".encode())
        key = f"{kind}:{digest.hexdigest()}"
        if key in self.data:
            self.data[key] = self.data.pop(key)  # most recently used last
        else:
            self.data[key] = compute()
            self.dirty = True
        return self.data[key]

    def save(self, keep: int = 64) -> None:
        if self.path is not None and self.dirty:
            # Answers for files that changed since are never asked again; drop the oldest.
            self.data = dict(list(self.data.items())[-keep:])
            _write_atomic(self.path, json.dumps(self.data, indent=1).encode())
            self.dirty = False


def _ldd(paths: Iterable[Path]) -> set[Path]:
    """Shared libraries (incl. the dynamic loader) needed by the given ELF files, as ldd resolves
    them on this host; a static binary or a non-ELF file contributes nothing."""
    files = sorted({str(p) for p in paths})
    if not files:
        return set()
    try:
        proc = subprocess.run(["ldd", *files], capture_output=True, text=True, timeout=120,
                              check=False)
    except FileNotFoundError as exc:
        raise ImageError("listing shared libraries: `ldd` not found (package libc-bin)") from exc
    # ldd exits 1 when any file is static; read its output regardless.
    libs: set[Path] = set()
    missing: list[str] = []
    current = files[0]
    for line in proc.stdout.splitlines():
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


def _add_tools(man: _Manifest, memo: _Memo) -> list[Path]:
    """busybox for everything else, the real programs over the applets of the same name."""
    busybox = _which("busybox", "busybox-static")
    man.file("bin/busybox", busybox, 0o755)
    applets = memo.get("busybox", [busybox], lambda: _run(
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


def _add_skeleton(man: _Manifest) -> None:
    for d in ("dev", "proc", "sys", "run", "tmp", "root", "mnt", "etc", "hx", "hx/ctl", "var",
              "lib", "lib64", "usr"):
        man.dir(d, 0o1777 if d == "tmp" else 0o755)
    man.symlink("var/run", "../run")
    # The kernel opens /dev/console for /init's stdio before /init can mount devtmpfs.
    man.entries["dev/console"] = _Entry(mode=0o600, device=(5, 1))
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
        depends = _run(["modinfo", "-F", "depends", str(path)],
                       what=f"reading dependencies of module {name}",
                       hint="modinfo is in the Debian package kmod").stdout.strip()
        for dep in filter(None, depends.split(",")):
            visit(dep, chain + (key,))
        done.add(key)
        order.append((key, path))

    for name in names:
        visit(name, ())
    return order


def _add_modules(man: _Manifest, kernel: KernelBundle, names: Sequence[str],
                 memo: _Memo) -> list[str]:
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


def _add_python_file(man: _Manifest, guest: str, src: Path) -> None:
    man.file(guest, src)
    # Ship the host's pyc or compile one, so the guest never compiles under TCG.
    cache_name = f"{src.stem}.{sys.implementation.cache_tag}.pyc"
    pyc = src.parent / "__pycache__" / cache_name
    if _host_pyc_is_valid(pyc, src):
        man.file(f"{Path(guest).parent.as_posix()}/__pycache__/{cache_name}", pyc, 0o644)
    else:
        man.pyc(guest, src)


def _add_python(man: _Manifest, distributions: Sequence[str]) -> tuple[list[Path], list[str]]:
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
                _add_python_file(man, src.as_posix(), src)
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
                _add_python_file(man, src.as_posix(), src)
            else:
                man.file(src.as_posix(), src)
                if src.suffix == ".so" or ".so." in src.name:
                    elves.append(src)
        man.extra_key.append(f"dist {dist.metadata['Name']} {dist.version} {base}")
    return elves, site_dirs


def _build_base_manifest(kernel: KernelBundle, modules: Sequence[str],
                         distributions: Sequence[str], memo: _Memo) -> tuple[_Manifest, list[str]]:
    man = _Manifest()
    man.extra_key += [f"release {kernel.release}", f"modules {' '.join(modules)}",
                      f"python {sys.version}"]
    _add_skeleton(man)
    elves = _add_tools(man, memo)
    module_files = _add_modules(man, kernel, modules, memo)
    py_elves, site_dirs = _add_python(man, distributions)
    queried = elves + py_elves
    libs = [Path(p) for p in memo.get("ldd", queried,  # type: ignore[union-attr]
                                      lambda: sorted(str(p) for p in _ldd(queried)))]
    for lib in libs:
        man.file(lib.as_posix(), lib, 0o755)
    if shutil.which("strip"):
        man.extra_key.append("strip --strip-debug")
        man.strip_elves([*elves, *py_elves, *libs])
    env = {
        "PYTHONPATH": ":".join([GUEST_PROJECT_DIR, *site_dirs]),
        # The image is rebuilt, never written back: a pyc written in the guest would be lost.
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    man.data("etc/hx/env", "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
    return man, module_files


def _build_project_manifest(project_root: Path, packages: Sequence[str]) -> _Manifest:
    man = _Manifest()
    man.data("init", GUEST_INIT.read_bytes(), 0o755)
    man.dir(GUEST_PROJECT_DIR.lstrip("/"))
    for package in packages:
        top = project_root / package
        if not top.is_dir():
            continue  # a project without this package yet; the guest import says so if needed
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames
                                 if d != "__pycache__" and not d.startswith("."))
            for name in sorted(filenames):
                if name.endswith((".pyc", ".pyo")) or name.startswith("."):
                    continue
                src = Path(dirpath) / name
                rel = src.relative_to(project_root).as_posix()
                # Project files are keyed by content (they change often, mtimes lie after a checkout).
                content = src.read_bytes()
                man.data(f"{GUEST_PROJECT_DIR}/{rel}", content, stat.S_IMODE(src.stat().st_mode))
                if name.endswith(".py"):
                    man.pyc(f"{GUEST_PROJECT_DIR}/{rel}", content)
    return man


# --------------------------------------------------------------------------------------------
# cpio writer


class _CpioWriter:
    """newc ("070701") cpio, the format the kernel unpacks; written directly so that no staging
    copy of the 75 MB tree is needed and modes, owners and device nodes need no root."""

    def __init__(self, out: object) -> None:
        self._out = out
        self._ino = 0x1000
        self._dirs: set[str] = set()

    def _header(self, name: str, mode: int, size: int, mtime: int, *, nlink: int = 1,
                rdev: tuple[int, int] = (0, 0)) -> None:
        self._ino += 1
        raw = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, nlink, max(0, mtime) & 0xFFFFFFFF, size, 0, 0, rdev[0],
                  rdev[1], len(raw), 0)
        head = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._write(head + raw + b"\0" * (-(len(head) + len(raw)) % 4))

    def _write(self, data: bytes) -> None:
        self._out.write(data)  # type: ignore[attr-defined]

    def _parents(self, path: str, mtime: int) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self._dirs:
                self._dirs.add(d)
                self._header(d, stat.S_IFDIR | 0o755, 0, mtime, nlink=2)

    def add(self, path: str, entry: _Entry, mtime: int, pyc: bytes | None = None) -> None:
        self._parents(path, mtime)
        if entry.is_dir:
            if path not in self._dirs:
                self._dirs.add(path)
                self._header(path, stat.S_IFDIR | entry.mode, 0, mtime, nlink=2)
        elif entry.target is not None:
            target = entry.target.encode()
            self._header(path, stat.S_IFLNK | 0o777, len(target), mtime)
            self._write(target + b"\0" * (-len(target) % 4))
        elif entry.device is not None:
            self._header(path, stat.S_IFCHR | entry.mode, 0, mtime, rdev=entry.device)
        elif entry.source is not None:
            st = entry.source.stat()
            data = _module_bytes(entry.source) if _is_compressed_module(entry.source) else None
            if data is not None:
                self._file_bytes(path, entry.mode, data, int(st.st_mtime))
                return
            self._header(path, stat.S_IFREG | entry.mode, st.st_size, int(st.st_mtime))
            written = 0
            with open(entry.source, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    self._write(chunk)
                    written += len(chunk)
            if written != st.st_size:
                raise ImageError(f"{entry.source} changed while the image was written")
            self._write(b"\0" * (-written % 4))
        else:
            content = entry.data if entry.data is not None else pyc
            if content is None:
                return  # a pyc whose source does not compile: the guest reports the SyntaxError
            self._file_bytes(path, entry.mode, content, mtime)

    def _file_bytes(self, path: str, mode: int, data: bytes, mtime: int) -> None:
        self._header(path, stat.S_IFREG | mode, len(data), mtime)
        self._write(data + b"\0" * (-len(data) % 4))

    def close(self) -> None:
        self._header("TRAILER!!!", 0, 0, 0)
        # Pad to 512 bytes so a following archive starts aligned (the kernel skips NUL padding).
        pos = self._out.tell()  # type: ignore[attr-defined]
        self._write(b"\0" * (-pos % 512))


def _is_compressed_module(path: Path) -> bool:
    return path.name.endswith((".ko.xz", ".ko.zst", ".ko.gz"))


def _module_bytes(path: Path) -> bytes:
    """Compressed modules are stored decompressed: busybox insmod cannot read .ko.xz/.ko.zst,
    and decompressing under TCG would be slow anyway."""
    raw = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(raw)
    if path.name.endswith(".gz"):
        return zlib.decompress(raw, wbits=31)
    return _decompress_external(["zstd", "-d", "-c", "-q"], raw, path)


def _compile_pyc(source: bytes, guest_path: str) -> bytes | None:
    """An unchecked-hash pyc (PEP 552): the image is immutable, so the guest never re-validates
    it against the source. None when the source does not compile: the guest then reports the
    SyntaxError itself, as the host would."""
    try:
        code = compile(source, guest_path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return None
    return (importlib.util.MAGIC_NUMBER + struct.pack("<I", 0b01)
            + importlib.util.source_hash(source) + marshal.dumps(code))


def _stage_stripped(man: _Manifest, work: Path) -> dict[str, _Entry]:
    """Stripped copies of the entries marked ``strip`` (one strip call for all), keeping mtimes."""
    marked = {p: e for p, e in man.entries.items() if e.strip and e.source is not None}
    if not marked or not shutil.which("strip"):
        return {}
    staged: dict[str, _Entry] = {}
    for i, (path, entry) in enumerate(sorted(marked.items())):
        assert entry.source is not None
        copy = work / f"{i}-{entry.source.name}"
        shutil.copy2(entry.source, copy)
        staged[path] = dataclasses.replace(entry, source=copy, strip=False)
    _run(["strip", "--strip-debug", *(str(e.source) for e in staged.values())],
         what="stripping debug information from guest binaries",
         hint="strip is in the Debian package binutils")
    for path, entry in staged.items():
        assert entry.source is not None and marked[path].source is not None
        st = marked[path].source.stat()  # type: ignore[union-attr]
        os.utime(entry.source, ns=(st.st_atime_ns, st.st_mtime_ns))
    return staged


def _write_archive(man: _Manifest, dest: Path, *overrides: Mapping[str, _Entry]) -> None:
    """Write the manifest, with entries replaced or added by ``overrides`` (stripped copies,
    depmod output), to dest atomically."""
    now = int(time.time())
    tmp = dest.with_name(f".hx-{dest.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            writer = _CpioWriter(fh)
            merged = dict(man.entries)
            for override in overrides:
                merged.update(override)
            for path in sorted(merged):
                entry = merged[path]
                pyc = None
                if entry.pyc_of is not None:
                    source = (entry.pyc_of if isinstance(entry.pyc_of, bytes)
                              else entry.pyc_of.read_bytes())
                    guest_py = "/" + path.replace("/__pycache__/", "/").rsplit(".", 2)[0] + ".py"
                    pyc = _compile_pyc(source, guest_py)
                writer.add(path, entry, now, pyc)
            writer.close()
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _depmod_files(kernel: KernelBundle, man: _Manifest, module_files: Sequence[str],
                  work: Path) -> dict[str, _Entry]:
    """Run depmod on a staged copy of the chosen modules so that modprobe in the guest (and the
    kernel's own request_module) finds them; returns the generated modules.* files."""
    if kernel.modules_dir is None or not module_files:
        return {}
    stage = work / "modroot"
    base = f"lib/modules/{kernel.release}"
    for guest in list(module_files) + [p for p in man.entries if p.startswith(f"{base}/modules.")]:
        entry = man.entries[guest]
        assert entry.source is not None
        dst = stage / guest
        dst.parent.mkdir(parents=True, exist_ok=True)
        if _is_compressed_module(entry.source):
            dst.write_bytes(_module_bytes(entry.source))
        else:
            shutil.copyfile(entry.source, dst)
    _run(["depmod", "-b", str(stage), kernel.release], what="indexing guest kernel modules",
         hint="depmod is in the Debian package kmod")
    return {f"{base}/{path.name}": _Entry(mode=0o644, data=path.read_bytes())
            for path in sorted((stage / base).glob("modules.*"))
            if f"{base}/{path.name}" not in man.entries}


def build_initramfs(kernel: KernelBundle, cache_dir: Path | None = None,
                    project_root: Path | str | None = None, *,
                    modules: Sequence[str] = GUEST_MODULES,
                    distributions: Sequence[str] = GUEST_DISTRIBUTIONS,
                    packages: Sequence[str] = PROJECT_PACKAGES) -> Path:
    """The guest initramfs for ``kernel`` and the project at ``project_root``, from the cache when
    nothing that goes into it changed.

    Returns the path of one uncompressed cpio file: the cached system layer followed by the
    project layer. ``project_root`` defaults to the directory holding this package.
    """
    root = Path(project_root).resolve() if project_root else Path(__file__).resolve().parent.parent
    images = (cache_dir or default_cache_dir()) / "images" / kernel.release
    images.mkdir(parents=True, exist_ok=True)
    memo = _Memo(images / "memo.json")
    base_man, module_files = _build_base_manifest(kernel, modules, distributions, memo)
    memo.save()
    proj_man = _build_project_manifest(root, packages)
    base_key, proj_key = base_man.key()[:20], proj_man.key()[:20]
    combined = images / f"initramfs-{base_key}-{proj_key}.cpio"
    with _locked(images / ".lock"):
        if combined.is_file():
            os.utime(combined)  # most recently used: pruned last
            return combined
        base = images / f"base-{base_key}.cpio"
        if not base.is_file():
            t0 = time.monotonic()
            with tempfile.TemporaryDirectory(prefix="hx", dir=images) as tmp:
                extra = _depmod_files(kernel, base_man, module_files, Path(tmp))
                staged = _stage_stripped(base_man, Path(tmp))
                _write_archive(base_man, base, extra, staged)
            log.info("built guest system layer %s (%.1f MB) in %.1f s", base.name,
                     base.stat().st_size / 1e6, time.monotonic() - t0)
        project = images / f"project-{proj_key}.cpio"
        if not project.is_file():
            _write_archive(proj_man, project)
        tmp_combined = combined.with_name(f".hx-{combined.name}.{os.getpid()}.tmp")
        try:
            with open(tmp_combined, "wb") as out:
                for part in (base, project):
                    with open(part, "rb") as fh:
                        shutil.copyfileobj(fh, out, 1 << 22)
            os.replace(tmp_combined, combined)
        finally:
            tmp_combined.unlink(missing_ok=True)
        os.utime(base)
        _prune(images)
    return combined


def _prune(images: Path) -> None:
    """Keep the most recently used few images per release; a cache must not grow without bound."""
    for pattern, keep in (("initramfs-*.cpio", _KEEP_IMAGES), ("project-*.cpio", _KEEP_IMAGES),
                          ("base-*.cpio", 2)):
        files = sorted(images.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[keep:]:
            # A concurrent run (another checkout, an xdist worker) may be about to boot an image it
            # was just handed: only images unused for a while are pruned.
            if time.time() - old.stat().st_mtime > _PRUNE_GRACE_SECONDS:
                old.unlink(missing_ok=True)
