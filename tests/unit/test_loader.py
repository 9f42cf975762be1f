"""Unit tests of harness.loader: every shipped scenario loads and validates; bad input names file:line and why."""

from __future__ import annotations

import ipaddress
import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from harness.errors import ScenarioError
from harness.loader import SCHEMA_PATH, find_scenarios, load_scenario, parse_scenario
from harness.model import ContainerRun, HostLinkAdd, NetworkCreate, Probe, RouterAddress

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
SCENARIO_FILES = sorted(SCENARIOS.glob("*.yaml"))


def error_of(text: str, path: str = "/tmp/broken.yaml") -> ScenarioError:
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(textwrap.dedent(text), path)
    return exc.value


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line of the dedented text containing needle."""
    for i, line in enumerate(textwrap.dedent(text).splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in the text")


# --- the shipped scenarios ---------------------------------------------------------------------------------


def test_there_are_scenarios():
    assert len(SCENARIO_FILES) >= 10


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=lambda p: p.name)
def test_every_scenario_file_loads(path):
    s = load_scenario(path)
    assert s.name == path.stem
    assert s.path == str(path)
    assert s.steps and [st.index for st in s.steps] == list(range(1, len(s.steps) + 1))
    for st in s.steps:
        assert st.location.file == str(path) and st.location.line > 0


def test_schema_is_a_valid_draft_2020_12_schema():
    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=lambda p: p.name)
def test_every_scenario_file_validates_against_the_schema(path):
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(path.read_text()))


def test_find_scenarios_is_sorted_and_refuses_a_missing_path(tmp_path):
    assert find_scenarios([SCENARIOS]) == SCENARIO_FILES
    with pytest.raises(ScenarioError, match="no such file or directory"):
        find_scenarios([tmp_path / "nope"])


# --- what a good scenario turns into ----------------------------------------------------------------------------


GOOD = """\
name: small
source: unit test
description: one of each
topology:
  host: {parent: eth0, address: [172.16.86.250/24]}
  router:
    addresses: [172.16.86.1/24, {address: 192.168.50.1/24, vlan: 50}]
    forwarding: true
  switch: {hairpin: true}
commands:
  - ip link add link eth0 name eth0.40 type vlan id 40
  - |
    docker network create -d macvlan \\
        --subnet=172.16.86.0/24 --gateway=172.16.86.1 \\
        -o parent=eth0 pub_net
  - docker run --net=pub_net -itd alpine /bin/sh
  - docker run --net=pub_net --name web -itd alpine /bin/sh
  - docker run --net=pub_net -itd alpine /bin/sh
  - command: docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=lo loop
    error: loopback interface is not a valid macvlan parent link
expect:
  reach: ["c1 -> web", "web -> 172.16.86.1"]
  isolate: ["c1 -> host"]
  addresses: {c1: [172.16.86.2/24]}
  routes: {c1: ["default via 172.16.86.1 dev eth0"]}
  macs: {c1: "02:42:AC:10:56:02"}
  links: {c1: {eth0: macvlan bridge}, host: {eth0.99: absent}}
  matrix: false
