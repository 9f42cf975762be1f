"""Several Docker hosts on one trunk (issue #13): the loader, one daemon per host, the oracle across hosts,
address conflicts (predicted, seen on the wire, expected) and the scanner's frames. No root: the engine runs
on test_engine's fake kernel, whose scan answers come from the test."""

from __future__ import annotations

import ipaddress
import json
import struct
import sys
import textwrap
from pathlib import Path

import pytest
from test_engine import FakeBackend, FakeKernel, as_the_oracle_says

from backends.base import CommandResult
from harness import arpscan
from harness.checks import Judge
from harness.docker.emulated import compile_scenario
from harness.docker.fleet import Fleet, FleetEmulator, as_fleet
from harness.engine import Engine
from harness.loader import load_scenario, parse_scenario
from harness.observe import ScanResult, parse_scan
from harness.oracle import Oracle
from harness.plan import AddLink, CreateNode
from harness.results import FAIL, PASS
from harness.world import World

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"

TWO_HOSTS = """\
    name: t
    source: s
    topology:
      hosts:
        - {name: hosta, address: 172.16.86.250/24}
        - {name: hostb, address: 172.16.86.251/24, nics: [{name: eth1, switch: lan2}]}
      router: [172.16.86.1/24, 192.168.50.1/24, 192.168.60.1/24]
    commands:
"""


def scenario(commands: str, expect: str = "") -> object:
    return parse_scenario(textwrap.dedent(TWO_HOSTS) + textwrap.indent(textwrap.dedent(commands), "  ")
                          + textwrap.dedent(expect), "t.yaml")


def oracle_of(s) -> Oracle:
    compiled = compile_scenario(s)
    return Oracle(compiled.emulator, World.for_scenario(s, compiled.vlans))


def verdicts(o: Oracle) -> dict[tuple[str, str], bool | None]:
    return {(e.src.owner, e.dst.owner): e.reachable for e in o.matrix()}


# -- loader --------------------------------------------------------------------------------------------


def test_hosts_their_nics_and_each_commands_host_are_loaded():
    s = scenario("""\
        - docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0 pub_net
        - {host: hostb, command: docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0 pub_net}
    """)
    assert [h.name for h in s.hosts] == ["hosta", "hostb"]
    assert [(n.name, n.switch) for n in s.topology.host("hostb").nics] == [("eth0", ""), ("eth1", "lan2")]
    assert [step.host for step in s.steps] == ["hosta", "hostb"]
    assert s.topology.switches == ("", "lan2")
    assert s.topology.multi_host


def test_a_single_host_scenario_is_one_host_called_host():
    s = load_scenario(SCENARIOS / "macvlan-bridge.yaml")
    assert [h.name for h in s.hosts] == ["host"] and not s.topology.multi_host
    assert {step.host for step in s.steps} == {"host"}


def test_unnamed_containers_are_numbered_across_hosts():
    s = scenario("""\
        - docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0 pub_net
        - docker run --net=pub_net -itd alpine /bin/sh
        - {host: hostb, command: docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0 pub_net}
        - {host: hostb, command: docker run --net=pub_net -itd alpine /bin/sh}
    """)
    assert [(st.host, st.command.name) for st in s.steps if hasattr(st.command, "image")] == [
        ("hosta", "c1"), ("hostb", "c2")]


# -- one daemon per host -----------------------------------------------------------------------------


def test_each_host_has_its_own_daemon_ipam_and_ids():
    s = scenario("""\
        - docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0 pub_net
        - docker run --net=pub_net --name web -itd alpine /bin/sh
        - {host: hostb, command: docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0 pub_net}
        - {host: hostb, command: docker run --net=pub_net --name db -itd alpine /bin/sh}
    """)
    compiled = compile_scenario(s)
    fleet = compiled.emulator
    assert isinstance(fleet, FleetEmulator)
    a, b = fleet.hosts["hosta"], fleet.hosts["hostb"]
    # The same name on two hosts is two networks; each IPAM hands out the same first address and MAC.
    assert a.networks["pub_net"].id != b.networks["pub_net"].id
    assert a.containers["web"].endpoints[0].addresses == b.containers["db"].endpoints[0].addresses
    assert a.containers["web"].endpoints[0].mac == b.containers["db"].endpoints[0].mac == "02:42:ac:10:56:02"
    assert fleet.host_of("db") == "hostb" and set(fleet.containers) == {"web", "db"}
    # Each daemon creates its children in its own host's node.
    steps = compiled.plan.steps
    assert [op.node for op in steps[1].ops if isinstance(op, AddLink)] == ["hosta"]
    assert [op.node for op in steps[3].ops if isinstance(op, AddLink)] == ["hostb"]


