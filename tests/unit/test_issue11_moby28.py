"""Issue #11, the moby 28/29 items: gateway priority and per-family gateway endpoints, the advanced `--network`
syntax per CLI version, moby 29's `network connect` texts, what the CLI prints, `network inspect` per profile,
and `--restart on-failure`. Each test names the source (moby/moby or docker/cli, tag, file). Only Docker 20.10
engines run here: the moby 27-29 behaviour is read from the source only."""

from __future__ import annotations

import json
import re
import textwrap

import pytest

from harness.docker.cli import parse_command
from harness.docker.emulated import compile_scenario
from harness.loader import parse_scenario
from harness.oracle import Oracle
from harness.plan import AddRoute, CreateNode

HEADER = """\
name: issue11b
source: tests/unit/test_issue11_moby28.py
topology:
  host: {parent: eth0, address: 172.16.86.250/24}
  router: [172.16.86.1/24]
commands:
"""
PUB = "docker network create -d macvlan --subnet=172.16.86.0/24 --gateway=172.16.86.1 -o parent=eth0 pub_net"
V50 = "docker network create -d macvlan --subnet=192.168.50.0/24 --gateway=192.168.50.1 -o parent=eth0.50 v50"
# Dual stack, an IPv6 gateway only (moby 29 allocates no implicit IPv4 gateway): an IPv6-only gateway endpoint.
V6GW = ("docker network create -d macvlan --ipv6 --subnet=192.168.60.0/24 --subnet=fd00:60::/64 "
        "--gateway=fd00:60::1 -o parent=eth0.60 v6gw")
DUAL = ("docker network create -d macvlan --ipv6 --subnet=192.168.70.0/24 --gateway=192.168.70.1 "
        "--subnet=fd00:70::/64 --gateway=fd00:70::1 -o parent=eth0.70 dual")


def emulate(commands: str, profile: str = "docker-20.10"):
    s = parse_scenario(HEADER + textwrap.indent(textwrap.dedent(commands).strip("\n"), "  ") + "\n")
    compiled = compile_scenario(s, profile)
    return compiled.plan, compiled.emulator


def errors(plan):
    return [st.error for st in plan.steps]


def defaults(step) -> list[tuple[int, str, str | None]]:
    return [(op.family, op.dev, op.gateway) for op in step.ops if isinstance(op, AddRoute) and op.dst == "default"]


# --- gateway priority (moby 28) ---------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["moby-28", "moby-29"])
def test_gw_priority_on_connect_takes_the_default_route(profile):
    # docker/cli v28.0.0 cli/command/network/connect.go:62 (--gw-priority, commit d4db289eb5); moby v28.0.0
    # daemon/network.go:1117 JoinOptionPriority, libnetwork/sandbox.go:651-700 Less (priority first): without
    # it pub_net sorts before v50 by name and keeps the default route.
    plan, emu = emulate(f"""
        - {PUB}
        - {V50}
        - docker run --net=pub_net --name app -itd alpine /bin/sh
        - docker network connect --gw-priority 1 v50 app
    """, profile)
    assert errors(plan) == [None] * 4
    assert defaults(plan.steps[3]) == [(4, "eth1", "192.168.50.1")]
    assert [op.replace for op in plan.steps[3].ops if isinstance(op, AddRoute) and op.dst == "default"] == [True]
    assert emu.containers["app"].gateway_endpoint().network == "v50"


def test_without_priority_the_name_order_keeps_the_default_route():
    plan, emu = emulate(f"""
        - {PUB}
        - {V50}
        - docker run --net=pub_net --name app -itd alpine /bin/sh
        - docker network connect v50 app
    """, "moby-28")
    assert defaults(plan.steps[3]) == [] and emu.containers["app"].gateway_endpoint().network == "pub_net"


@pytest.mark.parametrize("profile", ["docker-20.10", "moby-27"])
def test_gw_priority_is_an_unknown_flag_before_moby_28(profile):
    # docker/cli v20.10.24 and v27.5.1 cli/command/network/connect.go: no --gw-priority flag (pflag's text).
    plan, emu = emulate(f"""
        - {PUB}
        - {V50}
        - docker run --net=pub_net --name app -itd alpine /bin/sh
        - {{command: "docker network connect --gw-priority 1 v50 app", error: "unknown flag: --gw-priority"}}
    """, profile)
    assert errors(plan)[3] == "unknown flag: --gw-priority"
    assert [e.network for e in emu.containers["app"].endpoints] == ["pub_net"]


