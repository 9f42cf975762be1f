"""Unit tests of harness.docker.driver.DockerEmulator: libnetwork's macvlan/ipvlan semantics and Docker's answers.

Scenarios are small inline YAML documents, loaded with `harness.loader.parse_scenario` and compiled with
`harness.world.compile_plan`; the assertions are on the plan operations, the emulator's state and
Docker's error messages, verbatim.
"""

from __future__ import annotations

import ipaddress
import re
import textwrap
from pathlib import Path

import pytest

from harness.docker.describe import describe
from harness.docker.driver import DockerEmulator
from harness.docker.emulated import compile_scenario
from harness.docker.ipam import link_local_from_mac
from harness.loader import load_scenario, parse_scenario
from harness.oracle import Fact, Oracle
from harness.plan import (
    AddAddress,
    AddLink,
    AddRoute,
    CreateNode,
    DeleteLink,
    DeleteNode,
    MoveLink,
    ReachCheck,
    SetLink,
    SetSysctl,
    render,
)
from harness.world import World

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def _compile(s, profile="docker-20.10"):
    compiled = compile_scenario(s, profile)
    return compiled.plan, compiled.emulator


def world_of(s) -> World:
    return World.of(s.topology, compile_scenario(s).vlans)

HEADER = """\
name: unit
source: tests/unit/test_driver.py
topology:
  host: {parent: eth0, address: 172.16.86.250/24}
  router: [172.16.86.1/24]
commands:
"""

PUB_NET = "docker network create -d macvlan --subnet=172.16.86.0/24 --gateway=172.16.86.1 -o parent=eth0 pub_net"


def scenario(commands: str, header: str = HEADER):
    """A scenario from an indented YAML list of command lines."""
    return parse_scenario(header + textwrap.indent(textwrap.dedent(commands).strip("\n"), "  ") + "\n")


def emulate(commands: str, profile: str = "docker-20.10"):
    s = scenario(commands)
    plan, emu = _compile(s, profile)
    return plan.steps, emu


def ops_of(step, kind):
    return [op for op in step.ops if isinstance(op, kind)]


# --- parents: VLAN sub-interfaces, hand-made links, dummies ---------------------------------------------


def test_vlan_parent_is_created_by_the_driver_and_deleted_by_network_rm():
    steps, emu = emulate("""
        - docker network create -d macvlan --subnet=192.168.50.0/24 --gateway=192.168.50.1 -o parent=eth0.50 macvlan50
        - docker network rm macvlan50
    """)
    create, rm = steps
    assert create.error is None
    vlan = ops_of(create, AddLink)
    assert len(vlan) == 1
    assert (vlan[0].node, vlan[0].name, vlan[0].kind, vlan[0].parent, vlan[0].vlan_id) == (
        "host", "eth0.50", "vlan", "eth0", 50)
    assert SetLink("host", "eth0.50", up=True) in create.ops
    assert rm.error is None
    assert rm.ops == (DeleteLink("host", "eth0.50"),)
    assert "eth0.50" not in emu.host_links


def test_vlan_parent_is_recorded_as_driver_created():
    steps, emu = emulate("""
        - docker network create -d macvlan --subnet=192.168.50.0/24 --gateway=192.168.50.1 -o parent=eth0.50 macvlan50
    """)
    net = emu.networks["macvlan50"]
    assert net.created_parent is True
    assert emu.host_links["eth0.50"].owner == net.id
    assert emu.vlan_of("eth0.50") == 50
    links = {link["name"]: link for link in describe(emu, steps)["host_links"]}
    assert links["eth0.50"] == {"name": "eth0.50", "kind": "vlan", "parent": "eth0", "vlan_id": 50,
                                "created_by": "driver"}
    assert links["eth0"]["created_by"] == "topology"


@pytest.mark.parametrize("name", ["eth0.40", "foo"])
def test_hand_made_parent_is_used_as_is_and_never_deleted(name):
    steps, emu = emulate(f"""
        - ip link add link eth0 name {name} type vlan id 40
        - ip link set {name} up
        - docker network create -d macvlan --subnet=192.168.40.0/24 --gateway=192.168.40.1 -o parent={name} macvlan40
        - docker network rm macvlan40
    """)
    add, up, create, rm = steps
    assert add.ops == (AddLink("host", name, "vlan", parent="eth0", vlan_id=40,
                               error_format="RTNETLINK answers: {strerror}"),)
    assert up.ops == (SetLink("host", name, up=True),)
    assert create.error is None and create.ops == ()
    assert rm.error is None and not any(isinstance(op, DeleteLink) for op in rm.ops)
    assert emu.host_links[name].owner == "user"
    assert emu.vlan_of(name) == 40


