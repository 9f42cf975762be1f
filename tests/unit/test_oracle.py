"""Unit tests of harness.oracle (expected reachability, derived from the model) and harness.checks matching."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from harness.checks import RouteSpec, error_matches, normalize_error
from harness.docker.emulated import compile_scenario
from harness.loader import load_scenario, parse_scenario
from harness.observe import RouteView
from harness.oracle import Fact, HostSetup, Oracle
from harness.world import World

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def _compile(s, profile="docker-20.10"):
    compiled = compile_scenario(s, profile)
    return compiled.plan, compiled.emulator


def world_of(s) -> World:
    return World.of(s.topology, compile_scenario(s).vlans)


def oracle_of(text: str) -> Oracle:
    s = parse_scenario(textwrap.dedent(text))
    plan, emu = _compile(s)
    assert [st.error for st in plan.steps] == [None] * len(plan.steps)
    return Oracle(emu, world_of(s))


def answers(oracle: Oracle, src: str, dst: str) -> set[tuple[bool, str] | None]:
    """The oracle's answers for src -> dst (one per address pair of a family both have); each side is an
    owner name (container, host) or an address."""
    addrs = oracle.addresses()

    def pick(who: str):
        try:
            ip = ipaddress.ip_address(who)
            return [a for a in addrs if a.ip == ip]
        except ValueError:
            return [a for a in addrs if a.owner == who]

    pairs = [(a, b) for a in pick(src) for b in pick(dst) if a.ip.version == b.ip.version
             # a Docker host with addresses on several NICs pings from the one the kernel picks
             and (a.role != "host" or oracle.source_of(a.owner, b.ip, addrs) == a)]
    assert pairs, f"no address pair for {src} -> {dst}"
    return {oracle.expect(a, b) for a, b in pairs}


def verdict(oracle: Oracle, src: str, dst: str) -> tuple[bool, str] | None:
    """The oracle's single answer for src -> dst."""
    found = answers(oracle, src, dst)
    assert len(found) == 1, found
    return found.pop()


def reachable(oracle: Oracle, src: str, dst: str) -> bool:
    answer = verdict(oracle, src, dst)
    assert answer is not None, f"the oracle does not judge {src} -> {dst}"
    return answer[0]


ONE_NETWORK = """\
name: t
source: s
topology:
  host: {{parent: eth0, address: 172.16.86.250/24}}
  router: [172.16.86.1/24]
  switch: {{hairpin: {hairpin}}}
commands:
  - docker network create -d macvlan --subnet=172.16.86.0/24 --gateway=172.16.86.1 -o parent=eth0 -o macvlan_mode={mode} n
  - docker run --net=n --name aa -itd alpine /bin/sh
  - docker run --net=n --name bb -itd alpine /bin/sh
"""


def one_network(mode: str, hairpin: bool = False) -> Oracle:
    return oracle_of(ONE_NETWORK.format(mode=mode, hairpin=str(hairpin).lower()))


# --- macvlan modes ------------------------------------------------------------------------------------------


def test_bridge_siblings_reach_each_other_and_the_gateway_but_not_the_host():
    o = one_network("bridge")
    assert verdict(o, "aa", "bb") == (True, "macvlan bridge mode switches between children of one parent")
    assert reachable(o, "bb", "aa")
    assert verdict(o, "aa", "172.16.86.1") == (True, "same L2 segment and subnet")
    assert verdict(o, "aa", "host") == (False, "macvlan children cannot reach their parent's own address")
    assert not reachable(o, "host", "aa")


def test_private_siblings_are_isolated_but_reach_the_gateway():
    o = one_network("private")
    assert verdict(o, "aa", "bb") == (False, "macvlan private mode isolates children of one parent")
    assert reachable(o, "aa", "172.16.86.1")
    assert not reachable(o, "aa", "host")


def test_vepa_siblings_are_isolated_without_hairpin():
    o = one_network("vepa")
    assert verdict(o, "aa", "bb") == (False, "VEPA without a hairpinning switch: children cannot reach each other")
    assert not reachable(o, "aa", "host")
    assert reachable(o, "aa", "172.16.86.1")


def test_vepa_with_hairpin_reaches_siblings_and_even_the_host():
    o = one_network("vepa", hairpin=True)
    assert verdict(o, "aa", "bb") == (True, "VEPA: the switch hairpins frames back to the parent")
    assert verdict(o, "aa", "host") == (True, "VEPA sends to the switch, which hairpins back to the host")


