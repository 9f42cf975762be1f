"""Unit tests of harness.loader: every shipped scenario loads and validates; bad input names file:line and why."""

from __future__ import annotations

import ipaddress
import json
import shlex
import textwrap
import time
from pathlib import Path

import jsonschema
import pytest
import yaml

from harness.errors import ScenarioError
from harness.loader import SCHEMA_PATH, find_scenarios, load_scenario, parse_scenario
from harness.model import ContainerRun, HostLinkAdd, NetworkCreate, Probe, Refused, RouterAddress

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
    assert "no such file or directory" in str(exc.value)
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(ScenarioError, match="not a regular file"):
        load_scenario(tmp_path / "dir.yaml")


# --- issue #10: bad input is a ScenarioError with file:line, never a traceback ------------------------------


def load_bytes(tmp_path, data: bytes, name: str = "bad.yaml") -> ScenarioError:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ScenarioError) as exc:
        load_scenario(path)
    assert exc.value.file == str(path)
    return exc.value


def test_non_utf8_bytes_name_the_byte_its_offset_and_line(tmp_path):
    err = load_bytes(tmp_path, b"name: t\nsource: s\n# caf\xe9\ncommands: [docker network rm x]\n")
    assert err.line == 3
    assert "not UTF-8 text: byte 0xe9 at offset 23" in err.reason


def test_a_binary_file_is_not_utf8(tmp_path):
    err = load_bytes(tmp_path, bytes(range(256)))
    assert err.line == 2 and "not UTF-8 text: byte 0x80 at offset 128" in err.reason


def test_a_nul_character_is_refused_with_its_line():
    err = error_of("name: t\nsource: s\x00\ncommands: [docker network rm x]\n")
    assert err.line == 2 and "special characters are not allowed" in err.reason


def test_a_file_over_1_mib_is_refused_before_it_is_parsed(tmp_path):
    err = load_bytes(tmp_path, b"name: t\n" + b"#" * (1 << 20))
    assert "larger than 1048576 bytes" in err.reason


@pytest.mark.parametrize("opening, closing", [("[", "]"), ("{a: ", "}")])
def test_deep_nesting_is_refused_not_a_recursion_error(opening, closing):
    err = error_of("name: t\nsource: s\ncommands: [docker network rm x]\ndescription: "
                   + opening * 5000 + "x" + closing * 5000 + "\n")
    assert err.line == 4 and "nested deeper than 32 levels" in err.reason


def test_an_alias_bomb_is_refused_quickly():
    bomb = "name: t\nsource: s\ncommands: [docker network rm x]\na0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 10))
    assert len(bomb) < 1500
    started = time.monotonic()
    err = error_of(bomb)
    assert time.monotonic() - started < 5
    assert "more than 64 YAML aliases" in err.reason and err.line == 12


def test_few_aliases_that_expand_to_too_many_nodes_are_refused():
    text = "name: t\nsource: s\ncommands: [docker network rm x]\nx0: &r0 [a, b]\n" + "".join(
        f"x{i}: &r{i} [*r{i - 1}, *r{i - 1}, *r{i - 1}, *r{i - 1}]\n" for i in range(1, 14))
    assert "expands to more than 200000 nodes" in error_of(text).reason


def test_a_recursive_alias_is_refused():
    err = error_of("name: t\nsource: s\ncommands: &c [docker network rm x, *c]\n")
    assert err.line == 3 and "refers to the collection that contains it" in err.reason


def test_a_harmless_alias_still_loads():
    s = parse_scenario(textwrap.dedent("""\
        name: t
        source: s
        commands:
          - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=eth0 n
          - docker run --net=n -itd alpine /bin/sh
          - docker run --net=n -itd alpine /bin/sh
        expect:
          addresses: {c1: &a [10.0.0.2/24]}
          routes: {c1: &r ["default via 10.0.0.1 dev eth0"], c2: *r}
    """))
    assert s.expect.routes[1][:2] == ("c2", ("default via 10.0.0.1 dev eth0",))


@pytest.mark.parametrize("text, key, line", [
    ("name: t\nsource: s\nname: u\ncommands: [docker network rm x]\n", "name", 3),
    ("name: t\nsource: s\ncommands: [docker network rm x]\nexpect:\n  matrix: true\n  matrix: false\n", "matrix", 6),
])
def test_a_duplicate_key_names_the_second_one(text, key, line):
    err = error_of(text)
    assert err.line == line and f"duplicate key {key!r}" in err.reason


