"""Unit tests of harness.bench.runner without root: the whole runner driven through a scripted stand-in
Session that answers with recorded iperf3 output (tests/unit/data/bench) and the real probe over a socket
pair (the real Session is exercised by tests/integration/test_bench_quick.py)."""

from __future__ import annotations

import json
import os
import random
import re
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest

from backends.base import Capability, CommandResult
from harness.bench import rrprobe
from harness.bench import runner as bench_runner
from harness.bench.document import SCHEMA_PATH
from harness.bench.params import BenchError, BenchParams, BenchUnavailable
from harness.bench.runner import BenchRunner, rotated
from harness.bench.stats import NoiseRule
from harness.bench.topologies import topology_for

DATA = Path(__file__).resolve().parent / "data" / "bench"  # recorded output; see its README.md
TCP_JSON = (DATA / "iperf3-tcp.json").read_text()
UDP_JSON = (DATA / "iperf3-udp.json").read_text()
REFUSED_JSON = (DATA / "iperf3-refused.json").read_text()
PROC_NET_TCP = (DATA / "proc-net-tcp.txt").read_text()


def _echo_pair():
    """A connected socket pair (AF_UNIX: no network involved) with the probe's echo loop on one end."""
    client, server = socket.socketpair()
    t = threading.Thread(target=rrprobe.echo, args=(server, 1), daemon=True)
    t.start()
    return client, server, t


def test_rounds_rotate_the_order():
    names = ["macvlan", "bridge", "veth"]
    orders = [rotated(names, r) for r in range(3)]
    assert orders == [["macvlan", "bridge", "veth"], ["bridge", "veth", "macvlan"], ["veth", "macvlan", "bridge"]]
    assert {o[0] for o in orders} == set(names)  # each topology goes first once every three rounds


@dataclass
class _Proc:
    pid: int
    stderr: str = ""

    def output(self):
        return ("", self.stderr)


class ScriptedSession:
    """Answers the commands the bench sends as a real node would (canned iperf3 and probe output)."""

    kernel = "6.1.0-scripted"

    def __init__(self, label, server_stderr="", vary=False):
        self.label = label
        self.applied = []
        self.commands = []
        self.server_stderr = server_stderr
        self.vary = vary  # TCP results scatter from test to test, as real ones do
        self.rng = random.Random(label)
        self.clients = 0
        self.fail_at = None  # the n-th iperf3 client of this session fails as an unreachable server does

    def apply(self, op):
        self.applied.append(op)

    def physical_name(self, node):
        return f"hxtest-{node}"

    def run(self, node, argv, timeout=10.0):
        argv = list(argv)
        self.commands.append((node, argv))
        out = ""
        if argv[0] == "cat":
            # every server the bench starts is listening at once (iperf3, probe, probe on loopback)
            out = PROC_NET_TCP + "".join(PROC_NET_TCP.splitlines()[1].replace(":1451 ", f":{port:04X} ") + "\n"
                                         for port in (bench_runner.RR_PORT, bench_runner.RR_FLOOR_PORT))
        elif argv[:2] == ["iperf3", "--version"]:
            out = "iperf 3.12 (cJSON 1.7.15)\n"
        elif argv[0] == "iperf3":
            self.clients += 1
            if self.clients == self.fail_at:
                return CommandResult(node, tuple(argv), 1, REFUSED_JSON, "", 0.0, 0.0, False)
            out = UDP_JSON if "-u" in argv else TCP_JSON
            if self.vary and "-u" not in argv:
                doc = json.loads(out)
                doc["end"]["sum_received"]["bits_per_second"] *= 1 + self.rng.uniform(-0.2, 0.2)
                out = json.dumps(doc)
        elif "client" in argv:
            client, server, t = _echo_pair()
            with client:
                out = json.dumps(rrprobe.measure(client, count=50, warmup=5, size=1))
            t.join(5)
            server.close()
        return CommandResult(node, tuple(argv), 0, out, "", 0.0, 0.0, False)

    def run_many(self, jobs, timeout=10.0):
        return [self.run(n, a, timeout) for n, a in jobs]

    @contextmanager
    def spawn(self, node, argv):
        self.commands.append((node, ["spawn", *argv]))
        yield _Proc(os.getpid(), self.server_stderr)


class ScriptedBackend:
    name = "scripted"

    def __init__(self, caps=None, server_stderr="", vary=False):
        self.caps = caps or {f: Capability(f, True) for f in ("veth", "bridge", "macvlan", "vlan", "dummy")} | {
            "ipvlan": Capability("ipvlan", False, "kernel lacks ipvlan (CONFIG_IPVLAN): Operation not supported")}
        self.sessions = []
        self.server_stderr = server_stderr
        self.vary = vary

    def available(self):
        return None

    def capabilities(self):
        return self.caps

    @contextmanager
    def session(self, label):
        s = ScriptedSession(label, self.server_stderr, self.vary)
        self.sessions.append(s)
        yield s


