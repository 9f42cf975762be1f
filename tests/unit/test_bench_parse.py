"""Unit tests of harness.bench without root: iperf3 and probe output parsing (recorded from iperf3 3.12 on
this machine's loopback), topology operation lists, statistics over samples, parameters, and the whole
runner driven through a scripted stand-in Session (the real one is exercised by tests/integration)."""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import jsonschema
import pytest

from backends.base import Capability, CommandResult
from harness import bench, rrprobe
from harness.bench import (
    BenchError,
    BenchParams,
    BenchRunner,
    BenchUnavailable,
    Sample,
    TcpResult,
    compute_stats,
    cpu_model,
    git_commit,
    listening_ports,
    mtu_method,
    params_from_args,
    parse_iperf3_tcp,
    parse_iperf3_udp,
    parse_iperf3_version,
    parse_rr,
    primary_id,
    ratio_pairs,
    rotated,
    topology_for,
)
from harness.plan import AddAddress, AddLink, CreateNode, MoveLink, SetLink
from harness.stats import NoiseRule

# `iperf3 -c 127.0.0.1 -J -t 1 -O 1 -P 2 -M 1460` (intervals and streams trimmed to one each)
TCP_JSON = '{"start":{"connected":[{"socket":5,"local_host":"127.0.0.1","local_port":52248,"remote_host":"127.0.0.1","remote_port":15201},{"socket":7,"local_host":"127.0.0.1","local_port":52252,"remote_host":"127.0.0.1","remote_port":15201}],"version":"iperf 3.12","system_info":"Linux vm 6.18.44-fc-v769 #1 SMP PREEMPT_DYNAMIC @0 x86_64","timestamp":{"time":"Sat, 28 Nov 2026 22:06:33 GMT","timesecs":1795903593},"connecting_to":{"host":"127.0.0.1","port":15201},"cookie":"vp2ikxkhh2tdvqift4zuhcp3mzilkv3acuco","tcp_mss":1460,"target_bitrate":0,"sock_bufsize":0,"sndbuf_actual":16384,"rcvbuf_actual":131072,"test_start":{"protocol":"TCP","num_streams":2,"blksize":131072,"omit":1,"duration":1,"bytes":0,"blocks":0,"reverse":0,"tos":0,"target_bitrate":0}},"intervals":[{"streams":[{"socket":5,"start":0,"end":1.000183,"seconds":1.0001829862594604,"bytes":1115947008,"bits_per_second":8925942739.12601,"retransmits":9308,"snd_cwnd":338832,"snd_wnd":15837184,"rtt":71,"rttvar":38,"pmtu":65535,"omitted":true,"sender":true}],"sum":{"start":0,"end":1.000183,"seconds":1.0001829862594604,"bytes":2317877248,"bits_per_second":18539625487.280285,"retransmits":18634,"omitted":true,"sender":true}}],"end":{"streams":[{"sender":{"socket":5,"start":0,"end":0.999583,"seconds":0.999583,"bytes":1133772800,"bits_per_second":9073966243.923716,"retransmits":10478,"max_snd_cwnd":353312,"max_snd_wnd":30014464,"max_rtt":347,"min_rtt":71,"mean_rtt":209,"sender":true},"receiver":{"socket":5,"start":0,"end":1.000298,"seconds":0.999583,"bytes":1134362248,"bits_per_second":9072194470.047926,"sender":true}}],"sum_sent":{"start":0,"end":0.999583,"seconds":0.999583,"bytes":2280652800,"bits_per_second":18252833831.70782,"retransmits":20651,"sender":true},"sum_received":{"start":0,"end":1.000298,"seconds":1.000298,"bytes":2280914192,"bits_per_second":18241877456.51796,"sender":true},"cpu_utilization_percent":{"host_total":96.1285191030791,"host_user":1.0529570314740153,"host_system":95.07566180705678,"remote_total":42.431610851098284,"remote_user":1.6401300308483393,"remote_system":40.791380858035666},"sender_tcp_congestion":"bbr","receiver_tcp_congestion":"bbr"}}'

