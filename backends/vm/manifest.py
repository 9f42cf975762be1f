"""What an image holds before it is written: `Manifest` (guest path -> `Entry`: a host file, generated
bytes, a symlink, a device node, a directory or a pyc compiled at write time) and its cache key;
`Memo`, the remembered answers of slow host queries (ldd, modinfo, busybox --list); `compile_pyc`.

Keys are sha256 digests over everything that goes in: contents for project files and generated files;
path, size and mtime for the system files (as make does; hashing 75 MB on every run would cost more
than it protects).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import marshal
import os
import stat
import struct
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from backends.vm.kernel import BUILDER_VERSION
from backends.vm.steps import write_atomic

__all__ = ["Entry", "Manifest", "Memo", "compile_pyc"]


@dataclass(frozen=True)
class Entry:
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
class Manifest:
    entries: dict[str, Entry] = field(default_factory=dict)  # guest path (no leading /) -> entry
    extra_key: list[str] = field(default_factory=list)

    def file(self, guest: str, source: Path, mode: int | None = None) -> None:
        st = source.stat()  # follows symlinks: the guest gets the content, not the host's layout
        self.entries[guest.lstrip("/")] = Entry(mode=stat.S_IMODE(st.st_mode) if mode is None
                                                 else mode, source=source)

    def pyc(self, guest_py: str, source: Path | bytes) -> None:
        """An unchecked-hash pyc for the guest's ``guest_py``, compiled when the image is written."""
        parent, _, name = guest_py.lstrip("/").rpartition("/")
        stem = name.removesuffix(".py")
        self.entries[f"{parent}/__pycache__/{stem}.{sys.implementation.cache_tag}.pyc"] = (
            Entry(mode=0o644, pyc_of=source))

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
        self.entries[guest.lstrip("/")] = Entry(mode=mode, data=raw)

    def symlink(self, guest: str, target: str) -> None:
        self.entries[guest.lstrip("/")] = Entry(mode=0o777, target=target)

    def dir(self, guest: str, mode: int = 0o755) -> None:
        self.entries[guest.lstrip("/")] = Entry(mode=mode, is_dir=True)

    def key(self) -> str:
        digest = hashlib.sha256(f"hx-initramfs {BUILDER_VERSION}\n".encode())
        for line in self.extra_key:
            digest.update(f"{line}\n".encode())
        for path in sorted(self.entries):
            digest.update(f"{path} {self.entries[path].fingerprint()}\n".encode())
        return digest.hexdigest()


class Memo:
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
            write_atomic(self.path, json.dumps(self.data, indent=1).encode())
            self.dirty = False



def compile_pyc(source: bytes, guest_path: str) -> bytes | None:
    """An unchecked-hash pyc (PEP 552): the image is immutable, so the guest never re-validates
    it against the source. None when the source does not compile: the guest then reports the
    SyntaxError itself, as the host would."""
    try:
        code = compile(source, guest_path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return None
    return (importlib.util.MAGIC_NUMBER + struct.pack("<I", 0b01)
            + importlib.util.source_hash(source) + marshal.dumps(code))

