"""Issue #11: version-accurate Docker semantics. Each test names the source (moby/moby or docker/cli, tag,
file) or the real Docker 20.10 engine observation (harness run --backend docker) it encodes."""

from __future__ import annotations

import ipaddress
import json
import textwrap
from pathlib import Path

import pytest

from harness.docker.cli import CLIError, parse_command
from harness.docker.emulated import compile_scenario
from harness.docker.profiles import KNOBS, PROFILES, get_profile, knob_rows
from harness.loader import parse_scenario
from harness.plan import AddLink, AddRoute, CreateNode, DeleteLink, DeleteNode

HEADER = """\
name: issue11
source: tests/unit/test_issue11.py
topology:
  host: {parent: eth0, address: 172.16.86.250/24}
  router: [172.16.86.1/24]
commands:
"""
PUB = "docker network create -d macvlan --subnet=172.16.86.0/24 --gateway=172.16.86.1 -o parent=eth0 pub_net"
V50 = "docker network create -d macvlan --subnet=192.168.50.0/24 --gateway=192.168.50.1 -o parent=eth0.50 v50"
V60 = "docker network create -d macvlan --subnet=192.168.60.0/24 --gateway=192.168.60.1 -o parent=eth0.60 v60"


def emulate(commands: str, profile: str = "docker-20.10"):
    s = parse_scenario(HEADER + textwrap.indent(textwrap.dedent(commands).strip("\n"), "  ") + "\n")
    compiled = compile_scenario(s, profile)
    return compiled.plan, compiled.emulator


def errors(plan):
    return [st.error for st in plan.steps]


# --- profiles are data ---------------------------------------------------------------------------------


def test_every_profile_reads_every_knob_with_the_version_that_introduced_it():
    assert set(PROFILES) == {"docker-20.10", "moby-27", "moby-28", "moby-29"}
    for profile in PROFILES.values():
        rows = knob_rows(profile)
        assert [r[0] for r in rows] == [k.name for k in KNOBS]
        assert all(r[3] for r in rows)  # every knob cites its source
    p20, p27, p28, p29 = (get_profile(n) for n in ("docker-20.10", "moby-27", "moby-28", "moby-29"))
    assert (p20.mac, p27.mac, p28.mac) == ("ip", "ip", "random") and p28.since("mac") == (28, 0)
    assert (p20.default_gateway, p28.default_gateway, p29.default_gateway) == ("always", "unless-internal", "never")
    assert (p20.parent_sharing, p27.parent_sharing) == ("exclusive", "except-passthru")
    assert p27.since("parent_sharing") == (27, 0, 1)
    assert (p20.pool_allocation, p27.pool_allocation) == ("rotate", "first-fit")
    assert (p27.ifname_reuse, p28.ifname_reuse) == ("counter", "lowest-free")


# --- network connect / disconnect, ethN, default route ---------------------------------------------------


@pytest.mark.parametrize("profile, name", [("docker-20.10", "eth2"), ("moby-27", "eth2"), ("moby-28", "eth1")])
def test_reconnect_gets_the_next_counter_in_20_10_and_the_lowest_free_name_from_28(profile, name):
    # moby v20.10.24 libnetwork/osl/interface_linux.go:220-238 (a counter that only grows);
    # docker-v29.7.2 daemon/libnetwork/osl/interface_linux.go:397-420 generateIfaceName (v28.0.0).
    _, emu = emulate(f"""
        - {PUB}
        - {V50}
        - docker run --net=pub_net --name app -itd alpine /bin/sh
        - docker network connect v50 app
        - docker network disconnect v50 app
        - docker network connect v50 app
    """, profile)
    assert [e.ifname for e in emu.containers["app"].endpoints] == ["eth0", name]


def test_an_internal_network_never_gives_the_default_route_even_when_its_name_sorts_first():
    # moby v20.10.24 libnetwork/sandbox.go:1202-1265 Less: non-internal before internal, then gateways, then name.
    plan, emu = emulate(f"""
        - {PUB}
        - docker network create -d macvlan --internal --subnet=10.1.0.0/24 -o parent=eth0.10 aaa_internal
        - docker run --net=pub_net --name app -itd alpine /bin/sh
        - docker network connect aaa_internal app
    """)
    app = emu.containers["app"]
    assert app.gateway_endpoint().network == "pub_net"
    assert not [op for op in plan.steps[3].ops if isinstance(op, AddRoute)]