def test_bridge_with_hairpin_still_cannot_reach_the_host():
    o = one_network("bridge", hairpin=True)
    assert not reachable(o, "aa", "host")


def test_matrix_covers_every_pair_with_a_reason():
    o = one_network("private")
    matrix = {(e.src.owner, e.dst.owner): (e.reachable, e.reason) for e in o.matrix()}
    assert matrix[("aa", "bb")][0] is False
    assert matrix[("aa", "gateway")][0] is True
    assert matrix[("host", "aa")][0] is False
    assert matrix[("host", "gateway")][0] is True
    assert not any(src == "gateway" for src, _ in matrix)  # the router is never a source
    assert all(reason for _, reason in matrix.values())


# --- VLANs, subnets and routers -----------------------------------------------------------------------------


TWO_VLANS = """\
name: t
source: s
topology:
  host: {{parent: eth0, address: 172.16.86.250/24}}
  router: {router}
commands:
  - docker network create -d macvlan --subnet=192.168.50.0/24 --gateway=192.168.50.1 -o parent=eth0.50 macvlan50
  - docker network create -d macvlan --subnet=192.168.60.0/24 --gateway=192.168.60.1 -o parent=eth0.60 macvlan60
  - docker run --net=macvlan50 --name v50 -itd alpine /bin/sh
  - docker run --net=macvlan60 --name v60 -itd alpine /bin/sh
"""


def test_vlan_50_and_60_are_isolated():
    o = oracle_of(TWO_VLANS.format(router="[192.168.50.1/24, 192.168.60.1/24]"))
    assert verdict(o, "v50", "v60") == (False, "different subnets or VLANs and the router does not route between them")
    assert not reachable(o, "v60", "v50")
    assert reachable(o, "v50", "192.168.50.1")
    assert {p.interface.ip.exploded: p.vlan for p in o.world.router_ports} == {"192.168.50.1": 50, "192.168.60.1": 60}


def test_vlans_reach_each_other_through_a_forwarding_router():
    o = oracle_of(TWO_VLANS.format(router="{addresses: [192.168.50.1/24, 192.168.60.1/24], forwarding: true}"))
    assert verdict(o, "v50", "v60") == (True, "routed by the upstream router")


def test_a_router_without_the_destinations_gateway_cannot_route_back():
    o = oracle_of(TWO_VLANS.format(router="{addresses: [192.168.50.1/24], forwarding: true}"))
    assert verdict(o, "v50", "v60") == (False, "v60 has no route back through the router")
    assert verdict(o, "v60", "v50") == (False, "v60's gateway 192.168.60.1 is not on its segment")


MULTI_SUBNET = """\
name: t
source: s
topology:
  host: {{parent: eth0, address: 172.16.86.250/24}}
  router: {router}
commands:
  - docker network create -d macvlan --subnet=10.1.20.0/24 --subnet=10.1.10.0/24 --gateway=10.1.20.1 --gateway=10.1.10.1 -o parent=eth0.101 mcv101
  - docker run --net=mcv101 --ip=10.1.20.9 --name aa -itd alpine /bin/sh
  - docker run --net=mcv101 --ip=10.1.10.10 --name bb -itd alpine /bin/sh
  - docker run --net=mcv101 --ip=10.1.20.10 --name cc -itd alpine /bin/sh
"""


def test_different_subnets_on_one_parent_are_isolated_without_forwarding():
    o = oracle_of(MULTI_SUBNET.format(router="[10.1.20.1/24, 10.1.10.1/24]"))
    assert not reachable(o, "aa", "bb")
    assert not reachable(o, "bb", "aa")
    assert reachable(o, "aa", "cc")  # same subnet, same VLAN
    assert reachable(o, "bb", "10.1.10.1")


def test_different_subnets_are_routed_when_the_router_forwards():
    o = oracle_of(MULTI_SUBNET.format(router="{addresses: [10.1.20.1/24, 10.1.10.1/24], forwarding: true}"))
    assert verdict(o, "aa", "bb") == (True, "routed by the upstream router")
    assert reachable(o, "bb", "aa")