# `iperf3 -c 127.0.0.1 -J -u -b 500M -l 1472 -t 1`
UDP_JSON = '{"start":{"connected":[{"socket":5,"local_host":"127.0.0.1","local_port":36056,"remote_host":"127.0.0.1","remote_port":15201}],"version":"iperf 3.12","system_info":"Linux vm 6.18.44-fc-v769 #1 SMP PREEMPT_DYNAMIC @0 x86_64","timestamp":{"time":"Sat, 28 Nov 2026 22:06:35 GMT","timesecs":1795903595},"connecting_to":{"host":"127.0.0.1","port":15201},"cookie":"k6h73y5kmanifvpifw24yxd7saubtqhofhk6","target_bitrate":500000000,"sock_bufsize":0,"sndbuf_actual":212992,"rcvbuf_actual":212992,"test_start":{"protocol":"UDP","num_streams":1,"blksize":1472,"omit":0,"duration":1,"bytes":0,"blocks":0,"reverse":0,"tos":0,"target_bitrate":500000000}},"intervals":[{"streams":[{"socket":5,"start":0,"end":1.000651,"seconds":1.0006510019302368,"bytes":62448128,"bits_per_second":499260004.7732026,"packets":42424,"omitted":false,"sender":true}],"sum":{"start":0,"end":1.000651,"seconds":1.0006510019302368,"bytes":62448128,"bits_per_second":499260004.7732026,"packets":42424,"omitted":false,"sender":true}}],"end":{"streams":[{"udp":{"socket":5,"start":0,"end":1.000651,"seconds":1.000651,"bytes":62448128,"bits_per_second":499260005.7362657,"jitter_ms":0.0008155230852251624,"lost_packets":0,"packets":42424,"lost_percent":0,"out_of_order":0,"sender":true}}],"sum":{"start":0,"end":1.00228,"seconds":1.00228,"bytes":62448128,"bits_per_second":499260005.7362657,"jitter_ms":0.0008155230852251624,"lost_packets":0,"packets":42424,"lost_percent":0,"sender":true},"sum_sent":{"start":0,"end":1.000651,"seconds":1.000651,"bytes":62448128,"bits_per_second":499260005.7362657,"jitter_ms":0,"lost_packets":0,"packets":42424,"lost_percent":0,"sender":true},"sum_received":{"start":0,"end":1.00228,"seconds":1.00228,"bytes":62448128,"bits_per_second":498448561.280281,"jitter_ms":0.0008155230852251624,"lost_packets":0,"packets":42424,"lost_percent":0,"sender":false},"cpu_utilization_percent":{"host_total":12.943419010693452,"host_user":1.6483785172876655,"host_system":11.295140292310993,"remote_total":8.033635110138224,"remote_user":5.936130006804445,"remote_system":2.0974053314123915}}}'

# `iperf3 -c 127.0.0.1 -p 15299 -J` with nothing listening
REFUSED_JSON = '{"start": {"connected": [], "version": "iperf 3.12", "system_info": "Linux vm 6.18.44-fc-v769 #1 SMP PREEMPT_DYNAMIC @0 x86_64"}, "intervals": [], "end": {}, "error": "unable to connect to server: Connection refused"}'

# /proc/net/tcp of a node with iperf3 listening on 10.77.0.2:5201 and one established connection
PROC_NET_TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 02004D0A:1451 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6241 1 0 100 0 0 10 0
   1: 02004D0A:1451 01004D0A:B2A4 01 00000000:00000000 00:00000000 00000000     0        0 6242 1 0 20 4 30 10 -1
