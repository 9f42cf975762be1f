"""Fixtures of the VM tests: the prepared kernel (Debian's package, fetched into the cache once)."""

from __future__ import annotations

import os

import pytest

from backends.vm import ImageError, KernelBundle, default_cache_dir, fetch_kernel
from backends.vm.qemu import qemu_available


@pytest.fixture(scope="module")
def kernel() -> KernelBundle:
    """Debian's kernel for the guest; a skip without qemu or root, or where apt cannot resolve the package."""
    reason = qemu_available()
    if reason:
        pytest.skip(reason)
    if os.geteuid() != 0:
        pytest.skip("VM tests run as root (they drive apt-get and network namespaces in the guest)")
    try:
        return fetch_kernel(default_cache_dir())
    except ImageError as exc:
        if "apt-cache" in str(exc):  # no apt index here: an environment gap, not a bug
            pytest.skip(f"apt cannot resolve Debian's kernel package: {exc}")
        raise