def test_connect_with_ip_and_alias_and_the_refusals_of_shared_namespaces():
    # moby v20.10.24 daemon/container_operations.go:263-290, 737-738 (runconfig/errors.go texts).
    plan, emu = emulate(f"""
        - {PUB}
        - {V50}
        - docker run --net=pub_net --name app -itd alpine /bin/sh
        - docker network connect --ip 192.168.50.9 --alias web v50 app
        - docker run --net=host --name hostc -itd alpine /bin/sh
        - {{command: "docker network connect v50 hostc", error: "*"}}
        - docker run --net=none --name lonely -itd alpine /bin/sh
        - {{command: "docker network connect v50 lonely", error: "*"}}
        - {{command: "docker network connect host app", error: "*"}}
        - {{command: "docker network connect v50 app", error: "*"}}
    """)
    ep = emu.containers["app"].endpoint("v50")
    assert ep.cidrs() == ["192.168.50.9/24"] and ep.aliases == ("web",)
    assert errors(plan)[5] == ("container sharing network namespace with another container or host cannot be "
                               "connected to any other network")
    assert errors(plan)[7] == ("container cannot be connected to multiple networks with one of the networks in "
                               "private (none) mode")
    assert errors(plan)[8] == "container cannot be disconnected from host network or connected to host network"
    assert errors(plan)[9] == "endpoint with name app already exists in network v50"
    assert "hostc" not in emu.containers  # no namespace of its own: nothing to observe
    assert [op for op in plan.steps[6].ops if isinstance(op, CreateNode)] == [CreateNode("lonely", "container")]
    assert not emu.containers["lonely"].endpoints


def test_20_10_refuses_two_networks_on_run_and_27_attaches_both():
    # moby v20.10.24 daemon/create.go:331-341 verifyNetworkingConfig (gone at v25.0.0).
    plan, _ = emulate(f"""
        - {PUB}
        - {V50}
        - {{command: "docker run --net=pub_net --network=v50 -itd alpine /bin/sh", error: "*"}}
    """)
    assert errors(plan)[2] == "Container cannot be connected to network endpoints: pub_net, v50"
    plan, emu = emulate(f"""
        - {PUB}
        - {V50}
        - docker run --net=pub_net --network=v50 --name app -itd alpine /bin/sh
    """, "moby-27")
    assert [e.ifname for e in emu.containers["app"].endpoints] == ["eth0", "eth1"]
    assert any("Go map order" in n for n in plan.notes)


# --- docker run: --mac-address, --hostname, Created containers ----------------------------------------


def test_mac_address_is_honoured_on_macvlan_and_refused_by_ipvlan_leaving_a_created_container():
    # Seen on a real 20.10 engine (--mac-address honoured); moby v20.10.24 daemon/network.go:863-885 and
    # libnetwork/drivers/ipvlan/ipvlan_endpoint.go:26-27.
    plan, emu = emulate("""
        - docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0 pub_net
        - docker run --net=pub_net --mac-address 02:00:00:00:00:aa --hostname web1 --name app -itd alpine /bin/sh
        - docker network create -d ipvlan --subnet=10.5.0.0/24 -o parent=eth0.5 ipv
        - {command: "docker run --net=ipv --mac-address 02:00:00:00:00:bb --name ip1 -itd alpine /bin/sh", error: "*"}
        - {command: "docker run --net=ipv --name ip1 -itd alpine /bin/sh", error: "*"}
    """)
    assert emu.containers["app"].endpoints[0].mac == "02:00:00:00:00:aa"
    assert emu.containers["app"].config["hostname"] == "web1"
    assert errors(plan)[3] == "ipvlan interfaces do not support custom mac address assignment"
    assert errors(plan)[4].startswith('Conflict. The container name "/ip1" is already in use by container "')
    assert emu.stopped["ip1"].status == "created"