def test_ipvlan_l3_routes_between_subnets_of_one_parent():
    o = oracle_of("""\
        name: t
        source: s
        topology:
          host: {parent: eth0, address: 172.16.86.250/24}
        commands:
          - docker network create -d ipvlan --subnet=192.168.214.0/24 --subnet=10.1.214.0/24 -o parent=eth0 -o ipvlan_mode=l3 ipnet210
          - docker run --net=ipnet210 --ip=192.168.214.10 --name aa -itd alpine /bin/sh
          - docker run --net=ipnet210 --ip=10.1.214.10 --name bb -itd alpine /bin/sh
    """)
    assert verdict(o, "aa", "bb") == (True, "ipvlan l3 routes between every child of one parent")
    assert reachable(o, "bb", "aa")


def test_ipvlan_l2_subnets_stay_apart_and_siblings_meet():
    o = oracle_of("""\
        name: t
        source: s
        commands:
          - docker network create -d ipvlan --subnet=192.168.210.0/24 --subnet=192.168.212.0/24 --gateway=192.168.210.254 --gateway=192.168.212.254 -o ipvlan_mode=l2 ipvlan210
          - docker run --net=ipvlan210 --ip=192.168.210.10 --name aa -itd alpine /bin/sh
          - docker run --net=ipvlan210 --ip=192.168.210.11 --name bb -itd alpine /bin/sh
          - docker run --net=ipvlan210 --ip=192.168.212.10 --name cc -itd alpine /bin/sh
    """)
    assert verdict(o, "aa", "bb") == (True, "ipvlan l2 switches between children of one parent")
    assert not reachable(o, "aa", "cc")


def test_dummy_parent_network_cannot_reach_the_gateway():
    o = oracle_of("""\
        name: t
        source: s
        topology:
          host: {parent: eth0, address: 172.16.86.250/24}
          router: [192.168.10.1/24, 172.16.86.1/24]
        commands:
          - docker network create -d macvlan --subnet=192.168.10.0/24 --gateway=192.168.10.1 isolated1
          - docker run --net=isolated1 --name=cid1 -itd alpine /bin/sh
          - docker run --net=isolated1 --name=cid2 -itd alpine /bin/sh
    """)
    assert verdict(o, "cid1", "192.168.10.1") == (False, "an internal (dummy-parent) network has no way out")
    assert verdict(o, "cid1", "cid2")[0] is True
    assert not reachable(o, "cid1", "host")
    assert o.segment_of(o.state.networks["isolated1"].parent)[0] == "internal"


def test_passthru_cuts_the_host_off():
    o = oracle_of("""\
        name: t
        source: s
        topology:
          host: {parent: eth0, address: 172.16.86.250/24}
          router: [172.16.86.1/24]
        commands:
          - docker network create -d macvlan --subnet=172.16.86.0/24 --gateway=172.16.86.1 -o parent=eth0 -o macvlan_mode=passthru pt
          - docker run --net=pt --name only -itd alpine /bin/sh
    """)
    assert verdict(o, "only", "172.16.86.1") == (True, "passthru: the child owns the parent's port on the wire")
    assert verdict(o, "host", "172.16.86.1")[0] is False


# --- expected state -------------------------------------------------------------------------------------------


def test_expected_state_of_a_dual_stack_container():
    s = load_scenario(SCENARIOS / "macvlan-mcv0-dual-stack.yaml")
    plan, emu = _compile(s)
    state = Oracle(emu, world_of(s)).expected_state(emu.containers["c1"])
    assert state == [
        Fact("link", "c1", "eth0", "macvlan bridge"),
        Fact("mac", "c1", "eth0", "02:42:c0:a8:88:03"),
        Fact("address", "c1", "eth0", "192.168.136.3/24"),
        Fact("address", "c1", "eth0", "fd11::3/64"),
        Fact("address", "c1", "eth0", "fe80::42:c0ff:fea8:8803/64"),  # the document's link-local, from the MAC
        Fact("route", "c1", "eth0", "default via 192.168.136.1 dev eth0"),
        Fact("route", "c1", "eth0", "default via fd11::1 dev eth0"),
    ]


def test_expected_state_of_an_ipvlan_l3_container_has_a_device_default_route():
    o = oracle_of("""\
        name: t
        source: s
        commands:
          - docker network create -d ipvlan --subnet=192.168.214.0/24 -o parent=eth0 -o ipvlan_mode=l3 l3net
          - docker run --net=l3net --name aa -itd alpine /bin/sh
    """)
    state = o.expected_state(o.state.containers["aa"])
    assert Fact("link", "aa", "eth0", "ipvlan l3") in state
    assert Fact("route", "aa", "eth0", "default dev eth0") in state
    assert not [s for s in state if s.kind == "mac"]