def test_no_parent_gives_a_dummy_named_after_the_network_id_but_not_internal_in_20_10():
    # moby v20.10.24 libnetwork/drivers/macvlan/macvlan_network.go:52-55 (the dummy only replaces the parent)
    # and macvlan_joinleave.go:42 (the gateway is set unless --internal); seen on a real 20.10 engine:
    # `default via 10.8.0.1 dev eth0` in a container of a network without a parent. A dummy link failure is
    # the bare netlink error (macvlan_setup.go:162-171).
    steps, emu = emulate("""
        - docker network create -d macvlan --subnet=192.168.10.0/24 isolated1
        - docker run --net=isolated1 --name=cid1 -itd alpine /bin/sh
    """)
    net = emu.networks["isolated1"]
    assert re.fullmatch(r"dm-[0-9a-f]{12}", net.parent)
    assert net.parent == "dm-" + net.id[:12]
    assert net.internal is False and net.created_parent is True
    assert steps[0].ops == (AddLink("host", net.parent, "dummy", error_format="{error}"),
                            SetLink("host", net.parent, up=True))
    ep = emu.containers["cid1"].endpoint("isolated1")
    assert str(ep.gateway4) == "192.168.10.1"
    assert ops_of(steps[1], AddRoute) == [AddRoute("cid1", "default", "eth0", gateway="192.168.10.1", family=4)]
    assert ops_of(steps[1], AddLink)[0].parent == net.parent


@pytest.mark.parametrize("profile", ["moby-28", "moby-29"])
def test_no_parent_is_internal_from_moby_28(profile):
    # docker-v29.7.2 daemon/libnetwork/drivers/macvlan/macvlan_network.go:232-235 (v28.0.0, commit 2f60d15ddf)
    steps, emu = emulate("""
        - docker network create -d macvlan --subnet=192.168.10.0/24 isolated1
        - docker run --net=isolated1 --name=cid1 -itd alpine /bin/sh
    """, profile)
    assert emu.networks["isolated1"].internal is True
    assert emu.networks["isolated1"].pools4[0].gateway is None  # 28: no gateway for internal; 29: never
    assert not ops_of(steps[1], AddRoute)
    assert emu.containers["cid1"].endpoints[0].cidrs() == ["192.168.10.1/24"]


def test_ipvlan_dummy_parent_is_di():
    steps, emu = emulate("""
        - docker network create -d ipvlan --subnet=192.168.210.0/24 -o ipvlan_mode=l2 ipvlan210
    """)
    net = emu.networks["ipvlan210"]
    assert net.parent == "di-" + net.id[:12]
    assert ops_of(steps[0], AddLink)[0].kind == "dummy"


def test_internal_with_a_parent_keeps_the_parent_and_only_drops_the_default_route():
    # moby v20.10.24 libnetwork/drivers/macvlan/macvlan_network.go:52-55, 188-192; seen on a real 20.10
    # engine: `--internal -o parent=eth0` keeps eth0 (no dummy), the container gets .2 and no default route.
    steps, emu = emulate("""
        - docker network create -d macvlan --internal --subnet=192.168.11.0/24 -o parent=eth0 inside
        - docker run --net=inside -itd alpine /bin/sh
    """)
    net = emu.networks["inside"]
    assert net.parent == "eth0" and not ops_of(steps[0], AddLink)
    assert net.internal is True
    assert emu.containers["c1"].endpoints[0].cidrs() == ["192.168.11.2/24"]
    assert ops_of(steps[1], AddLink)[0].parent == "eth0"
    assert not ops_of(steps[1], AddRoute)


def test_network_rm_deletes_the_dummy_it_created():
    steps, emu = emulate("""
        - docker network create -d macvlan --subnet=192.168.10.0/24 isolated1
        - docker network rm isolated1
    """)
    parent = ops_of(steps[0], AddLink)[0].name
    assert steps[1].ops == (DeleteLink("host", parent),)
    assert parent not in emu.host_links and not emu.networks


def test_second_network_on_a_parent_names_the_existing_networks_id():
    steps, emu = emulate(f"""
        - {PUB_NET}
        - docker network create -d macvlan --subnet=192.168.99.0/24 -o parent=eth0 second_net
    """)
    first = emu.networks["pub_net"]
    assert steps[1].error == f"network dm-{first.id[:12]} is already using parent interface eth0"
    assert "second_net" not in emu.networks


def test_a_parent_freed_by_network_rm_can_be_used_again():
    steps, emu = emulate(f"""
        - {PUB_NET}
        - docker network rm pub_net
        - docker network create -d macvlan --subnet=192.168.99.0/24 -o parent=eth0 second_net
    """)
    assert [s.error for s in steps] == [None, None, None]


# --- containers: links, addresses, routes -----------------------------------------------------------------


