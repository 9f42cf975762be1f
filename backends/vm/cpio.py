"""The cpio writer: `CpioWriter` writes newc ("070701") archives, the format the kernel unpacks, straight
from a manifest (no staging copy of the 75 MB tree; modes, owners and device nodes need no root).
Compressed kernel modules are stored decompressed (`module_bytes`).
"""

from __future__ import annotations

import lzma
import stat
import zlib
from pathlib import Path

from backends.vm.errors import ImageError
from backends.vm.manifest import Entry
from backends.vm.steps import decompress_external

__all__ = ["CpioWriter", "is_compressed_module", "module_bytes"]


class CpioWriter:
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

    def add(self, path: str, entry: Entry, mtime: int, pyc: bytes | None = None) -> None:
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
            data = module_bytes(entry.source) if is_compressed_module(entry.source) else None
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


def is_compressed_module(path: Path) -> bool:
    return path.name.endswith((".ko.xz", ".ko.zst", ".ko.gz"))


def module_bytes(path: Path) -> bytes:
    """Compressed modules are stored decompressed: busybox insmod cannot read .ko.xz/.ko.zst,
    and decompressing under TCG would be slow anyway."""
    raw = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(raw)
    if path.name.endswith(".gz"):
        return zlib.decompress(raw, wbits=31)
    return decompress_external(["zstd", "-d", "-c", "-q"], raw, path)

