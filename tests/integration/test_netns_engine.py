"""The namespace backend end to end: real netlink, real pings, and verdicts that can fail."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.engine import Engine
from harness.loader import load_scenario, parse_scenario
from harness.plan import DeleteLink, MoveLink
from harness.results import FAIL, PASS, SKIP

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"


@pytest.fixture(scope="module")
def netns():
    from backends.netns import NetnsBackend

    backend = NetnsBackend()
    if backend.available():
        pytest.skip(backend.available())
    return backend


def namespaces(prefix: str) -> set[str]:
    """The namespaces whose names start with `prefix`: only this run's (or one test's) own, never the
    machine's whole list, which other runs (another pytest-xdist worker, another shell) change at any time."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith(prefix)}


def ours() -> str:
    """The name prefix of this process's sessions: hx + run id + worker."""
    from harness import runid

    return f"hx{runid.run_id()}{runid.worker_char()}"


def test_bridge_scenario_passes_with_real_probes(netns):
    before = namespaces(ours())
    result = Engine(netns).run(load_scenario(SCENARIOS / "macvlan-bridge.yaml"))
    assert result.status == PASS, result.failure_report()
    by_subject = {(c.kind, c.subject): c for c in result.checks}
    c2_c1 = by_subject[("reach", "c2 (172.16.86.2) -> c1 (172.16.86.10)")]
    # One batch prober probes every source (harness/prober.py --batch); its evidence names the probe.
    assert c2_c1.ok and "reachable" in c2_c1.observed and "prober.py r:172.16.86.10" in c2_c1.evidence
    host = by_subject[("isolate", "c1 (172.16.86.10) -> host (172.16.86.250)")]
    assert host.ok and host.observed.startswith("no reply")
    assert any(c.origin == "matrix" for c in result.checks)
    assert namespaces(ours()) == before, "the run left namespaces behind"


def test_a_flipped_expectation_fails_in_domain_words(netns):
    text = (SCENARIOS / "macvlan-bridge.yaml").read_text()
    flipped = text.replace('reach: ["c2 -> c1", ', 'reach: [').replace('isolate: ["c1 -> host", ', 'isolate: ["c2 -> c1", "c1 -> host", ')
    assert flipped != text
    result = Engine(netns).run(parse_scenario(flipped, "flipped.yaml"))
    assert result.status == FAIL
    failed = [c.message for c in result.failures]
    assert len(failed) == 1, failed
    assert failed[0].startswith("c2 (172.16.86.2) -> c1 (172.16.86.10): expected isolated, got reachable ("), failed
    assert "prober.py i:172.16.86.10" in result.failures[0].evidence and "in c2" in result.failures[0].evidence


class _Sabotage:
    """A backend whose session deletes a container's eth0 right after it was moved in: a broken setup."""

    def __init__(self, inner, victim: str):
        self.inner = inner
        self.victim = victim
        self.name = inner.name
        self.kind = inner.kind
        self.available = inner.available
        self.capabilities = inner.capabilities
        self.kernel_release = inner.kernel_release
        self.prepare = inner.prepare
        self.docker = inner.docker  # the emulation, applying its operations through the sabotaged session

    @contextmanager
    def session(self, label):
        with self.inner.session(label) as session:
            original = session.apply

            def apply(op):
                original(op)
                if isinstance(op, MoveLink) and op.to_node == self.victim:
                    original(DeleteLink(op.to_node, op.new_name))

            session.apply = apply
            yield session


def test_a_link_removed_mid_scenario_fails_not_passes(netns):
    result = Engine(_Sabotage(netns, "c1")).run(load_scenario(SCENARIOS / "macvlan-bridge.yaml"))
    assert result.status != PASS
    messages = "\n".join(c.message for c in result.failures) + result.reason
    assert "c1" in messages


def test_kernel_refusal_becomes_dockers_error(netns):
    result = Engine(netns).run(load_scenario(SCENARIOS / "macvlan-passthru.yaml"))
    assert result.status == PASS, result.failure_report()
    step = next(s for s in result.steps if "second" in s.command)
    assert step.error == "failed to create the macvlan port: invalid argument"


def test_missing_kernel_feature_is_a_skip_naming_it(netns):
    caps = netns.capabilities()
    if caps["vlan"].available:
        pytest.skip("this kernel has 802.1q; the skip path needs one without")
    result = Engine(netns).run(load_scenario(SCENARIOS / "macvlan-vlan50.yaml"))
    assert result.status == SKIP
    assert "kernel lacks 802.1q VLAN support (CONFIG_VLAN_8021Q)" in result.reason


def _run_harness(args, run_id, **kwargs):
    env = {**os.environ, "HARNESS_RUN_ID": run_id}
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_run_leaves_nothing_behind(netns, sig):
    run_id = secrets.token_hex(2)
    proc = _run_harness(["run", "--backend", "netns", "-q", str(SCENARIOS / "macvlan-bridge.yaml")], run_id)
    deadline = time.monotonic() + 30
    seen = False
    while time.monotonic() < deadline and proc.poll() is None:
        if namespaces(f"hx{run_id}"):
            seen = True
            break
        time.sleep(0.01)
    if not seen:
        proc.kill()
        proc.communicate()
        pytest.skip("the run finished before it could be interrupted")
    proc.send_signal(sig)
    proc.communicate(timeout=30)
    assert not namespaces(f"hx{run_id}")