def test_container_ops_create_move_address_and_route():
    steps, emu = emulate(f"""
        - {PUB_NET}
        - docker run --net=pub_net --ip=172.16.86.10 --name c1 -itd alpine /bin/sh
    """)
    run = steps[1]
    ep = emu.containers["c1"].endpoint("pub_net")
    assert re.fullmatch(r"veth[0-9a-f]{7}", ep.child)
    assert run.ops == (
        CreateNode("c1", "container"),
        SetSysctl("c1", "net.ipv6.conf.all.disable_ipv6", "1"),
        SetSysctl("c1", "net.ipv6.conf.default.disable_ipv6", "1"),
        AddLink("host", ep.child, "macvlan", parent="eth0", mode="bridge",
                error_format="failed to create the macvlan port: {error}"),
        MoveLink("host", ep.child, "c1", "eth0"),
        SetLink("c1", "eth0", mac="02:42:ac:10:56:0a"),
        AddAddress("c1", "eth0", "172.16.86.10/24", nodad=True),
        SetLink("c1", "eth0", up=True),
        AddRoute("c1", "default", "eth0", gateway="172.16.86.1", family=4),
    )


def test_network_connect_adds_eth1():
    steps, emu = emulate(f"""
        - {PUB_NET}
        - docker network create -d macvlan --subnet=192.168.50.0/24 --gateway=192.168.50.1 -o parent=eth0.50 macvlan50
        - docker run --net=pub_net --name c1 -itd alpine /bin/sh
        - docker network connect macvlan50 c1
    """)
    assert [s.error for s in steps] == [None] * 4
    assert [e.ifname for e in emu.containers["c1"].endpoints] == ["eth0", "eth1"]
    move = ops_of(steps[3], MoveLink)[0]
    assert (move.to_node, move.new_name) == ("c1", "eth1")
    assert ops_of(steps[3], AddLink)[0].parent == "eth0.50"
    assert AddAddress("c1", "eth1", "192.168.50.2/24", nodad=True) in steps[3].ops


def test_network_connect_with_a_static_address():
    steps, emu = emulate(f"""
        - {PUB_NET}
        - docker network create -d macvlan --subnet=192.168.50.0/24 --gateway=192.168.50.1 -o parent=eth0.50 macvlan50
        - docker run --net=pub_net --name c1 -itd alpine /bin/sh
        - docker network connect --ip=192.168.50.77 macvlan50 c1
    """)
    assert emu.containers["c1"].endpoint("macvlan50").cidrs() == ["192.168.50.77/24"]


def test_network_disconnect_releases_the_address():
    steps, emu = emulate(f"""
        - {PUB_NET}
        - docker network create -d macvlan --subnet=192.168.50.0/24 --gateway=192.168.50.1 -o parent=eth0.50 macvlan50
        - docker run --net=pub_net --name c1 -itd alpine /bin/sh
        - docker network connect macvlan50 c1
        - docker network disconnect macvlan50 c1
        - docker run --net=macvlan50 --name c2 -itd alpine /bin/sh
    """)
    # macvlan50 sorts before pub_net, so it held the default route; pub_net's gateway takes it back.
    assert steps[4].ops == (DeleteLink("c1", "eth1"),
                            AddRoute("c1", "default", "eth0", gateway="172.16.86.1", family=4, replace=True))
    assert emu.containers["c2"].endpoints[0].cidrs() == ["192.168.50.2/24"]


def test_interface_names_are_not_reused_after_disconnect():
    steps, emu = emulate(f"""
        - {PUB_NET}
        - docker network create -d macvlan --subnet=192.168.50.0/24 --gateway=192.168.50.1 -o parent=eth0.50 b
        - docker network create -d macvlan --subnet=192.168.60.0/24 --gateway=192.168.60.1 -o parent=eth0.60 c
        - docker run --net=pub_net --name xx -itd alpine /bin/sh
        - docker network connect b xx
        - docker network disconnect pub_net xx
        - docker network connect c xx
    """)
    names = [e.ifname for e in emu.containers["xx"].endpoints]
    assert len(set(names)) == len(names), names


def test_connecting_a_network_whose_name_sorts_first_moves_the_default_route():
    s = scenario("""
        - docker network create -d macvlan --subnet=172.16.86.0/24 --gateway=172.16.86.1 -o parent=eth0 zeta
        - docker network create -d macvlan --subnet=192.168.50.0/24 --gateway=192.168.50.1 -o parent=eth0.50 alpha
        - docker run --net=zeta --name cc -itd alpine /bin/sh
        - docker network connect alpha cc
    """)
    plan, emu = _compile(s)
    routes = {i["name"]: i["routes"] for i in describe(emu, plan.steps)["containers"][0]["interfaces"]}
    assert "default via 192.168.50.1 dev eth1" in routes["eth1"]
    assert not any(r.startswith("default") for r in routes["eth0"])
    expected = Oracle(emu, world_of(s)).expected_state(emu.containers["cc"])
    assert Fact("route", "cc", "eth1", "default via 192.168.50.1 dev eth1") in expected