def test_a_negative_gw_priority_in_the_network_syntax_gives_the_route_away():
    # docker/cli v28.0.0 opts/network.go:101-105 (gw-priority=N, strconv.Atoi, negative allowed).
    plan, emu = emulate(f"""
        - {PUB}
        - {V50}
        - docker run --network name=pub_net,gw-priority=-1 --network v50 --name app -itd alpine /bin/sh
    """, "moby-28")
    app = emu.containers["app"]
    assert [(e.network, e.ifname, e.gw_priority) for e in app.endpoints] == [("pub_net", "eth0", -1), ("v50", "eth1", 0)]
    assert app.gateway_endpoint().network == "v50"
    assert (4, "eth1", "192.168.50.1") in defaults(plan.steps[2])


# --- separate IPv4 and IPv6 gateway endpoints (moby 28) ---------------------------------------------------------


def test_moby_29_takes_the_ipv6_default_route_from_another_network():
    # moby v28.0.0 libnetwork/default_gateway.go:182-215 selectGatewayEndpoint: the first endpoint with an IPv4
    # gateway gives IPv4, the first with an IPv6 gateway gives IPv6; sandbox_linux.go updateGateway sets each.
    plan, emu = emulate(f"""
        - {PUB}
        - {V6GW}
        - docker run --net=pub_net --name app -itd alpine /bin/sh
        - docker network connect v6gw app
    """, "moby-29")
    app = emu.containers["app"]
    ep4, ep6 = app.gateway_endpoints()
    assert (ep4.network, ep6.network) == ("pub_net", "v6gw")
    assert defaults(plan.steps[3]) == [(6, "eth1", "fd00:60::1")]
    # The oracle expects both routes, each on its own interface.
    facts = Oracle(emu, None).expected_state(app)
    routes = sorted(f.value for f in facts if f.kind == "route")
    assert routes == ["default via 172.16.86.1 dev eth0", "default via fd00:60::1 dev eth1"]


def test_before_moby_28_one_endpoint_gives_both_families():
    # moby v27.5.1 libnetwork/default_gateway.go getGatewayEndpoint: the first endpoint with an IPv4 gateway.
    plan, emu = emulate(f"""
        - {PUB}
        - {V6GW.replace("--gateway=fd00:60::1", "--gateway=192.168.60.1 --gateway=fd00:60::1")}
        - docker run --net=pub_net --name app -itd alpine /bin/sh
        - docker network connect v6gw app
    """, "moby-27")
    ep4, ep6 = emu.containers["app"].gateway_endpoints()
    assert ep4 is ep6


def test_a_dual_stack_endpoint_beats_a_higher_priority_single_stack_one():
    # moby v28.0.0 libnetwork/default_gateway.go:193-205: "a dual-stack gateway is preferred over single-stack
    # gateways with higher gateway-priorities" (its FIXME), so gw-priority 5 on the IPv4-only network loses.
    plan, emu = emulate(f"""
        - {PUB}
        - {DUAL}
        - docker run --net=dual --name app -itd alpine /bin/sh
        - docker network connect --gw-priority 5 pub_net app
    """, "moby-28")
    ep4, ep6 = emu.containers["app"].gateway_endpoints()
    assert (ep4.network, ep6.network) == ("dual", "dual")
    assert defaults(plan.steps[3]) == []


def test_disconnecting_the_ipv6_gateway_endpoint_moves_only_the_ipv6_route():
    plan, emu = emulate(f"""
        - {PUB}
        - {V6GW}
        - {DUAL}
        - docker run --net=pub_net --name app -itd alpine /bin/sh
        - docker network connect --gw-priority 3 v6gw app
        - docker network disconnect v6gw app
    """, "moby-29")
    # pub_net (priority 0) keeps IPv4; after v6gw goes there is no IPv6 gateway left: no route to move.
    ep4, ep6 = emu.containers["app"].gateway_endpoints()
    assert ep4.network == "pub_net" and ep6 is None
    assert defaults(plan.steps[5]) == []


# --- the advanced --network syntax per CLI version ---------------------------------------------------------------