"""


# -- parsing -----------------------------------------------------------------------------------------


def test_parse_tcp_takes_the_receivers_rate_and_the_senders_retransmits():
    r = parse_iperf3_tcp(TCP_JSON)
    assert r.gbps == pytest.approx(18.241877456)  # sum_received: what crossed the path
    assert r.sender_gbps == pytest.approx(18.252833832)
    assert r.retransmits == 20651
    assert r.cpu_sender_pct == pytest.approx(96.13, abs=0.01)
    assert r.cpu_receiver_pct == pytest.approx(42.43, abs=0.01)
    assert (r.streams, r.mss) == (2, 1460)
    assert r.seconds == pytest.approx(1.000298)


def test_parse_udp_takes_loss_and_jitter_from_the_receiver():
    r = parse_iperf3_udp(UDP_JSON)
    assert r.gbps == pytest.approx(0.498448561)
    assert r.sender_gbps == pytest.approx(0.499260006)
    assert (r.loss_pct, r.lost_packets, r.packets) == (0, 0, 42424)
    assert r.jitter_ms == pytest.approx(0.000816, rel=1e-3)


def test_parse_udp_of_an_iperf3_without_split_sums():
    doc = json.loads(UDP_JSON)
    del doc["end"]["sum_sent"], doc["end"]["sum_received"]
    doc["end"]["sum"]["lost_percent"] = 2.5
    r = parse_iperf3_udp(json.dumps(doc))
    assert r.loss_pct == 2.5 and r.gbps == pytest.approx(0.499260006)


def test_iperf3_errors_are_reported_in_its_own_words():
    with pytest.raises(BenchError, match="iperf3: unable to connect to server: Connection refused"):
        parse_iperf3_tcp(REFUSED_JSON)
    with pytest.raises(BenchError, match="did not print JSON"):
        parse_iperf3_udp("iperf3: error - unable to send control message\n")
    with pytest.raises(BenchError, match="TCP summary lacks"):
        parse_iperf3_tcp(json.dumps({"start": {}, "end": {"sum_sent": {}}}))


def test_iperf3_version():
    assert parse_iperf3_version("iperf 3.12 (cJSON 1.7.15)\nLinux vm 6.18 ...") == "3.12"
    assert parse_iperf3_version("") is None


def test_listening_ports_reads_only_listen_sockets():
    assert listening_ports(PROC_NET_TCP) == {5201}
    assert listening_ports("") == set()


def _echo_pair():
    """A connected socket pair (AF_UNIX: no network involved) with the probe's echo loop on one end."""
    client, server = socket.socketpair()
    t = threading.Thread(target=rrprobe.echo, args=(server, 1), daemon=True)
    t.start()
    return client, server, t


def test_request_response_probe_measures_real_round_trips_and_parses():
    client, server, t = _echo_pair()
    try:
        doc = rrprobe.measure(client, count=300, warmup=20, size=1)
    finally:
        client.close()
        t.join(5)
        server.close()
    assert doc["count"] == 300 and len(doc["quantiles_us"]) == 101
    q = doc["quantiles_us"]
    assert q == sorted(q)
    assert 0 < doc["min_us"] <= doc["p50_us"] <= doc["p99_us"] <= doc["max_us"]
    r = parse_rr(json.dumps(doc))
    assert r.p50_us == doc["p50_us"] and r.quantiles_us[0] == q[0]
    assert r.timer_overhead_ns >= 0


def test_probe_output_missing_fields_is_an_error():
    with pytest.raises(BenchError, match="probe output lacks"):
        parse_rr('{"count": 1}')


# -- topologies --------------------------------------------------------------------------------------


def _check_ops_are_ordered(ops):
    """Every node exists before it is used, and every link is in the node an operation names."""
    nodes: set[str] = set()
    links: set[tuple[str, str]] = set()
    for op in ops:
        if isinstance(op, CreateNode):
            nodes.add(op.node)
            continue
        assert op.node in nodes, op
        if isinstance(op, AddLink):
            if op.parent:
                assert (op.node, op.parent) in links, op
            links.add((op.node, op.name))
            if op.kind == "veth":
                assert op.peer_node in nodes, op
                links.add((op.peer_node, op.peer))
        elif isinstance(op, MoveLink):
            assert (op.node, op.name) in links and op.to_node in nodes, op
            links.discard((op.node, op.name))
            links.add((op.to_node, op.new_name))
        elif isinstance(op, (SetLink, AddAddress)):
            assert (op.node, getattr(op, "name", None) or getattr(op, "dev", None)) in links, op
    return nodes, links


