"""The docker backend end to end: a real Docker 20.10 engine runs the documented commands.

Each test starts its own private dockerd inside an emulated Docker host namespace. They check that a
documented scenario passes on the real engine, that a command expected to fail is judged against the
engine's real stderr (and that a wrong expectation fails), that a transient `docker run ... ping` is a
reach check that can fail, and that nothing outlives a session, also when it ends with an exception:
no dockerd/containerd/containerd-shim process of this run, no mount, namespace, cgroup or directory.
Only this run's own names and PIDs are looked at (other runs may be going on on the same machine).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness.engine import Engine
from harness.loader import load_scenario, parse_scenario
from harness.model import ContainerRun
from harness.results import FAIL, PASS

pytestmark = [pytest.mark.docker, pytest.mark.root]
ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"

ERRORS = """\
name: docker-errors-real
source: test
topology:
  host: {parent: eth0, address: 172.16.86.250/24}
  router: [172.16.86.1/24]
commands:
  - command: docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0 -o macvlan_mode=foo bad
    error: "%s"
  - docker network create -d macvlan --subnet=172.16.86.0/24 --gateway=172.16.86.1 -o parent=eth0 pub_net
  - command: docker run --net=pub_net --ip=172.16.86.1 -itd alpine /bin/sh
    error: Address already in use
  - docker run --net=pub_net --name ok -itd alpine /bin/sh
expect:
  reach: ["ok -> 172.16.86.1"]
"""
MODE_ERROR = "requested macvlan mode 'foo' is not valid, 'bridge' mode is the macvlan driver default"


@pytest.fixture(scope="module")
def backend():
    try:
        from backends.docker import DockerBackend
    except ImportError as exc:  # pyroute2 missing
        pytest.skip(f"the docker backend cannot be imported: {exc}")
    b = DockerBackend()
    reason = b.available()
    if reason:
        pytest.skip(reason)
    b.prepare()
    return b


def namespaces(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


def assert_nothing_left(session) -> None:
    daemon = session.daemon
    assert daemon is not None, "the daemon never started"
    assert daemon.handle is not None and daemon.handle.poll() is not None, "dockerd still runs"
    assert not os.path.exists(f"/proc/{daemon.handle.pid}/exe") or daemon.handle.poll() is not None
    assert daemon.leftovers() == []  # processes naming its exec root or in its cgroups, mounts, cgroups, dirs
    assert namespaces(session.prefix) == []
    with open("/proc/self/mountinfo") as f:
        assert session.prefix not in f.read()


def root_namespace() -> str:
    """The machine's own links, addresses, routes and forwarding switch: a docker run must not change them."""
    parts = [subprocess.run(argv, capture_output=True, text=True, check=True).stdout
             for argv in (["ip", "-o", "link", "show"], ["ip", "-o", "addr", "show"], ["ip", "route", "show"],
                          ["ip", "-6", "route", "show"])]
    for save in ("iptables-save", "ip6tables-save"):  # the firewall (the package brings iptables)
        if shutil.which(save):
            rules = subprocess.run([save], capture_output=True, text=True).stdout
            parts.append(re.sub(r"\[\d+:\d+\]", "", "\n".join(x for x in rules.splitlines() if not x.startswith("#"))))
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        parts.append(f.read())
    # Counters and timers change by themselves; the names, addresses and flags must not.
    return "\n".join(line.split(" qlen")[0] for part in parts for line in part.splitlines()
                     if "valid_lft" not in line)


def run(backend, scenario, keep: dict | None = None):
    def factory(compiled, session):
        docker = backend.docker(compiled, session)
        if keep is not None:
            keep["docker"] = docker
        return docker

    result = Engine(backend, docker=factory).run(scenario)
    return result, backend.last_session


