"""The VM backend: the harness inside a throwaway qemu guest booting Debian's full kernel.

Modules, from the bottom up (each imports only those above it; no cycle):

- `errors`: `VMError`, `VMTimeout`, `ImageError` (members of `harness.errors.HarnessError`)
- `steps`: the cache directory, host commands as named steps (through `harness.proc`), atomic writes
- `kernel`: `KernelBundle`, Debian's kernel package fetched into the cache (`fetch_kernel`), the
  prepared kernel found cheaply (`prepared_kernel`), bzImage decompression
- `manifest`, `cpio`, `closure`, `image`: the guest's initramfs (`build_initramfs`): what goes in, from
  where, written as cpio, cached in two layers and pruned
- `snapshot`: `SnapshotSpec`, `ensure_snapshot`, `AgentChannel`: a guest saved with the harness loaded, resumed
  instead of booted (its guest side: `guest_agent.py`)
- `qemu`: `QemuVM`, `run_in_guest`, `run_in_guests`, `GuestResult` (the job in, the results out over 9p)
- `capabilities`: what the guest kernel can create, from its config file or the cached guest probe
- `backend`: `VMBackend` (a batch backend: `available`, `capabilities`, `prepare`, `run_batch`, `run_tool`)
- `guest_init.sh`: the guest's /init; `guest_agent.py`: the guest's harness runner in a saved guest (run by
  path inside the guest, never imported on the host)
"""

from backends.vm.backend import NOT_PREPARED, VMBackend, VMDockerBackend
from backends.vm.closure import GUEST_DISTRIBUTIONS, GUEST_MODULES, module_load_order
from backends.vm.errors import ImageError, VMError, VMTimeout
from backends.vm.image import PROJECT_PACKAGES, build_initramfs
from backends.vm.kernel import KernelBundle, fetch_kernel, prepared_kernel, resolve_kernel_package
from backends.vm.qemu import GuestJob, GuestResult, QemuVM, qemu_available, run_in_guest, run_in_guests
from backends.vm.steps import default_cache_dir

__all__ = [
    "GUEST_DISTRIBUTIONS",
    "GUEST_MODULES",
    "NOT_PREPARED",
    "PROJECT_PACKAGES",
    "GuestJob",
    "GuestResult",
    "ImageError",
    "KernelBundle",
    "QemuVM",
    "VMBackend",
    "VMDockerBackend",
    "VMError",
    "VMTimeout",
    "build_initramfs",
    "default_cache_dir",
    "fetch_kernel",
    "module_load_order",
    "prepared_kernel",
    "qemu_available",
    "resolve_kernel_package",
    "run_in_guest",
    "run_in_guests",
]