def test_a_vlan_parent_is_made_on_the_host_that_asks_for_it():
    s = scenario("""\
        - docker network create -d macvlan --subnet=192.168.50.0/24 -o parent=eth0.50 m50
        - {host: hostb, command: docker network create -d macvlan --subnet=192.168.60.0/24 -o parent=eth0.60 m60}
    """)
    fleet = compile_scenario(s).emulator
    assert "eth0.50" in fleet.hosts["hosta"].host_links and "eth0.50" not in fleet.hosts["hostb"].host_links
    assert "eth0.60" in fleet.hosts["hostb"].host_links and "eth0.60" not in fleet.hosts["hosta"].host_links


def test_the_world_has_a_node_per_host_a_bridge_per_switch_and_a_monitor():
    s = scenario("- docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0 pub_net\n")
    ops = World.for_scenario(s, compile_scenario(s).vlans).ops()
    assert [op.node for op in ops if isinstance(op, CreateNode)] == ["up", "hosta", "hostb", "rt"]
    links = {(op.node, op.name, op.kind, op.peer) for op in ops if isinstance(op, AddLink)}
    assert {("up", "br0", "bridge", None), ("up", "br-lan2", "bridge", None)} <= links
    assert {("hosta", "eth0", "veth", "p-hosta"), ("hostb", "eth1", "veth", "p-hostb1")} <= links
    assert {("up", "mon0", "veth", "pmon0"), ("up", "mon1", "veth", "pmon1")} <= links


def test_a_single_host_world_is_unchanged_no_monitor():
    s = load_scenario(SCENARIOS / "macvlan-bridge.yaml")
    world = World.for_scenario(s, compile_scenario(s).vlans)
    assert not world.monitor
    assert not any(isinstance(op, AddLink) and op.name.startswith("mon") for op in world.ops())


def test_the_real_engine_runs_one_daemon_per_host():
    from backends.docker.backend import DockerBackend
    from backends.docker.real import RealDocker, RealFleet

    compiled = compile_scenario(load_scenario(SCENARIOS / "multihost-flat.yaml"))
    fleet = DockerBackend().docker(compiled, session=None)
    assert isinstance(fleet, RealFleet) and list(fleet.hosts) == ["hosta", "hostb"]
    assert [d.node for d in fleet.hosts.values()] == ["hosta", "hostb"]
    single = DockerBackend().docker(compile_scenario(load_scenario(SCENARIOS / "macvlan-bridge.yaml")), session=None)
    assert isinstance(single, RealDocker) and single.node == "host"


# -- the oracle across hosts --------------------------------------------------------------------------


def test_containers_of_two_hosts_on_one_segment_reach_each_other_and_the_parent_rule_is_per_host():
    o = oracle_of(scenario("""\
        - docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0 pub_net
        - docker run --net=pub_net --ip=172.16.86.10 --name web -itd alpine /bin/sh
        - {host: hostb, command: docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0 pub_net}
        - {host: hostb, command: docker run --net=pub_net --ip=172.16.86.20 --name db -itd alpine /bin/sh}
    """))
    v = verdicts(o)
    assert v[("web", "db")] is True and v[("db", "web")] is True
    assert v[("hosta", "db")] is True and v[("hostb", "web")] is True  # another host's children: reachable
    assert v[("hosta", "web")] is False and v[("hostb", "db")] is False  # its own: the parent rule
    assert v[("hosta", "hostb")] is True
    assert o.conflicts() == []