def test_macvlan_topology_moves_two_bridge_mode_children_into_the_endpoints():
    t = topology_for("macvlan")
    nodes, links = _check_ops_are_ordered(t.ops)
    assert nodes == {"up", "host", "a", "b"}
    children = [op for op in t.ops if isinstance(op, AddLink) and op.kind == "macvlan"]
    assert [(c.node, c.parent, c.mode) for c in children] == [("host", "eth0", "bridge")] * 2
    moves = [(op.to_node, op.new_name) for op in t.ops if isinstance(op, MoveLink)]
    assert moves == [("a", "eth0"), ("b", "eth0")]
    assert t.features == ("macvlan", "veth")
    addrs = {(op.node, op.address) for op in t.ops if isinstance(op, AddAddress)}
    assert addrs == {("a", "10.77.0.1/24"), ("b", "10.77.0.2/24")}


def test_bridge_topology_is_the_docker0_way():
    t = topology_for("bridge")
    nodes, links = _check_ops_are_ordered(t.ops)
    assert nodes == {"host", "a", "b"}
    enslaved = {op.name for op in t.ops if isinstance(op, SetLink) and op.master == "br0"}
    assert enslaved == {"vetha", "vethb"}
    # veth pairs are created in the host and one end moved, as Docker does
    assert all(op.peer_node == "host" for op in t.ops if isinstance(op, AddLink) and op.kind == "veth")
    assert {("a", "eth0"), ("b", "eth0")} <= links
    assert t.features == ("bridge", "veth")


def test_veth_vepa_and_ipvlan_topologies():
    veth = topology_for("veth")
    assert _check_ops_are_ordered(veth.ops)[0] == {"a", "b"}
    assert veth.features == ("veth",)
    vepa = topology_for("macvlan-vepa")
    _check_ops_are_ordered(vepa.ops)
    assert any(isinstance(op, SetLink) and op.hairpin for op in vepa.ops)
    assert {op.mode for op in vepa.ops if isinstance(op, AddLink) and op.kind == "macvlan"} == {"vepa"}
    ipvlan = topology_for("ipvlan")
    _check_ops_are_ordered(ipvlan.ops)
    assert "ipvlan" in ipvlan.features


def test_unknown_topology_lists_the_valid_ones():
    with pytest.raises(BenchUnavailable, match="valid topologies: macvlan, bridge, veth"):
        topology_for("ovs")


def test_mtu_methods():
    assert mtu_method(1500) == "default"
    if not bench.link_mtu_supported():
        assert mtu_method(1400) == "mss"
        with pytest.raises(BenchUnavailable, match="9000"):
            mtu_method(9000)


def test_rounds_rotate_the_order():
    names = ["macvlan", "bridge", "veth"]
    orders = [rotated(names, r) for r in range(3)]
    assert orders == [["macvlan", "bridge", "veth"], ["bridge", "veth", "macvlan"], ["veth", "macvlan", "bridge"]]
    assert {o[0] for o in orders} == set(names)  # each topology goes first once every three rounds


def test_ratio_pairs_and_primary():
    assert ratio_pairs(["macvlan", "bridge", "veth"]) == [("macvlan", "bridge"), ("macvlan", "veth"), ("bridge", "veth")]
    assert ratio_pairs(["macvlan", "bridge", "veth", "macvlan-vepa"])[3:] == [("macvlan-vepa", "bridge"), ("macvlan-vepa", "veth")]
    assert primary_id(["macvlan", "bridge", "veth"]) == "tcp.gbps[macvlan/bridge]"
    assert primary_id(["bridge", "veth"]) == "tcp.gbps[bridge/veth]"
    assert primary_id(["veth"]) is None


def _tcp(gbps):
    return TcpResult(gbps=gbps, sender_gbps=gbps, retransmits=0, cpu_sender_pct=90.0, cpu_receiver_pct=40.0,
                     seconds=2.0, streams=4, mss=1448)


