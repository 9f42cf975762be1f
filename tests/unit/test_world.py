"""The emulated world: switch, router and host, derived from the scenario."""

from __future__ import annotations

import textwrap

from harness.docker.emulated import compile_scenario
from harness.loader import parse_scenario
from harness.plan import AddBridgeVlan, AddLink
from harness.world import World


def world(text: str) -> World:
    s = parse_scenario(textwrap.dedent(text), "t.yaml")
    return World.of(s.topology, compile_scenario(s).vlans)


def test_vlans_of_created_networks_make_the_switch_vlan_aware():
    w = world("""\
        name: t
        source: s
        topology: {router: [192.168.50.1/24, 192.168.60.1/24]}
        commands:
          - docker network create -d macvlan --subnet=192.168.50.0/24 -o parent=eth0.50 n50
          - docker network create -d macvlan --subnet=192.168.60.0/24 -o parent=eth0.60 n60
    """)
    assert w.vlans == (50, 60)
    assert [(p.dev, p.vlan) for p in w.router_ports] == [("eth0.50", 50), ("eth0.60", 60)]
    ops = w.ops()
    bridge = next(op for op in ops if isinstance(op, AddLink) and op.name == "br0")
    assert bridge.vlan_filtering and bridge.feature == "bridge_vlan_filtering"
    trunk = {(op.dev, op.vid) for op in ops if isinstance(op, AddBridgeVlan)}
    assert trunk == {("p-host", 50), ("p-host", 60), ("p-rt", 50), ("p-rt", 60)}


def test_a_refused_network_puts_no_vlan_on_the_switch():
    w = world("""\
        name: t
        source: s
        topology: {router: [172.16.86.1/24]}
        commands:
          - docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0 pub_net
          - command: docker network create -d macvlan --subnet=172.16.86.0/25 -o parent=eth0.7 overlap
            error: Pool overlaps with other one on this address space
    """)
    assert w.vlans == ()
    assert [(p.dev, p.vlan) for p in w.router_ports] == [("eth0", None)]
    bridge = next(op for op in w.ops() if isinstance(op, AddLink) and op.name == "br0")
    assert not bridge.vlan_filtering and bridge.feature == "bridge"


def test_a_hand_made_parent_counts_with_its_own_vlan_id():
    w = world("""\
        name: t
        source: s
        topology: {router: [192.168.40.1/24]}
        commands:
          - ip link add link eth0 name foo type vlan id 40
          - docker network create -d macvlan --subnet=192.168.40.0/24 -o parent=foo macvlan40
          - docker network rm macvlan40
    """)
    assert w.vlans == (40,)
    assert [(p.dev, p.vlan) for p in w.router_ports] == [("eth0.40", 40)]
