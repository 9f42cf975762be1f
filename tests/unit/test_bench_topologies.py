"""Unit tests of harness.bench.topologies: every topology's plan operations are ordered and build what it says."""

from __future__ import annotations

import pytest

from harness.bench.params import BenchUnavailable
from harness.bench.topologies import mtu_method, topology_for
from harness.plan import AddAddress, AddLink, CreateNode, MoveLink, SetLink


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


def test_a_non_default_mtu_is_set_on_every_link():
    assert mtu_method(1500) == "default" and mtu_method(1400) == "link" and mtu_method(9000) == "link"
    assert not any(isinstance(op, SetLink) and op.mtu for op in topology_for("macvlan").ops)
    topo = topology_for("macvlan", 9000)
    mtus = [(op.node, op.name) for op in topo.ops if isinstance(op, SetLink) and op.mtu == 9000]
    assert mtus == list(topo.links)  # lower devices before upper ones, after everything else is built
    assert topo.ops[: -len(mtus)] == topology_for("macvlan").ops