def node_verdicts(oracle: Oracle, src: str, dst: str) -> set[tuple[bool, str] | None]:
    """The oracle's verdicts for a probe from node `src` to every address of `dst` (an owner or an
    address), each sent from the address the source's own route picks, as the matrix judges them."""
    addrs = oracle.addresses()
    try:
        ip = ipaddress.ip_address(dst)
        targets = [a for a in addrs if a.ip == ip]
    except ValueError:
        targets = [a for a in addrs if a.owner == dst]
    out = set()
    for target in targets:
        source = oracle.source_of(src, target.ip, addrs)
        if source is not None:
            out.add(oracle.verdict(source, target, addrs))
    assert out, f"no address pair for {src} -> {dst}"
    return out


def scenario_oracle(s) -> Oracle:
    """The oracle as the engine builds it: with what the scenario's own host commands configured."""
    compiled = compile_scenario(s)
    done = [(step, cs.error) for step, cs in zip(s.steps, compiled.plan.steps)]
    return Oracle(compiled.emulator, world_of(s), HostSetup.by_host(done))


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_the_oracle_agrees_with_every_shipped_reach_and_isolate(path):
    """The scenarios' explicit expectations and the derived matrix must never contradict each other."""
    s = load_scenario(path)
    o = scenario_oracle(s)
    for want, probes in ((True, s.expect.reach), (False, s.expect.isolate)):
        for probe in probes:
            if probe.src not in o.fleet.containers and probe.src not in o.host_names:
                continue
            for answer in node_verdicts(o, probe.src, probe.dst) - {None}:
                assert answer[0] is want, f"{probe}: scenario says {want}, oracle {answer}"


# --- error_matches and RouteSpec -------------------------------------------------------------------------------


@pytest.mark.parametrize("expected, observed", [
    ("Address already in use", "Address already in use"),
    ("Address already in use", "Address already in use."),
    ("Address already in use.", "Address already in use"),
    ("Address already in use", "docker: Error response from daemon: Address already in use."),
    ("Address already in use", "Error response from daemon: Address already in use"),
    ("network dm-* is already using parent interface eth0",
     "network dm-0123456789ab is already using parent interface eth0"),
    ("error while removing network: network pub_net id * has active endpoints",
     "Error response from daemon: error while removing network: network pub_net id 3fa8c0 has active endpoints"),
    ("failed to create the macvlan port: invalid argument", "failed to create the macvlan port: invalid argument."),
    ("Invalid address 10.99.0.5: It does not belong to any of this network's subnets",
     "Invalid address 10.99.0.5:  It does not belong\nto any of this network's subnets."),
])
def test_error_matches(expected, observed):
    assert error_matches(expected, observed)


@pytest.mark.parametrize("expected, observed", [
    ("Address already in use", None),
    ("Address already in use", "Pool overlaps with other one on this address space"),
    ("network dm-* is already using parent interface eth0", "network dm-0123 is already using parent interface eth1"),
    ("address already in use", "Address already in use"),  # case matters, as in Docker's text
    ("Address already", "Address already in use"),  # the whole message, not a prefix
])
def test_error_does_not_match(expected, observed):
    assert not error_matches(expected, observed)


def test_normalize_error_strips_prefixes_period_and_spacing():
    assert normalize_error("docker: Error response from daemon: a  b\nc.") == "a b c"


@pytest.mark.parametrize("spec, route, ok", [
    ("default via 172.16.86.1 dev eth0", RouteView("default", "172.16.86.1", "eth0", 4), True),
    ("default via 172.16.86.1 dev eth0", RouteView("default", "172.16.86.254", "eth0", 4), False),
    ("default via 172.16.86.1 dev eth0", RouteView("default", "172.16.86.1", "eth1", 4), False),
    ("default via 172.16.86.1", RouteView("default", "172.16.86.1", "eth1", 4), True),
    ("default dev eth0", RouteView("default", None, "eth0", 4), True),
    ("default dev eth0", RouteView("default", "172.16.86.1", "eth0", 4), False),
    ("0.0.0.0/0 via 10.0.0.1", RouteView("default", "10.0.0.1", "eth0", 4), True),
    ("::/0 via fd11::1 dev eth0", RouteView("default", "fd11::1", "eth0", 6), True),
    ("default via 2001:db8:abc8::10 dev eth0", RouteView("default", "2001:db8:abc8::10", "eth0", 6), True),
    ("172.16.86.0/24 dev eth0", RouteView("172.16.86.0/24", None, "eth0", 4), True),
    ("172.16.86.0/24 dev eth0 proto kernel scope link src 172.16.86.10",
     RouteView("172.16.86.0/24", None, "eth0", 4), True),
    ("172.16.86.0/24 dev eth0", RouteView("172.16.87.0/24", None, "eth0", 4), False),
    ("10.0.0.5 dev eth0", RouteView("10.0.0.5", None, "eth0", 4), True),
    ("10.0.0.5/32 dev eth0", RouteView("10.0.0.5", None, "eth0", 4), True),
    ("2001:0db8:abc8::/64 dev eth0", RouteView("2001:db8:abc8::/64", None, "eth0", 6), True),
    ("172.16.86.0/24", RouteView("default", "172.16.86.1", "eth0", 4), False),
])
def test_route_spec_matches(spec, route, ok):
    assert RouteSpec.parse(spec).matches(route) is ok