"""


def test_a_good_scenario_in_full():
    s = parse_scenario(GOOD, "small.yaml")
    assert (s.name, s.source, s.description) == ("small", "unit test", "one of each")
    topo = s.topology
    assert topo.host_parent == "eth0"
    assert topo.host_addresses == (ipaddress.ip_interface("172.16.86.250/24"),)
    assert topo.router_addresses == (RouterAddress(ipaddress.ip_interface("172.16.86.1/24")),
                                     RouterAddress(ipaddress.ip_interface("192.168.50.1/24"), 50))
    assert topo.router_forwarding is True and topo.switch_hairpin is True
    assert isinstance(s.steps[0].command, HostLinkAdd)
    create = s.steps[1]
    assert isinstance(create.command, NetworkCreate) and create.command.name == "pub_net"
    assert create.text == ("docker network create -d macvlan --subnet=172.16.86.0/24 --gateway=172.16.86.1 "
                           "-o parent=eth0 pub_net")
    assert create.location.line == line_of(GOOD, "- |")
    # unnamed containers are c1, c2 in order, around the explicit `web`
    assert s.container_names == ("c1", "web", "c2")
    assert all(isinstance(st.command, ContainerRun) for st in s.steps[2:5])
    assert s.steps[5].expect_error == "loopback interface is not a valid macvlan parent link"
    assert s.steps[5].location.line == line_of(GOOD, "command: docker network create -d macvlan --subnet=10.0.0.0")
    exp = s.expect
    assert [str(p) for p in exp.reach] == ["c1 -> web", "web -> 172.16.86.1"]
    assert exp.isolate == (Probe("c1", "host", exp.isolate[0].location),)
    assert exp.isolate[0].location.line == line_of(GOOD, "isolate:")
    assert exp.macs[0][:2] == ("c1", "02:42:ac:10:56:02")
    assert [(le.node, le.name, le.kind, le.mode) for le in exp.links] == [
        ("c1", "eth0", "macvlan", "bridge"), ("host", "eth0.99", None, None)]
    assert exp.matrix is False


def test_autonames_skip_a_later_explicit_c1():
    s = parse_scenario(textwrap.dedent("""\
        name: t
        source: s
        commands:
          - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=eth0 n
          - docker run --net=n -itd alpine /bin/sh
          - docker run --net=n --name c1 -itd alpine /bin/sh
    """))
    assert s.container_names == ("c2", "c1")


def test_expect_error_applies_to_the_last_command():
    s = parse_scenario(textwrap.dedent("""\
        name: t
        source: s
        commands:
          - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=lo n
        expect:
          error: loopback interface is not a valid macvlan parent link
    """))
    assert s.steps[-1].expect_error == "loopback interface is not a valid macvlan parent link"


# --- errors: file, line, and what is wrong --------------------------------------------------------------------


def test_bad_yaml():
    text = """\
        name: t
        source: s
        commands: [
          - docker network rm x
    """
    err = error_of(text)
    assert err.file == "/tmp/broken.yaml" and err.line == 4
    assert str(err).startswith("/tmp/broken.yaml:4: not valid YAML")


def test_empty_file():
    err = error_of("")
    assert err.file == "/tmp/broken.yaml" and "empty" in str(err)


def test_unknown_top_level_key_is_named():
    err = error_of("""\
        name: t
        source: s
        bogus: 1
        commands:
          - docker network rm x
    """)
    assert err.file == "/tmp/broken.yaml"
    assert "unknown key" in str(err) and "'bogus'" in str(err)


def test_unknown_key_points_at_its_own_line():
    text = """\
        name: t
        source: s
        topology:
          host: {parent: eth0, address: 172.16.86.250/24}
          router: [172.16.86.1/24]
          swich: {hairpin: true}
        commands:
          - docker network rm x
    """
    err = error_of(text)
    assert "'swich'" in str(err)
    assert err.line == line_of(text, "swich")


def test_missing_commands():
    err = error_of("""\
        name: t
        source: s
    """)
    assert err.file == "/tmp/broken.yaml" and err.line == 1
    assert "'commands' is a required property" in str(err)


def test_wrong_type_points_at_the_value():
    text = """\
        name: t
        source: s
        commands:
          - docker network rm x
        expect:
          matrix: maybe
    """
    err = error_of(text)
    assert err.line == line_of(text, "matrix:")
    assert "expect/matrix" in str(err) and "boolean" in str(err)


def test_unknown_flag_points_at_its_command():
    text = """\
        name: t
        source: s
        commands:
          - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=eth0 n
          - docker run --net=n -itd alpine /bin/sh
          - docker run --net=n --bogus -itd alpine /bin/sh
    """
    err = error_of(text)
    assert err.line == line_of(text, "--bogus")
    assert err.reason == "unknown flag: --bogus in `docker run --net=n --bogus -itd alpine /bin/sh`"
    assert str(err).startswith(f"/tmp/broken.yaml:{err.line}: unknown flag: --bogus")


def test_unknown_flag_in_a_multiline_command_and_in_an_error_entry():
    text = """\
        name: t
        source: s
        commands:
          - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=eth0 n
          - |
            docker network create -d macvlan \\
               --frob -o parent=eth0.5 m
    """
    err = error_of(text)
    assert err.line == line_of(text, "- |")
    assert "unknown flag: --frob" in err.reason
    text = """\
        name: t
        source: s
        commands:
          - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=eth0 n
          - command: docker run --net=n -z -itd alpine /bin/sh
            error: whatever
    """
    err = error_of(text)
    assert err.line == line_of(text, "command: docker run")
    assert "unknown shorthand flag: 'z' in -z" in err.reason


def test_the_documentations_vlan60_command_is_rejected_with_its_line():
    text = """\
        name: t
        source: s
        commands:
          - |
            docker network create -d macvlan \\
                --subnet=192.168.60.0/24 \\
                --gateway=192.168.60.1 \\
                -o parent=eth0.60 -o \\
                -o macvlan_mode=bridge macvlan60
    """
    err = error_of(text)
    assert err.line == 4
    assert '"docker network create" requires exactly 1 argument.' in err.reason


def test_bridge_network_is_not_emulated():
    text = """\
        name: t
        source: s
        commands:
          - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=eth0 n
          - docker network create -d bridge br
    """
    err = error_of(text)
    assert err.line == line_of(text, "-d bridge")
    assert "driver 'bridge' is not emulated" in err.reason


def test_network_create_without_driver_is_a_bridge_and_not_emulated():
    err = error_of("""\
        name: t
        source: s
        commands:
          - docker network create plain
    """)
    assert err.line == 4 and "driver 'bridge' is not emulated" in err.reason


def test_docker_run_without_net():
    text = """\
        name: t
        source: s
        commands:
          - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=eth0 n
          - docker run -itd alpine /bin/sh
    """
    err = error_of(text)
    assert err.line == 5
    assert "`docker run` needs --net/--network" in err.reason


@pytest.mark.parametrize("probe, words", [
    ("c9 -> c1", "probe source 'c9' is neither a container of this scenario (c1) nor `host`"),
    ("c1 -> c9", "probe destination 'c9' is not a container, `host`, or an IP address"),
])
def test_probe_naming_an_unknown_container(probe, words):
    text = f"""\
        name: t
        source: s
        commands:
          - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=eth0 n
          - docker run --net=n -itd alpine /bin/sh
        expect:
          reach:
            - c1 -> host
            - {probe}
    """
    err = error_of(text)
    assert err.line == line_of(text, probe)
    assert err.reason == words


def test_bad_probe_syntax():
    text = """\
        name: t
        source: s
        commands:
          - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=eth0 n
          - docker run --net=n -itd alpine /bin/sh
        expect:
          isolate:
            - c1 -> host
            - c1 => c2 -> x
    """
    err = error_of(text)
    assert err.line == line_of(text, "=>")
    assert "is not a probe: expected `SOURCE -> DESTINATION`" in err.reason


@pytest.mark.parametrize("where, text", [
    ("host", """\
        name: t
        source: s
        topology:
          host: {parent: eth0, address: 172.16.86.250}
        commands:
          - docker network rm x
    """),
    ("router", """\
        name: t
        source: s
        topology:
          router:
            - 172.16.86.1/24
            - 10.1.1.1
        commands:
          - docker network rm x
    """),
    ("expect", """\
        name: t
        source: s
        commands:
          - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=eth0 n
          - docker run --net=n -itd alpine /bin/sh
        expect:
          addresses:
            c1: [10.0.0.2]
    """),
])
def test_address_without_prefix_length(where, text):
    err = error_of(text)
    bad = {"host": "172.16.86.250}", "router": "10.1.1.1", "expect": "[10.0.0.2]"}[where]
    assert err.line == line_of(text, bad)
    assert "is not an address/prefix" in err.reason and "prefix length" in err.reason


def test_unknown_link_kind():
    text = """\
        name: t
        source: s
        commands:
          - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=eth0 n
          - docker run --net=n -itd alpine /bin/sh
        expect:
          links:
            c1: {eth0: macvlan}
            host:
              eth0: tunnel
    """
    err = error_of(text)
    assert err.line == line_of(text, "tunnel")
    assert err.reason == "link kind 'tunnel' is not one of veth, macvlan, ipvlan, vlan, dummy, bridge or `absent`"


def test_expectation_naming_an_unknown_container():
    text = """\
        name: t
        source: s
        commands:
          - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=eth0 n
          - docker run --net=n -itd alpine /bin/sh
        expect:
          routes:
            ghost: ["default via 10.0.0.1 dev eth0"]
    """
    err = error_of(text)
    assert err.line == line_of(text, "ghost")
    assert "'ghost' is not a container of this scenario (c1)" in err.reason


def test_load_scenario_names_an_unreadable_file(tmp_path):
    with pytest.raises(ScenarioError) as exc:
        load_scenario(tmp_path / "missing.yaml")
    assert exc.value.file == str(tmp_path / "missing.yaml")
    assert "cannot read" in str(exc.value)