def test_20_10_accepts_name_ip_ip6_alias_in_the_network_syntax():
    # docker/cli v20.10.24 opts/network.go:44-88 NetworkOpt.Set (name, alias, ip, ip6, driver-opt).
    plan, emu = emulate(f"""
        - {PUB}
        - docker run --network name=pub_net,ip=172.16.86.20,alias=web --name app -itd alpine /bin/sh
    """)
    assert errors(plan) == [None, None]
    ep = emu.containers["app"].endpoints[0]
    assert ep.cidrs() == ["172.16.86.20/24"] and ep.aliases == ("web",)


@pytest.mark.parametrize("profile, key", [("docker-20.10", "mac-address"), ("docker-20.10", "gw-priority"),
                                          ("moby-27", "gw-priority")])
def test_a_key_the_cli_of_that_version_lacks_is_its_invalid_field_key(profile, key):
    # docker/cli v20.10.24 opts/network.go:83-85 `invalid field key`; mac-address came in v25.0.0 (commit
    # 9e1b42e642), gw-priority in v28.0.0 (d4db289eb5). pflag wraps a Set error with the value as given.
    value = {"mac-address": "02:42:AC:10:56:99", "gw-priority": "1"}[key]
    arg = f"name=pub_net,{key}={value}"
    text = f'invalid argument "{arg}" for "--network" flag: invalid field key {key}'
    plan, emu = emulate(f"""
        - {PUB}
        - {{command: "docker run --network {arg} --name app -itd alpine /bin/sh", error: '{text}'}}
    """, profile)
    assert errors(plan)[1] == text
    assert "app" not in emu.stopped and "app" not in emu.containers  # a CLI refusal: nothing is created


def test_moby_28_applies_a_mac_address_per_network():
    # docker/cli v28.0.0 opts/network.go:73-74 (mac-address), cli/command/container/opts.go:880-886.
    plan, emu = emulate(f"""
        - {PUB}
        - {V50}
        - docker run --network name=pub_net --network name=v50,mac-address=02:42:C0:A8:32:99 --name app -itd alpine sh
    """, "moby-28")
    app = emu.containers["app"]
    assert app.endpoint("v50").mac == "02:42:c0:a8:32:99"
    assert app.endpoint("pub_net").mac != "02:42:c0:a8:32:99"


@pytest.mark.parametrize("command, text", [
    ("docker run --ip 172.16.86.9 --network name=pub_net,ip=172.16.86.20 -itd alpine sh",
     "conflicting options: cannot specify both --ip and per-network IPv4 address"),
    ("docker run --mac-address 02:42:ac:10:56:01 --network name=pub_net,mac-address=02:42:ac:10:56:02 -itd alpine sh",
     "conflicting options: cannot specify both --mac-address and per-network MAC address"),
    ("docker run --network name=pub_net,gw-priority=high -itd alpine sh",
     'invalid argument "name=pub_net,gw-priority=high" for "--network" flag: invalid gw-priority: strconv.Atoi: '
     'parsing "high": invalid syntax'),
    ("docker run --network ip=172.16.86.20 -itd alpine sh",
     'invalid argument "ip=172.16.86.20" for "--network" flag: network name/id is not specified'),
    ("docker run --network name=pub_net,mac-address=zz -itd alpine sh", "zz is not a valid mac address"),
    ("docker run --network pub_net --network name=pub_net,ip=172.16.86.20 -itd alpine sh",
     'network "pub_net" is specified multiple times'),
])
def test_moby_28_cli_refusals_of_the_network_syntax(command, text):
    # docker/cli v28.0.0 cli/command/container/opts.go:744-886 parseNetworkOpts, applyContainerOptions,
    # parseNetworkAttachmentOpt; opts/network.go:58-106.
    plan, _ = emulate(f"""
        - {PUB}
        - {{command: '{command}', error: '{text}'}}
    """, "moby-28")
    assert errors(plan)[1] == text


# --- moby 28/29 network connect texts ------------------------------------------------------------------------