@pytest.mark.parametrize("key", ["1", "on", "~", "[a]"])
def test_a_key_that_is_not_a_string_is_refused(key):
    err = error_of(f"name: t\nsource: s\ncommands: [docker network rm x]\n{key}: x\n")
    assert err.line == 4 and "is not a string" in err.reason


def test_a_yaml_constructor_error_is_clean():
    err = error_of("name: !!python/object/apply:os.system ['true']\nsource: s\ncommands: [docker network rm x]\n")
    assert err.line == 1 and "could not determine a constructor" in err.reason


def test_an_empty_link_kind_is_an_error_not_an_index_error():
    text = """\
        name: t
        source: s
        commands:
          - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=eth0 n
          - docker run --net=n -itd alpine /bin/sh
        expect:
          links: {c1: {eth0: '  '}}
    """
    err = error_of(text)
    assert err.line == 7 and "link kind '  '" in err.reason
    err = error_of(text.replace("'  '", "''"))
    assert err.line == 7 and "expect/links/c1/eth0" in err.reason


@pytest.mark.parametrize("parent", ["..", ".", "a/b", "eth0:1", "abcdefghijklmnop", "eth0\n", "lo"])
def test_the_host_parent_must_be_an_interface_name(parent):
    text = f"name: t\nsource: s\ntopology:\n  host: {{parent: {json.dumps(parent)}}}\ncommands: [docker network rm x]\n"
    err = error_of(text)
    assert err.line == 4 and "topology/host/parent" in err.reason


@pytest.mark.parametrize("name", ["a/b", "a/../b", "..", "ćma", "a b", "[/x]", ""])
def test_a_container_name_docker_refuses_is_refused_with_dockers_words(name):
    text = ("name: t\nsource: s\ncommands:\n  - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=eth0 n\n"
            f"  - docker run --net=n --name={shlex.quote(name)} -itd alpine /bin/sh\n")
    err = error_of(text)
    assert err.line == 5
    # moby v20.10.24 daemon/names.go reserveName, with daemon/names/names.go RestrictedNameChars
    assert f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed" in err.reason


def test_a_refusal_the_scenario_expects_is_a_step_with_dockers_answer():
    s = parse_scenario(textwrap.dedent("""\
        name: t
        source: s
        commands:
          - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=eth0 n
          - command: docker run --net=n --name=a/b -itd alpine /bin/sh
            error: Invalid container name (a/b), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed
    """))
    step = s.steps[1]
    assert isinstance(step.command, Refused) and step.expect_error == step.command.message
    assert s.container_names == ()


@pytest.mark.parametrize("name, owner", [("host", "the Docker host's namespace"), ("rt", "the upstream router's"),
                                         ("up", "the switch's"), ("/host", "the Docker host's")])
def test_a_container_named_like_a_harness_node_is_refused(name, owner):
    text = ("name: t\nsource: s\ncommands:\n  - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=eth0 n\n"
            f"  - docker run --net=n --name {name} -itd alpine /bin/sh\n")
    err = error_of(text)
    assert err.line == 5
    assert f"container name {name.lstrip('/')!r} is reserved by the harness for {owner}" in err.reason


def test_a_symlink_loop_is_reported_as_such(tmp_path):
    loop = tmp_path / "loop.yaml"
    loop.symlink_to("loop.yaml")
    with pytest.raises(ScenarioError, match="symlink loop"):
        find_scenarios([loop])
    with pytest.raises(ScenarioError, match="symlink loop"):
        load_scenario(loop)
    # inside a directory it is listed, so that loading it reports it (instead of skipping it silently)
    assert find_scenarios([tmp_path]) == [loop]
    (tmp_path / "gone.yaml").symlink_to("nowhere.yaml")
    with pytest.raises(ScenarioError, match="dangling symlink to nowhere.yaml"):
        load_scenario(tmp_path / "gone.yaml")


def test_a_network_name_docker_accepts_never_reaches_a_path_or_an_interface_name():
    from harness.docker.emulated import compile_scenario
    from harness.plan import render

    weird = "../../tmp/x;rm"  # Docker 20.10 accepts any non-blank network name (libnetwork config.IsValidName)
    s = parse_scenario(textwrap.dedent(f"""\
        name: t
        source: s
        commands:
          - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=eth0 '{weird}'
          - docker network create -d macvlan --subnet=10.1.0.0/24 '{weird}2'
          - docker run --net='{weird}' -itd alpine /bin/sh
          - docker run --net='{weird}2' -itd alpine /bin/sh
    """))
    plan = compile_scenario(s).plan
    assert [step.error for step in plan.steps] == [None] * 4
    for op in plan.ops():
        assert "tmp" not in " ".join(render(op)), op