def test_ipvlan_l3_routes_default_by_device_without_a_gateway():
    steps, emu = emulate("""
        - docker network create -d ipvlan --subnet=192.168.214.0/24 --subnet=10.1.214.0/24 -o parent=eth0 -o ipvlan_mode=l3 ipnet210
        - docker run --net=ipnet210 --ip=192.168.214.10 --name aa -itd alpine /bin/sh
    """)
    net = emu.networks["ipnet210"]
    assert (net.driver, net.mode, net.flag) == ("ipvlan", "l3", None)  # 20.10 has no ipvlan_flag
    ep = emu.containers["aa"].endpoints[0]
    assert ep.gateway4 is None and ep.connected_default is True
    assert ops_of(steps[1], AddRoute) == [AddRoute("aa", "default", "eth0", family=4)]
    assert ops_of(steps[1], AddLink)[0].mode == "l3"
    assert ep.mac is None  # ipvlan children share the parent's MAC
    assert not [op for op in steps[1].ops if isinstance(op, SetLink) and op.mac]


def test_dual_stack_addresses_are_added_without_dad_and_ipv6_stays_enabled():
    # docker-20.10-observed.md, dual stack: the first IPv4 subnet's .2, 2001:db8:abc8::1 (nodad),
    # link-local fe80::42:c0ff:fea8:d802, default via ::10; the next container gets ::2.
    steps, emu = emulate("""
        - docker network create -d macvlan --subnet=192.168.216.0/24 --subnet=192.168.218.0/24 --gateway=192.168.216.1 --gateway=192.168.218.1 --ipv6 --subnet=2001:db8:abc8::/64 --gateway=2001:db8:abc8::10 -o parent=eth0.218 macvlan216
        - docker run --net=macvlan216 --name aa -itd alpine /bin/sh
        - docker run --net=macvlan216 --name bb -itd alpine /bin/sh
    """)
    run = steps[1]
    assert AddAddress("aa", "eth0", "2001:db8:abc8::1/64", nodad=True) in run.ops
    assert AddAddress("aa", "eth0", "192.168.216.2/24", nodad=True) in run.ops
    assert "nodad" in render(AddAddress("aa", "eth0", "2001:db8:abc8::1/64"))[0]
    assert not ops_of(run, SetSysctl)
    assert AddRoute("aa", "default", "eth0", gateway="2001:db8:abc8::10", family=6) in run.ops
    assert AddRoute("aa", "default", "eth0", gateway="192.168.216.1", family=4) in run.ops
    a = emu.containers["aa"].endpoints[0]
    assert a.mac == "02:42:c0:a8:d8:02"
    assert link_local_from_mac(a.mac) == ipaddress.ip_address("fe80::42:c0ff:fea8:d802")
    assert emu.containers["bb"].endpoints[0].cidrs() == ["192.168.216.3/24", "2001:db8:abc8::2/64"]


def test_ipv6_only_network_gets_a_default_ipv4_pool():
    steps, emu = emulate("""
        - docker network create -d macvlan --ipv6 --subnet=2001:db8:abc9::/64 -o parent=eth0 v6only
        - docker run --net=v6only --name aa -itd alpine /bin/sh
    """)
    net = emu.networks["v6only"]
    assert [str(p.subnet) for p in net.pools] == ["172.18.0.0/16", "2001:db8:abc9::/64"]
    assert emu.containers["aa"].endpoints[0].cidrs() == ["172.18.0.2/16", "2001:db8:abc9::2/64"]


def test_connecting_twice_to_one_network():
    steps, emu = emulate(f"""
        - {PUB_NET}
        - docker run --net=pub_net --name c1 -itd alpine /bin/sh
        - docker network connect pub_net c1
    """)
    assert steps[2].error == "endpoint with name c1 already exists in network pub_net"


def test_ip6_on_a_network_without_an_ipv6_subnet():
    steps, emu = emulate(f"""
        - {PUB_NET}
        - docker run --net=pub_net --ip6=2001:db8::5 -itd alpine /bin/sh
    """)
    assert steps[1].error == (
        "user specified IP address is supported only when connecting to networks with user configured subnets")


def test_ipv6_without_gateway_makes_1_the_gateway():
    steps, emu = emulate("""
        - docker network create -d macvlan --subnet=192.168.216.0/24 --ipv6 --subnet=fd00:216::/64 -o parent=eth0 v6
        - docker run --net=v6 --name aa -itd alpine /bin/sh
    """)
    ep = emu.containers["aa"].endpoints[0]
    assert ep.cidrs() == ["192.168.216.2/24", "fd00:216::2/64"]
    assert ep.gateway6 == ipaddress.ip_address("fd00:216::1")


def test_containers_on_a_network_without_ipv6_get_it_disabled_and_connect_reenables_it():
    steps, emu = emulate(f"""
        - {PUB_NET}
        - docker network create -d macvlan --subnet=192.168.216.0/24 --ipv6 --subnet=fd00:216::/64 -o parent=eth0.216 v6
        - docker run --net=pub_net --name aa -itd alpine /bin/sh
        - docker network connect v6 aa
    """)
    assert ops_of(steps[2], SetSysctl) == [SetSysctl("aa", "net.ipv6.conf.all.disable_ipv6", "1"),
                                          SetSysctl("aa", "net.ipv6.conf.default.disable_ipv6", "1")]
    assert ops_of(steps[3], SetSysctl) == [SetSysctl("aa", "net.ipv6.conf.all.disable_ipv6", "0"),
                                          SetSysctl("aa", "net.ipv6.conf.default.disable_ipv6", "0")]