def test_ratios_are_taken_within_rounds_despite_drift():
    # Raw throughput doubles over the run; macvlan is 10 % ahead of the bridge in every round.
    samples = []
    for r in range(6):
        base = 10.0 * (1 + r / 5)
        samples += [Sample(r, 0, "bridge", "tcp", 0, 1, _tcp(base)), Sample(r, 1, "macvlan", "tcp", 0, 1, _tcp(base * 1.1))]
    stats = {m.id: m for m in compute_stats(samples, ["macvlan", "bridge"], range(6))}
    ratio = stats["tcp.gbps[macvlan/bridge]"]
    assert ratio.summary.median == pytest.approx(1.1)
    assert ratio.interval.rel_half_width == pytest.approx(0.0, abs=1e-9)
    assert stats["tcp.gbps[bridge]"].interval.rel_half_width > 0.2  # the raw figure drifts
    # rounds left out of the statistics are left out of the ratios too
    assert compute_stats(samples, ["macvlan", "bridge"], [0, 1])[0].summary.n == 2


# -- parameters and metadata --------------------------------------------------------------------------


def _args(*argv):
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    return p.parse_args(list(argv))


def test_default_parameters_follow_the_measurements():
    p = params_from_args(_args())
    assert (p.streams, p.mtu, p.omit, p.rounds, p.budget, p.target) == (4, 1500, 1, None, 120.0, 0.03)
    assert p.backend == "netns"


def test_quick_is_two_short_rounds_and_options_override():
    p = params_from_args(_args("--quick"))
    assert p.quick and p.rounds == 2 and p.duration == 1 and p.budget is None
    p = params_from_args(_args("--quick", "--streams", "2", "--topologies", "macvlan,bridge", "--target", "5"))
    assert p.streams == 2 and p.topologies == ("macvlan", "bridge") and p.target == pytest.approx(0.05)
    p = params_from_args(_args("--rounds", "7"))
    assert p.rounds == 7 and p.budget is None  # a fixed number of rounds is not cut by the default budget


@pytest.mark.parametrize("argv, message", [
    (("--topologies", "macvlan,ovs"), "unknown topology ovs"),
    (("--tests", "tcp,sctp"), "unknown test sctp"),
    (("--duration", "0"), "whole seconds"),
])
def test_bad_parameters_are_refused_with_the_reason(argv, message):
    with pytest.raises(BenchUnavailable, match=message):
        params_from_args(_args(*argv))


def test_cpu_model_and_git_commit(tmp_path):
    assert cpu_model("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n") == "Intel(R) Xeon(R) Processor"
    assert cpu_model("") is None
    git = tmp_path / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    assert git_commit(tmp_path / "sub") is None  # a branch without commits
    (git / "packed-refs").write_text("# pack-refs\n" + "a" * 40 + " refs/heads/main\n")
    assert git_commit(tmp_path) == "a" * 40
    (git / "refs" / "heads" / "main").write_text("b" * 40 + "\n")
    assert git_commit(tmp_path) == "b" * 40


# -- the runner, through a scripted Session ----------------------------------------------------------------


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
                                         for port in (bench.RR_PORT, bench.RR_FLOOR_PORT))
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
    monkeypatch.setattr(bench.shutil, "which", lambda name: "/usr/bin/" + name)
    params = BenchParams(rounds=3, budget=None, load_window=0.0, noise=QUIET, rr_count=50, rr_warmup=5,
                         topologies=("macvlan", "bridge", "veth", "ipvlan"))
    backend = ScriptedBackend()
    runner = BenchRunner(params, backend)
    runner.run()
    doc = runner.document(0.0, 10.0)
    jsonschema.validate(doc, json.loads(bench.SCHEMA_PATH.read_text()))
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
    assert tcp[tcp.index("-P") + 1] == "4" and tcp[tcp.index("-O") + 1] == "1" and "-J" in tcp


def test_missing_iperf3_names_the_debian_package(monkeypatch):
    monkeypatch.setattr(bench.shutil, "which", lambda name: None)
    runner = BenchRunner(BenchParams(rounds=1, budget=None), ScriptedBackend())
    with pytest.raises(BenchUnavailable, match="Debian package `iperf3`"):
        runner.run()