QUIET = NoiseRule(max_busy_before=1.0, max_steal_before=1.0, max_steal_during=1.0)


def test_runner_builds_through_sessions_interleaves_rounds_and_writes_a_valid_document(monkeypatch):
    monkeypatch.setattr(bench_runner.shutil, "which", lambda name: "/usr/bin/" + name)
    params = BenchParams(rounds=3, budget=None, load_window=0.0, noise=QUIET, rr_count=50, rr_warmup=5,
                         topologies=("macvlan", "bridge", "veth", "ipvlan"))
    backend = ScriptedBackend()
    runner = BenchRunner(params, backend)
    runner.run()
    doc = runner.document(0.0, 10.0)
    jsonschema.validate(doc, json.loads(SCHEMA_PATH.read_text()))
    # one session per built topology, each given exactly that topology's operations
    assert [s.label for s in backend.sessions] == ["bench-macvlan", "bench-bridge", "bench-veth"]
    assert backend.sessions[0].applied == list(topology_for("macvlan").ops)
    status = {t["name"]: t for t in doc["topologies"]}
    assert status["ipvlan"]["status"] == "skipped" and "CONFIG_IPVLAN" in status["ipvlan"]["reason"]
    # servers run in b, clients in a; every topology ran every test in every round, order rotated
    spawned = [(n, c) for s in backend.sessions for n, c in s.commands if c[0] == "spawn"]
    assert {n for n, _ in spawned} == {"b", "a"}  # a: only the loopback floor server
    assert len(doc["samples"]) == 3 * 3 * 3
    assert [r["order"][0] for r in doc["rounds"]] == ["macvlan", "bridge", "veth"]
    assert doc["stop"]["reason"] == "ran the requested 3 rounds"
    ratio = next(m for m in doc["stats"]["metrics"] if m["id"] == "tcp.gbps[macvlan/bridge]")
    assert ratio["median"] == pytest.approx(1.0) and ratio["n"] == 3
    assert doc["machine"]["iperf3_version"] == "3.12" and doc["machine"]["kernel"] == "6.1.0-scripted"
    assert doc["rr_floor"]["count"] == 50
    tcp = next(c for n, c in backend.sessions[1].commands if c[:2] == ["iperf3", "-c"] and "-u" not in c)
    assert tcp[tcp.index("-P") + 1] == "1" and tcp[tcp.index("-O") + 1] == "0" and "-J" in tcp
    udp = next(c for n, c in backend.sessions[1].commands if c[:2] == ["iperf3", "-c"] and "-u" in c)
    assert udp[udp.index("-k") + 1] == "40000" and "-t" not in udp


def test_missing_iperf3_names_the_debian_package(monkeypatch):
    monkeypatch.setattr(bench_runner.shutil, "which", lambda name: None)
    runner = BenchRunner(BenchParams(rounds=1, budget=None), ScriptedBackend())
    with pytest.raises(BenchUnavailable, match="Debian package `iperf3`"):
        runner.run()


