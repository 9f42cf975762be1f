"""Commands in a qemu guest booting Debian's kernel (backends/vm/qemu.py), checked end to end.

Every test boots a real VM (TCG, about 3-4 s a boot on this machine kind) except the signal tests,
which stop the harness while qemu is still starting. Facts are checked from the host's side:
exit codes, files on the share, /proc for leftover qemu processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from backends.vm import KernelBundle, build_initramfs, default_cache_dir
from backends.vm.qemu import GuestResult, QemuVM, VMError, VMTimeout, run_in_guest
from harness.errors import HarnessError

pytestmark = pytest.mark.vm

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def image(kernel: KernelBundle) -> Path:
    return build_initramfs(kernel, default_cache_dir(), PROJECT_ROOT)


def _qemu_children(parent: int) -> list[int]:
    """PIDs of live qemu processes whose parent is ``parent`` (from /proc, an independent view)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if comm.startswith("qemu-system") and int(fields[1]) == parent and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie is dead, only not yet reaped by its new parent


def test_guest_runs_debian_kernel_with_no_network_device(kernel: KernelBundle, image: Path) -> None:
    result = run_in_guest(["sh", "-c", "uname -r; ls /sys/class/net; ip -V"], kernel, image,
                          timeout=120)
    assert isinstance(result, GuestResult)
    assert result.exit_code == 0, result.stderr
    release, net_devices, ip_version = result.stdout.splitlines()
    assert release == kernel.release == result.kernel_release
    assert release != os.uname().release
    assert net_devices == "lo"  # no NIC at all: nothing can leave the guest
    assert "iproute2" in ip_version  # the real ip, not the busybox applet
    assert 0 < result.boot_seconds < result.total_seconds < 120
    argv = QemuVM(kernel, image).argv()
    assert "-nodefaults" in argv  # no default NIC with user-mode networking
    assert argv.count("-nic") == 1 and argv[argv.index("-nic") + 1] == "none"
    assert "-netdev" not in argv and "-net" not in argv


def test_guest_python_creates_vlan_ipvlan_dummy_links_with_pyroute2(kernel: KernelBundle,
                                                                    image: Path,
                                                                    tmp_path: Path) -> None:
    (tmp_path / "links.py").write_text(textwrap.dedent("""\
        import json, subprocess, sys
        import jsonschema, rich, yaml
        from pyroute2 import IPRoute, netns

        netns.create("hxvmtest")
        with IPRoute(netns="hxvmtest") as ipr:
            ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "peer0"})
            eth0 = ipr.link_lookup(ifname="eth0")[0]
            ipr.link("add", ifname="eth0.50", kind="vlan", link=eth0, vlan_id=50)
            ipr.link("add", ifname="ipvl0", kind="ipvlan", link=eth0, ipvlan_mode=0)
            ipr.link("add", ifname="dm0", kind="dummy")
        # Read back through iproute2's JSON, not through pyroute2.
        out = subprocess.run(["ip", "-n", "hxvmtest", "-d", "-j", "link", "show"],
                             capture_output=True, text=True, check=True).stdout
        links = {l["ifname"]: l.get("linkinfo", {}) for l in json.loads(out)}
        with open("links.json", "w") as fh:
            json.dump({"links": links, "python": sys.version,
                       "yaml": yaml.safe_load("a: [1, 2]")}, fh)
        """))
    result = run_in_guest(["python3", "links.py"], kernel, image, share_dir=tmp_path, timeout=120)
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "links.json").read_text())
    links = report["links"]
    assert links["eth0.50"]["info_kind"] == "vlan"
    assert links["eth0.50"]["info_data"]["id"] == 50
    assert links["eth0.50"]["info_data"]["protocol"] == "802.1Q"
    assert links["ipvl0"]["info_kind"] == "ipvlan"
    assert links["ipvl0"]["info_data"]["mode"] == "l2"
    assert links["dm0"]["info_kind"] == "dummy"
    assert report["python"] == sys.version  # the host's interpreter runs in the guest
    assert report["yaml"] == {"a": [1, 2]}


