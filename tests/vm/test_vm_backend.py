"""The VM backend's cheap side (no qemu boot, no network, no download), and the batch plumbing.

`available()`, `capabilities()` and `kernel_release()` must answer from files alone: a fake cache dir
holding a fake prepared kernel is enough, and nothing may be started or written while they answer.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import harness.proc
from backends.base import BATCH, backend_class, get_backend
from backends.batch import BatchCache, adopt_records, batch_dir, stage_scenarios
from backends.vm import NOT_PREPARED, ImageError, VMBackend, VMError, VMTimeout, prepared_kernel
from backends.vm.capabilities import FEATURE_CONFIG, ProbeCache, from_config
from backends.vm.image import PROJECT_ROOT
from harness.errors import HarnessError
from harness.plan import FEATURES
from harness.results import PASS, ScenarioResult

RELEASE = "6.1.0-99-amd64"
CONFIG = """\
# a kernel .config excerpt
CONFIG_VETH=m
CONFIG_BRIDGE=m
CONFIG_BRIDGE_VLAN_FILTERING=y
CONFIG_MACVLAN=m
CONFIG_VLAN_8021Q=m
# CONFIG_IPVLAN is not set
CONFIG_DUMMY=y
CONFIG_IPV6=y
"""


@pytest.fixture(autouse=True)
def no_processes(monkeypatch):
    """Anything here that starts a process (apt, a decompressor, qemu) fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"started a process: {args[:1]}")

    for name in ("run", "run_many", "run_bytes", "spawn"):
        monkeypatch.setattr(harness.proc, name, refuse)


@pytest.fixture
def qemu_installed(monkeypatch):
    monkeypatch.setattr("backends.vm.backend.qemu_available", lambda: None)


def fake_kernel(cache: Path, release: str = RELEASE, config: str | None = CONFIG) -> Path:
    """What `fetch_kernel` leaves in the cache, with a stand-in vmlinux."""
    entry = cache / "kernels" / release
    (entry / "boot").mkdir(parents=True)
    (entry / "lib" / "modules" / release).mkdir(parents=True)
    (entry / "vmlinux").write_bytes(b"\x7fELF stand-in")
    if config is not None:
        (entry / "boot" / f"config-{release}").write_text(config)
    (entry / "bundle.json").write_text(json.dumps({"release": release, "package": f"linux-image-{release}=1"}))
    return entry


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_nothing_prepared_is_a_reason_at_once(tmp_path, monkeypatch, qemu_installed):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    backend = VMBackend()
    assert backend.available() == NOT_PREPARED
    assert "python3 -m harness prepare --backend vm" in NOT_PREPARED
    caps = backend.capabilities()
    assert set(caps) == set(FEATURES)
    assert all(not c.available and c.detail == NOT_PREPARED for c in caps.values())
    assert backend.kernel_release() == "unknown"
    assert not (tmp_path / "cache").exists()  # nothing created, nothing downloaded


def test_capabilities_come_from_the_kernel_package_config(tmp_path, qemu_installed):
    fake_kernel(tmp_path)
    before = listing(tmp_path)
    backend = VMBackend(cache_dir=str(tmp_path))
    assert backend.available() is None
    assert backend.kernel_release() == RELEASE
    caps = backend.capabilities()
    assert {f for f, c in caps.items() if c.available} == set(FEATURES) - {"ipvlan"}
    assert caps["ipvlan"].detail == f"kernel lacks {FEATURES['ipvlan']}"
    assert "CONFIG_VLAN_8021Q=m" in caps["vlan"].detail and "8021q" in caps["vlan"].detail
    assert listing(tmp_path) == before  # side-effect free


def test_the_cached_guest_probe_wins_over_the_config(tmp_path, qemu_installed):
    fake_kernel(tmp_path)
    probe = {f: {"available": f != "dummy", "detail": "probed"} for f in FEATURES}
    ProbeCache(tmp_path, RELEASE, PROJECT_ROOT).store(json.dumps(probe))
    caps = VMBackend(cache_dir=str(tmp_path)).capabilities()
    assert {f for f, c in caps.items() if not c.available} == {"dummy"}  # the config says ipvlan; the probe rules
    assert caps["vlan"].detail == "probed"


def test_config_rules():
    assert set(FEATURE_CONFIG) == set(FEATURES)
    # =m only counts when the guest loads the module; a bool option needs its parent feature.
    caps = from_config("CONFIG_IPV6=m\nCONFIG_BRIDGE_VLAN_FILTERING=y\n", "config-x", modules=("bridge",))
    assert not caps["ipv6"].available and "does not load ipv6" in caps["ipv6"].detail
    assert not caps["bridge_vlan_filtering"].available
    assert caps["bridge_vlan_filtering"].detail == f"kernel lacks {FEATURES['bridge']}"
    caps = from_config("CONFIG_BRIDGE=y\nCONFIG_BRIDGE_VLAN_FILTERING=y\n", "config-x")
    assert caps["bridge_vlan_filtering"].available


