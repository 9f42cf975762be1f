"""The guest's kernel: Debian's own package fetched into the cache, or a kernel given with ``--kernel``.

Main objects:

* :class:`KernelBundle`: a bootable kernel (an ELF ``vmlinux`` whenever the bzImage could be
  decompressed), its modules tree and its build configuration. :func:`fetch_kernel` makes one from
  Debian's ``linux-image-*-amd64`` package (downloaded with ``apt-get download`` and unpacked with
  ``dpkg-deb -x`` into the cache: nothing is installed, nothing lands in /boot);
  :meth:`KernelBundle.from_path` wraps a user-supplied kernel (``--kernel PATH``).
* :func:`prepared_kernel`: the kernel already in the cache (what ``harness prepare`` fetched), found
  without apt, network or decompression: what the backend's cheap ``available()`` asks.
* :func:`resolve_kernel_package`: the concrete ``linux-image-<release>`` package behind a metapackage,
  a version series (``6.1``, ``6.12``: the newest ``-amd64`` package of that series the archive offers)
  or a package-name pattern (``linux-image-6.12.*+deb12-amd64``); :func:`is_kernel_name` tells such a
  name from a path (``--kernel`` takes both).
* :func:`kernel_release_of_file` and :func:`find_config`: a kernel image's release and its
  ``config-<release>`` file, read without unpacking anything.

Cache layout, under :func:`backends.vm.steps.default_cache_dir`::

    kernels/<release>/{boot,lib,usr}/     dpkg-deb -x of the Debian package (boot/config-<release> too)
    kernels/<release>/vmlinux             the decompressed ELF that qemu boots
    kernels/<release>/bundle.json         written last: the entry is complete
    kernels/prepared.json                 the release the last fetch of the default package chose
    kernels/names.json                    kernel name (``6.12``, a package) -> the release fetched for it
    kernels/resolved.json                 metapackage -> concrete package, until apt's lists change
    kernels/user-<sha256>/vmlinux         decompressed user-supplied bzImage
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import lzma
import os
import re
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from backends.vm.errors import ImageError
from backends.vm.steps import decompress_external, default_cache_dir, run_step, write_atomic

log = logging.getLogger(__name__)

__all__ = ["BUILDER_VERSION", "DEFAULT_PACKAGE", "KernelBundle", "fetch_kernel", "find_config", "is_kernel_name",
           "kernel_release_of_file", "prepared_kernel", "resolve_kernel_package"]

# Bump when the image layout or the builder's logic changes: it is part of every cache key.
BUILDER_VERSION = "1"

DEFAULT_PACKAGE = "linux-image-amd64"
# A concrete package: linux-image-6.1.0-57-amd64, linux-image-6.12.117+deb12-amd64 (three version numbers;
# linux-image-6.12-amd64 is a metapackage). Debian's -unsigned twin holds the same kernel.
_KERNEL_PACKAGE_RE = re.compile(r"^linux-image-(?P<release>\d+\.\d+\.\d+[\w.+~]*-[\w.+~-]+?)(?:-unsigned)?$")
_SERIES_RE = re.compile(r"^\d+\.\d+$")
_NOT_A_KERNEL = ("-dbg", "-unsigned", "-template")
_APT_TIMEOUT = 900.0
_APT_HINT = "is the package index current? run `apt-get update` first"


@dataclass(frozen=True)
class KernelBundle:
    """A kernel qemu can boot, with the modules built for it.

    ``boot_image`` is what ``qemu -kernel`` gets: the decompressed ELF vmlinux when the bzImage
    could be decompressed (qemu then boots it through PVH, which saves 6-7 s of in-guest
    decompression under TCG), else the bzImage itself. ``modules_dir`` is ``.../lib/modules/<release>``
    or None for a kernel with everything built in; ``config`` its ``config-<release>`` when known.
    """

    release: str
    boot_image: Path
    modules_dir: Path | None
    vmlinuz: Path | None = None
    package: str | None = None  # "linux-image-6.1.0-56-amd64=6.1.192-2" when fetched from Debian
    config: Path | None = None

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
        config = find_config(path, release, mods)
        if data[:4] == b"\x7fELF":
            return cls(release=release, boot_image=path, modules_dir=mods, vmlinuz=None, config=config)
        cache = (cache_dir or default_cache_dir()) / "kernels"
        target = cache / f"user-{hashlib.sha256(data).hexdigest()[:16]}" / "vmlinux"
        cache.mkdir(parents=True, exist_ok=True)
        with FileLock(cache / ".lock"):
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(target, _decompress_bzimage(data, path))
        return cls(release=release, boot_image=target, modules_dir=mods, vmlinuz=path, config=config)

    def to_json(self) -> dict[str, str | None]:
        return {"release": self.release, "boot_image": str(self.boot_image),
                "modules_dir": str(self.modules_dir) if self.modules_dir else None,
                "vmlinuz": str(self.vmlinuz) if self.vmlinuz else None, "package": self.package,
                "config": str(self.config) if self.config else None}


def kernel_release_of_file(path: str | os.PathLike[str]) -> str:
    """The release (``uname -r``) of a bzImage or an ELF vmlinux, reading only its header when it can."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(64 * 1024)  # the setup code, which holds a bzImage's version string
        try:
            return _kernel_release_of(head, path)
        except ImageError:
            return _kernel_release_of(head + fh.read(), path)


