"""Unit tests of backends/vagrant.py against a stand-in `vagrant`, and of vagrant/Vagrantfile with the real one.

No Vagrant box can be downloaded here, so `FakeVagrant` writes a small Python program that plays
`vagrant`: it logs every invocation (argv, working directory, Vagrant's environment switches), fakes `up`/`rsync` by mirroring the
project's `.harness-vagrant/` into a directory standing for the box's root, and answers `ssh -c` by
running the real harness (`--backend dry-run` in place of netns, which needs root) on the files that
reached the box. The facts are checked from outside the code under test: the invocation log, the box
directory, the host's file tree. `vagrant validate` runs when Debian's `vagrant` is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import backends.vagrant as vagrant_backend
from backends.base import _REGISTRY, BATCH, BatchBackend, SessionBackend, backend_class
from backends.vagrant import VagrantBackend
from harness import runid
from harness.errors import BackendUnavailable
from harness.loader import load_scenario
from harness.plan import FEATURES
from harness.results import ERROR, SKIP

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "scenarios"
VAGRANTFILE = REPO / "vagrant" / "Vagrantfile"
BOX_KERNEL = "6.1.0-99-amd64"

STAND_IN = r'''#!{python}
"""A stand-in `vagrant`: logs its invocations and plays a box whose root directory is BOX."""
import json, os, shlex, shutil, subprocess, sys, time
from pathlib import Path

LOG, BOX, STATE, REPO, KERNEL = Path({log!r}), Path({box!r}), Path({state!r}), Path({repo!r}), {kernel!r}
args = sys.argv[1:]
with LOG.open("a") as f:
    f.write(json.dumps({{"argv": args, "cwd": os.getcwd(),
                        "env": {{k: os.environ.get(k) for k in ("VAGRANT_NO_COLOR", "VAGRANT_CHECKPOINT_DISABLE")}}}})
            + "\n")

def in_box(path):
    return BOX / path.lstrip("/")

def rsync():
    # The Vagrantfile syncs "..": mirror the staging directory (the code runs from the real checkout).
    src, dst = Path.cwd().parent / ".harness-vagrant", in_box("/vagrant/.harness-vagrant")
    shutil.rmtree(dst, ignore_errors=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst)

def fail(message, code=1):
    sys.stderr.write(message + "\n")
    sys.exit(code)

verb = args[0]
if verb == "up":
    if (STATE / "hang-up").exists():
        child = subprocess.Popen(["sleep", "60"])  # like ssh or a provider tool started by Vagrant
        (STATE / "child.pid").write_text(str(child.pid))
        time.sleep(60)
    print("Bringing machine 'default' up with 'libvirt' provider...")
    if (STATE / "fail-up").exists():
        fail("Error while activating network: Call to virNetworkCreate failed: internal error: "
             "Network is already in use by interface virbr1.")
    (STATE / "running").touch()
    rsync()
elif verb == "rsync":
    if not (STATE / "running").exists():
        fail("The machine is not running.")
    rsync()
elif verb == "halt":
    (STATE / "running").unlink(missing_ok=True)
elif verb == "ssh":
    assert args[1] == "-c" and len(args) == 3, args
    if not (STATE / "running").exists():
        fail("VM must be running to open SSH connection. Run `vagrant up`\nto start the virtual machine.")
    words = shlex.split(args[2])
    if words == ["uname", "-r"]:
        print(KERNEL)
    elif words[0] == "cat":
        if not in_box(words[1]).is_file():
            fail(f"cat: {{words[1]}}: No such file or directory")
        sys.stdout.write(in_box(words[1]).read_text())
    elif words[:4] == ["sudo", "rm", "-rf", "--"]:
        shutil.rmtree(in_box(words[4]), ignore_errors=True)
    elif words[:3] == ["cd", "/vagrant", "&&"]:
        rest = words[3:]
        assert rest[:2] == ["sudo", "env"], rest
        rest = rest[2:]
        while "=" in rest[0]:
            rest = rest[1:]
        assert rest[:3] == ["python3", "-m", "harness"], rest
        hargs = rest[3:]
        received = STATE / "received"
        received.mkdir(exist_ok=True)
        for a in hargs:
            if a.endswith(".yaml"):
                shutil.copyfile(in_box(a), received / Path(a).name)
        if (STATE / "fail-run").exists():
            fail("Traceback (most recent call last):\nModuleNotFoundError: No module named 'pyroute2'")
        # netns needs root; dry-run writes records of the same shape.
        hargs = ["dry-run" if a == "netns" else str(in_box(a)) if a.startswith("/vagrant/") else a for a in hargs]
        proc = subprocess.run([sys.executable, "-m", "harness", *hargs], cwd=REPO, capture_output=True, text=True)
        if hargs[0] == "run" and "--json" in hargs:
            out = Path(hargs[hargs.index("--json") + 1])
            if out.is_file():  # as the box would have written them: its own paths
                out.write_text(out.read_text().replace(str(BOX), ""))
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        sys.exit(proc.returncode)
    else:
        fail(f"bash: {{args[2]}}: command not found", 127)
else:
    fail(f"stand-in vagrant: unexpected {{args}}")
'''


class FakeVagrant:
    """The stand-in executable, its invocation log, its box directory and its switches."""

    def __init__(self, root: Path):
        self.root = root
        self.state = root / "state"
        self.box = root / "box"
        self.log = root / "vagrant.log"
        self.project = root / "project"
        self.vagrant_dir = self.project / "vagrant"
        self.state.mkdir()
        self.box.mkdir()
        self.vagrant_dir.mkdir(parents=True)
        shutil.copyfile(VAGRANTFILE, self.vagrant_dir / "Vagrantfile")
        self.executable = root / "bin" / "vagrant"
        self.executable.parent.mkdir()
        self.executable.write_text(STAND_IN.format(python=sys.executable, log=str(self.log), box=str(self.box),
                                                   state=str(self.state), repo=str(REPO), kernel=BOX_KERNEL))
        self.executable.chmod(0o755)

    def switch(self, name: str, on: bool = True) -> None:
        path = self.state / name
        path.touch() if on else path.unlink(missing_ok=True)

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def verbs(self) -> list[str]:
        """`up`, `rsync`, `halt`, and `ssh:<first word of the remote command>`."""
        return [c["argv"][0] if c["argv"][0] != "ssh" else "ssh:" + _remote_verb(c["argv"][2]) for c in self.calls()]

    def backend(self, **options) -> VagrantBackend:
        return VagrantBackend(vagrant_dir=self.vagrant_dir, vagrant=str(self.executable), **options)

    def project_files(self) -> set[str]:
        return {str(p.relative_to(self.project)) for p in self.project.rglob("*")}


def _remote_verb(command: str) -> str:
    if command.startswith("cd /vagrant && "):
        words = command.split()
        return "harness-" + words[words.index("harness") + 1]
    return command.split()[0] if not command.startswith("sudo rm") else "rm"


@pytest.fixture
def fake(tmp_path) -> FakeVagrant:
    return FakeVagrant(tmp_path)


@pytest.fixture
def scenarios():
    # Deliberately not in path order: the box's harness sorts, the backend must give back the caller's order.
    return [load_scenario(str(SCENARIOS / "macvlan-bridge.yaml")), load_scenario(str(SCENARIOS / "ipvlan-l2.yaml"))]


def _assert_no_temp_files(fake: FakeVagrant, before: set[str]) -> None:
    # The only thing a batch may leave is Vagrant's state directory with the batch lock in it.
    assert fake.project_files() - before <= {".vagrant", "vagrant/.vagrant", "vagrant/.vagrant/harness-batch.lock"}
    assert not (fake.project / ".harness-vagrant").exists()
    left_in_box = fake.box / "vagrant" / ".harness-vagrant"
    assert not left_in_box.exists() or not any(left_in_box.iterdir())


# --- the batch ----------------------------------------------------------------------------------------------


def test_batch_walks_up_rsync_ssh_in_the_vagrant_directory(fake, scenarios):
    before = fake.project_files()
    results = fake.backend().run_batch(scenarios)

    assert fake.verbs() == ["up", "rsync", "ssh:uname", "ssh:harness-run", "ssh:cat", "ssh:rm"]
    assert {c["cwd"] for c in fake.calls()} == {str(fake.vagrant_dir)}
    assert all(c["env"] == {"VAGRANT_NO_COLOR": "1", "VAGRANT_CHECKPOINT_DISABLE": "1"} for c in fake.calls())
    run = fake.calls()[3]["argv"]
    assert run[:2] == ["ssh", "-c"]
    command = run[2]
    assert command.startswith("cd /vagrant && sudo env TERM=dumb COLUMNS=160 ")
    # The box's harness carries this run's id (its namespace names say which run made them), as does
    # the staging directory.
    assert f" HARNESS_RUN_ID={runid.run_id()} python3 -m harness run " in command
    assert f"/vagrant/.harness-vagrant/run-{runid.run_id()}" in command
    assert "python3 -m harness run --backend netns --profile docker-20.10 --json /vagrant/.harness-vagrant/run-" in command
    assert " --quiet /vagrant/.harness-vagrant/" in command and "--no-matrix" not in command
    # The JSON is read back from where the run wrote it.
    json_path = command.split("--json ")[1].split()[0]
    assert fake.calls()[4]["argv"] == ["ssh", "-c", f"cat {json_path}"]

    # The very files reached the box, numbered in the caller's order.
    received = sorted((fake.state / "received").iterdir())
    assert [p.name for p in received] == ["000-macvlan-bridge.yaml", "001-ipvlan-l2.yaml"]
    for got, s in zip(received, scenarios):
        assert got.read_bytes() == Path(s.path).read_bytes()

    assert [r.path for r in results] == [s.path for s in scenarios]
    assert [r.scenario for r in results] == ["macvlan-bridge", "ipvlan-l2"]
    for r, s in zip(results, scenarios):
        assert r.backend == "vagrant"
        assert r.kernel == BOX_KERNEL
        assert r.status == SKIP and "observes nothing" in r.reason  # dry-run's verdict, carried through
        assert r.checks and all(c.location.startswith(f"{s.path}:") for c in r.checks)
        assert "vagrant_up" in r.durations and "vagrant_batch_wall" in r.durations
    _assert_no_temp_files(fake, before)
    assert (fake.state / "running").exists()  # left up for the next batch by default


def test_halt_after_halts_the_box_last(fake, scenarios):
    results = fake.backend(halt_after=True).run_batch(scenarios[:1], matrix=False)
    assert fake.verbs() == ["up", "rsync", "ssh:uname", "ssh:harness-run", "ssh:cat", "ssh:rm", "halt"]
    assert "--no-matrix" in fake.calls()[3]["argv"][2]
    assert not (fake.state / "running").exists()
    assert results[0].backend == "vagrant" and results[0].status == SKIP


def test_a_second_batch_reuses_the_running_box(fake, scenarios):
    backend = fake.backend()
    backend.run_batch(scenarios[:1])
    backend.run_batch(scenarios[1:])
    assert fake.verbs().count("up") == 2  # `vagrant up` on a running box is Vagrant's no-op
    assert fake.verbs().count("halt") == 0


def test_a_failing_up_makes_every_scenario_an_error_with_vagrants_stderr(fake, scenarios):
    before = fake.project_files()
    fake.switch("fail-up")
    results = fake.backend().run_batch(scenarios)

    assert fake.verbs() == ["up"]  # nothing is tried in a box that is not there
    assert [r.status for r in results] == [ERROR, ERROR]
    for r, s in zip(results, scenarios):
        assert r.path == s.path and r.backend == "vagrant" and r.kernel == "unknown"
        assert f"`{fake.executable} up` (in {fake.vagrant_dir}) exited 1" in r.reason
        assert "Network is already in use by interface virbr1." in r.reason
    _assert_no_temp_files(fake, before)


def test_a_failing_up_still_halts_when_asked(fake, scenarios):
    fake.switch("fail-up")
    fake.backend(halt_after=True).run_batch(scenarios[:1])
    assert fake.verbs() == ["up", "halt"]


def test_a_failing_harness_run_names_its_command_exit_code_and_stderr(fake, scenarios):
    before = fake.project_files()
    fake.switch("fail-run")
    results = fake.backend().run_batch(scenarios)

    assert fake.verbs() == ["up", "rsync", "ssh:uname", "ssh:harness-run", "ssh:cat", "ssh:rm"]
    for r in results:
        assert r.status == ERROR and r.kernel == BOX_KERNEL
        assert "python3 -m harness run --backend netns" in r.reason and "exited 1" in r.reason
        assert "No module named 'pyroute2'" in r.reason
        assert "then: " in r.reason and "No such file or directory" in r.reason  # the missing JSON, after
    _assert_no_temp_files(fake, before)


def test_a_hanging_up_is_killed_with_its_children_at_the_deadline(fake, scenarios, monkeypatch):
    monkeypatch.setattr(vagrant_backend, "UP_TIMEOUT", 1.5)
    before = fake.project_files()
    fake.switch("hang-up")
    t0 = time.monotonic()
    results = fake.backend().run_batch(scenarios[:1])

    assert time.monotonic() - t0 < 20
    assert results[0].status == ERROR and "up` (in " in results[0].reason and "timed out after" in results[0].reason
    child = int((fake.state / "child.pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the stand-in's child outlived the timeout"
    _assert_no_temp_files(fake, before)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"  # a zombie is dead, only not yet reaped by init


def test_an_empty_batch_runs_nothing(fake):
    assert fake.backend().run_batch([]) == []
    assert fake.calls() == []


# --- availability, capabilities, kernel ---------------------------------------------------------------------


def test_a_missing_executable_names_debians_package(fake, scenarios, tmp_path):
    backend = VagrantBackend(vagrant_dir=fake.vagrant_dir, vagrant=str(tmp_path / "no-such-vagrant"))
    reason = backend.available()
    assert reason and "not found" in reason and "apt-get install vagrant" in reason and "package `vagrant`" in reason
    results = backend.run_batch(scenarios)
    assert [r.status for r in results] == [SKIP, SKIP] and all(r.reason == reason for r in results)
    assert all(not c.available and c.detail == reason for c in backend.capabilities().values())


def test_the_executable_comes_from_HARNESS_VAGRANT(fake, scenarios, monkeypatch):
    monkeypatch.setenv("HARNESS_VAGRANT", str(fake.executable))
    backend = VagrantBackend(vagrant_dir=fake.vagrant_dir)
    assert backend.available() is None
    backend.run_batch(scenarios[:1])
    assert fake.verbs()[0] == "up"
    monkeypatch.setenv("HARNESS_VAGRANT", "/nonexistent/vagrant")
    assert "package `vagrant`" in VagrantBackend(vagrant_dir=fake.vagrant_dir).available()


def test_a_directory_without_vagrantfile_is_unavailable(fake, tmp_path):
    reason = VagrantBackend(vagrant_dir=tmp_path, vagrant=str(fake.executable)).available()
    assert reason == f"no Vagrantfile in {tmp_path}"


def test_capabilities_ask_the_running_box_once(fake):
    fake.switch("running")
    backend = fake.backend()
    caps = backend.capabilities()
    assert set(caps) == set(FEATURES) and all(c.available for c in caps.values())
    assert backend.capabilities() is caps
    assert len(fake.calls()) == 1
    command = fake.calls()[0]["argv"]
    assert command[:2] == ["ssh", "-c"]
    assert command[2].endswith("python3 -m harness capabilities --backend netns --json")
    assert command[2].startswith("cd /vagrant && sudo ")


def test_capabilities_of_a_stopped_box_carry_vagrants_reason_until_the_box_is_up(fake):
    backend = fake.backend()
    caps = backend.capabilities()
    assert not any(c.available for c in caps.values())
    assert all("VM must be running to open SSH connection" in c.detail for c in caps.values())
    assert fake.verbs() == ["ssh:harness-capabilities"]  # asked, but did not boot the box
    fake.switch("running")  # started behind the backend's back: the answer stays what it was
    assert backend.capabilities() is caps
    assert fake.verbs() == ["ssh:harness-capabilities"]  # asked once: doctor and auto stay quick
    backend.prepare()  # a successful `vagrant up` makes the backend ask again
    assert all(c.available for c in backend.capabilities().values())
    assert fake.verbs() == ["ssh:harness-capabilities", "up", "ssh:uname", "ssh:harness-capabilities"]


def test_a_batch_makes_a_stopped_boxs_answers_stale(fake, scenarios):
    backend = fake.backend()
    assert not any(c.available for c in backend.capabilities().values())
    assert backend.kernel_release() == "unknown"
    backend.run_batch(scenarios[:1])
    assert backend.kernel_release() == BOX_KERNEL  # learnt by the batch itself
    assert all(c.available for c in backend.capabilities().values())
    assert fake.verbs().count("ssh:harness-capabilities") == 2


def test_kernel_release_comes_from_the_box(fake):
    backend = fake.backend()
    assert backend.kernel_release() == "unknown"  # stopped
    assert backend.kernel_release() == "unknown"
    assert fake.verbs() == ["ssh:uname"]  # asked once
    fake.switch("running")
    fresh = fake.backend()
    assert fresh.kernel_release() == BOX_KERNEL
    assert fresh.kernel_release() == BOX_KERNEL
    assert fake.verbs() == ["ssh:uname", "ssh:uname"]  # cached once known


# --- the declared kind, availability and prepare --------------------------------------------------------


def test_available_runs_nothing(fake):
    assert fake.backend().available() is None
    assert fake.calls() == []  # cheap: the executable and the Vagrantfile, never `vagrant status`


def test_prepare_brings_the_box_up(fake):
    backend = fake.backend()
    said = backend.prepare()
    assert fake.verbs() == ["up", "ssh:uname"]
    assert {c["cwd"] for c in fake.calls()} == {str(fake.vagrant_dir)}
    assert (fake.state / "running").exists()
    assert "\n" not in said and str(fake.vagrant_dir) in said and BOX_KERNEL in said
    assert backend.kernel_release() == BOX_KERNEL and fake.verbs() == ["up", "ssh:uname"]


def test_prepare_that_cannot_bring_the_box_up_says_why(fake):
    fake.switch("fail-up")
    with pytest.raises(BackendUnavailable, match="Network is already in use by interface virbr1"):
        fake.backend().prepare()
    assert fake.verbs() == ["up"]


def test_prepare_without_vagrant_says_what_to_install(fake, tmp_path):
    with pytest.raises(BackendUnavailable, match="apt-get install vagrant"):
        VagrantBackend(vagrant_dir=fake.vagrant_dir, vagrant=str(tmp_path / "no-such-vagrant")).prepare()


def test_a_missing_executable_is_exit_127_not_an_exception(fake, tmp_path):
    backend = VagrantBackend(vagrant_dir=fake.vagrant_dir, vagrant=str(tmp_path / "no-such-vagrant"))
    result = backend._vagrant("status", timeout=5)
    assert result.exit_code == 127 and not result.ok and result.node == "vagrant"


def test_vagrant_is_a_batch_backend_without_a_session():
    assert VagrantBackend.kind == BATCH
    assert not hasattr(VagrantBackend, "session")
    assert backend_class("vagrant") is VagrantBackend  # the registry's check of the declared kind
    backend = VagrantBackend()
    assert isinstance(backend, BatchBackend) and not isinstance(backend, SessionBackend)


def test_attributes():
    backend = VagrantBackend()
    assert backend.name == "vagrant" and backend.description
    assert backend.vagrant_dir == REPO / "vagrant"


# --- through the command line -------------------------------------------------------------------------------


def test_harness_run_backend_vagrant(fake, monkeypatch, tmp_path, capsys):
    from harness.cli import main

    previous = signal.getsignal(signal.SIGTERM)  # main() installs its own SIGTERM handler
    monkeypatch.setitem(_REGISTRY, "vagrant", "backends.vagrant:VagrantBackend")
    monkeypatch.setattr(vagrant_backend, "DEFAULT_VAGRANT_DIR", fake.vagrant_dir)
    monkeypatch.setenv("HARNESS_VAGRANT", str(fake.executable))
    out = tmp_path / "results.json"
    try:
        code = main(["run", "--backend", "vagrant", "--json", str(out), "--quiet",
                     str(SCENARIOS / "macvlan-bridge.yaml")])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 0, capsys.readouterr()
    (record,) = json.loads(out.read_text())
    assert record["backend"] == "vagrant" and record["kernel"] == BOX_KERNEL
    assert record["path"] == str(SCENARIOS / "macvlan-bridge.yaml")
    assert fake.verbs() == ["up", "rsync", "ssh:uname", "ssh:harness-run", "ssh:cat", "ssh:rm"]


# --- the Vagrantfile ----------------------------------------------------------------------------------------


def test_the_vagrantfile_provisions_with_the_one_setup_script():
    text = VAGRANTFILE.read_text()
    assert 'inline: "bash /vagrant/scripts/setup.sh"' in text
    assert "apt-get" not in text  # the package list lives in scripts/setup.sh only
    assert 'config.vm.box = "debian/bookworm64"' in text


def _vagrant_env(tmp_path: Path, provider: str) -> dict[str, str]:
    # Vagrant's state and home in tmp_path: validating must leave nothing in the repo or in ~.
    return {**os.environ, "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot"), "VAGRANT_HOME": str(tmp_path / "home"),
            "VAGRANT_CHECKPOINT_DISABLE": "1", "VAGRANT_NO_COLOR": "1", "VAGRANT_DEFAULT_PROVIDER": provider,
            # VirtualBox cannot be installed here; a stand-in VBoxManage lets Vagrant check its config block.
            "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}


needs_vagrant = pytest.mark.skipif(shutil.which("vagrant") is None,
                                   reason="vagrant is not installed (Debian: apt-get install vagrant)")


def _validate(directory: Path, tmp_path: Path, provider: str) -> subprocess.CompletedProcess:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "VBoxManage").write_text("#!/bin/sh\necho 7.0.12r159484\n")
    (bindir / "VBoxManage").chmod(0o755)
    env = _vagrant_env(tmp_path, provider)
    if provider == "libvirt":
        plugins = subprocess.run(["vagrant", "plugin", "list"], capture_output=True, text=True, env=env, timeout=120)
        if "vagrant-libvirt" not in plugins.stdout:
            pytest.skip("the vagrant-libvirt plugin is not installed (Debian: apt-get install vagrant-libvirt)")
    return subprocess.run(["vagrant", "validate"], cwd=directory, capture_output=True, text=True, env=env,
                          timeout=120)


@needs_vagrant
@pytest.mark.parametrize("provider", ["libvirt", "virtualbox"])
def test_vagrant_validate_accepts_the_vagrantfile(tmp_path, provider):
    state_dir = VAGRANTFILE.parent / ".vagrant"
    had_state = state_dir.exists()
    result = _validate(VAGRANTFILE.parent, tmp_path, provider)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Vagrantfile validated successfully" in result.stdout
    assert state_dir.exists() == had_state  # Vagrant's state went to tmp_path, not into the repo


@needs_vagrant
@pytest.mark.parametrize("provider", ["libvirt", "virtualbox"])
def test_vagrant_validate_checks_the_provider_block(tmp_path, provider):
    # The control: the same file with a misspelt provider setting must fail, or validation proves nothing.
    broken = tmp_path / "broken"
    broken.mkdir()
    text = VAGRANTFILE.read_text()
    text = text.replace("lv.cpus = 2", "lv.cpuz = 2") if provider == "libvirt" else text.replace("vb.cpus = 2", "vb.cpuz = 2")
    (broken / "Vagrantfile").write_text(text)
    result = _validate(broken, tmp_path, provider)
    assert result.returncode != 0
    assert "cpuz" in result.stdout + result.stderr