def test_mac_address_with_host_networking_and_a_bad_mac_are_refused():
    plan, _ = emulate("""
        - {command: "docker run --net=host --mac-address 02:00:00:00:00:aa -itd alpine /bin/sh", error: "*"}
        - {command: "docker run --net=host --mac-address 02:00:00:00:00:zz -itd alpine /bin/sh", error: "*"}
    """)
    assert errors(plan) == ["conflicting options: mac-address and the network mode",
                            "02:00:00:00:00:zz is not a valid mac address"]


# --- stop, start, restart, rm -f, daemon restart ------------------------------------------------------


def test_stop_releases_addresses_and_start_requests_them_again_in_a_new_sandbox():
    plan, emu = emulate(f"""
        - {PUB}
        - docker run --net=pub_net --name one -itd alpine sleep 3600
        - docker stop one
        - docker run --net=pub_net --name two -itd alpine /bin/sh
        - docker start one
        - {{command: "docker rm two", error: "*"}}
        - docker rm -f two
        - docker restart one
    """)
    assert DeleteNode("one") in plan.steps[2].ops
    # one: .2, stopped (freed); two takes .2; one starts with .3; two goes; one restarts with the lowest free, .2
    assert emu.containers["one"].endpoints[0].cidrs() == ["172.16.86.2/24"]
    assert errors(plan)[5].startswith("You cannot remove a running container ")
    assert "two" not in emu.containers and "two" not in emu.stopped


def test_daemon_restart_keeps_networks_and_parents_and_restarts_only_containers_with_a_policy():
    # moby v20.10.24 daemon/daemon.go:340-560 restore, restartmanager.go:50-100; the drivers have no
    # shutdown hook, so eth0.50 is not deleted (libnetwork/drivers/macvlan/macvlan.go).
    plan, emu = emulate(f"""
        - {V50}
        - docker run --net=v50 --name plain -itd alpine /bin/sh
        - docker run --net=v50 --restart=always --name kept -itd alpine /bin/sh
        - systemctl restart docker
    """)
    step = plan.steps[3]
    assert not [op for op in step.ops if isinstance(op, DeleteLink)]
    assert "eth0.50" in emu.host_links and "v50" in emu.networks
    assert emu.stopped["plain"].status == "exited"
    assert emu.containers["kept"].endpoints[0].cidrs() == ["192.168.50.2/24"]  # dynamic: requested again
    assert DeleteNode("kept") in step.ops and CreateNode("kept", "container") in step.ops


# --- network inspect / ls ---------------------------------------------------------------------------------