def test_the_prepared_kernel_is_the_recorded_one_else_the_newest(tmp_path):
    assert prepared_kernel(tmp_path) is None
    fake_kernel(tmp_path, "6.1.0-9-amd64")
    fake_kernel(tmp_path, "6.1.0-10-amd64")
    (tmp_path / "kernels" / "6.1.0-11-amd64").mkdir()  # an interrupted fetch: no bundle.json
    assert prepared_kernel(tmp_path).release == "6.1.0-10-amd64"  # numeric order, complete entries
    (tmp_path / "kernels" / "prepared.json").write_text(json.dumps({"release": "6.1.0-9-amd64"}))
    bundle = prepared_kernel(tmp_path)
    assert bundle.release == "6.1.0-9-amd64"
    assert bundle.config == tmp_path / "kernels" / "6.1.0-9-amd64" / "boot" / "config-6.1.0-9-amd64"


def test_a_given_kernel_is_prepared_and_read_without_unpacking(tmp_path, qemu_installed):
    with pytest.raises(HarnessError, match="does not exist"):
        VMBackend(kernel=str(tmp_path / "nope"), cache_dir=str(tmp_path))
    kernel = tmp_path / "boot" / "vmlinux-9.9.9-hx"
    kernel.parent.mkdir()
    kernel.write_bytes(b"\x7fELF" + b"\0" * 100 + b"Linux version 9.9.9-hx (builder@host) #1 SMP")
    (kernel.parent / "config-9.9.9-hx").write_text("CONFIG_VLAN_8021Q=y\nCONFIG_VETH=y\n")
    backend = VMBackend(kernel=str(kernel), cache_dir=str(tmp_path / "cache"))
    assert backend.available() is None
    assert backend.kernel_release() == "9.9.9-hx"
    caps = backend.capabilities()
    assert {f for f, c in caps.items() if c.available} == {"vlan", "veth"}
    assert not (tmp_path / "cache").exists()


def test_without_qemu_the_reason_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr("backends.vm.qemu.shutil.which", lambda name: None)
    fake_kernel(tmp_path)
    reason = VMBackend(cache_dir=str(tmp_path)).available()
    assert "qemu-system-x86" in reason


def test_declared_a_batch_backend():
    assert backend_class("vm") is VMBackend and VMBackend.kind == BATCH
    assert not hasattr(VMBackend, "session")
    assert isinstance(get_backend("vm"), VMBackend)


def test_vm_errors_are_harness_errors():
    for cls in (VMError, VMTimeout, ImageError):
        assert issubclass(cls, HarnessError)
    assert issubclass(VMTimeout, VMError) and issubclass(ImageError, VMError)


def test_no_import_cycle_in_the_vm_package():
    """Module-level imports between backends/vm modules form no cycle (each can be imported first)."""
    package = PROJECT_ROOT / "backends" / "vm"
    graph = {}
    for path in package.glob("*.py"):
        if path.name == "__init__.py":
            continue
        deps = set()
        for node in ast.parse(path.read_text()).body:  # top level only: TYPE_CHECKING imports do not run
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("backends.vm."):
                deps.add(node.module.rsplit(".", 1)[1])
        graph[path.stem] = deps

    def visit(name, chain):
        assert name not in chain, f"import cycle: {' -> '.join([*chain, name])}"
        for dep in graph.get(name, ()):
            visit(dep, [*chain, name])

    for name in graph:
        visit(name, [])
    assert max(len(p.read_text().splitlines()) for p in package.glob("*.py")) <= 500


# -- batch plumbing -------------------------------------------------------------------------------


class FakeBatchBackend:
    name = "fake"
    kind = BATCH

    def __init__(self):
        self.calls = []

    def kernel_release(self):
        return "9.9"

    def run_batch(self, scenarios, profile, matrix=True):
        self.calls.append([s.path for s in scenarios])
        return [ScenarioResult(s.name, s.path, self.name, "9.9", PASS) for s in scenarios]


class FakeScenario:
    def __init__(self, path: Path):
        self.path, self.name, self.source = str(path), path.stem, ""
        self.docker_choices = ()  # as a scenario file that pins none of Docker's random choices


def test_one_batch_per_run_shared_by_workers(tmp_path):
    a, b, late = (FakeScenario(tmp_path / f"{n}.yaml") for n in ("a", "b", "late"))
    backend = FakeBatchBackend()
    first = BatchCache(backend, "beef", directory=tmp_path / "batch")
    second = BatchCache(backend, "beef", directory=tmp_path / "batch")  # another worker
    assert first.result(a, [b, a], "p").status == PASS
    assert second.result(b, [a, b], "p").path == b.path
    assert backend.calls == [sorted([a.path, b.path])]  # one batch for both
    assert "not in this run's fake batch" in second.result(late, [a, b], "p").reason
    assert batch_dir("beef") == BatchCache.batch_dir("beef") and batch_dir("beef").name.endswith("beef")


def test_stage_and_adopt(tmp_path):
    src = tmp_path / "s.yaml"
    src.write_text("name: s\n")
    scenario = FakeScenario(src)
    (tmp_path / "share").mkdir()
    paths = stage_scenarios([scenario, scenario], tmp_path / "share", "/out/scenarios")
    assert paths == ["/out/scenarios/000-s.yaml", "/out/scenarios/001-s.yaml"]
    record = ScenarioResult("s", paths[0], "netns", "6.1", PASS).to_dict()
    out = adopt_records([scenario, scenario], paths, [record], "vm", "6.1-guest",
                        lambda s: ScenarioResult(s.name, s.path, "vm", "", "error"))
    assert (out[0].path, out[0].backend, out[0].kernel, out[0].status) == (str(src), "vm", "6.1-guest", PASS)
    assert out[1].status == "error"