def test_transient_ping_is_a_reach_check_cleaned_up_and_its_address_reused():
    steps, emu = emulate(f"""
        - {PUB_NET}
        - docker run --net=pub_net --ip=172.16.86.10 --name c1 -itd alpine /bin/sh
        - docker run --net=pub_net -it --rm alpine ping -c 4 172.16.86.10
        - docker run --net=pub_net --name c3 -itd alpine /bin/sh
    """)
    ping = steps[2]
    assert ping.error is None
    assert ping.check == ReachCheck(src="c2", dst="172.16.86.10", family=4, command="ping -c 4 172.16.86.10")
    assert ping.cleanup == (DeleteNode("c2"),)
    assert AddAddress("c2", "eth0", "172.16.86.2/24", nodad=True) in ping.ops
    assert "c2" not in emu.containers and emu.history["c2"].running is False
    assert emu.containers["c3"].endpoints[0].cidrs() == ["172.16.86.2/24"]


def test_ping_by_name_resolves_through_the_network_and_ping6_is_ipv6():
    steps, emu = emulate("""
        - docker network create -d macvlan --subnet=192.168.216.0/24 --ipv6 --subnet=2001:db8:abc8::/64 --gateway=2001:db8:abc8::10 -o parent=eth0 v6
        - docker run --net=v6 --name=cid1 -itd alpine /bin/sh
        - docker run --net=v6 -it --rm alpine ping -c 2 cid1
        - docker run --net=v6 -it --rm alpine ping6 -c4 2001:db8:abc8::1
    """)
    assert steps[2].check.dst == "192.168.216.2" and steps[2].check.family == 4
    assert steps[3].check.dst == "2001:db8:abc8::1" and steps[3].check.family == 6


def test_seed_ip_range_example_first_container():
    plan, emu = _compile(load_scenario(SCENARIOS / "macvlan-ip-range.yaml"))
    ep = emu.containers["c1"].endpoints[0]
    assert ep.cidrs() == ["192.168.32.128/24"]
    assert ep.mac == "02:42:c0:a8:20:80"
    assert ep.gateway4 == ipaddress.ip_address("192.168.32.254")
    assert emu.containers["c3"].endpoints[0].cidrs() == ["192.168.32.10/24"]


def test_seed_bridge_example_container_without_ip():
    plan, emu = _compile(load_scenario(SCENARIOS / "macvlan-bridge.yaml"))
    assert emu.containers["c2"].endpoints[0].cidrs() == ["172.16.86.2/24"]
    assert emu.containers["c2"].endpoints[0].mac == "02:42:ac:10:56:02"
    assert [s.error for s in plan.steps] == [None] * 4


def test_mcv0_example_skips_aux_addresses_and_infers_gateways():
    plan, emu = _compile(load_scenario(SCENARIOS / "macvlan-mcv0-dual-stack.yaml"))
    ep = emu.containers["c1"].endpoints[0]
    assert ep.cidrs() == ["192.168.136.3/24", "fd11::3/64"]
    assert ep.mac == "02:42:c0:a8:88:03"
    assert (str(ep.gateway4), str(ep.gateway6)) == ("192.168.136.1", "fd11::1")


# --- Docker's error messages, verbatim ----------------------------------------------------------------------