def test_network_inspect_prints_dockers_json_and_ls_its_table():
    # moby v20.10.24 api/types/types.go:430-457, daemon/network.go:586-733; docker/cli list.go, formatter.go.
    plan, emu = emulate("""
        - docker network create -d macvlan --subnet=172.16.86.0/24 -o parent=eth0 pub_net
        - docker run --net=pub_net --name app -itd alpine /bin/sh
        - docker network inspect pub_net
        - docker network ls
        - {command: "docker network inspect nosuch", error: "Error: No such network: nosuch"}
    """)
    doc = json.loads(emu.outputs[3])
    net = doc[0]
    assert list(net)[:6] == ["Name", "Id", "Created", "Scope", "Driver", "EnableIPv6"]
    assert net["IPAM"]["Config"] == [{"Subnet": "172.16.86.0/24"}]  # no Gateway key: it was not given
    assert net["Options"] == {"parent": "eth0"} and net["Internal"] is False
    (entry,) = net["Containers"].values()
    assert entry["IPv4Address"] == "172.16.86.2/24" and entry["MacAddress"] == "02:42:ac:10:56:02"
    lines = emu.outputs[4].splitlines()
    assert lines[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert [line.split()[1] for line in lines[1:]] == ["bridge", "host", "none", "pub_net"]
    assert errors(plan)[4] == "Error: No such network: nosuch"


# --- host commands -------------------------------------------------------------------------------------------


def test_the_host_shim_commands_are_understood_verbatim():
    plan, emu = emulate("""
        - ip link add mac0 link eth0 type macvlan mode bridge
        - ip addr add 172.16.86.223/32 dev mac0
        - ip link set mac0 up
        - ip route add 172.16.86.192/27 dev mac0
    """)
    assert plan.steps[0].ops[0] == AddLink("host", "mac0", "macvlan", parent="eth0", mode="bridge",
                                           error_format="RTNETLINK answers: {strerror}")
    assert plan.steps[3].ops == (AddRoute("host", "172.16.86.192/27", "mac0", family=4),)
    assert emu.host_links["mac0"].kind == "macvlan"


# --- unsupported syntax is named, never dropped --------------------------------------------------------


@pytest.mark.parametrize("text, words", [
    ("docker run --net=n -p 80:80 -itd alpine /bin/sh", "`docker run` flag -p (--publish) is not emulated"),
    ("docker run --net=n --dns 1.1.1.1 -itd alpine /bin/sh", "`docker run` flag --dns is not emulated"),
    ("docker run --network name=n,driver-opt=a=b -itd alpine /bin/sh",
     "`docker run` flag --network ...,driver-opt= is not emulated"),
    ("docker network connect --link a:b n c", "`docker network connect` flag --link is not emulated"),
    ("docker network create --ipam-opt x=y n", "`docker network create` flag --ipam-opt is not emulated"),
    ("docker network inspect -f '{{.Id}}' n", "`docker network inspect` flag -f (--format) is not emulated"),
    ("docker network prune", "`docker network prune` is not emulated"),
    ("docker exec c1 ip a", "`docker exec` is not emulated"),
])
def test_unsupported_syntax_names_the_command_and_the_flag(text, words):
    with pytest.raises(CLIError) as exc:
        parse_command(text)
    assert words in str(exc.value)


# --- Docker 20.10 vs moby 27-29 ------------------------------------------------------------------------------


def test_ipvlan_flag_is_ignored_and_l3s_refused_in_20_10_and_both_exist_from_23():
    # moby v20.10.24 libnetwork/drivers/ipvlan/ipvlan_network.go:43-52, 225-235; seen on a real 20.10 engine
    # (-o ipvlan_flag=foo accepted); v23.0.0 commit f70a9788c5.
    plan, emu = emulate("""
        - docker network create -d ipvlan --subnet=10.5.0.0/24 -o parent=eth0 -o ipvlan_flag=foo ipv
    """)
    assert errors(plan) == [None] and emu.networks["ipv"].flag is None
    plan, _ = emulate("""
        - docker network create -d ipvlan --subnet=10.5.0.0/24 -o parent=eth0 -o ipvlan_flag=foo ipv
    """, "moby-29")
    assert errors(plan) == ["requested ipvlan flag 'foo' is not valid, 'bridge' is the ipvlan driver default"]
    _, emu = emulate("""
        - docker network create -d ipvlan --subnet=10.5.0.0/24 -o parent=eth0 -o ipvlan_mode=l3s ipv
    """, "moby-29")
    assert emu.networks["ipv"].mode == "l3s"


def test_moby_29_passthru_texts_and_ipvlan_stays_exclusive():
    # docker-v29.7.2 daemon/libnetwork/drivers/macvlan/macvlan_network.go:79-90, ipvlan_network.go:75-88.
    plan, emu = emulate("""
        - docker network create -d macvlan --subnet=10.1.0.0/24 -o parent=eth0 a1
        - {command: "docker network create -d macvlan --subnet=10.2.0.0/24 -o parent=eth0 -o macvlan_mode=passthru p1", error: "*"}
        - docker network create -d macvlan --subnet=10.3.0.0/24 -o parent=eth0.9 -o macvlan_mode=passthru p2
        - {command: "docker network create -d macvlan --subnet=10.4.0.0/24 -o parent=eth0.9 a2", error: "*"}
        - docker network create -d ipvlan --subnet=10.5.0.0/24 -o parent=eth0.7 i1
        - {command: "docker network create -d ipvlan --subnet=10.6.0.0/24 -o parent=eth0.7 i2", error: "*"}
    """, "moby-29")
    a1, p2, i1 = emu.networks["a1"].id, emu.networks["p2"].id, emu.networks["i1"].id
    assert errors(plan)[1] == f"cannot use mode passthru, macvlan network {a1} is already using parent interface eth0"
    assert errors(plan)[3] == f"macvlan network {p2} is already using parent interface eth0.9 in mode passthru"
    assert errors(plan)[5] == f"network di-{i1[:12]} is already using parent interface eth0.7"


def test_moby_29_ula_for_ipv6_without_a_subnet_first_fit_pools_and_no_implicit_gateway():
    # docker-v29.7.2 daemon/daemon.go:1718-1758 (ULA /64), ipams/defaultipam/address_space.go (first fit),
    # drivers/macvlan/macvlan_network.go:65-70 (no gateway from IPAM).
    plan, emu = emulate("""
        - docker network create -d macvlan --ipv6 -o parent=eth0 n1
        - docker network rm n1
        - docker network create -d macvlan -o parent=eth0 n2
        - docker run --net=n2 --name app -itd alpine /bin/sh
    """, "moby-29")
    assert errors(plan) == [None] * 4
    assert str(emu.networks["n2"].pools4[0].subnet) == "172.18.0.0/16"  # the freed pool again
    assert emu.containers["app"].endpoints[0].cidrs() == ["172.18.0.1/16"]
    _, emu = emulate("- docker network create -d macvlan --ipv6 -o parent=eth0 n1", "moby-29")
    v6 = emu.networks["n1"].pools6[0].subnet
    assert v6.prefixlen == 64 and v6.subnet_of(ipaddress.ip_network("fd00::/8"))


def test_non_canonical_subnets_31_subnets_and_unknown_networks_by_version():
    # moby v27.5.1 api/types/network/ipam.go:34-76; docker-v29.7.2 ipams/defaultipam/allocator.go:235-253,
    # client/network_remove.go:18-26.
    commands = """
        - {command: "docker network create -d macvlan --subnet 10.22.0.5/24 -o parent=eth0.7 nc", error: "*"}
        - {command: "docker network create -d macvlan --subnet 10.30.0.0/31 -o parent=eth0.9 s31", error: "*"}
        - {command: "docker network rm nosuch", error: "*"}
    """
    plan20, _ = emulate(commands)
    assert errors(plan20) == [None, "failed to allocate gateway (): No available addresses on this pool",
                              "Error: No such network: nosuch"]
    plan29, _ = emulate(commands, "moby-29")
    assert errors(plan29) == ["invalid network config:\ninvalid subnet 10.22.0.5/24: it should be 10.22.0.0/24",
                              None, "network nosuch not found"]


def test_several_subnets_are_flagged_as_not_deterministic_in_plan():
    plan, _ = emulate("""
        - docker network create -d macvlan --subnet=10.1.0.0/24 --subnet=10.2.0.0/24 -o parent=eth0 two
    """)
    assert any("Go map order" in n for n in plan.notes)


# --- a host with more than one NIC ------------------------------------------------------------------------


def test_a_second_host_nic_is_a_parent_and_a_switch_port():
    from harness.world import World

    s = parse_scenario("""\
name: nics
source: tests/unit/test_issue11.py
topology:
  host: {parent: eth0, address: 172.16.86.250/24, nics: [{name: eth1, address: 10.0.1.250/24}]}
  router: [172.16.86.1/24]
commands:
  - docker network create -d macvlan --subnet=192.168.1.0/24 -o parent=eth1 back
  - docker network create -d macvlan --subnet=192.168.2.0/24 -o parent=eth1.20 back20
""")
    assert s.topology.host_nics == ((("eth1", (ipaddress.ip_interface("10.0.1.250/24"),))),)
    compiled = compile_scenario(s)
    assert [st.error for st in compiled.plan.steps] == [None, None]
    assert compiled.emulator.networks["back"].parent == "eth1"
    assert compiled.emulator.host_links["eth1.20"].parent == "eth1"
    ops = World.of(s.topology, compiled.vlans).ops()
    assert AddLink("host", "eth1", "veth", peer="p-host1", peer_node="up") in ops


def test_a_nic_named_like_the_parent_is_refused_with_its_line():
    from harness.errors import ScenarioError

    with pytest.raises(ScenarioError, match="topology/host/nics 'eth0' cannot be a NIC name"):
        parse_scenario("""\
name: nics
source: s
topology:
  host: {parent: eth0, nics: [{name: eth0}]}
commands:
  - docker network rm x
""")


def test_moby_29_ip_outside_the_subnets_busy_networks_and_running_containers_have_their_texts():
    # docker-v29.7.2 daemon/container_operations.go:629-640 (29.0.4), daemon/create.go:371-393,
    # daemon/libnetwork/error.go:36-38, daemon/delete.go:55-57.
    commands = f"""
        - {PUB}
        - {{command: "docker run --net=pub_net --ip 10.99.0.5 --name app -itd alpine /bin/sh", error: "*"}}
        - docker run --net=pub_net --name app -itd alpine /bin/sh
        - {{command: "docker network rm pub_net", error: "*"}}
        - {{command: "docker rm app", error: "*"}}
    """
    plan, emu = emulate(commands, "moby-29")
    ep_id = emu.networks["pub_net"].endpoints["app"] and errors(plan)[3].split('id:"')[1][:12]
    assert errors(plan)[1:] == [
        "invalid config for network pub_net: invalid endpoint settings:\nno configured subnet contains IP address 10.99.0.5",
        None,
        f'error while removing network: network pub_net has active endpoints (name:"app" id:"{ep_id}")',
        'cannot remove container "app": container is running: stop the container before removing or force remove',
    ]
    plan20, _ = emulate(commands)
    assert errors(plan20)[1] == "Invalid address 10.99.0.5: It does not belong to any of this network's subnets"
    assert errors(plan20)[2].startswith('Conflict. The container name "/app"')  # 20.10 left it Created


def test_moby_29_ip_without_a_user_subnet_31_subnets_and_pool_exhaustion():
    # docker-v29.7.2 daemon/container_operations.go:629-640 (29.0.4: --ip inside the allocated pool),
    # ipams/defaultipam/allocator.go:235-253 (RFC 3021), ipamapi/contract.go:39 (ErrNoMoreSubnets).
    commands = """
        - docker network create -d macvlan -o parent=eth0 auto
        - docker run --net=auto --ip 172.18.0.9 --name app -itd alpine /bin/sh
        - docker network create -d macvlan --subnet 10.30.0.0/31 -o parent=eth0.9 s31
        - docker run --net=s31 --name p1 -itd alpine /bin/sh
        - docker run --net=s31 --name p2 -itd alpine /bin/sh
    """
    plan, emu = emulate(commands, "moby-29")
    assert errors(plan) == [None] * 5
    assert emu.containers["app"].endpoints[0].cidrs() == ["172.18.0.9/16"]
    assert [emu.containers[n].endpoints[0].cidrs() for n in ("p1", "p2")] == [["10.30.0.0/31"], ["10.30.0.1/31"]]
    plan20, _ = emulate(commands)
    assert errors(plan20)[1] == ("user specified IP address is supported only when connecting to networks with "
                                 "user configured subnets")
    many = "\n".join(f"- docker network create -d macvlan -o parent=eth0.{i} n{i}" for i in range(2, 33))
    plan, _ = emulate(many, "moby-29")
    assert errors(plan)[-1] == "all predefined address pools have been fully subnetted"
    plan, _ = emulate(many)
    assert errors(plan)[-1] == ("could not find an available, non-overlapping IPv4 address pool among the defaults "
                                "to assign to the network")


# --- issue #11: the matrix with the host's shim and with several networks; --hostname applied -----------


def _scenario_oracle(name: str, rp_filter=None):
    from harness.docker.emulated import compile_scenario
    from harness.loader import load_scenario
    from harness.oracle import HostSetup, Oracle
    from harness.world import World

    s = load_scenario(Path(__file__).resolve().parents[2] / "scenarios" / name)
    compiled = compile_scenario(s)
    done = [(step.command, cs.error) for step, cs in zip(s.steps, compiled.plan.steps)]
    world = World.of(s.topology, compiled.vlans)
    return Oracle(compiled.emulator, world, HostSetup.of(done), rp_filter=rp_filter), compiled


def _matrix(oracle) -> dict:
    return {(e.src.owner, str(e.src.ip), str(e.dst.ip)): e.reachable for e in oracle.matrix()}


def test_the_host_reaches_its_containers_through_the_shim_from_the_shims_address():
    """macvlan-host-shim: the host's route to the range leaves by mac0 with 172.16.86.223; web reaches the
    host's own eth0 address too (mac0 answers ARP for it, the reply leaves by mac0); a container outside the
    routed range stays isolated from the host both ways (the route back is eth0's, its parent)."""
    oracle, _ = _scenario_oracle("macvlan-host-shim.yaml")
    m = _matrix(oracle)
    assert m[("host", "172.16.86.223", "172.16.86.192")] is True
    assert m[("web", "172.16.86.192", "172.16.86.250")] is True
    assert m[("host", "172.16.86.250", "172.16.86.10")] is False
    assert m[("old", "172.16.86.10", "172.16.86.250")] is False
    assert m[("old", "172.16.86.10", "172.16.86.223")] is False
    assert m[("host", "172.16.86.250", "172.16.86.1")] is True
    paths = {f.value for f in oracle.paths()}
    assert "172.16.86.192 dev mac0 src 172.16.86.223" in paths
    assert "172.16.86.1 dev eth0 src 172.16.86.250" in paths


def test_a_container_on_two_networks_sends_from_the_interface_its_route_picks():
    """docker-multi-network: app's eth0 (front) and eth1 (back, the default route by name order). Each
    destination is reached from the interface whose subnet holds it; pairs whose request and reply cross
    different interfaces depend on the reverse-path filter: not judged when it is unknown, isolated when
    strict, reachable when off."""
    oracle, _ = _scenario_oracle("docker-multi-network.yaml")
    m = _matrix(oracle)
    assert m[("app", "172.16.86.3", "172.16.86.2")] is True  # web, from eth0
    assert m[("app", "192.168.1.3", "192.168.1.2")] is True  # db, from eth1
    assert m[("web", "172.16.86.2", "172.16.86.250")] is False  # the host's reply leaves by eth0, web's parent
    assert ("host", "172.16.86.250", "192.168.1.3") not in m  # through the router in, by eth0 back: rp_filter
    paths = {f.value for f in oracle.paths() if f.node == "app"}
    assert "172.16.86.250 dev eth0 src 172.16.86.3" in paths and "192.168.1.1 dev eth1 src 192.168.1.3" in paths
    strict, _ = _scenario_oracle("docker-multi-network.yaml", rp_filter=1)
    assert _matrix(strict)[("host", "172.16.86.250", "192.168.1.3")] is False
    off, _ = _scenario_oracle("docker-multi-network.yaml", rp_filter=0)
    assert _matrix(off)[("host", "172.16.86.250", "192.168.1.3")] is True


def test_a_hostname_gets_a_uts_namespace_and_is_a_fact():
    """`docker run --hostname web` (and `-h`, and again after a stop/start) is a UTS namespace in the plan
    and a fact the judge reads inside the container; without --hostname nothing is asked."""
    from harness.oracle import Fact
    from harness.plan import SetHostname

    oracle, compiled = _scenario_oracle("docker-hostname.yaml")
    ops = [op for cs in compiled.plan.steps for op in cs.ops if isinstance(op, SetHostname)]
    assert ops == [SetHostname("c1", "web"), SetHostname("c2", "db.example"), SetHostname("c2", "db.example")]
    state = compiled.emulator.containers
    assert Fact("hostname", "c1", None, "web") in oracle.expected_state(state["c1"])
    assert not [f for f in oracle.expected_state(state["c3"]) if f.kind == "hostname"]