def _kernel_release_of(data: bytes, path: Path) -> str:
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


def find_config(kernel: Path, release: str, modules_dir: Path | None) -> Path | None:
    """The build configuration of a user-supplied kernel, where kernels keep it: ``config-<release>``
    beside the image (as in /boot), ``.config`` of the build tree it came from, or the modules tree's
    ``build/.config``. None when there is none (capabilities are then probed by booting it)."""
    kernel = Path(kernel)
    candidates = [kernel.parent / f"config-{release}", kernel.parent / ".config"]
    if len(kernel.parents) > 3:  # arch/x86/boot/bzImage in a build tree
        candidates.append(kernel.parents[3] / ".config")
    if modules_dir is not None:
        candidates.append(modules_dir / "build" / ".config")
    return next((c for c in candidates if c.is_file()), None)


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
            out = decompress_external(["zstd", "-d", "-c", "-q"], payload, path)
        elif payload.startswith(b"\x02\x21\x4c\x18"):
            out = decompress_external(["lz4", "-d", "-c", "-q"], payload, path)
        else:
            raise ImageError(f"{path}: unknown kernel payload compression {payload[:6].hex()}")
    except (lzma.LZMAError, zlib.error, OSError) as exc:
        raise ImageError(f"{path}: cannot decompress the kernel payload: {exc}") from exc
    if out[:4] != b"\x7fELF":
        raise ImageError(f"{path}: decompressed payload is not an ELF image")
    return out


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
    if _KERNEL_PACKAGE_RE.match(package) and not _is_pattern(package):
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
    if _SERIES_RE.match(package) or _is_pattern(package):
        found = _offered_packages(package)
        out = "(no package of that name)"
    else:
        out = run_step(["apt-cache", "depends", package], what=f"resolving kernel package {package}",
                       hint=_APT_HINT).stdout
        found = [m.group(1) for m in re.finditer(r"^\s*\|?Depends:\s*(\S+)", out, re.MULTILINE)
                 if _KERNEL_PACKAGE_RE.match(m.group(1))]
    if not found:
        raise ImageError(f"resolving kernel package {package}: `apt-cache depends {package}` "
                         f"names no linux-image-<release> package:\n{out.strip()}\n{_APT_HINT}")
    if memo_path is not None:
        memo[package] = {"stamp": stamp, "concrete": found[0]}
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(memo_path, (json.dumps(memo, indent=2) + "\n").encode())
    return found[0]


def is_kernel_name(text: str) -> bool:
    """``--kernel`` TEXT names a Debian kernel (a version series such as ``6.12``, or a ``linux-image-...``
    package or pattern) rather than a file: no slash, and one of those shapes."""
    return "/" not in text and (bool(_SERIES_RE.match(text)) or text.startswith("linux-image-"))


