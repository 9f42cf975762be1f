"""Kernel bundle and guest image cache (backends/vm/kernel.py, backends/vm/image.py), checked on real artefacts.

The kernel is Debian's own package, fetched into the default cache (``HARNESS_CACHE`` or
``~/.cache/harness/vm``) so that later runs are warm; what the image holds is checked with GNU cpio
and dpkg as independent oracles, and one image is booted to prove that a rebuilt project layer is
what the guest runs.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from backends.vm import (
    ImageError,
    KernelBundle,
    build_initramfs,
    default_cache_dir,
    fetch_kernel,
    prepared_kernel,
    resolve_kernel_package,
)
from backends.vm.qemu import qemu_available, run_in_guest

pytestmark = pytest.mark.vm

HOST_TOOLS = {"busybox": "busybox-static", "ip": "iproute2", "bridge": "iproute2",
              "ping": "iputils-ping", "nsenter": "util-linux", "modinfo": "kmod", "depmod": "kmod",
              "apt-get": "apt", "dpkg-deb": "dpkg", "ldd": "libc-bin"}


def _skip_reason() -> str | None:
    reason = qemu_available()
    if reason:
        return reason
    if os.geteuid() != 0:
        return "VM tests run as root (they drive apt-get and network namespaces in the guest)"
    path = "/usr/sbin:/usr/bin:/sbin:/bin"
    missing = [f"{t} ({p})" for t, p in HOST_TOOLS.items() if not shutil.which(t, path=path)]
    return f"missing host tools: {', '.join(missing)}" if missing else None


@pytest.fixture(scope="module")
def cache_dir() -> Path:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    return default_cache_dir()


@pytest.fixture(scope="module")
def kernel(cache_dir: Path) -> KernelBundle:
    try:
        resolve_kernel_package()
    except ImageError as exc:  # no apt index on this machine: an environment gap, not a bug
        pytest.skip(f"apt cannot resolve Debian's kernel package: {exc}")
    return fetch_kernel(cache_dir)


def _cpio_listing(archive: Path) -> dict[str, str]:
    """path -> `cpio -tv` line of the first archive in ``archive`` (GNU cpio stops at its trailer)."""
    if not shutil.which("cpio"):
        pytest.skip("cpio (Debian package cpio) is needed to inspect the image")
    with open(archive, "rb") as fh:
        out = subprocess.run(["cpio", "-itv", "--quiet"], stdin=fh, capture_output=True,
                             text=True, timeout=60, check=True).stdout
    listing: dict[str, str] = {}
    for line in out.splitlines():
        # "-rwxr-xr-x 1 root root 691016 May 22  2023 bin/ip", "... bin/ls -> busybox",
        # "crw------- 1 root root 5,   1 Nov 28 22:19 dev/console"
        match = _CPIO_LINE.match(line)
        assert match, line
        listing[match["name"].split(" -> ")[0]] = line
    return listing


_CPIO_LINE = re.compile(r"^\S+\s+\d+\s+\S+\s+\S+\s+(?:\d+,\s+)?\d+\s+\w{3}\s+\d+\s+[\d:]+\s(?P<name>.+)$")


def _layers(image: Path) -> tuple[Path, Path]:
    match = re.fullmatch(r"initramfs-(\w+)-(\w+)\.cpio", image.name)
    assert match, image.name
    return image.with_name(f"base-{match[1]}.cpio"), image.with_name(f"project-{match[2]}.cpio")


def test_fetch_kernel_unpacks_debian_kernel_into_cache_only(kernel: KernelBundle,
                                                            cache_dir: Path) -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+-\d+-amd64", kernel.release), kernel.release
    assert kernel.release != os.uname().release
    assert kernel.package and kernel.package.startswith(f"linux-image-{kernel.release}=")
    assert kernel.boot_image.read_bytes()[:4] == b"\x7fELF"  # decompressed once, booted directly
    assert kernel.boot_image.is_relative_to(cache_dir)
    assert kernel.modules_dir is not None
    assert (kernel.modules_dir / "kernel" / "net" / "8021q" / "8021q.ko").is_file()
    # The package's own build configuration, which capabilities() reads without booting.
    assert kernel.config == kernel.boot_image.parent / "boot" / f"config-{kernel.release}"
    assert "CONFIG_VLAN_8021Q=" in kernel.config.read_text()
    assert prepared_kernel(cache_dir) == kernel  # what the backend's cheap available() finds
    # Nothing installed on the host: dpkg does not know the package as installed.
    status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", f"linux-image-{kernel.release}"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert "install ok installed" not in status.stdout


def test_fetch_kernel_is_idempotent(kernel: KernelBundle, cache_dir: Path) -> None:
    before = kernel.boot_image.stat()
    started = time.monotonic()
    again = fetch_kernel(cache_dir)
    assert again == kernel
    assert time.monotonic() - started < 10  # no download, no unpacking
    after = again.boot_image.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_fetch_kernel_error_names_the_command(tmp_path: Path, cache_dir: Path) -> None:
    with pytest.raises(ImageError) as info:
        fetch_kernel(tmp_path, package="hx-no-such-kernel-package")
    message = str(info.value)
    assert "apt-cache" in message and "hx-no-such-kernel-package" in message
    assert "apt-get update" in message


def test_from_path_decompresses_user_bzimage(kernel: KernelBundle, tmp_path: Path) -> None:
    assert kernel.vmlinuz is not None
    user = KernelBundle.from_path(kernel.vmlinuz, kernel.modules_dir, cache_dir=tmp_path)
    assert user.release == kernel.release
    assert user.boot_image.is_relative_to(tmp_path / "kernels")
    digest = hashlib.sha256(user.boot_image.read_bytes()).hexdigest()
    assert digest == hashlib.sha256(kernel.boot_image.read_bytes()).hexdigest()
    # An ELF vmlinux is used as it is.
    elf = KernelBundle.from_path(kernel.boot_image, kernel.modules_dir, cache_dir=tmp_path)
    assert elf.boot_image == kernel.boot_image.resolve() and elf.release == kernel.release
    # Modules of another release would not load: refuse them up front.
    other = tmp_path / "lib" / "modules" / "9.9.9-hx"
    other.mkdir(parents=True)
    (other / "modules.builtin").write_text("")
    with pytest.raises(ImageError, match="9.9.9-hx"):
        KernelBundle.from_path(kernel.vmlinuz, other, cache_dir=tmp_path)


def test_image_holds_real_tools_modules_and_python_closure(kernel: KernelBundle,
                                                          cache_dir: Path) -> None:
    import sys
    import sysconfig

    image = build_initramfs(kernel, cache_dir)
    base, project = _layers(image)
    files = _cpio_listing(image)  # the first archive of the image is the system layer
    assert files == _cpio_listing(base)
    # The real iproute2/iputils/util-linux binaries, not busybox applets.
    for tool in ("bin/ip", "bin/bridge", "bin/ping", "bin/nsenter"):
        assert files[tool].startswith("-"), files[tool]
    assert files["bin/ls"].endswith("-> busybox")
    assert files["dev/console"].startswith("c")
    mods = f"lib/modules/{kernel.release}"
    for ko in ("kernel/net/8021q/8021q.ko", "kernel/drivers/net/ipvlan/ipvlan.ko",
               "kernel/drivers/net/dummy.ko", "kernel/net/bridge/bridge.ko",
               "kernel/net/9p/9pnet_virtio.ko", "modules.dep"):
        assert f"{mods}/{ko}" in files, ko
    # The running interpreter, its stdlib without tests, exactly the runtime distributions.
    exe = str(Path(sys.executable).resolve()).lstrip("/")
    site = str(Path(sysconfig.get_paths()["purelib"]).resolve()).lstrip("/")
    stdlib = str(Path(sysconfig.get_paths()["stdlib"]).resolve()).lstrip("/")
    assert exe in files
    for module in ("pyroute2/__init__.py", "yaml/__init__.py", "jsonschema/__init__.py",
                   "rich/__init__.py", "referencing/__init__.py", "attr/__init__.py",
                   "pygments/__init__.py", "mdurl/__init__.py"):
        assert f"{site}/{module}" in files, module
    assert not any(p.startswith(f"{site}/_pytest/") for p in files)  # not a guest dependency
    assert f"{stdlib}/json/__init__.py" in files
    assert not any(p.startswith((f"{stdlib}/test/", f"{stdlib}/tkinter/")) for p in files)
    # The project layer carries /init and the project's packages.
    project_files = _cpio_listing(project)
    assert "init" in project_files and "hx/project/backends/vm/qemu.py" in project_files


def test_image_cache_reuses_and_rebuilds_only_the_project_layer(kernel: KernelBundle,
                                                                cache_dir: Path,
                                                                tmp_path: Path) -> None:
    root = tmp_path / "project"
    for package in ("harness", "backends"):
        (root / package).mkdir(parents=True)
    marker = root / "harness" / "__init__.py"
    marker.write_text('MARKER = "v1"\n')
    (root / "harness" / "__main__.py").write_text("from harness import MARKER\nprint(MARKER)\n")
    (root / "backends" / "__init__.py").write_text("")

    first = build_initramfs(kernel, cache_dir, root)
    base, _ = _layers(first)
    base_inode, first_inode = base.stat().st_ino, first.stat().st_ino
    again = build_initramfs(kernel, cache_dir, root)
    assert again == first and again.stat().st_ino == first_inode  # reused, not rewritten

    os.utime(marker, (time.time() + 5, time.time() + 5))  # touched, same content: same image
    assert build_initramfs(kernel, cache_dir, root) == first

    marker.write_text('MARKER = "v2"\n')
    started = time.monotonic()
    second = build_initramfs(kernel, cache_dir, root)
    rebuild_seconds = time.monotonic() - started
    assert second != first
    assert _layers(second)[0] == base and base.stat().st_ino == base_inode  # system layer kept
    assert rebuild_seconds < 15, rebuild_seconds

    result = run_in_guest(["python3", "-m", "harness"], kernel, second, timeout=120)
    assert (result.exit_code, result.stdout.strip()) == (0, "v2"), result.stderr