def test_the_documented_bridge_example_passes_on_the_real_engine(backend):
    key_before = os.path.exists("/etc/docker/key.json")
    root_before = root_namespace()
    keep: dict = {}
    result, session = run(backend, load_scenario(SCENARIOS / "macvlan-bridge.yaml"), keep)
    assert root_namespace() == root_before, "the machine's own network namespace changed"
    assert result.status == PASS, result.failure_report()
    by_subject = {(c.kind, c.subject): c for c in result.checks}
    # The documented transient `docker run ... ping -c 4` ran on the engine; its status is the reach check.
    transient = next(c for c in result.checks if c.origin == "command" and c.kind == "reach")
    assert transient.ok and "/usr/bin/docker" in transient.evidence and "ping -c 4 172.16.86.10" in transient.evidence
    # Observed inside the real containers: Docker's MAC for the static address, and the isolation from the host.
    assert by_subject[("mac", "c1 eth0")].observed == "02:42:ac:10:56:0a"
    assert by_subject[("isolate", "c1 (172.16.86.10) -> host (172.16.86.250)")].ok
    assert any(c.origin == "matrix" for c in result.checks)
    assert session.daemon.version.startswith("20.10")
    # What the engine built, read back from it: the transient `--rm` container too, seen while it ran.
    state = keep["docker"].state
    assert sorted(state.containers) == ["c1", "c2"] and state.networks["pub_net"].parent == "eth0"
    c3 = state.history["c3"]
    assert c3.transient and not c3.running and c3.endpoints[0].cidrs() == ["172.16.86.3/24"]
    assert c3.endpoints[0].mac == "02:42:ac:10:56:03"
    assert session.daemon.timings["daemon_start"] > 0
    assert_nothing_left(session)
    assert os.path.exists("/etc/docker/key.json") == key_before, "dockerd wrote its key into /etc/docker"


def test_an_expected_error_is_compared_with_the_engines_stderr(backend):
    result, session = run(backend, parse_scenario(ERRORS % MODE_ERROR, "errors.yaml"))
    assert result.status == PASS, result.failure_report()
    assert [s.error for s in result.steps][:3] == [MODE_ERROR, None, "Address already in use"]
    assert_nothing_left(session)


def test_a_wrong_expected_error_fails_with_the_engines_words(backend):
    result, _ = run(backend, parse_scenario(ERRORS % "requested macvlan mode 'foo' is fine", "errors.yaml"))
    assert result.status == FAIL
    failed = [c for c in result.failures if c.kind == "error"]
    assert len(failed) == 1 and MODE_ERROR in failed[0].observed, result.failure_report()


def test_a_transient_ping_that_gets_no_reply_fails_the_reach_check(backend):
    text = (SCENARIOS / "macvlan-bridge.yaml").read_text().replace(
        "alpine ping -c 4 172.16.86.10", "alpine ping -c 2 -W 1 172.16.86.250")
    scenario = parse_scenario(text, "unreachable.yaml")
    assert any(isinstance(s.command, ContainerRun) and "172.16.86.250" in s.command.command for s in scenario.steps)
    result, session = run(backend, scenario)
    assert result.status == FAIL
    failed = [c for c in result.failures if c.origin == "command" and c.kind == "reach"]
    assert len(failed) == 1 and "exit 1" in failed[0].evidence and "0 packets received" in failed[0].evidence
    assert_nothing_left(session)


def test_nothing_outlives_a_session_that_ends_in_an_exception(backend):
    from harness.docker.emulated import compile_scenario
    from harness.world import World

    scenario = load_scenario(SCENARIOS / "macvlan-bridge.yaml")
    compiled = compile_scenario(scenario)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with backend.session("crash") as session:
            for op in World.of(scenario.topology, compiled.vlans).ops():
                session.apply(op)
            docker = backend.docker(compiled, session)
            for step in scenario.steps[:2]:  # a network and a running container
                assert docker.execute(step).error is None
            assert docker.state.containers["c1"].endpoints[0].ifname == "eth0"
            # Started as a default install: docker0 takes 172.17.0.0/16 in the host namespace, so a network
            # without --subnet gets the next default pool (a bridge network: this kernel has no dummy parent).
            docker0 = session.run("host", ["ip", "-4", "-o", "addr", "show", "docker0"])
            assert docker0.ok and "172.17.0.1/16" in docker0.stdout
            auto = session.daemon.client(["network", "create", "auto"])
            assert auto.ok, auto.stderr
            subnet = session.daemon.client(["network", "inspect", "-f", "{{(index .IPAM.Config 0).Subnet}}", "auto"])
            assert subnet.stdout.strip() == "172.18.0.0/16"
            pid = session.pids(["c1"])["c1"]
            assert pid and os.path.exists(f"/proc/{pid}")
            raise Boom()
    assert_nothing_left(session)
    assert not os.path.exists(f"/proc/{pid}/exe") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] in "ZX"


