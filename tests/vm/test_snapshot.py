"""A guest saved with the harness loaded, resumed for each job (backends/vm/snapshot.py, guest_agent.py).

The qemu tests boot one real guest to save it (about 8 s under TCG; cached per image, as `harness run` does)
and resume it; facts are checked from the host: exit codes, the files the agent wrote on the share, the
snapshot file, and what a resumed scenario run reports.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from backends.vm import VMBackend
from backends.vm.qemu import GuestJob, GuestResult, run_in_guests
from backends.vm.snapshot import SnapshotError, SnapshotSpec
from harness.loader import load_scenario
from harness.results import PASS

pytestmark = pytest.mark.vm

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CAPABILITIES = ("python3", "-m", "harness", "capabilities", "--backend", "netns", "--json")


@pytest.fixture(scope="module")
def backend(kernel) -> VMBackend:
    return VMBackend()


@pytest.fixture(scope="module")
def saved(backend: VMBackend) -> Path:
    path = backend.snapshot(backend.batch_image())
    assert path is not None and path.is_file(), "the guest could not be saved (see the warning above)"
    return path


def test_a_resumed_guest_runs_harness_jobs_with_their_share_and_environment(backend, saved, tmp_path):
    shares = [tmp_path / "a", tmp_path / "b"]
    for share in shares:
        share.mkdir()
    (shares[1] / "scenarios").mkdir()
    (shares[1] / "scenarios" / "broken.yaml").write_text("name: [unclosed\n")
    jobs = [GuestJob(CAPABILITIES, shares[0], env={"HARNESS_RUN_ID": "beef"}),
            GuestJob(("python3", "-m", "harness", "validate", "scenarios/broken.yaml"), shares[1])]
    first, second = run_in_guests(jobs, backend.bundle(), backend.batch_image(), 120, snapshot=saved)
    assert isinstance(first, GuestResult) and first.restored, first
    assert first.exit_code == 0, first.stderr
    caps = json.loads(first.stdout)
    assert caps["vlan"]["available"] and caps["ipvlan"]["available"]  # Debian's full kernel, not this machine's
    assert first.kernel_release == backend.kernel_release()
    # The job's cwd is its share, and its exit status and stderr come back apart from stdout.
    assert isinstance(second, GuestResult) and second.restored
    assert second.exit_code == 1 and "broken.yaml" in second.stdout + second.stderr  # as on the host


def test_a_snapshot_that_does_not_load_is_a_snapshot_error(backend, saved, tmp_path):
    corrupt = tmp_path / "corrupt.qemu"
    corrupt.write_bytes(b"QEVM" + os.urandom(4096))
    (outcome,) = run_in_guests([GuestJob(CAPABILITIES)], backend.bundle(), backend.batch_image(), 60,
                               snapshot=corrupt)
    assert isinstance(outcome, SnapshotError), outcome
    assert "cannot resume the saved guest" in str(outcome)


def test_the_batch_boots_instead_when_the_saved_guest_does_not_resume(backend, saved, tmp_path, monkeypatch):
    corrupt = tmp_path / "guest-corrupt.qemu"
    corrupt.write_bytes(b"not a qemu migration stream")
    monkeypatch.setattr(VMBackend, "snapshot", lambda self, image: corrupt)
    scenario = load_scenario(PROJECT_ROOT / "scenarios" / "macvlan-vlan50.yaml")
    (result,) = VMBackend(parallel=1).run_batch([scenario])
    assert result.status == PASS, result.failure_report()
    assert result.durations["vm_resumed"] == 0.0  # booted
    assert not corrupt.exists()  # removed: the next run saves a new one


def test_only_harness_jobs_can_resume(backend, saved):
    with pytest.raises(ValueError, match="python3 -m harness"):
        run_in_guests([GuestJob(("sh", "-c", "true"))], backend.bundle(), backend.batch_image(), 60,
                      snapshot=saved)


def test_the_snapshot_key_follows_what_the_saved_guest_depends_on(tmp_path):
    kernel, image = tmp_path / "vmlinux", tmp_path / "initramfs-a-b.cpio"
    kernel.write_bytes(b"k" * 10)
    image.write_bytes(b"i" * 10)
    spec = SnapshotSpec("6.1", kernel, image, 512, "max", ("console=ttyS0", "hx.agent"), "true")
    key = spec.key()
    os.utime(image, (1, 1))  # the image cache touches its file on every use: the same snapshot
    assert SnapshotSpec("6.1", kernel, image, 512, "max", ("console=ttyS0", "hx.agent"), "true").key() == key
    other_image = tmp_path / "initramfs-a-c.cpio"
    other_image.write_bytes(b"i" * 10)
    for changed in (SnapshotSpec("6.1", kernel, other_image, 512, "max", spec.append, "true"),
                    SnapshotSpec("6.1", kernel, image, 1024, "max", spec.append, "true"),
                    SnapshotSpec("6.1", kernel, image, 512, "qemu64", spec.append, "true"),
                    SnapshotSpec("6.1", kernel, image, 512, "max", ("console=ttyS0",), "true")):
        assert changed.key() != key
    kernel.write_bytes(b"k" * 11)  # a rebuilt kernel
    assert spec.key() != key