def _is_pattern(name: str) -> bool:
    return any(ch in name for ch in "*?[")


def _matches(spec: str, release: str, package: str | None) -> bool:
    """Whether a kernel (its release, its package) is what ``spec`` names, without asking apt."""
    if _SERIES_RE.match(spec):
        return release.startswith((f"{spec}.", f"{spec}-")) and _plain_flavour(release)
    name = (package or "").split("=", 1)[0] or f"linux-image-{release}"
    return fnmatch.fnmatchcase(name, spec) if _is_pattern(spec) else name == spec


def _plain_flavour(release: str) -> bool:
    """The generic ``-amd64`` flavour, not ``-cloud-amd64`` or ``-rt-amd64``."""
    return release.endswith("-amd64") and not release.endswith(("-cloud-amd64", "-rt-amd64"))


def _offered_packages(spec: str) -> list[str]:
    """The concrete kernel packages apt's lists offer for a series or a pattern, newest first (local)."""
    prefix = f"linux-image-{spec}" if _SERIES_RE.match(spec) else re.split(r"[*?\[]", spec, maxsplit=1)[0]
    out = run_step(["apt-cache", "pkgnames", prefix], what=f"listing kernel packages for {spec}",
                   hint=_APT_HINT).stdout
    names = {n for n in out.split() if not n.endswith(_NOT_A_KERNEL) and _KERNEL_PACKAGE_RE.match(n)}
    found = [n for n in names if _matches(spec, _KERNEL_PACKAGE_RE.match(n).group("release"), n)]  # type: ignore[union-attr]
    return sorted(found, key=lambda n: _version_key(n), reverse=True)


def fetch_kernel(cache_dir: Path | None = None, package: str = DEFAULT_PACKAGE) -> KernelBundle:
    """Debian's kernel ``package`` unpacked into the cache, with its bzImage decompressed once.

    A metapackage is resolved to its concrete ``linux-image-<release>`` package with apt-cache
    (local, no network); a release already in the cache is returned without downloading. If apt
    cannot resolve the package but the cache holds kernels, the newest cached one is used with a
    warning, so that a machine whose apt lists were cleaned still runs. The kernel returned is
    recorded as the prepared one (:func:`prepared_kernel`) when ``package`` is the default, and under its
    name (``6.12``, a package or pattern) in ``names.json`` otherwise, so ``prepared_kernel(name=...)``
    finds it without apt.
    """
    root = cache_dir or default_cache_dir()
    cache = root / "kernels"
    cache.mkdir(parents=True, exist_ok=True)
    try:
        concrete = resolve_kernel_package(package, root)
    except ImageError:
        cached = _cached_kernels(cache) if package == DEFAULT_PACKAGE else _cached_named(cache, package)
        if not cached:
            raise
        log.warning("cannot resolve %s with apt; using cached kernel %s", package, cached[-1].release)
        return _record_prepared(cache, cached[-1], package)
    release = _KERNEL_PACKAGE_RE.match(concrete).group("release")  # type: ignore[union-attr]
    entry = cache / release
    with FileLock(cache / ".lock"):
        bundle = _load_bundle(entry)
        if bundle is None:
            if entry.exists():
                shutil.rmtree(entry)  # an interrupted earlier fetch
            work = Path(tempfile.mkdtemp(prefix="hx", dir=cache))
            try:
                bundle = _download_kernel(concrete, release, work, entry)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return _record_prepared(cache, bundle, package)