def test_one_subnet_on_two_vlans_of_two_hosts_is_isolated_and_one_address_there_is_no_conflict():
    o = oracle_of(scenario("""\
        - docker network create -d macvlan --subnet=10.1.1.0/24 -o parent=eth0.70 a70
        - docker run --net=a70 --name xa -itd alpine /bin/sh
        - docker run --net=a70 --name xa2 --ip=10.1.1.10 -itd alpine /bin/sh
        - {host: hostb, command: docker network create -d macvlan --subnet=10.1.1.0/24 -o parent=eth0.80 b80}
        - {host: hostb, command: docker run --net=b80 --name yb -itd alpine /bin/sh}
        - {host: hostb, command: docker run --net=b80 --name yb2 --ip=10.1.1.20 -itd alpine /bin/sh}
    """))
    exp = {(e.src.owner, e.dst.owner): e for e in o.matrix()}
    assert exp[("xa2", "yb2")].reachable is False
    assert exp[("xa2", "yb2")].reason == "same subnet on another segment (VLAN 70 vs VLAN 80)"
    assert o.conflicts() == []  # xa and yb both hold 10.1.1.2, on two VLANs: two segments, no conflict
    # Pinging 10.1.1.2 from xa is its own address, from xa2 it is xa's: neither tests yb.
    assert ("xa", "yb") not in exp and ("xa2", "yb") not in exp and exp[("xa2", "xa")].reachable is True


def test_a_nic_on_a_switch_of_its_own_is_another_segment():
    o = oracle_of(scenario("""\
        - docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0 pub_net
        - docker run --net=pub_net --ip=172.16.86.10 --name web -itd alpine /bin/sh
        - {host: hostb, command: docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth1 lan2}
        - {host: hostb, command: docker run --net=lan2 --ip=172.16.86.20 --name db -itd alpine /bin/sh}
    """))
    exp = {(e.src.owner, e.dst.owner): e for e in o.matrix()}
    assert exp[("web", "db")].reachable is False
    assert exp[("web", "db")].reason == "same subnet on another segment (untagged vs untagged on switch lan2)"


# -- address conflicts ------------------------------------------------------------------------------


CONFLICT = """\
    - docker network create -d macvlan --subnet=172.16.86.0/24 --gateway=172.16.86.1 -o parent=eth0 pub_net
    - docker run --net=pub_net --name web -itd alpine /bin/sh
    - docker run --net=pub_net --name cache --ip=172.16.86.10 -itd alpine /bin/sh
    - {host: hostb, command: docker network create -d macvlan --subnet=172.16.86.0/24 --gateway=172.16.86.1 -o parent=eth0 pub_net}
    - {host: hostb, command: docker run --net=pub_net --name db -itd alpine /bin/sh}
"""


def test_two_daemons_handing_out_one_address_is_a_conflict_and_its_pairs_have_no_verdict():
    o = oracle_of(scenario(CONFLICT))
    (conflict,) = o.conflicts()
    assert str(conflict.ip) == "172.16.86.2" and conflict.owners == ("db", "web")
    assert conflict.label == "172.16.86.2 (untagged) held by db on hostb, web on hosta"
    v = verdicts(o)
    assert v[("cache", "web")] is None and v[("cache", "db")] is None and v[("web", "cache")] is None
    assert v[("cache", "hostb")] is True  # a pair that does not involve the address keeps its verdict


def scan_of(o: Oracle, answers: dict[str, int]) -> dict:
    """A scan in which each address gets `answers[ip]` answers per request (1 when not named)."""
    out = {}
    for a in o.addresses():
        iface = o.world.monitor_iface("", a.segment[1])
        n = answers.get(str(a.ip), 1)
        out[(iface, str(a.ip))] = ScanResult(iface, str(a.ip), (("02:42:ac:10:56:02",) * n,) * 3, None, "scan")
    return out


def conflict_checks(s, answers: dict[str, int]):
    o = oracle_of(s)
    return [c for c in Judge(s, o, {}).conflict_checks(scan_of(o, answers)) if c.kind == "conflict"]


def test_an_unexpected_conflict_fails_naming_the_address_the_holders_and_the_hosts():
    (check,) = conflict_checks(scenario(CONFLICT), {"172.16.86.2": 2})
    assert not check.ok
    assert check.subject == "address 172.16.86.2 (untagged)" and check.expected == "no address conflict"
    assert "held by db on hostb, web on hosta" in check.observed
    assert "2 answers per ARP request" in check.observed


def test_an_expected_conflict_passes_only_when_the_wire_shows_it():
    s = scenario(CONFLICT, "expect:\n  conflicts: {172.16.86.2: [web, db]}\n")
    (seen,) = conflict_checks(s, {"172.16.86.2": 2})
    assert seen.ok and seen.location == "t.yaml:15"
    (unseen,) = conflict_checks(s, {"172.16.86.2": 1})
    assert not unseen.ok and "1 answer per ARP request" in unseen.observed