ERRORS = [
    (f"""
     - {PUB_NET}
     - docker run --net=pub_net --ip=172.16.86.1 -itd alpine /bin/sh
     """, "Address already in use"),
    (f"""
     - {PUB_NET}
     - docker run --net=pub_net --ip=172.16.86.255 -itd alpine /bin/sh
     """, "Address already in use"),
    (f"""
     - {PUB_NET}
     - docker run --net=pub_net --ip=172.16.86.10 -itd alpine /bin/sh
     - docker run --net=pub_net --ip=172.16.86.10 -itd alpine /bin/sh
     """, "Address already in use"),
    ("""
     - docker network create -d macvlan --subnet=172.16.86.0/24 --aux-address=exclude_host=172.16.86.250 -o parent=eth0 pub_net
     - docker run --net=pub_net --ip=172.16.86.250 -itd alpine /bin/sh
     """, "Address already in use"),
    (f"""
     - {PUB_NET}
     - docker run --net=pub_net --ip=10.99.0.5 -itd alpine /bin/sh
     """, "Invalid address 10.99.0.5: It does not belong to any of this network's subnets"),
    ("""
     - docker network create -d macvlan --subnet=172.16.86.0/24 --gateway=10.0.0.1 -o parent=eth0 badgw
     """, "no matching subnet for gateway 10.0.0.1"),
    ("""
     - docker network create -d macvlan --subnet=172.16.86.0/24 --ip-range=10.0.0.0/25 -o parent=eth0 badrange
     """, "no matching subnet for range 10.0.0.0/25"),
    ("""
     - docker network create -d macvlan --gateway=172.16.86.1 -o parent=eth0 nosubnet
     """, "every ip-range or gateway must have a corresponding subnet"),
    ("""
     - docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0.5000 vlan5000
     """, "vlan id must be between 1-4094, received: 5000"),
    ("""
     - docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0.0 vlan0
     """, "vlan id must be between 1-4094, received: 0"),
    ("""
     - docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0 -o macvlan_mode=foo bad_mode
     """, "requested macvlan mode 'foo' is not valid, 'bridge' mode is the macvlan driver default"),
    ("""
     - docker network create -d ipvlan --subnet=172.16.86.0/24 -o parent=eth0 -o ipvlan_mode=l4 bad_mode
     """, "requested ipvlan mode 'l4' is not valid, 'l2' mode is the ipvlan driver default"),
    ("""
     - docker network create -d ipvlan --subnet=172.16.86.0/24 -o parent=eth0 -o ipvlan_mode=l3s l3s
     """, "requested ipvlan mode 'l3s' is not valid, 'l2' mode is the ipvlan driver default"),  # 20.10: no l3s
    ("""
     - docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=lo loop
     """, "loopback interface is not a valid macvlan parent link"),
    ("""
     - docker network create -d ipvlan --subnet=172.16.86.0/24 -o parent=lo loop
     """, "loopback interface is not a valid ipvlan parent link"),
    (f"""
     - {PUB_NET}
     - docker network create -d macvlan --subnet=172.16.86.0/25 -o parent=eth0.7 overlap
     """, "Pool overlaps with other one on this address space"),
    ("""
     - docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=nosuchif0 nosuch
     """, "invalid subinterface vlan name nosuchif0, example formatting is eth0.10"),
    ("""
     - docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=nosuchif0.10 nosuch
     """, "-o parent interface does was not found on the host: nosuchif0"),  # 20.10's own typo
    ("""
     - docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0.ten bad
     """, "unable to parse a valid vlan id from: ten (ex. eth0.10 for vlan 10)"),
    ("""
     - docker network create -d macvlan -o parent=eth0 nosubnet
     - docker run --net=nosubnet --ip=172.18.0.5 -itd alpine /bin/sh
     """, "user specified IP address is supported only when connecting to networks with user configured subnets"),
    ("""
     - docker network create -d macvlan --ipv6 --subnet=172.16.86.0/24 -o parent=eth0 v6
     """, "could not find an available, non-overlapping IPv6 address pool among the defaults to assign to the network"),
    (f"""
     - {PUB_NET}
     - docker network create -d macvlan --subnet=172.16.87.0/24 -o parent=eth0.87 pub_net
     """, "network with name pub_net already exists"),
    ("""
     - docker network rm nosuchnet
     """, "Error: No such network: nosuchnet"),
    ("""
     - docker run --net=nosuchnet -itd alpine /bin/sh
     """, "network nosuchnet not found"),
    (f"""
     - {PUB_NET}
     - docker network connect pub_net ghost
     """, "No such container: ghost"),
    (f"""
     - {PUB_NET}
     - docker network disconnect pub_net ghost
     """, "No such container: ghost"),
    # Seen on a real Docker 20.10 engine (harness run --backend docker), each with its moby/cli v20.10.24 source:
    ("""
     - docker network create -d macvlan --subnet 10.9.0.0/24 --gateway 10.9.0.0 -o parent=eth0 g1
     """, "failed to allocate gateway (10.9.0.0): Address already in use"),  # libnetwork/network.go:1663-1669
    ("""
     - docker network create -d macvlan --subnet 10.30.0.0/31 -o parent=eth0 s31
     """, "failed to allocate gateway (): No available addresses on this pool"),
    ("""
     - docker network create -d macvlan --subnet 10.9.0.0/24 -o parent=a.b.c g3
     """, "required interface name format is: name.vlan_id, ex. eth0.10 for vlan 10, instead received a.b.c"),
    ("""
     - docker network create -d macvlan --subnet 10.9.0.0/24 --gateway 10.9.0.300 -o parent=eth0 g4
     """, "no matching subnet for gateway 10.9.0.300"),  # cli create.go:181-200,229-249
    ("""
     - docker network create -d macvlan --subnet foo -o parent=eth0 g5
     """, "Invalid subnet foo : invalid CIDR address: foo"),  # daemon/network.go:418-421
    ("""
     - docker network create -d macvlan --subnet foo --gateway 10.0.0.1 -o parent=eth0 g6
     """, "invalid subnet: invalid CIDR address: foo"),  # cli create.go:234-237
    (f"""
     - {PUB_NET}
     - docker run --net=pub_net --ip 2001:db8::5 --name x1 -itd alpine /bin/sh
     """, "invalid IPv4 address: 2001:db8::5"),  # daemon/create.go:347-358
    ("""
     - docker rm nosuch
     """, "Error: No such container: nosuch"),  # client/errors.go:58-59
]