def _download_kernel(concrete: str, release: str, work: Path, entry: Path) -> KernelBundle:
    argv = ["apt-get", "download", "-q"]
    if os.geteuid() == 0:
        # As root apt drops to the _apt user, which cannot write into our private temp dir.
        argv += ["-o", "APT::Sandbox::User=root"]
    run_step(argv + [concrete], what=f"downloading kernel package {concrete}", cwd=work,
             timeout=_APT_TIMEOUT, hint=_APT_HINT)
    debs = sorted(work.glob("*.deb"))
    if len(debs) != 1:
        raise ImageError(f"downloading kernel package {concrete}: expected one .deb in {work}, "
                         f"found {[d.name for d in debs]}")
    version = run_step(["dpkg-deb", "-f", str(debs[0]), "Version"],
                       what=f"reading the version of {debs[0].name}").stdout.strip()
    root = work / "root"
    run_step(["dpkg-deb", "-x", str(debs[0]), str(root)], what=f"unpacking {debs[0].name}")
    debs[0].unlink()
    vmlinuz = root / "boot" / f"vmlinuz-{release}"
    modules = root / "lib" / "modules" / release
    if not vmlinuz.is_file() or not modules.is_dir():
        raise ImageError(f"unpacking {concrete}: no boot/vmlinuz-{release} or "
                         f"lib/modules/{release} in the package")
    write_atomic(root / "vmlinux", _decompress_bzimage(vmlinuz.read_bytes(), vmlinuz))
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
    try:
        meta = json.loads(meta_path.read_text())
        release = meta["release"]
    except (OSError, ValueError, KeyError):
        return None
    config = entry / "boot" / f"config-{release}"
    return KernelBundle(release=release, boot_image=entry / "vmlinux",
                        modules_dir=entry / "lib" / "modules" / release,
                        vmlinuz=entry / "boot" / f"vmlinuz-{release}", package=meta.get("package"),
                        config=config if config.is_file() else None)


def _record_prepared(cache: Path, bundle: KernelBundle, package: str = DEFAULT_PACKAGE) -> KernelBundle:
    if package != DEFAULT_PACKAGE:
        names = _read_json(cache / "names.json")
        if names.get(package) != bundle.release:
            write_atomic(cache / "names.json", (json.dumps({**names, package: bundle.release}, indent=1) + "\n").encode())
        return bundle
    path = cache / "prepared.json"
    current = _read_json(path).get("release")
    if current != bundle.release:
        write_atomic(path, (json.dumps({"release": bundle.release}) + "\n").encode())
    return bundle


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _cached_named(cache: Path, name: str) -> list[KernelBundle]:
    """Cached kernels that ``name`` names: the one its fetch recorded, else those whose release or package
    matches (a series, a pattern, a concrete package), oldest first."""
    release = _read_json(cache / "names.json").get(name)
    if isinstance(release, str) and "/" not in release:
        bundle = _load_bundle(cache / release)
        if bundle is not None:
            return [bundle]
    return [b for b in _cached_kernels(cache) if _matches(name, b.release, b.package)]


def prepared_kernel(cache_dir: Path | None = None, name: str | None = None) -> KernelBundle | None:
    """The kernel a fetch left in the cache (the one it recorded, else the newest), or None.

    With ``name`` (``6.12``, a package or pattern, as ``--kernel`` takes them): the kernel fetched for
    that name, else the newest cached one it names. Reads a few small files: no apt, no network, no
    decompression.
    """
    cache = (cache_dir or default_cache_dir()) / "kernels"
    if name is not None and name != DEFAULT_PACKAGE:
        named = _cached_named(cache, name)
        return named[-1] if named else None
    try:
        release = json.loads((cache / "prepared.json").read_text())["release"]
    except (OSError, ValueError, KeyError, TypeError):
        release = None
    if isinstance(release, str) and "/" not in release:
        bundle = _load_bundle(cache / release)
        if bundle is not None:
            return bundle
    cached = _cached_kernels(cache)
    return cached[-1] if cached else None


def _version_key(release: str) -> list[tuple[int, str]]:
    return [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.+~-]", release)]


def _cached_kernels(cache: Path) -> list[KernelBundle]:
    found = [b for e in cache.iterdir() if e.is_dir() and not e.name.startswith(("hx", "user-"))
             for b in [_load_bundle(e)] if b is not None] if cache.is_dir() else []
    return sorted(found, key=lambda b: _version_key(b.release))