def test_an_expected_conflict_docker_never_made_fails():
    s = scenario("""\
        - docker network create -d macvlan --subnet=172.16.86.0/24 --ip-range=172.16.86.32/28 -o parent=eth0 pub_net
        - docker run --net=pub_net --name web -itd alpine /bin/sh
        - {host: hostb, command: docker network create -d macvlan --subnet=172.16.86.0/24 --ip-range=172.16.86.48/28 -o parent=eth0 pub_net}
        - {host: hostb, command: docker run --net=pub_net --name db -itd alpine /bin/sh}
    """, "expect:\n  conflicts: {172.16.86.33: [web, db]}\n")
    checks = [c for c in conflict_checks(s, {}) if not c.ok]
    assert len(checks) == 1
    assert checks[0].observed == "no two nodes hold it on one segment (Docker's state)"


def test_a_conflict_the_model_does_not_predict_but_the_wire_shows_fails():
    s = scenario("""\
        - docker network create -d macvlan --subnet=172.16.86.0/24 --ip-range=172.16.86.32/28 -o parent=eth0 pub_net
        - docker run --net=pub_net --name web -itd alpine /bin/sh
    """)
    (check,) = conflict_checks(s, {"172.16.86.33": 2})
    assert not check.ok and check.expected == "one holder (Docker's state)"


def test_a_clean_wire_is_one_passing_check():
    s = load_scenario(SCENARIOS / "multihost-ip-range.yaml")
    (check,) = conflict_checks(s, {})
    assert check.ok and check.subject == "the wire" and "each answered by one node at most" in check.observed


def behaving(s):
    """Pings as the oracle says; a pair without a verdict (an address in conflict) gets a reply."""
    says = as_the_oracle_says(s)
    return lambda src, dst: says(src, dst) is not False


class ScanningKernel(FakeKernel):
    """The fake kernel, whose switch node answers the scanner: `answers(ip)` nodes per request."""

    answers: dict = {}

    def run_many(self, jobs, timeout: float = 10.0):
        out = []
        for node, argv in jobs:
            if argv[0] == sys.executable and str(argv[3]).endswith("arpscan.py"):
                lines = []
                for spec in argv[9:]:  # after ROUNDS INTERVAL WAIT FLOOR FACTOR
                    iface, ip = spec.split(",")
                    n = self.answers.get(ip, 1)
                    lines.append(json.dumps({"iface": iface, "ip": ip, "rounds": [["02:42:ac:10:56:02"] * n] * 3,
                                             "error": None}))
                out.append(CommandResult(node, tuple(argv), 0, "\n".join(lines), ""))
            else:
                out += super().run_many([(node, argv)], timeout)
        return out


def test_the_conflict_scenario_passes_by_expecting_the_conflict_and_reports_it():
    s = load_scenario(SCENARIOS / "multihost-same-subnet-conflict.yaml")
    kernel = ScanningKernel(ping=behaving(s))
    kernel.answers = {"172.16.86.2": 2}
    result = Engine(FakeBackend(kernel)).run(s)
    assert result.status == PASS, result.failure_report()
    assert result.reason == "address conflict: 172.16.86.2 (untagged) held by db on hostb, web on hosta"
    unjudged = [c for c in result.checks if not c.judged]
    assert unjudged and all(c.ok and c.expected.startswith("no verdict (172.16.86.2 is in conflict") for c in unjudged)
    # Both hosts and every container were observed: each host is a node of its own.
    assert {"hosta", "hostb", "web", "db", "cache"} <= set(kernel.nodes)


def test_the_conflict_scenario_fails_when_the_wire_shows_one_holder():
    s = load_scenario(SCENARIOS / "multihost-same-subnet-conflict.yaml")
    kernel = ScanningKernel(ping=behaving(s))
    kernel.answers = {}
    result = Engine(FakeBackend(kernel)).run(s)
    assert result.status == FAIL
    assert [c.subject for c in result.failures] == ["address 172.16.86.2 (untagged)"]


@pytest.mark.parametrize("name", ["multihost-flat", "multihost-ip-range", "multihost-second-switch",
                                  "multihost-dual-stack-ip-range", "multihost-vlan50", "multihost-vlans-isolated"])
def test_multihost_scenarios_pass_on_a_kernel_that_behaves(name):
    s = load_scenario(SCENARIOS / f"{name}.yaml")
    kernel = ScanningKernel(ping=behaving(s))
    kernel.answers = {}
    result = Engine(FakeBackend(kernel)).run(s)
    assert result.status == PASS, result.failure_report()