def test_route_spec_parse():
    assert RouteSpec.parse("default via 172.16.86.1 dev eth0") == RouteSpec("default", "172.16.86.1", "eth0")
    assert RouteSpec.parse("default dev eth0") == RouteSpec("default", None, "eth0")
    assert RouteSpec.parse("10.0.0.0/24") == RouteSpec("10.0.0.0/24", None, None)
    with pytest.raises(ValueError):
        RouteSpec.parse("   ")


def test_the_hosts_subnet_on_a_vlan_keeps_host_and_that_gateway_apart():
    # Issue #10: the host's untagged subnet is also a VLAN 50 network's subnet. The gateway lives on the
    # VLAN only: the host (no gateway of its own) and the VLAN's gateway and containers are isolated, in
    # both families; the containers still reach their gateway and each other.
    o = oracle_of("""\
        name: t
        source: s
        topology:
          host: {parent: eth0, address: [192.168.50.250/24, "2001:db8:50::250/64"]}
          router: [192.168.50.1/24, "2001:db8:50::1/64"]
        commands:
          - docker network create -d macvlan --subnet=192.168.50.0/24 --gateway=192.168.50.1 --ipv6 --subnet=2001:db8:50::/64 --gateway=2001:db8:50::1 -o parent=eth0.50 n50
          - docker run --net=n50 --name aa -itd alpine /bin/sh
          - docker run --net=n50 --name bb -itd alpine /bin/sh
    """)
    for gateway in ("192.168.50.1", "2001:db8:50::1"):
        assert not reachable(o, "host", gateway)
        assert reachable(o, "aa", gateway)
    assert answers(o, "host", "aa") == {(False, "same subnet on another segment (untagged vs VLAN 50)")}
    assert answers(o, "bb", "host") == {(False, "same subnet on another segment (VLAN 50 vs untagged)")}
    assert reachable(o, "aa", "bb")
    pairs = {(e.src.owner, str(e.dst.ip)): e.reachable for e in o.matrix()}
    assert pairs[("host", "192.168.50.1")] is False and pairs[("host", "2001:db8:50::1")] is False


def test_only_a_star_is_a_wildcard_in_an_expected_error():
    text = "Invalid container name (a/b), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
    assert error_matches(text, f"docker: Error response from daemon: {text}.")
    assert error_matches("Invalid container name (*), only * are allowed", text)
    assert not error_matches("Invalid container name (?/b), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", text)


def test_the_200_container_stress_scenario_derives_its_full_matrix(capsys):
    # tools/make_big_scenario.py: the matrix is O(n^2) (40,401 pairs for 200 containers); compile once,
    # derive once. Times are printed, not asserted (no test is timed).
    import sys
    import time

    sys.path.insert(0, str(SCENARIOS.parent / "tools"))
    from make_big_scenario import big_scenario

    start = time.perf_counter()
    s = parse_scenario(big_scenario(200), "stress-200.yaml")
    compiled = compile_scenario(s)
    compiled_at = time.perf_counter()
    matrix = Oracle(compiled.emulator, World.of(s.topology, compiled.vlans)).matrix()
    done = time.perf_counter()
    with capsys.disabled():
        print(f"\n200 containers: compile {compiled_at - start:.2f} s, matrix {done - compiled_at:.2f} s, "
              f"{len(matrix)} pairs")
    assert len(matrix) == 200 * 200 + 2 * 200 + 1
    reachable = sum(e.reachable for e in matrix)
    assert reachable == 200 * 199 + 200 + 1  # every sibling pair, the gateway from each container and the host