@pytest.mark.parametrize("commands, message", ERRORS, ids=[m[:40] for _, m in ERRORS])
def test_docker_error_messages_verbatim(commands, message):
    steps, _ = emulate(commands)
    assert [s.error for s in steps[:-1]] == [None] * (len(steps) - 1)
    assert steps[-1].error == message
    assert steps[-1].ops == ()


def test_pool_overlap_is_checked_before_the_parent():
    steps, emu = emulate(f"""
        - {PUB_NET}
        - docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0 again
    """)
    assert steps[1].error == "Pool overlaps with other one on this address space"


def test_network_rm_with_active_endpoints_names_the_full_id():
    steps, emu = emulate(f"""
        - {PUB_NET}
        - docker run --net=pub_net --name web -itd alpine /bin/sh
        - docker network rm pub_net
    """)
    net_id = emu.networks["pub_net"].id
    assert re.fullmatch(r"[0-9a-f]{64}", net_id)
    assert steps[2].error == f"error while removing network: network pub_net id {net_id} has active endpoints"
    assert steps[2].ops == ()


def test_network_rm_removes_the_others_and_reports_each_failure():
    steps, emu = emulate("""
        - docker network create -d macvlan --subnet=192.168.50.0/24 -o parent=eth0.50 a
        - docker network rm nosuch a
    """)
    assert steps[1].error == "Error: No such network: nosuch"
    assert steps[1].ops == (DeleteLink("host", "eth0.50"),)
    assert "a" not in emu.networks


def test_duplicate_container_name_is_a_conflict():
    steps, emu = emulate(f"""
        - {PUB_NET}
        - docker run --net=pub_net --name web -itd alpine /bin/sh
        - docker run --net=pub_net --name web -itd alpine /bin/sh
    """)
    holder = emu.containers["web"].id
    assert steps[2].error == (
        f'Conflict. The container name "/web" is already in use by container "{holder}". '
        "You have to remove (or rename) that container to be able to reuse that name."
    )


def test_a_removed_containers_name_can_be_reused():
    steps, emu = emulate(f"""
        - {PUB_NET}
        - docker run --net=pub_net --name web -itd alpine /bin/sh
        - docker rm -f web
        - docker run --net=pub_net --name web -itd alpine /bin/sh
    """)
    assert [s.error for s in steps] == [None] * 4


def test_an_exited_container_without_rm_keeps_its_name():
    steps, emu = emulate(f"""
        - {PUB_NET}
        - docker run --net=pub_net --name pp alpine ping -c 1 172.16.86.1
        - docker run --net=pub_net --name pp -itd alpine /bin/sh
    """)
    assert steps[2].error is not None and steps[2].error.startswith('Conflict. The container name "/pp"')


def test_removing_a_running_container_needs_force():
    steps, emu = emulate(f"""
        - {PUB_NET}
        - docker run --net=pub_net --name web -itd alpine /bin/sh
        - docker rm web
    """)
    assert steps[2].error.startswith("You cannot remove a running container")
    assert "web" in emu.containers


# --- transactions: a failed command changes nothing ----------------------------------------------------


def state(emu: DockerEmulator):
    return (
        {k: (v.id, v.parent, [sorted(p.allocated) for p in v.pools], sorted(v.endpoints)) for k, v in emu.networks.items()},
        {k: [e.cidrs() for e in v.endpoints] for k, v in emu.containers.items()},
        sorted(emu.host_links),
        sorted(map(str, emu.address_space.in_use)),
        emu.counter,
    )


@pytest.mark.parametrize("failing", [
    "docker network create -d macvlan --subnet=10.5.0.0/24 --gateway=10.5.0.1 -o parent=eth0.5 -o macvlan_mode=foo bad",
    "docker network create -d macvlan --subnet=10.5.0.0/24 -o parent=eth0 second_on_eth0",
    "docker network create -d macvlan --subnet=10.5.0.0/24 -o parent=nosuch0.5 missing_lower",
    "docker run --net=pub_net --ip=2001:db8::5 -itd alpine /bin/sh",
    "docker run --net=pub_net --name c1 -itd alpine /bin/sh",
    "docker network connect pub_net ghost",
])
def test_a_failed_command_leaves_the_emulator_unchanged(failing):
    s = scenario(f"""
        - {PUB_NET}
        - docker run --net=pub_net --ip=172.16.86.10 --name c1 -itd alpine /bin/sh
        - {failing}
    """)
    emu = DockerEmulator(s)
    for step in s.steps[:2]:
        assert emu.compile(step).error is None
    before = state(emu)
    failed = emu.compile(s.steps[2])
    assert failed.error is not None and failed.ops == ()
    assert state(emu) == before


def test_a_failed_network_create_does_not_reserve_its_subnet_or_parent():
    steps, emu = emulate("""
        - docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0.50 -o macvlan_mode=foo bad_mode
        - docker network create -d macvlan --subnet=172.16.86.0/24 --gateway=172.16.86.1 -o parent=eth0.50 good
    """)
    assert steps[0].error is not None and steps[0].ops == ()
    assert steps[1].error is None
    assert ops_of(steps[1], AddLink)[0].name == "eth0.50"  # the failed create made no link