def test_as_fleet_wraps_one_host():
    s = load_scenario(SCENARIOS / "macvlan-bridge.yaml")
    fleet = as_fleet(compile_scenario(s).emulator)
    assert isinstance(fleet, Fleet) and list(fleet.hosts) == ["host"] and not fleet.multi_host


# -- the scanner's frames and its answer ----------------------------------------------------------------


def test_the_arp_probe_asks_from_0_0_0_0_with_the_rounds_mac():
    frame = arpscan.arp_probe(arpscan.round_mac(2), ipaddress.ip_address("172.16.86.2").packed)
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == bytes.fromhex("026878000002")
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = struct.unpack("!HHBBH6s4s6s4s", frame[14:42])
    assert (op, spa, tpa) == (1, b"\0\0\0\0", bytes([172, 16, 86, 2]))


def test_the_neighbour_solicitation_goes_to_the_solicited_node_group_with_a_valid_checksum():
    target = ipaddress.ip_address("2001:db8:abc8::2")
    frame = arpscan.neighbour_solicitation(arpscan.round_mac(0), target.packed)
    assert frame[:6] == bytes.fromhex("3333ff000002")
    ip6 = frame[14:54]
    src, dst, body = ip6[8:24], ip6[24:40], frame[54:]
    assert ipaddress.ip_address(dst) == ipaddress.ip_address("ff02::1:ff00:2")
    pseudo = src + dst + struct.pack("!I", len(body)) + b"\0\0\0" + bytes([58])
    assert arpscan.checksum(pseudo + body) == 0  # the checksum field makes the sum come out right
    assert body[0] == 135 and body[8:24] == target.packed


def test_a_reply_is_attributed_to_the_round_of_the_mac_it_is_sent_to():
    reply = (arpscan.round_mac(1) + bytes.fromhex("0242ac105602") + struct.pack("!H", arpscan.ETH_P_ARP)
             + struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, bytes.fromhex("0242ac105602"),
                           bytes([172, 16, 86, 2]), arpscan.round_mac(1), b"\0" * 4))
    assert arpscan.answer(reply, arpscan.ETH_P_ARP) == (arpscan.round_mac(1), bytes([172, 16, 86, 2]),
                                                         bytes.fromhex("0242ac105602"))


def test_a_failed_scan_is_an_error_on_every_address():
    res = CommandResult("up", ("python3",), 1, "", "Traceback: boom")
    found = parse_scan([("mon0", "172.16.86.2")], res)
    assert found[("mon0", "172.16.86.2")].error == "the scanner failed (exit 1): Traceback: boom"


# -- the routing model of issue #11 on several hosts (the merge of #11 and #13) ---------------------------


SHIM_ON_HOSTB = """\
    - docker network create -d macvlan --subnet=172.16.86.0/24 --gateway=172.16.86.1 -o parent=eth0 pub_net
    - docker run --net=pub_net --ip=172.16.86.10 --name web -itd alpine /bin/sh
    - {host: hostb, command: docker network create -d macvlan --subnet=172.16.86.0/24 --gateway=172.16.86.1 -o parent=eth0 pub_net}
    - {host: hostb, command: docker run --net=pub_net --ip=172.16.86.200 --name db -itd alpine /bin/sh}
    - {host: hostb, command: ip link add mac0 link eth0 type macvlan mode bridge}
    - {host: hostb, command: ip addr add 172.16.86.223/32 dev mac0}
    - {host: hostb, command: ip link set mac0 up}
    - {host: hostb, command: ip route add 172.16.86.192/27 dev mac0}
"""


def shim_oracle(s) -> Oracle:
    """The oracle as the engine builds it: each host's own commands configure that host (`HostSetup.by_host`)."""
    from harness.oracle import HostSetup

    compiled = compile_scenario(s)
    done = [(step, cs.error) for step, cs in zip(s.steps, compiled.plan.steps)]
    return Oracle(compiled.emulator, World.for_scenario(s, compiled.vlans), HostSetup.by_host(done))


