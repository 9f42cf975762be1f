"""The offline container image: a busybox-static root filesystem as a tarball, built once and cached.

No registry is reachable from this project's machines, so every image name a scenario runs (`alpine`)
is this tarball, `docker import`ed into each private daemon. It holds the static busybox binary, a
symlink per applet (`sh`, `ping`, `ip`, ...), `sbin`/`usr/bin`/`usr/sbin` pointing at `bin`, and a
minimal `/etc/passwd`. The file name carries a hash of the busybox binary, so a new busybox makes a new
image. `$HARNESS_CACHE/docker`, else `~/.cache/harness/docker` (XDG_CACHE_HOME respected).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
import tarfile
import tempfile
import time
from pathlib import Path

from harness import proc
from harness.errors import BackendUnavailable

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
PT_INTERP = 3


def default_cache_dir() -> Path:
    env = os.environ.get("HARNESS_CACHE")
    if env:
        return Path(env).expanduser() / "docker"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "harness" / "docker"


def find_busybox() -> str | None:
    for path in (shutil.which("busybox"), *BUSYBOX_CANDIDATES):
        if path and os.access(path, os.X_OK) and is_static(path):
            return path
    return None


def is_static(path: str) -> bool:
    """An ELF executable without a program interpreter runs in an empty root filesystem."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only: what this project's machines are
                return False
            phoff, = struct.unpack_from("<Q", head, 32)
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != PT_INTERP for i in range(phnum))


def image_path(cache_dir: Path, busybox: str) -> Path:
    digest = hashlib.sha256(Path(busybox).read_bytes()).hexdigest()[:12]
    return cache_dir / f"rootfs-busybox-{digest}.tar"


def cached_image(cache_dir: Path) -> Path | None:
    """The image built for this machine's busybox, if it is there (cheap enough for `available`)."""
    busybox = find_busybox()
    if busybox is None:
        found = sorted(cache_dir.glob("rootfs-busybox-*.tar")) if cache_dir.is_dir() else []
        return found[-1] if found else None
    path = image_path(cache_dir, busybox)
    return path if path.is_file() else None


def build_image(cache_dir: Path) -> Path:
    """The rootfs tarball, built now unless it is cached; returns its path."""
    busybox = find_busybox()
    if busybox is None:
        cached = cached_image(cache_dir)
        if cached is not None:
            return cached
        raise BackendUnavailable("no static busybox (apt-get install busybox-static): the offline container "
                                 "image is built from it")
    path = image_path(cache_dir, busybox)
    if path.is_file():
        return path
    listing = proc.run([busybox, "--list"], timeout=30).assert_success()
    applets = sorted({a for a in listing.stdout.split() if a and "/" not in a and a != "busybox"})
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".rootfs-", suffix=".tar", dir=cache_dir)
    now = int(time.time())
    try:
        with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w") as tar:
            def add(name: str, kind: bytes, mode: int, data: bytes = b"", target: str = "") -> None:
                info = tarfile.TarInfo(name)
                info.type, info.mode, info.mtime, info.linkname = kind, mode, now, target
                info.size = len(data) if kind == tarfile.REGTYPE else 0
                tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

            for d in ("bin", "etc", "root", "proc", "sys", "dev", "usr", "var"):
                add(d, tarfile.DIRTYPE, 0o755)
            add("tmp", tarfile.DIRTYPE, 0o1777)
            add("bin/busybox", tarfile.REGTYPE, 0o755, Path(busybox).read_bytes())
            for applet in applets:
                add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, target="busybox")
            add("sbin", tarfile.SYMTYPE, 0o777, target="bin")
            add("usr/bin", tarfile.SYMTYPE, 0o777, target="../bin")
            add("usr/sbin", tarfile.SYMTYPE, 0o777, target="../bin")
            add("etc/passwd", tarfile.REGTYPE, 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
            add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
