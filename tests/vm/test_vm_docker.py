"""The docker backend inside the VM: a real Docker 20.10 engine on Debian's kernel, for the scenarios
this machine's kernel cannot run (802.1q VLANs, ipvlan, dummy parents).

`harness run --backend docker` runs each scenario on the engine on this kernel where it can and hands
the others to `vm-docker` (backends.vm.backend.VMDockerBackend), which boots guests whose image has the
docker layer (docker.io's programs, the offline container image, cgroup2) and runs
`harness run --backend docker` there. The boot test takes two to four minutes under TCG (two guests).
"""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path

import pytest

from harness.loader import load_scenario
from harness.results import PASS

pytestmark = [pytest.mark.vm, pytest.mark.docker, pytest.mark.root]
ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
# The ipvlan one also resolves a container name through Docker's embedded DNS (iptables in the container).
VLAN, IPVLAN = SCENARIOS / "macvlan-vlan50.yaml", SCENARIOS / "ipvlan-l2-name-resolution.yaml"


def _why_not() -> str | None:
    from backends.docker.daemon import missing_binaries
    from backends.vm.qemu import qemu_available

    if os.geteuid() != 0:
        return "needs root (the guest's engine runs in network namespaces; the host engine too)"
    missing = missing_binaries()
    if missing:
        return f"docker.io is not installed ({', '.join(missing)} missing; apt-get install docker.io)"
    return qemu_available()


@pytest.fixture(scope="module")
def vm_docker():
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    try:
        from backends.vm.backend import VMDockerBackend
    except ImportError as exc:  # pyroute2, filelock missing
        pytest.skip(f"the VM backend cannot be imported: {exc}")
    backend = VMDockerBackend()
    reason = backend.available()
    if reason:
        pytest.skip(reason)
    return backend


def _qemu_children() -> list[int]:
    me = os.getpid()
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        if comm.startswith("qemu-system") and int(fields[1]) == me and fields[0] != "Z":
            found.append(int(stat.split("/")[2]))
    return found


def _my_temp_dirs() -> list[str]:
    """Temp dirs this process made (harness.proc.temp_dir names carry the owner's PID)."""
    return sorted(glob.glob(os.path.join(tempfile.gettempdir(), f"hx*-{os.getpid()}.*")))


def test_docker_runs_on_this_kernel_where_it_can_and_in_the_guest_where_it_must(vm_docker):
    from backends.select import BackendChooser
    from harness.plan import cannot_run

    chooser = BackendChooser("docker")
    host = chooser.backend("docker")
    for path in (SCENARIOS / "macvlan-bridge.yaml", VLAN, IPVLAN):
        scenario = load_scenario(path)
        backend, why = chooser.explain(scenario)
        expected = "docker" if cannot_run(host, chooser.features(scenario)) is None else "vm-docker"
        assert backend.name == expected, why
        if expected == "vm-docker":
            assert why.startswith("not docker: kernel lacks"), why


def test_the_docker_layer_is_optional(vm_docker):
    from backends.vm.image import build_initramfs

    plain = vm_docker.image()
    with_docker = vm_docker.batch_image()
    assert plain != with_docker
    assert with_docker.stat().st_size > plain.stat().st_size + 100e6  # dockerd, containerd, runc, the client
    # The scenario runner's image is the same file as without the docker backend: the same boot.
    assert build_initramfs(vm_docker.bundle(), vm_docker.cache_dir(), packages=("harness", "backends", "scenarios")) \
        == plain
    assert len(plain.name.split("-")) == 3 and len(with_docker.name.split("-")) == 4


def test_vlan_and_ipvlan_scenarios_pass_on_real_docker_in_the_guest(vm_docker):
    before = set(_my_temp_dirs())
    scenarios = [load_scenario(VLAN), load_scenario(IPVLAN)]
    results = vm_docker.run_batch(scenarios)
    assert [r.scenario for r in results] == ["macvlan-vlan50", "ipvlan-l2-name-resolution"]
    for r in results:
        assert r.status == PASS, f"{r.scenario}: {r.reason}\n{r.failure_report()}"
        assert r.backend == "docker (vm)"
        assert r.kernel == vm_docker.kernel_release() and r.kernel != os.uname().release
        assert r.path in (str(VLAN), str(IPVLAN))  # host paths, not the guest's copies
        assert r.durations["vm_boot"] > 0
        assert r.steps and any("docker network create" in s.command for s in r.steps)
    # The parent sub-interface eth0.50 was made by Docker's driver, in a host namespace where a real
    # dockerd runs: its docker0 bridge is there (the emulation makes none).
    link = next(c for c in results[0].checks if c.kind == "link" and c.subject == "host eth0.50")
    assert link.ok and "docker0 bridge" in link.evidence, link.evidence
    # Nothing of the run is left on this machine: no qemu, no share or control directory.
    assert _qemu_children() == []
    assert set(_my_temp_dirs()) <= before