def test_a_killed_daemon_leaves_nothing_either(backend):
    """dockerd dies (SIGKILL): its containerd, the shims and the containers remain until the session's
    undo finds them by this daemon's exec root and cgroup parent, and unmounts what it left mounted."""
    import signal

    from harness.docker.emulated import compile_scenario
    from harness.world import World

    scenario = load_scenario(SCENARIOS / "macvlan-bridge.yaml")
    compiled = compile_scenario(scenario)
    with backend.session("killed") as session:
        for op in World.of(scenario.topology, compiled.vlans).ops():
            session.apply(op)
        docker = backend.docker(compiled, session)
        for step in scenario.steps[:3]:
            assert docker.execute(step).error is None
        assert len(session.daemon._ours()) >= 4  # dockerd, containerd, a shim and a shell per container
        os.kill(session.daemon.handle.pid, signal.SIGKILL)
        session.daemon.handle.wait(10)
    assert session.daemon.shim_sockets, "the shims' sockets were not found"
    assert_nothing_left(session)


CRASH = """
import os, signal
from backends.docker import DockerBackend
from harness.docker.emulated import compile_scenario
from harness.loader import load_scenario
from harness.world import World
b = DockerBackend()
scenario = load_scenario({path!r})
compiled = compile_scenario(scenario)
with b.session("crash") as s:
    for op in World.of(scenario.topology, compiled.vlans).ops():
        s.apply(op)
    docker = b.docker(compiled, s)
    for step in scenario.steps[:3]:
        assert docker.execute(step).error is None
    print(s.prefix, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no finally block runs
"""


def test_what_a_killed_harness_leaves_is_removed_by_clean(backend):
    """SIGKILL of the harness itself: dockerd and containerd die with it (parent-death signal), the shims and
    containers stay; `clean_leftovers` (for `harness clean`) removes them by this run's prefix only."""
    from backends.docker.daemon import Daemon, clean_leftovers
    from backends.netns import clean_leftovers as clean_namespaces

    child = subprocess.Popen([sys.executable, "-c", CRASH.format(path=str(SCENARIOS / "macvlan-bridge.yaml"))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    out, err = child.communicate(timeout=120)
    prefix = out.strip()
    assert child.returncode == -9 and prefix.startswith("hx"), err
    stale = Daemon(f"{prefix}-docker", "", Path(), None, backend.base_dir)
    assert stale.leftovers(), "the killed run left nothing to clean: the test proves nothing"
    removed, kept = clean_leftovers(backend.base_dir, match=prefix)
    assert removed == [str(stale.base)] and kept == []
    clean_namespaces(match=prefix)
    assert stale.leftovers() == []
    assert namespaces(prefix) == []
    # The killed harness's own temporary directories (dockerd's log) carry its PID: `harness clean` removes
    # those of dead runs (harness.proc.clean_temp_dirs); here only the child's.
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"hxspawn-{child.pid}.*")):
        shutil.rmtree(path)


def test_a_daemon_restart_stops_the_engine_and_starts_it_again_with_its_state(backend):
    """`systemctl restart docker` on the real engine (issue #11): the private dockerd is stopped by its PID
    (SIGTERM) and started again with the same roots in the same namespace; networks stay, only the container
    with a restart policy runs again, with a new PID, and the scenario passes as emulated. Before, the step
    was a skip ("restarting the real engine is not supported by the docker backend yet")."""
    root_before = root_namespace()
    keep: dict = {}
    pids: dict = {}
    scenario = load_scenario(SCENARIOS / "docker-stop-start-restart.yaml")

    def factory(compiled, session):
        docker = backend.docker(compiled, session)
        execute = docker.execute

        def watched(step):
            if step.text == "systemctl restart docker":
                pids["dockerd before"] = session.daemon.handle.pid
                pids["keeper before"] = session.pids(["keeper"])["keeper"]
            outcome = execute(step)
            if step.text == "systemctl restart docker":
                pids["dockerd after"] = session.daemon.handle.pid
                pids["keeper after"] = session.pids(["keeper"])["keeper"]
                pids["first after"] = session.pids(["first"])["first"]
            return outcome

        docker.execute = watched
        keep["docker"] = docker
        return docker

    result = Engine(backend, docker=factory).run(scenario)
    session = backend.last_session
    assert root_namespace() == root_before, "the machine's own network namespace changed"
    assert result.status == PASS, result.failure_report()
    assert pids["dockerd after"] != pids["dockerd before"], pids
    assert pids["keeper before"] and pids["keeper after"] and pids["keeper after"] != pids["keeper before"], pids
    assert pids["first after"] == 0, "a container without a restart policy stays stopped after a restart"
    assert session.daemon.timings["daemon_restart"] > 0
    state = keep["docker"].state
    assert sorted(state.containers) == ["keeper", "third"] and "pub_net" in state.networks
    assert_nothing_left(session)