@pytest.mark.parametrize("profile, text", [
    ("moby-27", "invalid endpoint settings:\nno configured subnet or ip-range contain the IP address 10.99.0.5"),
    ("moby-29", "invalid endpoint settings:\nno configured subnet contains IP address 10.99.0.5"),
])
def test_connect_with_an_ip_outside_the_subnets_is_refused_as_endpoint_settings(profile, text):
    # moby v27.5.1 daemon/container_operations.go:600-640 validateEndpointSettings (wrapped at :637);
    # docker-v29.7.2 daemon/container_operations.go:540-582,629-640 (29.0.4's text); nothing is attached.
    plan, emu = emulate(f"""
        - {PUB}
        - {V50}
        - docker run --net=pub_net --name app -itd alpine /bin/sh
        - docker network connect --ip 10.99.0.5 v50 app
    """, profile)
    assert errors(plan)[3] == text
    assert [e.network for e in emu.containers["app"].endpoints] == ["pub_net"]


def test_moby_29_checks_the_endpoint_settings_of_a_stopped_container_too():
    # docker-v29.7.2 daemon/container_operations.go:1058-1069 (a stopped container: updateNetworkConfig ->
    # validateEndpointSettings when the network exists); 20.10 only records the configuration.
    for profile, text in (("moby-29", "invalid endpoint settings:\nno configured subnet contains IP address 10.99.0.5"),
                          ("docker-20.10", None)):
        plan, _ = emulate(f"""
            - {PUB}
            - {V50}
            - docker run --net=pub_net --name app -itd alpine /bin/sh
            - docker stop app
            - docker network connect --ip 10.99.0.5 v50 app
        """, profile)
        assert errors(plan)[4] == text


def test_20_10_refuses_it_in_ipam():
    plan, _ = emulate(f"""
        - {PUB}
        - {V50}
        - docker run --net=pub_net --name app -itd alpine /bin/sh
        - docker network connect --ip 10.99.0.5 v50 app
    """)
    assert errors(plan)[3].startswith("Invalid address 10.99.0.5")


@pytest.mark.parametrize("profile, connect, disconnect", [
    ("docker-20.10", "container cannot be disconnected from host network or connected to host network",
     "container cannot be disconnected from host network or connected to host network"),
    ("moby-28", "cannot connect container to host network - container must be created in host network mode",
     "cannot disconnect container from host network - container was created in host network mode"),
    ("moby-29", "cannot connect container to host network - container must be created in host network mode",
     "cannot disconnect container from host network - container was created in host network mode"),
])
def test_the_host_network_texts_split_in_28_0_2(profile, connect, disconnect):
    # moby v20.10.24 runconfig/errors.go:9; commit 90a83063ee (v28.0.2) runconfig/errors.go:8-11;
    # docker-v29.7.2 daemon/container_operations.go:178-179,1111-1112.
    plan, _ = emulate(f"""
        - {PUB}
        - docker run --net=pub_net --name app -itd alpine /bin/sh
        - docker run --net=host --name hostc -itd alpine /bin/sh
        - docker network connect host app
        - docker network disconnect host hostc
    """, profile)
    assert errors(plan)[3:] == [connect, disconnect]


# --- what the CLI prints -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["docker-20.10", "moby-29"])
def test_the_cli_prints_full_ids_and_names(profile):
    # docker/cli v20.10.24 / v29.0.0: network/create.go:122 / :128 (resp.ID), container/run.go:148 / :166
    # (the container id, -d), network/remove.go:46 / :71, container/rm.go:72 / :88, stop.go:61 / :79 (names).
    plan, emu = emulate(f"""
        - {PUB}
        - docker run --net=pub_net --name app -itd alpine /bin/sh
        - docker stop app
        - docker rm app
        - docker network rm pub_net
        - docker network ls
    """, profile)
    out = emu.outputs
    assert re.fullmatch("[0-9a-f]{64}", out[1]) and out[1] != out[2]
    assert out[2] == emu.history["app"].id and len(out[2]) == 64
    assert (out[3], out[4], out[5]) == ("app", "app", "pub_net")
    # v29.0.0 cli/command/network/formatter.go:13: the same columns as 20.10.
    assert out[6].splitlines()[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]


def test_a_refused_command_prints_nothing():
    plan, emu = emulate(f"""
        - {PUB}
        - {{command: "{PUB}", error: "network with name pub_net already exists"}}
    """)
    assert 2 not in emu.outputs


# --- network inspect per profile ----------------------------------------------------------------------------------