@pytest.mark.parametrize("code", [3, 213])
def test_exit_code_stdout_and_stderr_come_back_separately(kernel: KernelBundle, image: Path,
                                                          code: int) -> None:
    script = f"echo to-stdout; echo to-stderr >&2; exit {code}"
    result = run_in_guest(["sh", "-c", script], kernel, image, timeout=120)
    assert result.exit_code == code
    assert result.stdout == "to-stdout\n" and result.stderr == "to-stderr\n"
    with pytest.raises(VMError, match=f"exited with {code}:\nto-stderr") as info:
        result.assert_success()
    assert isinstance(info.value, HarnessError)  # cli.main reports it, no traceback


def test_share_cwd_environment_and_argument_quoting(kernel: KernelBundle, image: Path,
                                                   tmp_path: Path) -> None:
    (tmp_path / "input.txt").write_text("from the host\n")
    tricky = ["it's", "a b", "$HOME", "`true`", ""]
    script = 'cat input.txt > "$OUT_NAME"; pwd; printf "<%s>\\n" "$@"'
    result = run_in_guest(["sh", "-c", script, "sh", *tricky], kernel, image,
                          share_dir=tmp_path, env={"OUT_NAME": "out file.txt"}, timeout=120)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["/out", *(f"<{a}>" for a in tricky)]
    assert (tmp_path / "out file.txt").read_text() == "from the host\n"


def test_setup_failure_is_a_vm_error(kernel: KernelBundle, image: Path) -> None:
    with pytest.raises(VMError, match="cannot change to directory '?/hx-does-not-exist"):
        run_in_guest(["true"], kernel, image, cwd="/hx-does-not-exist", timeout=120)


def test_hanging_guest_is_killed_at_timeout(kernel: KernelBundle, image: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # to see what temp files remain
    started = time.monotonic()
    with pytest.raises(VMTimeout) as info:
        run_in_guest(["sleep", "1000"], kernel, image, timeout=15)
    elapsed = time.monotonic() - started
    assert 15 <= elapsed < 25
    assert "did not finish within 15 s" in str(info.value)
    assert "hx-init: command starts" in info.value.console_tail  # the guest had booted
    assert "hx-init: command starts" in str(info.value)
    assert _qemu_children(os.getpid()) == []
    assert list(tmp_path.iterdir()) == []


def test_kernel_panic_fails_fast_with_console_tail(kernel: KernelBundle, image: Path) -> None:
    started = time.monotonic()
    with pytest.raises(VMError) as info:
        run_in_guest(["sh", "-c", "echo c > /proc/sysrq-trigger"], kernel, image, timeout=120)
    assert not isinstance(info.value, VMTimeout)
    assert time.monotonic() - started < 60  # panic=-1 + -no-reboot: qemu exits, no timeout
    assert "never reported an exit status" in str(info.value)
    assert "sysrq" in info.value.console_tail.lower()


def test_context_manager_kills_qemu_and_removes_its_files(kernel: KernelBundle,
                                                          image: Path) -> None:
    with QemuVM(kernel, image) as vm:
        pid, console = vm.pid, vm.console_path
        assert pid is not None and _alive(pid)
        assert os.getpgid(pid) == pid  # qemu leads its own process group (killed as a group)
        assert (console.parent / "stderr").is_file()  # qemu's own messages, beside the console
    assert not _alive(pid)
    assert not console.parent.exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_qemu_never_outlives_the_harness(kernel: KernelBundle, image: Path, tmp_path: Path,
                                         signum: signal.Signals) -> None:
    code = textwrap.dedent(f"""\
        from pathlib import Path
        from backends.vm.qemu import run_in_guest
        run_in_guest(["sleep", "1000"], Path({str(kernel.boot_image)!r}), Path({str(image)!r}),
                     timeout=300)
        """)
    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONPATH=str(PROJECT_ROOT))
    child = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=PROJECT_ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not (qemus := _qemu_children(child.pid)):
            assert child.poll() is None, child.communicate()[0].decode(errors="replace")
            assert time.monotonic() < deadline, "qemu did not start"
            time.sleep(0.05)
        child.send_signal(signum)
        output = child.communicate(timeout=30)[0].decode(errors="replace")
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 10
    while _alive(qemus[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(qemus[0]), f"qemu pid {qemus[0]} survived {signum.name}"
    if signum == signal.SIGTERM:
        assert child.returncode == 128 + signal.SIGTERM, output
    if signum != signal.SIGKILL:  # a SIGKILLed harness cannot clean up; qemu still dies
        assert list(tmp_path.iterdir()) == [], output