def test_a_server_that_dies_is_reported_with_its_stderr(monkeypatch):
    monkeypatch.setattr(bench.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(bench, "_process_exited", lambda pid: True)
    stderr = "iperf3: error - unable to start listener for connections: Address already in use"
    runner = BenchRunner(BenchParams(rounds=1, budget=None, load_window=0.0, topologies=("veth",)),
                         ScriptedBackend(server_stderr=stderr))
    with pytest.raises(BenchError, match="(?s)exited before it was ready.*Address already in use") as info:
        runner.run()
    assert "the iperf3 server of veth in node b" in str(info.value)


def test_adaptive_run_focuses_extra_rounds_on_tcp_macvlan_bridge_and_says_why_it_stopped(monkeypatch):
    monkeypatch.setattr(bench.shutil, "which", lambda name: "/usr/bin/" + name)
    params = BenchParams(rounds=None, min_rounds=2, full_rounds=2, max_rounds=5, budget=None, target=1e-9,
                         load_window=0.0, noise=QUIET, rr_count=20, rr_warmup=2, topologies=("macvlan", "bridge", "veth"))
    runner = BenchRunner(params, ScriptedBackend(vary=True))
    runner.run()
    doc = runner.document(0.0, 1.0)
    assert [r["tests"] for r in doc["rounds"]] == [["tcp", "udp", "rr"]] * 2 + [["tcp"]] * 3
    assert [r["order"] for r in doc["rounds"]] == [
        ["macvlan", "bridge", "veth"], ["bridge", "veth", "macvlan"],
        ["macvlan", "bridge"], ["bridge", "macvlan"], ["macvlan", "bridge"]]
    assert doc["stop"]["reason"] == "stopped at the maximum of 5 rounds"
    assert doc["stop"]["target_reached"] is False and doc["stop"]["half_width_pct"] > 0
    n = {m["id"]: m["n"] for m in doc["stats"]["metrics"]}
    assert n["tcp.gbps[macvlan/bridge]"] == 5
    assert n["tcp.gbps[bridge/veth]"] == 2 and n["rr.p50_us[macvlan]"] == 2 and n["udp.loss_pct[bridge]"] == 2
    jsonschema.validate(doc, json.loads(bench.SCHEMA_PATH.read_text()))


def test_a_busy_machine_is_waited_for_before_a_round(monkeypatch):
    from harness.stats import Load, StopRule

    now = [0.0]
    loads = iter([Load(0.6, 0.0, 0.2), Load(0.55, 0.0, 0.2), Load(0.03, 0.0, 0.2)])

    def fake_load_before():
        now[0] += 0.2
        return next(loads)

    monkeypatch.setattr(bench.time, "sleep", lambda s: now.__setitem__(0, now[0] + s))
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
    monkeypatch.setattr(bench.shutil, "which", lambda name: "/usr/bin/" + name)
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
    jsonschema.validate(doc, json.loads(bench.SCHEMA_PATH.read_text()))


def test_a_budget_stop_says_what_the_target_would_need(monkeypatch):
    monkeypatch.setattr(bench.shutil, "which", lambda name: "/usr/bin/" + name)
    now = [0.0]

    def clock():
        now[0] += 1.0  # every look at the clock is a second later: the 40 s budget runs out after a few rounds
        return now[0]

    params = BenchParams(rounds=None, min_rounds=2, full_rounds=1, budget=40.0, target=0.001, load_window=0.0,
                         noise=QUIET, rr_count=10, rr_warmup=1, topologies=("macvlan", "bridge"))
    runner = BenchRunner(params, ScriptedBackend(vary=True), clock=clock)
    runner.run()
    reason = runner.stop_reason
    assert reason.startswith("time budget") and "per-round scatter of tcp.gbps[macvlan/bridge] is" in reason
    assert re.search(r"needs about \d+ rounds \(~\d+ s at \d+ s per round\)", reason)