INSPECT = """
    - docker network create -d macvlan --subnet=172.16.86.0/24 --ip-range=172.16.86.64/26 -o parent=eth0 pub_net
    - docker run --net=pub_net --name app -itd alpine /bin/sh
    - docker network inspect pub_net
"""


@pytest.mark.parametrize("profile, keys", [
    ("docker-20.10", ["Name", "Id", "Created", "Scope", "Driver", "EnableIPv6", "IPAM", "Internal", "Attachable",
                      "Ingress", "ConfigFrom", "ConfigOnly", "Containers", "Options", "Labels"]),
    ("moby-28", ["Name", "Id", "Created", "Scope", "Driver", "EnableIPv4", "EnableIPv6", "IPAM", "Internal",
                 "Attachable", "Ingress", "ConfigFrom", "ConfigOnly", "Containers", "Options", "Labels"]),
    ("moby-29", ["Name", "Id", "Created", "Scope", "Driver", "EnableIPv4", "EnableIPv6", "IPAM", "Internal",
                 "Attachable", "Ingress", "ConfigFrom", "ConfigOnly", "Options", "Labels", "Containers", "Status"]),
])
def test_network_inspect_has_the_shape_of_the_profile(profile, keys):
    # moby v20.10.24 api/types/types.go:430-457; v28.0.0 api/types/network/network.go:74-93 (EnableIPv4);
    # docker-v29.7.2 api/types/network/network.go, inspect.go (Containers after Labels, Status).
    _, emu = emulate(INSPECT, profile)
    (net,) = json.loads(emu.outputs[3])
    assert list(net) == keys


def test_moby_29_inspect_shows_allocated_gateways_and_ipam_status():
    # docker-v29.7.2 daemon/network.go:820-870 buildIPAMResources (IPAM's gateway when none was given),
    # daemon/libnetwork/ipams/defaultipam/address_space.go:399-418 allocationStatus (reserved network and
    # broadcast addresses are in use; the range's free addresses are dynamic).
    _, emu28 = emulate(INSPECT, "moby-28")
    _, emu29 = emulate(INSPECT.replace("--ip-range", "--gateway=172.16.86.1 --ip-range"), "moby-29")
    (n28,) = json.loads(emu28.outputs[3])
    (n29,) = json.loads(emu29.outputs[3])
    assert n28["IPAM"]["Config"] == [{"Subnet": "172.16.86.0/24", "IPRange": "172.16.86.64/26"}]
    assert n29["IPAM"]["Config"] == [{"Subnet": "172.16.86.0/24", "IPRange": "172.16.86.64/26",
                                      "Gateway": "172.16.86.1"}]
    assert n29["Status"] == {"IPAM": {"Subnets": {"172.16.86.0/24": {"IPsInUse": 4, "DynamicIPsAvailable": 63}}}}


# --- --restart on-failure ------------------------------------------------------------------------------------------


def test_on_failure_containers_restart_with_the_daemon_even_after_docker_stop():
    # moby v20.10.24 daemon/daemon.go:455-458 (restore: ShouldRestart), restartmanager/restartmanager.go:85-96
    # (on-failure: exit code != 0, the manual stop is not consulted), daemon/kill.go:86-88 and daemon.go:1200-1212
    # (the daemon's shutdown and `docker stop` kill: exit 137/143); unchanged in docker-v29.7.2. moby #35166,
    # docker/cli #2271 report the same on real engines.
    plan, emu = emulate(f"""
        - {PUB}
        - docker run --net=pub_net --restart on-failure --name running -itd alpine /bin/sh
        - docker run --net=pub_net --restart=on-failure:3 --name stopped -itd alpine /bin/sh
        - docker run --net=pub_net --name plain -itd alpine /bin/sh
        - docker stop stopped
        - systemctl restart docker
    """)
    assert errors(plan) == [None] * 6
    restart = plan.steps[5]
    assert CreateNode("running", "container") in restart.ops and CreateNode("stopped", "container") in restart.ops
    assert CreateNode("plain", "container") not in restart.ops
    assert set(emu.containers) == {"running", "stopped"} and emu.stopped["plain"].status == "exited"