def test_a_shim_belongs_to_the_host_whose_commands_made_it():
    """hostb's mac0 (made by its `host:` commands) is hostb's: hostb reaches its own container db from the
    shim's address (its route to the range leaves by mac0), and hosta's child web from eth0 through the switch.
    hosta has no shim: its own child web stays cut off, hostb's db is reached. Observed with the same commands
    on the netns backend and on a real 20.10 engine (every probe and `ip route get` agreed with these verdicts)."""
    o = shim_oracle(scenario(SHIM_ON_HOSTB))
    assert o.shim_addresses("hosta") == []
    assert [(a.owner, str(a.ip), a.iface, a.role) for a in o.shim_addresses("hostb")] == [
        ("hostb", "172.16.86.223", "mac0", "host")]
    m = {(e.src.owner, str(e.src.ip), str(e.dst.ip)): e.reachable for e in o.matrix()}
    assert m[("hostb", "172.16.86.223", "172.16.86.200")] is True  # its own child, through its shim
    assert m[("hostb", "172.16.86.251", "172.16.86.10")] is True  # hosta's child, through the switch
    assert m[("hosta", "172.16.86.250", "172.16.86.10")] is False  # hosta's own child: the parent rule
    assert m[("hosta", "172.16.86.250", "172.16.86.200")] is True
    assert m[("db", "172.16.86.200", "172.16.86.223")] is True
    paths = {(f.node, f.value) for f in o.paths()}
    assert ("hostb", "172.16.86.200 dev mac0 src 172.16.86.223") in paths
    assert ("hostb", "172.16.86.10 dev eth0 src 172.16.86.251") in paths
    assert not [f for f in o.paths() if f.node == "hosta"]  # one address per family: no path to judge


def test_a_host_with_addresses_on_two_nics_sends_from_the_one_its_route_picks():
    """`source_of` is the one rule for every node: hostb's eth1 (lan2, 192.168.1.0/24) for that subnet, eth0
    (its default route's NIC) for everything else."""
    s = parse_scenario(textwrap.dedent(TWO_HOSTS).replace("{name: eth1, switch: lan2}",
                                                          "{name: eth1, switch: lan2, address: 192.168.1.251/24}")
                       + "  - docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0 pub_net\n",
                       "t.yaml")
    o = oracle_of(s)
    assert str(o.source_of("hostb", ipaddress.ip_address("192.168.1.7")).ip) == "192.168.1.251"
    assert str(o.source_of("hostb", ipaddress.ip_address("10.9.9.9")).ip) == "172.16.86.251"
    assert str(o.source_of("hosta", ipaddress.ip_address("192.168.1.7")).ip) == "172.16.86.250"


def test_the_scan_counts_a_hosts_interfaces_as_one_holder():
    """A host answers ARP on its NIC and on its shim for each of its addresses (the weak host model): one
    holder. One MAC that two nodes have (20.10 derives it from the address) is still two answers."""
    from harness.observe import LinkView, NodeView

    s = scenario(SHIM_ON_HOSTB)
    o = shim_oracle(s)
    views = {"hostb": NodeView("hostb", {"eth0": LinkView("eth0", "veth", None, "aa:00:00:00:00:01", True),
                                         "mac0": LinkView("mac0", "macvlan", "bridge", "aa:00:00:00:00:02", True)}),
             "web": NodeView("web", {"eth0": LinkView("eth0", "macvlan", "bridge", "02:42:ac:10:56:02", True)}),
             "db": NodeView("db", {"eth0": LinkView("eth0", "macvlan", "bridge", "02:42:ac:10:56:02", True)})}
    judge = Judge(s, o, views)
    both = ScanResult("mon0", "172.16.86.251", (("aa:00:00:00:00:01", "aa:00:00:00:00:02"),) * 3)
    assert both.answers == 2 and judge._holders(both) == 1
    shared = ScanResult("mon0", "172.16.86.2", (("02:42:ac:10:56:02", "02:42:ac:10:56:02"),) * 3)
    assert judge._holders(shared) == 2
    strangers = ScanResult("mon0", "172.16.86.9", (("aa:00:00:00:00:01", "bb:00:00:00:00:09"),))
    assert judge._holders(strangers) == 2


def test_a_scan_round_listens_ten_times_its_slowest_first_answer_within_its_floor_and_cap():
    assert arpscan.window_s(0.001, 0.05, 10, 0.3) == 0.05  # local answers: the floor
    assert arpscan.window_s(0.012, 0.05, 10, 0.3) == pytest.approx(0.12)  # a slow machine: longer
    assert arpscan.window_s(0.2, 0.05, 10, 0.3) == 0.3  # never past the old fixed wait
