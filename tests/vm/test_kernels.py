"""Kernels by name (`--kernel 6.12`, a Debian package or pattern) and the kernel matrix on the VM backend.

The first tests need no qemu and no network: apt's answers are stand-ins and the cache holds stand-in
kernels. The last ones boot Debian's 6.1 and 6.12 kernels (marked vm; skipped unless both are prepared:
`python3 -m harness prepare --kernels 6.1,6.12`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import backends.vm.kernel as kernel_mod
from backends.batch import BatchCache
from backends.vm import VMBackend, prepared_kernel, resolve_kernel_package
from backends.vm.kernel import fetch_kernel, is_kernel_name
from harness.proc import CommandResult
from harness.results import PASS, ScenarioResult

REPO = Path(__file__).resolve().parents[2]

# what `apt-cache pkgnames linux-image-` lists on a bookworm machine with security updates (abridged)
PKGNAMES = """linux-image-6.1.0-56-amd64
linux-image-6.1.0-57-amd64
linux-image-6.1.0-57-amd64-dbg
linux-image-6.1.0-57-cloud-amd64
linux-image-6.1.0-57-rt-amd64
linux-image-6.12-amd64
linux-image-6.12.9+deb12-amd64
linux-image-6.12.111+deb12-amd64
linux-image-6.12.117+deb12-amd64
linux-image-6.12.117+deb12-amd64-unsigned
linux-image-6.12.117+deb12-cloud-amd64
linux-image-6.12-amd64-signed-template
linux-image-amd64
"""


@pytest.fixture
def fake_apt(monkeypatch):
    """apt-cache answered from PKGNAMES; every call recorded."""
    calls = []

    def run_step(argv, **kwargs):
        calls.append(list(argv))
        if argv[:2] == ["apt-cache", "pkgnames"]:
            return CommandResult("host", tuple(argv), 0, "".join(n + "\n" for n in PKGNAMES.split() if n.startswith(argv[2])), "")
        if argv[:2] == ["apt-cache", "depends"]:
            target = {"linux-image-amd64": "linux-image-6.1.0-57-amd64",
                      "linux-image-6.12-amd64": "linux-image-6.12.117+deb12-amd64"}[argv[2]]
            return CommandResult("host", tuple(argv), 0, f"{argv[2]}\n  Depends: {target}\n", "")
        raise AssertionError(f"unexpected command {argv}")

    monkeypatch.setattr(kernel_mod, "run_step", run_step)
    return calls


def test_a_name_is_told_from_a_path():
    assert all(is_kernel_name(n) for n in ("6.1", "6.12", "linux-image-6.12.*+deb12-amd64", "linux-image-amd64"))
    assert not any(is_kernel_name(n) for n in ("/boot/vmlinuz", "./6.12", "vmlinuz", "host", "6", "6.12/x"))


def test_series_patterns_and_packages_resolve_to_the_newest_plain_amd64_package(fake_apt, tmp_path):
    assert resolve_kernel_package("6.1") == "linux-image-6.1.0-57-amd64"
    assert resolve_kernel_package("6.12") == "linux-image-6.12.117+deb12-amd64"  # 117 > 111 > 9, numerically
    assert resolve_kernel_package("linux-image-6.12.*+deb12-amd64") == "linux-image-6.12.117+deb12-amd64"
    assert resolve_kernel_package("linux-image-6.12.1?1+deb12-amd64") == "linux-image-6.12.111+deb12-amd64"
    # a metapackage (6.12-amd64 has only two version numbers: not a concrete package) goes through its Depends
    assert resolve_kernel_package("linux-image-6.12-amd64") == "linux-image-6.12.117+deb12-amd64"
    calls = len(fake_apt)
    assert resolve_kernel_package("linux-image-6.12.9+deb12-amd64") == "linux-image-6.12.9+deb12-amd64"
    assert len(fake_apt) == calls  # a concrete package needs no apt
    with pytest.raises(kernel_mod.ImageError, match="names no linux-image"):
        resolve_kernel_package("5.10")
    # remembered under the cache until apt's lists change
    assert resolve_kernel_package("6.12", tmp_path) == "linux-image-6.12.117+deb12-amd64"
    calls = len(fake_apt)
    assert resolve_kernel_package("6.12", tmp_path) == "linux-image-6.12.117+deb12-amd64"
    assert len(fake_apt) == calls


def stand_in_kernel(cache: Path, release: str) -> Path:
    entry = cache / "kernels" / release
    (entry / "boot").mkdir(parents=True)
    (entry / "lib" / "modules" / release).mkdir(parents=True)
    (entry / "vmlinux").write_bytes(b"\x7fELF stand-in")
    (entry / "boot" / f"config-{release}").write_text("CONFIG_IPVLAN=m\nCONFIG_VLAN_8021Q=m\n")
    (entry / "bundle.json").write_text(json.dumps({"release": release, "package": f"linux-image-{release}=1"}))
    return entry


def test_fetch_by_name_records_the_name_not_the_default(fake_apt, tmp_path, monkeypatch):
    stand_in_kernel(tmp_path, "6.1.0-57-amd64")
    monkeypatch.setattr(kernel_mod, "_download_kernel", lambda concrete, release, work, entry: (
        stand_in_kernel(tmp_path, release), kernel_mod._load_bundle(entry))[1])
    bundle = fetch_kernel(tmp_path, "6.12")
    assert bundle.release == "6.12.117+deb12-amd64"
    names = json.loads((tmp_path / "kernels" / "names.json").read_text())
    assert names == {"6.12": "6.12.117+deb12-amd64"}
    assert not (tmp_path / "kernels" / "prepared.json").exists()  # the default kernel stays the default
    assert fetch_kernel(tmp_path).release == "6.1.0-57-amd64"
    assert prepared_kernel(tmp_path).release == "6.1.0-57-amd64"
    assert prepared_kernel(tmp_path, "6.12").release == "6.12.117+deb12-amd64"


def test_a_named_kernel_is_found_in_the_cache_without_apt(tmp_path, monkeypatch):
    monkeypatch.setattr(kernel_mod, "run_step", lambda *a, **k: pytest.fail("asked apt"))
    assert prepared_kernel(tmp_path, "6.12") is None
    stand_in_kernel(tmp_path, "6.1.0-57-amd64")
    stand_in_kernel(tmp_path, "6.12.111+deb12-amd64")
    stand_in_kernel(tmp_path, "6.12.117+deb12-amd64")
    stand_in_kernel(tmp_path, "6.12.117+deb12-cloud-amd64")
    assert prepared_kernel(tmp_path, "6.12").release == "6.12.117+deb12-amd64"  # the series, newest, plain flavour
    assert prepared_kernel(tmp_path, "6.1").release == "6.1.0-57-amd64"  # not 6.12
    assert prepared_kernel(tmp_path, "linux-image-6.12.111+deb12-amd64").release == "6.12.111+deb12-amd64"
    assert prepared_kernel(tmp_path, "linux-image-6.12.*+deb12-cloud-amd64").release == "6.12.117+deb12-cloud-amd64"
    assert prepared_kernel(tmp_path, "6.6") is None


def test_the_backend_by_name_is_cheap_and_says_what_to_prepare(tmp_path, monkeypatch):
    monkeypatch.setattr("backends.vm.backend.qemu_available", lambda: None)
    monkeypatch.setattr(kernel_mod, "run_step", lambda *a, **k: pytest.fail("asked apt"))
    missing = VMBackend(kernel="6.12", cache_dir=str(tmp_path))
    assert missing.available() == ("VM kernel 6.12 is not prepared: run "
                                   "`python3 -m harness prepare --backend vm --kernel 6.12`")
    assert missing.kernel_release() == "unknown"
    assert all(not c.available for c in missing.capabilities().values())
    stand_in_kernel(tmp_path, "6.1.0-57-amd64")
    stand_in_kernel(tmp_path, "6.12.117+deb12-amd64")
    for name, release in (("6.12", "6.12.117+deb12-amd64"), ("6.1", "6.1.0-57-amd64")):
        backend = VMBackend(kernel=name, cache_dir=str(tmp_path))
        assert backend.available() is None and backend.kernel_release() == release
        assert backend.bundle().release == release
        assert backend.capabilities()["ipvlan"].available  # its own config: one answer per kernel
        assert backend._probe_cache().path.name.startswith(f"capabilities-{release}-")


def test_batch_caches_of_two_kernels_do_not_share_a_file(tmp_path):
    class Fake:
        name = "vm"

        def __init__(self, release):
            self.release = release

        def kernel_release(self):
            return self.release

        def run_batch(self, scenarios, profile):
            return [ScenarioResult(s.name, s.path, "vm", self.release, PASS) for s in scenarios]

    from harness.loader import load_scenario

    s = load_scenario(REPO / "scenarios" / "macvlan-bridge.yaml")
    a = BatchCache(Fake("6.1.0-57-amd64"), "run", directory=tmp_path, key="vm-6.1")
    b = BatchCache(Fake("6.12.117+deb12-amd64"), "run", directory=tmp_path, key="vm-6.12")
    assert a.results_file != b.results_file
    assert a.result(s, [s], "docker-20.10").kernel == "6.1.0-57-amd64"
    assert b.result(s, [s], "docker-20.10").kernel == "6.12.117+deb12-amd64"
    odd = BatchCache(Fake("x"), "run", directory=tmp_path, key="vm-linux-image-6.12.*+deb12-amd64")
    assert odd.results_file.name == "vm-linux-image-6.12._+deb12-amd64.json"
    assert BatchCache(Fake("x"), "run", directory=tmp_path).results_file.name == "vm.json"


# -- booting both kernels -----------------------------------------------------------------------------------


def _prepared(*names: str) -> bool:
    return all(VMBackend(kernel=n).available() is None for n in names)


needs_both = pytest.mark.skipif(not _prepared("6.1", "6.12"),
                                reason="needs qemu and the 6.1 and 6.12 kernels: "
                                       "python3 -m harness prepare --kernels 6.1,6.12")


@pytest.mark.vm
@pytest.mark.root
@needs_both
def test_the_matrix_runs_ipvlan_on_both_kernels_and_shows_a_failing_fact(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    text = (REPO / "scenarios" / "ipvlan-l2.yaml").read_text()
    (bad / "deliberately-failing.yaml").write_text(
        # a wrong expectation: c1 gets 192.168.1.2, as the documentation says
        text.replace("name: ipvlan-l2", "name: deliberately-failing", 1).replace("c1: [192.168.1.2/24]", "c1: [192.168.1.99/24]"))
    out = tmp_path / "run.json"
    run = subprocess.run([sys.executable, "-m", "harness", "run", "--kernels", "6.1,6.12", "--no-matrix", "-q",
                          str(REPO / "scenarios" / "ipvlan-l2.yaml"), str(bad), "--json", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stdout + run.stderr
    records = json.loads(out.read_text())
    got = {(r["scenario"], r["kernel"].split(".")[1]): r["status"] for r in records}
    assert got == {("ipvlan-l2", "1"): "pass", ("ipvlan-l2", "12"): "pass",
                   ("deliberately-failing", "1"): "fail", ("deliberately-failing", "12"): "fail"}, run.stdout
    report = subprocess.run([sys.executable, "-m", "harness", "report", str(out)], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert report.returncode == 1
    row = next(line for line in report.stdout.splitlines() if line.startswith("| deliberately-failing |"))
    assert row.startswith("| deliberately-failing | **fail** | **fail** | ")
    assert "192.168.1.99/24" in row and "(every kernel)" in row