@pytest.mark.parametrize("profile, restart, text", [
    ("docker-20.10", "always:3", "maximum retry count cannot be used with restart policy 'always'"),
    ("moby-29", "always:3", "invalid restart policy: maximum retry count can only be used with 'on-failure'"),
    ("docker-20.10", "on-failure:x", "maximum retry count must be an integer"),
    ("moby-29", "on-failure:x", "invalid restart policy format: maximum retry count must be an integer"),
    ("docker-20.10", "on-failure:-1", "maximum retry count cannot be negative"),
    ("moby-29", "on-failure:-1", "invalid restart policy: maximum retry count cannot be negative"),
    ("docker-20.10", "sometimes", "invalid restart policy 'sometimes'"),
    ("moby-29", "sometimes", "invalid restart policy: unknown policy 'sometimes'; use one of 'no', 'always', "
                             "'on-failure', or 'unless-stopped'"),
])
def test_malformed_restart_policies_are_refused_in_the_words_of_the_version(profile, restart, text):
    # docker/cli v20.10.24 / v29.0.0 opts/parse.go ParseRestartPolicy; moby v20.10.24 daemon/container.go:355-372,
    # v25.0.0 api/types/container/hostconfig.go ValidateRestartPolicy. Nothing is created.
    plan, emu = emulate(f"""
        - {PUB}
        - {{command: "docker run --net=pub_net --restart={restart} --name app -itd alpine sh", error: "{text}"}}
    """, profile)
    assert errors(plan)[1] == text and "app" not in emu.stopped


def test_restart_is_passed_through_by_the_parser():
    assert parse_command("docker run --net=n --restart on-failure:5 -itd alpine sh").restart == "on-failure:5"


def test_the_new_knobs_are_dated_by_their_sources():
    from harness.docker.profiles import get_profile  # noqa: PLC0415

    p20, p27, p28, p29 = (get_profile(n) for n in ("docker-20.10", "moby-27", "moby-28", "moby-29"))
    assert (p27.gw_priority, p28.gw_priority) == (False, True) and p28.since("gw_priority") == (28, 0)
    assert (p27.gateway_endpoints, p28.gateway_endpoints) == ("one", "per-family")
    assert "mac-address" not in p20.network_opt_keys and "mac-address" in p27.network_opt_keys
    assert "gw-priority" not in p27.network_opt_keys and "gw-priority" in p29.network_opt_keys
    assert p28.since("host_network_texts") == (28, 0, 2)
    assert (p20.inspect_shape, p27.inspect_shape, p28.inspect_shape, p29.inspect_shape) == ("20.10", "20.10", "28", "29")


def test_the_oracle_routes_each_family_by_its_own_gateway_endpoint():
    # Per-family gateway endpoints (moby 28+) in the routing model: app sends IPv4 off-link from eth0 (pub_net's
    # default route) and IPv6 off-link from eth1 (v6gw's), each through its own gateway.
    import ipaddress

    from harness.world import World

    s = parse_scenario(HEADER + textwrap.indent(f"- {PUB}\n- {V6GW}\n- docker run --net=pub_net --name app -itd "
                                                "alpine /bin/sh\n- docker network connect v6gw app\n", "  "))
    compiled = compile_scenario(s, "moby-29")
    o = Oracle(compiled.emulator, World.of(s.topology, compiled.vlans))
    e4 = o.egress("app", ipaddress.ip_address("10.1.2.3"))
    e6 = o.egress("app", ipaddress.ip_address("2001:db8::1"))
    assert (e4.address.iface, str(e4.via)) == ("eth0", "172.16.86.1")
    assert (e6.address.iface, str(e6.via)) == ("eth1", "fd00:60::1")
    # 20.10: one endpoint gives both families (v6gw, which has an implicit IPv4 gateway there and sorts first
    # by its gateway score), so both leave by eth1, as the default routes Docker sets.
    compiled = compile_scenario(s, "docker-20.10")
    o = Oracle(compiled.emulator, World.of(s.topology, compiled.vlans))
    e4 = o.egress("app", ipaddress.ip_address("10.1.2.3"))
    e6 = o.egress("app", ipaddress.ip_address("2001:db8::1"))
    assert (e4.address.iface, str(e4.via)) == ("eth1", "192.168.60.1")
    assert (e6.address.iface, str(e6.via)) == ("eth1", "fd00:60::1")
    routes = {f.value for f in o.expected_state(compiled.emulator.containers["app"]) if f.kind == "route"}
    assert routes == {"default via 192.168.60.1 dev eth1", "default via fd00:60::1 dev eth1"}
