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


def test_the_router_answers_arp_only_on_the_port_holding_the_address():
    # Issue #10: with Linux's default (weak host) the router answered the untagged host's ARP for a
    # gateway it holds on VLAN 50 only, so host and that gateway were reachable where the model (and a
    # real router) says isolated. The router node sets strong-host ARP before any probe runs.
    from harness.plan import SetSysctl

    w = world("""\
        name: t
        source: s
        topology: {host: {parent: eth0, address: 192.168.50.250/24}, router: [192.168.50.1/24]}
        commands:
          - docker network create -d macvlan --subnet=192.168.50.0/24 --gateway=192.168.50.1 -o parent=eth0.50 n50
    """)
    assert [(p.dev, p.vlan) for p in w.router_ports] == [("eth0.50", 50)]
    assert w.host_gateway(4) is None  # the host has no gateway of its own: the router is not on its VLAN
    sysctls = {(op.node, op.key): op.value for op in w.ops() if isinstance(op, SetSysctl)}
    assert sysctls[("rt", "net.ipv4.conf.all.arp_ignore")] == "1"
    assert sysctls[("rt", "net.ipv4.conf.all.arp_announce")] == "2"
    # The host stays a default Linux box (weak host), as a real Docker host is.
    assert not any(node == "host" and "arp" in key for node, key in sysctls)


def test_a_world_without_router_sets_no_router_sysctl():
    from harness.plan import SetSysctl

    w = world("""\
        name: t
        source: s
        topology: {host: {parent: eth0, address: 10.0.0.2/24}}
        commands:
          - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=eth0 n
    """)
    assert not any(isinstance(op, SetSysctl) and op.node == "rt" for op in w.ops())