def test_clean_removes_only_harness_leftovers(netns):
    from pyroute2 import netns as pyns

    from harness.plan import CreateNode

    run_id = secrets.token_hex(2)
    leftover, unrelated = f"hx{run_id}m9-up", f"hxkeep{run_id}"
    pyns.create(leftover)
    pyns.create(unrelated)
    try:
        with netns.session("live") as live:
            live.apply(CreateNode("up", "switch"))
            in_use = live.physical_name("up")
            out = subprocess.run([sys.executable, "-m", "harness", "clean"], cwd=ROOT, capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
            assert leftover not in namespaces(leftover)  # a killed run's: no live owner
            assert unrelated in namespaces(unrelated)  # not the harness's naming: never touched
            assert in_use in namespaces(in_use)  # a run still in progress keeps its namespaces
            # ... and says whose they are (the session's label, this process).
            assert f"{in_use} (scenario live, pid {os.getpid()})" in " ".join(out.stdout.split())
    finally:
        for name in (leftover, unrelated):
            if name in namespaces(name):
                pyns.remove(name)


def test_cli_run_json_and_junit(netns, tmp_path):
    run_id = secrets.token_hex(2)
    proc = _run_harness(["run", "--backend", "netns", "-q", "--json", str(tmp_path / "r.json"),
                         "--junit", str(tmp_path / "r.xml"), "-k", "macvlan-bridge or macvlan-errors or macvlan-vlan50", str(SCENARIOS)], run_id)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    import json

    records = {r["scenario"]: r for r in json.loads((tmp_path / "r.json").read_text())}
    assert set(records) == {"macvlan-bridge", "macvlan-errors", "macvlan-vlan50"}
    assert records["macvlan-bridge"]["status"] == "pass" and records["macvlan-bridge"]["kernel"] == os.uname().release
    assert records["macvlan-vlan50"]["status"] in ("skip", "pass")
    for check in records["macvlan-errors"]["checks"]:
        assert {"kind", "subject", "expected", "observed", "ok", "evidence"} <= set(check)
    assert set(records["macvlan-bridge"]["durations"]) == {"setup", "checks", "teardown"}
    suite = ET.parse(tmp_path / "r.xml").getroot()
    assert suite.get("tests") == "3" and suite.get("failures") == "0"


def test_pytest_serial_and_xdist_give_the_same_verdicts(netns, tmp_path):
    def outcomes(extra, name):
        xml = tmp_path / f"{name}.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-k", "scenario", "--backend", "netns", "-q",
                        "-p", "no:cacheprovider", f"--junitxml={xml}", *extra, str(SCENARIOS)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
        verdicts = {}
        for case in ET.parse(xml).getroot().iter("testcase"):
            kind = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
            verdicts[f"{case.get('classname')}::{case.get('name')}"] = kind
        return verdicts

    serial = outcomes([], "serial")
    parallel = outcomes(["-n", "2"], "parallel")
    assert serial and serial == parallel
    assert "passed" in serial.values()


@pytest.mark.parametrize("name", ["macvlan-mcv0-dual-stack", "macvlan-private", "macvlan-passthru", "macvlan-two-nics"])
def test_the_probers_netlink_view_is_what_ip_json_shows(netns, monkeypatch, name):
    """The batch prober decodes netlink itself (harness/prober.py): every node's links, addresses and routes
    must be what iproute2 shows for the same namespace at the same moment."""
    from harness import engine, observe

    seen = []
    real = observe.observe_and_probe

    def both(session, nodes, jobs, owners, stats=None, extra=()):
        views, results, done = real(session, nodes, jobs, owners, stats, extra)
        ip = observe.parse_observations(nodes, session.run_many(observe.observation_jobs(nodes)))
        seen.append((views, ip))
        return views, results, done

    monkeypatch.setattr(engine, "observe_and_probe", both)
    result = Engine(netns).run(load_scenario(SCENARIOS / f"{name}.yaml"))
    assert result.status == PASS, result.failure_report()
    (views, ip), = seen
    assert set(views) == set(ip) and len(views) >= 2
    for node in ip:
        mine, theirs = views[node], ip[node]
        assert mine.source == "netlink" and not mine.errors and not theirs.errors
        assert {k: (v.kind, v.mode, v.mac, v.up) for k, v in mine.links.items()} == \
            {k: (v.kind, v.mode, v.mac, v.up) for k, v in theirs.links.items()}, node
        assert sorted(mine.addresses) == sorted(theirs.addresses), node
        assert sorted(map(str, mine.routes)) == sorted(map(str, theirs.routes)), node
        assert sorted(r.family for r in mine.routes) == sorted(r.family for r in theirs.routes), node


def _keepers() -> list[int]:
    """PIDs of this process's UTS keepers (harness/proc.py starts them as our children)."""
    from backends.netns import KEEPER_MARK

    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if KEEPER_MARK.encode() in cmdline and ppid == os.getpid():
            found.append(int(entry))
    return found


def test_a_hostname_is_applied_in_a_uts_namespace_of_the_container_and_ends_with_it(netns):
    """issue #11: `docker run --hostname web` / `-h db.example`, also after a stop and start, is the name
    the container's UTS namespace shows (read inside it), not this machine's; no keeper outlives the run;
    a wrong expectation would fail (the check compares with the hostname Docker was given)."""
    before = namespaces(ours())
    result = Engine(netns).run(load_scenario(SCENARIOS / "docker-hostname.yaml"))
    assert result.status == PASS, result.failure_report()
    names = {c.subject: c for c in result.checks if c.kind == "hostname"}
    assert names["c1"].ok and names["c1"].observed == "web"
    assert names["c2"].ok and names["c2"].observed == "db.example"
    assert "c3" not in names
    assert os.uname().nodename not in ("web", "db.example")  # the machine's own name is untouched
    assert _keepers() == [], "a UTS keeper outlived its session"
    assert namespaces(ours()) == before, "the run left namespaces behind"