def test_a_failed_run_does_not_use_up_an_address():
    steps, emu = emulate(f"""
        - {PUB_NET}
        - docker run --net=pub_net --ip=10.99.0.5 -itd alpine /bin/sh
        - docker run --net=pub_net -itd alpine /bin/sh
    """)
    assert steps[1].error is not None
    assert emu.containers["c2"].endpoints[0].cidrs() == ["172.16.86.2/24"]


def test_snapshot_and_restore_roll_back_a_successful_command():
    s = scenario(f"""
        - {PUB_NET}
        - docker run --net=pub_net -itd alpine /bin/sh
    """)
    emu = DockerEmulator(s)
    emu.compile(s.steps[0])
    snap = emu.snapshot()
    before = state(emu)
    assert emu.compile(s.steps[1]).error is None
    assert state(emu) != before
    emu.restore(snap)
    assert state(emu) == before
    assert emu.compile(s.steps[1]).ops  # and it can run again, getting the same address
    assert emu.containers["c1"].endpoints[0].cidrs() == ["172.16.86.2/24"]


# --- profiles ------------------------------------------------------------------------------------------


def test_default_profile_allocates_a_gateway_ip_mac_and_one_network_per_parent():
    steps, emu = emulate("""
        - docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0 a
        - docker run --net=a --name xx -itd alpine /bin/sh
        - docker network create -d macvlan --subnet=10.9.0.0/24 -o parent=eth0 b
    """)
    ep = emu.containers["xx"].endpoints[0]
    assert emu.networks["a"].pools4[0].gateway == ipaddress.ip_address("172.16.86.1")
    assert ep.cidrs() == ["172.16.86.2/24"] and ep.mac == "02:42:ac:10:56:02"
    assert AddRoute("xx", "default", "eth0", gateway="172.16.86.1", family=4) in steps[1].ops
    assert steps[2].error is not None and "is already using parent interface eth0" in steps[2].error


def test_moby29_allocates_no_gateway_unless_given():
    steps, emu = emulate("""
        - docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0 a
        - docker run --net=a --name xx -itd alpine /bin/sh
        - docker network create -d macvlan --subnet=10.9.0.0/24 --gateway=10.9.0.254 -o parent=eth0.9 b
        - docker run --net=b --name yy -itd alpine /bin/sh
    """, profile="moby-29")
    assert emu.networks["a"].pools4[0].gateway is None
    x = emu.containers["xx"].endpoints[0]
    assert x.cidrs() == ["172.16.86.1/24"] and x.gateway4 is None
    assert not ops_of(steps[1], AddRoute)
    assert AddRoute("yy", "default", "eth0", gateway="10.9.0.254", family=4) in steps[3].ops


def test_moby29_gives_random_locally_administered_unicast_macs():
    steps, emu = emulate("""
        - docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0 a
        - docker run --net=a --name xx -itd alpine /bin/sh
        - docker run --net=a --name yy -itd alpine /bin/sh
    """, profile="moby-29")
    macs = [emu.containers[n].endpoints[0].mac for n in ("xx", "yy")]
    for mac in macs:
        assert re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", mac)
        first = int(mac[:2], 16)
        assert first & 0x02 and not first & 0x01, mac
        assert not mac.startswith("02:42:ac:10:56:")
    assert macs[0] != macs[1]


def test_moby29_lets_networks_share_a_parent_except_passthru():
    steps, emu = emulate("""
        - docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0 a
        - docker network create -d macvlan --subnet=10.9.0.0/24 -o parent=eth0 b
        - docker network create -d macvlan --subnet=10.10.0.0/24 -o parent=eth0 -o macvlan_mode=passthru p
        - docker network create -d macvlan --subnet=10.11.0.0/24 -o parent=eth0.11 -o macvlan_mode=passthru q
        - docker network create -d macvlan --subnet=10.12.0.0/24 -o parent=eth0.11 r
    """, profile="moby-29")
    assert [s.error is None for s in steps] == [True, True, False, True, False]
    assert emu.networks["a"].parent == emu.networks["b"].parent == "eth0"
    assert "is already using parent interface eth0" in steps[2].error
    assert "is already using parent interface eth0.11" in steps[4].error


def test_moby29_keeps_a_shared_parent_until_its_last_network_is_removed():
    steps, emu = emulate("""
        - docker network create -d macvlan --subnet=192.168.50.0/24 -o parent=eth0.50 a
        - docker network create -d macvlan --subnet=192.168.51.0/24 -o parent=eth0.50 b
        - docker network rm a
    """, profile="moby-29")
    assert [s.error for s in steps] == [None, None, None]
    assert "eth0.50" in emu.host_links
    assert not any(isinstance(op, DeleteLink) for op in steps[2].ops)


def test_unknown_profile_lists_the_valid_ones():
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="valid profiles: docker-20.10, moby-27, moby-28, moby-29"):
        DockerEmulator(scenario(f"- {PUB_NET}"), "docker-99")