def test_a_server_that_dies_is_reported_with_its_stderr(monkeypatch):
    monkeypatch.setattr(bench_runner.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(bench_runner, "_process_exited", lambda pid: True)
    stderr = "iperf3: error - unable to start listener for connections: Address already in use"
    runner = BenchRunner(BenchParams(rounds=1, budget=None, load_window=0.0, topologies=("veth",)),
                         ScriptedBackend(server_stderr=stderr))
    with pytest.raises(BenchError, match="(?s)exited before it was ready.*Address already in use") as info:
        runner.run()
    assert "the iperf3 server of veth in node b" in str(info.value)


def _timed(monkeypatch, runner, seconds_per_test=1.0):
    """The runner on a fake clock: each test takes `seconds_per_test`, every pause as long as asked."""
    now = [0.0]
    measure = runner.measure

    def timed_measure(live, test):
        now[0] += seconds_per_test
        return measure(live, test)

    monkeypatch.setattr(runner, "measure", timed_measure)
    monkeypatch.setattr(runner, "clock", lambda: now[0])
    monkeypatch.setattr(bench_runner.time, "sleep", lambda s: now.__setitem__(0, now[0] + s))
    return now


def test_adaptive_run_spends_its_budget_on_pairs_with_full_rounds_spread_over_it(monkeypatch):
    monkeypatch.setattr(bench_runner.shutil, "which", lambda name: "/usr/bin/" + name)
    params = BenchParams(rounds=None, min_rounds=2, full_rounds=3, budget=60.0, target=1e-9, load_window=0.0,
                         pair_load_window=0.0, noise=QUIET, rr_count=20, rr_warmup=2,
                         topologies=("macvlan", "bridge", "veth"))
    runner = BenchRunner(params, ScriptedBackend(vary=True))
    _timed(monkeypatch, runner)
    runner.run()
    doc = runner.document(0.0, 60.0)
    full = [r for r in doc["rounds"] if r["tests"] == ["tcp", "udp", "rr"]]
    pairs = [r for r in doc["rounds"] if r["tests"] == ["tcp"]]
    # three full rounds (3 topologies x 3 tests, 9 s each), spread: the k-th is due k thirds of the
    # ~58 s left for rounds after the first began: 19.5 s after it (a full round and 6 pairs of 2 s), 39 s
    assert len(full) == 3 and [r["order"][0] for r in full] == ["macvlan", "bridge", "veth"]
    at = [i for i, r in enumerate(doc["rounds"]) if r["tests"] == ["tcp", "udp", "rr"]]
    assert at == [0, 7, 13]
    # every other round is a macvlan/bridge TCP pair, the order alternating
    assert {tuple(r["order"]) for r in pairs} == {("macvlan", "bridge"), ("bridge", "macvlan")}
    assert all(a["order"] != b["order"] for a, b in zip(pairs, pairs[1:]))
    assert len(pairs) >= 10
    assert doc["stop"]["reason"].startswith("time budget")
    n = {m["id"]: m["n"] for m in doc["stats"]["metrics"]}
    assert n["tcp.gbps[macvlan/bridge]"] == len(doc["rounds"])  # full rounds are pairs too
    assert n["tcp.gbps[bridge/veth]"] == 3 and n["rr.p50_us[macvlan]"] == 3 and n["udp.loss_pct[bridge]"] == 3
    jsonschema.validate(doc, json.loads(SCHEMA_PATH.read_text()))


def test_a_target_met_early_runs_the_missing_full_rounds_at_once_then_stops(monkeypatch):
    monkeypatch.setattr(bench_runner.shutil, "which", lambda name: "/usr/bin/" + name)
    # every sample alike: the ratio's interval is exact as soon as it exists (6 pairs)
    params = BenchParams(rounds=None, min_rounds=2, full_rounds=3, budget=600.0, target=0.03, load_window=0.0,
                         pair_load_window=0.0, noise=QUIET, rr_count=20, rr_warmup=2,
                         topologies=("macvlan", "bridge", "veth"))
    runner = BenchRunner(params, ScriptedBackend())
    _timed(monkeypatch, runner)
    runner.run()
    doc = runner.document(0.0, 60.0)
    assert [len(r["tests"]) for r in doc["rounds"]] == [3, 1, 1, 1, 1, 1, 3, 3]
    assert doc["stop"]["reason"].startswith("target reached") and doc["stop"]["target_reached"]
    assert doc["stop"]["half_width_pct"] == pytest.approx(0.0)


def test_a_fixed_number_of_rounds_measures_everything_every_round(monkeypatch):
    monkeypatch.setattr(bench_runner.shutil, "which", lambda name: "/usr/bin/" + name)
    params = BenchParams(rounds=4, budget=None, load_window=0.0, noise=QUIET, rr_count=20, rr_warmup=2,
                         topologies=("macvlan", "bridge", "veth"))
    runner = BenchRunner(params, ScriptedBackend(vary=True))
    runner.run()
    doc = runner.document(0.0, 1.0)
    assert [r["tests"] for r in doc["rounds"]] == [["tcp", "udp", "rr"]] * 4
    assert [r["order"][0] for r in doc["rounds"]] == ["macvlan", "bridge", "veth", "macvlan"]


def test_a_busy_machine_is_waited_for_before_a_round(monkeypatch):
    from harness.bench.stats import Load, StopRule

    now = [0.0]
    loads = iter([Load(0.6, 0.0, 0.2), Load(0.55, 0.0, 0.2), Load(0.03, 0.0, 0.2)])

    def fake_load_before(window=None):
        now[0] += 0.2
        return next(loads)

    monkeypatch.setattr(bench_runner.time, "sleep", lambda s: now.__setitem__(0, now[0] + s))
    runner = BenchRunner(BenchParams(quiet_wait=10.0), ScriptedBackend(), clock=lambda: now[0])
    monkeypatch.setattr(runner, "_load_before", fake_load_before)
    before, waited = runner._wait_for_quiet(StopRule(budget=None), 0.0, 5.0)
    assert before.busy == 0.03 and waited == pytest.approx(1.2)  # three windows and two pauses
    # a machine that stays busy is waited for at most quiet_wait, then the round runs (and is flagged)
    loads = iter([Load(0.9, 0.0, 0.2)] * 100)
    runner = BenchRunner(BenchParams(quiet_wait=1.0), ScriptedBackend(), clock=lambda: now[0])
    monkeypatch.setattr(runner, "_load_before", fake_load_before)
    before, waited = runner._wait_for_quiet(StopRule(budget=None), 0.0, 5.0)
    assert before.busy == 0.9 and 1.0 <= waited < 1.6
    # ... and while it stays busy, the next rounds do not wait again
    before, waited = runner._wait_for_quiet(StopRule(budget=None), 0.0, 5.0)
    assert before.busy == 0.9 and waited == pytest.approx(0.2)


def test_a_failure_mid_run_keeps_the_samples_and_names_the_step(monkeypatch):
    monkeypatch.setattr(bench_runner.shutil, "which", lambda name: "/usr/bin/" + name)
    backend = ScriptedBackend()
    params = BenchParams(rounds=3, budget=None, load_window=0.0, noise=QUIET, rr_count=10, rr_warmup=1,
                         topologies=("macvlan", "bridge"))
    runner = BenchRunner(params, backend)
    original = backend.session

    @contextmanager
    def failing_session(label):
        with original(label) as s:
            if label == "bench-bridge":
                s.fail_at = 3  # round 1: tcp, udp; round 2: tcp fails
            yield s

    monkeypatch.setattr(backend, "session", failing_session)
    runner.run()
    assert runner.error == "round 2, tcp on bridge: iperf3: unable to connect to server: Connection refused"
    doc = runner.document(0.0, 1.0)
    assert doc["stop"]["reason"].startswith("failed: round 2, tcp on bridge")
    # round 1 is complete (2 topologies x 3 tests); round 2 starts with the bridge, whose tcp failed
    assert len(doc["rounds"]) == 1 and len(doc["samples"]) == 6
    jsonschema.validate(doc, json.loads(SCHEMA_PATH.read_text()))


def test_a_budget_stop_says_what_the_target_would_need(monkeypatch):
    monkeypatch.setattr(bench_runner.shutil, "which", lambda name: "/usr/bin/" + name)
    now = [0.0]

    def clock():
        now[0] += 1.0  # every look at the clock is a second later: the 40 s budget runs out after a few rounds
        return now[0]

    params = BenchParams(rounds=None, min_rounds=2, full_rounds=1, budget=80.0, target=0.001, load_window=0.0,
                         noise=QUIET, rr_count=10, rr_warmup=1, topologies=("macvlan", "bridge"))
    runner = BenchRunner(params, ScriptedBackend(vary=True), clock=clock)
    runner.run()
    reason = runner.stop_reason
    assert reason.startswith("time budget") and "per-pair scatter of tcp.gbps[macvlan/bridge] is" in reason
    needed = int(re.search(r"needs about (\d+) pairs \(~\d+ s at [\d.]+ s per pair\)", reason).group(1))
    assert needed > 1000  # +-20 % scatter and a 0.1 % target


def test_an_adaptive_run_on_a_busy_machine_keeps_its_pairs_and_runs_each_full_round_once(monkeypatch):
    monkeypatch.setattr(bench_runner.shutil, "which", lambda name: "/usr/bin/" + name)
    busy = NoiseRule(max_busy_before=-1.0)  # every round begins "on a busy machine"
    params = BenchParams(rounds=None, min_rounds=2, full_rounds=3, budget=60.0, target=1e-9, load_window=0.0,
                         pair_load_window=0.0, quiet_wait=0.0, noise=busy, rr_count=20, rr_warmup=2,
                         topologies=("macvlan", "bridge", "veth"))
    runner = BenchRunner(params, ScriptedBackend(vary=True))
    _timed(monkeypatch, runner)
    runner.run()
    doc = runner.document(0.0, 60.0)
    assert all(r["noisy"] for r in doc["rounds"])
    assert sum(r["tests"] == ["tcp", "udp", "rr"] for r in doc["rounds"]) == 3  # not re-run because noisy
    assert doc["stats"]["rounds_used"] == list(range(len(doc["rounds"]))) and doc["stats"]["includes_noisy"]
    ratio = next(m for m in doc["stats"]["metrics"] if m["id"] == "tcp.gbps[macvlan/bridge]")
    assert ratio["n"] == len(doc["rounds"]) and ratio["ci_low"] is not None
