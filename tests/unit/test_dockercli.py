"""Unit tests of harness.docker.cli: documented command lines parsed as Docker's CLI (pflag) parses them."""

from __future__ import annotations

import shlex

import pytest

from harness.docker.cli import CLIError, RunNamer, parse_command, split_command_line
from harness.model import (
    ContainerRemove,
    ContainerRun,
    HostLinkAdd,
    HostLinkDelete,
    HostLinkUp,
    NetworkConnect,
    NetworkCreate,
    NetworkDisconnect,
    NetworkRemove,
    PingCommand,
    Refused,
)

# --- docker network create ----------------------------------------------------------------------------


def test_network_create_with_long_flags_and_equals():
    cmd = parse_command(
        "docker network create --driver=macvlan --subnet=172.16.86.0/24 --gateway=172.16.86.1 "
        "--opt=parent=eth0 pub_net"
    )
    assert cmd == NetworkCreate(
        name="pub_net",
        driver="macvlan",
        subnets=("172.16.86.0/24",),
        gateways=("172.16.86.1",),
        options=(("parent", "eth0"),),
    )


def test_network_create_with_space_separated_values_and_short_driver():
    cmd = parse_command("docker network create -d ipvlan --subnet 192.168.1.0/24 --gateway 192.168.1.1 -o parent=eth0 n1")
    assert isinstance(cmd, NetworkCreate)
    assert (cmd.name, cmd.driver) == ("n1", "ipvlan")
    assert cmd.subnets == ("192.168.1.0/24",)
    assert cmd.gateways == ("192.168.1.1",)
    assert cmd.option("parent") == "eth0"


def test_network_create_driver_defaults_to_bridge():
    assert parse_command("docker network create plain").driver == "bridge"


@pytest.mark.parametrize("opt", ["-oparent=eth0.50", "-o=parent=eth0.50", "-o parent=eth0.50", "--opt parent=eth0.50"])
def test_network_create_every_spelling_of_the_opt_flag(opt):
    cmd = parse_command(f"docker network create -d macvlan --subnet=192.168.50.0/24 {opt} macvlan50")
    assert cmd.options == (("parent", "eth0.50"),)


def test_network_create_repeated_subnets_gateways_ranges_and_aux_addresses_keep_their_order():
    text = (
        "docker network create -d macvlan --subnet=192.168.136.0/24 --subnet=192.168.138.0/24 "
        "--ipv6 --subnet=fd11::/64 --ip-range=192.168.136.0/25 --ip-range=192.168.138.0/25 "
        "--gateway=192.168.136.1 --gateway 192.168.138.1 "
        '--aux-address="reserved1=fd11::2" --aux-address reserved2=192.168.136.2 -o parent=eth0 mcv0'
    )
    cmd = parse_command(text)
    assert cmd.subnets == ("192.168.136.0/24", "192.168.138.0/24", "fd11::/64")
    assert cmd.ip_ranges == ("192.168.136.0/25", "192.168.138.0/25")
    assert cmd.gateways == ("192.168.136.1", "192.168.138.1")
    assert cmd.aux_addresses == (("reserved1", "fd11::2"), ("reserved2", "192.168.136.2"))
    assert cmd.ipv6 is True
    assert cmd.internal is False


def test_network_create_ipv6_and_internal_are_booleans():
    cmd = parse_command("docker network create -d macvlan --internal --ipv6 --subnet=fd00::/64 n")
    assert (cmd.ipv6, cmd.internal) == (True, True)
    cmd = parse_command("docker network create -d macvlan --ipv6=false n")
    assert cmd.ipv6 is False


def test_network_create_mode_and_flag_options():
    cmd = parse_command(
        "docker network create -d ipvlan --subnet=10.1.0.0/24 -o parent=eth0.30 -o ipvlan_mode=l3 "
        "-o ipvlan_flag=private ipv30"
    )
    assert cmd.option("parent") == "eth0.30"
    assert cmd.option("ipvlan_mode") == "l3"
    assert cmd.option("ipvlan_flag") == "private"
    assert cmd.option("macvlan_mode") is None
    cmd = parse_command("docker network create -d macvlan -o macvlan_mode=vepa -o parent=eth0 v")
    assert cmd.option("macvlan_mode") == "vepa"


def test_network_create_quoted_aux_address_as_in_the_documentation():
    cmd = parse_command(
        'docker network create -d macvlan --subnet=172.16.86.0/24 --gateway=172.16.86.1 '
        '--aux-address="exclude_host=172.16.86.250" -o parent=eth0 pub_net'
    )
    assert cmd.aux_addresses == (("exclude_host", "172.16.86.250"),)


def test_network_create_with_backslash_newline_continuations_and_comments():
    text = (
        "docker network  create  -d macvlan \\\n"
        "    --subnet=192.168.216.0/24 --subnet=192.168.218.0/24 \\\n"
        "    --gateway=192.168.216.1  --gateway=192.168.218.1 \\\n"
        "     -o parent=eth0.218 \\\n"
        "     -o macvlan_mode=bridge macvlan216   # the VLAN 218 example\n"
    )
    cmd = parse_command(text)
    assert cmd.name == "macvlan216"
    assert cmd.subnets == ("192.168.216.0/24", "192.168.218.0/24")
    assert cmd.options == (("parent", "eth0.218"), ("macvlan_mode", "bridge"))


def test_split_command_line_joins_continuations_drops_comments_and_honours_quotes():
    assert split_command_line("docker network rm \\\n  pub_net # gone\n") == ["docker", "network", "rm", "pub_net"]
    assert split_command_line("a 'b c' \"d e\"") == ["a", "b c", "d e"]


def test_double_dash_ends_flags():
    cmd = parse_command("docker network create -d macvlan -- -weird")
    assert cmd.name == "-weird"


def test_repeated_opt_key_keeps_the_last_value_as_docker_does():
    cmd = parse_command("docker network create -d macvlan -o macvlan_mode=private -o macvlan_mode=bridge -o parent=eth0 n")
    assert cmd.option("macvlan_mode") == "bridge"


def test_comma_separated_subnets_are_two_subnets_as_in_pflag_string_slices():
    cmd = parse_command("docker network create -d macvlan --subnet=10.1.0.0/24,10.2.0.0/24 "
                        "--gateway=10.1.0.1,10.2.0.1 -o parent=eth0 n")
    assert cmd.subnets == ("10.1.0.0/24", "10.2.0.0/24")
    assert cmd.gateways == ("10.1.0.1", "10.2.0.1")


# --- docker network rm / connect / disconnect ------------------------------------------------------------


def test_network_rm_takes_one_or_more_networks():
    assert parse_command("docker network rm pub_net") == NetworkRemove(networks=("pub_net",))
    assert parse_command("docker network rm a b") == NetworkRemove(networks=("a", "b"))
    assert parse_command("docker network remove a") == NetworkRemove(networks=("a",))


def test_network_connect_with_addresses():
    cmd = parse_command("docker network connect --ip=10.1.0.5 --ip6 fd00::5 net1 c1")
    assert cmd == NetworkConnect(network="net1", container="c1", ip="10.1.0.5", ip6="fd00::5")


def test_network_disconnect():
    assert parse_command("docker network disconnect -f net1 c1") == NetworkDisconnect(network="net1", container="c1",
                                                                                       force=True)


# --- docker run -----------------------------------------------------------------------------------------


def test_run_kept_running_shell_with_combined_short_flags():
    cmd = parse_command("docker run --net=pub_net --ip=172.16.86.10 --name c9 -itd alpine /bin/sh")
    assert isinstance(cmd, ContainerRun)
    assert (cmd.name, cmd.network, cmd.ip, cmd.ip6) == ("c9", "pub_net", "172.16.86.10", None)
    assert cmd.detach is True and cmd.remove is False
    assert cmd.image == "alpine"
    assert cmd.command == ("/bin/sh",)
    assert cmd.named_by_user is True
    assert cmd.transient is False and cmd.probe is None


def test_run_with_network_flag_rm_and_ip6():
    cmd = parse_command("docker run --network macvlan216 --ip6=2001:db8:abc8::20 -it --rm alpine /bin/sh")
    assert cmd.network == "macvlan216"
    assert cmd.ip6 == "2001:db8:abc8::20"
    assert cmd.remove is True and cmd.detach is False
    assert cmd.transient is False


def test_run_name_with_equals_sign():
    assert parse_command("docker run --net=n --name=macnet216_test -itd alpine /bin/sh").name == "macnet216_test"


def test_run_ping_is_a_transient_reach_check_with_count():
    cmd = parse_command("docker  run --net=pub_net -it --rm alpine ping -c 4 172.16.86.10")
    assert cmd.command == ("ping", "-c", "4", "172.16.86.10")
    assert cmd.transient is True
    assert cmd.probe == PingCommand(target="172.16.86.10", count=4, family=0)


def test_run_ping6_with_attached_count_is_an_ipv6_reach_check():
    cmd = parse_command("docker run --net=macvlan216 -it --rm alpine ping6 -c4 2001:db8:abc8::20")
    assert cmd.probe == PingCommand(target="2001:db8:abc8::20", count=4, family=6)


def test_run_ping_by_container_name():
    cmd = parse_command("docker run --net=isolated1 -it --rm alpine ping -c 2 cid1")
    assert cmd.probe == PingCommand(target="cid1", count=2, family=0)


def test_run_flags_after_the_image_belong_to_the_container_command():
    # docker run stops parsing flags at the image: `-c 4` is ping's, not docker's.
    cmd = parse_command("docker run --net=n alpine ping -c 1 -4 10.0.0.1")
    assert cmd.probe == PingCommand(target="10.0.0.1", count=1, family=4)
    assert cmd.network == "n"


def test_run_without_command_is_kept_running():
    cmd = parse_command("docker run --net=n -d alpine")
    assert cmd.command == () and cmd.transient is False


def test_run_namer_names_c1_c2_and_skips_explicit_names():
    namer = RunNamer({"c2"})
    a = parse_command("docker run --net=n -itd alpine /bin/sh", namer)
    b = parse_command("docker run --net=n --name web -itd alpine /bin/sh", namer)
    c = parse_command("docker run --net=n -itd alpine /bin/sh", namer)
    assert (a.name, b.name, c.name) == ("c1", "web", "c3")
    assert (a.named_by_user, b.named_by_user, c.named_by_user) == (False, True, False)


def test_run_namer_counts_per_instance():
    namer = RunNamer()
    assert [namer.next(), namer.next(), namer.next()] == ["c1", "c2", "c3"]
    assert RunNamer().next() == "c1"


def test_docker_rm_with_force():
    assert parse_command("docker rm -f mcv_test5") == ContainerRemove(names=("mcv_test5",), force=True)
    assert parse_command("docker rm a b") == ContainerRemove(names=("a", "b"), force=False)


# --- ip link (the documentation's own host commands) ---------------------------------------------------


def test_ip_link_add_vlan():
    assert parse_command("ip link add link eth0 name eth0.40 type vlan id 40") == HostLinkAdd(
        name="eth0.40", parent="eth0", vlan_id=40)
    assert parse_command("ip link add link eth0 name foo type vlan id 40") == HostLinkAdd(
        name="foo", parent="eth0", vlan_id=40)


def test_ip_link_set_up_and_delete():
    assert parse_command("ip link set eth0.40 up") == HostLinkUp(name="eth0.40")
    assert parse_command("ip link del foo") == HostLinkDelete(name="foo")
    assert parse_command("ip link delete dev foo") == HostLinkDelete(name="foo")


@pytest.mark.parametrize("text", [
    "ip link add link eth0 name eth0.40 type bridge",
    "ip link add link eth0 name eth0.40 type vlan id forty",
    "ip addr del 10.0.0.1/24 dev eth0",
    "ip link set eth0.40 down",
    "ip route add 10.0.0.0/24 dev mac0 metric 5",
])
def test_ip_commands_outside_the_documented_forms_are_rejected(text):
    with pytest.raises(CLIError):
        parse_command(text)


# --- errors, worded as Docker's CLI words them ---------------------------------------------------------


def test_unknown_long_flag_is_named():
    with pytest.raises(CLIError, match=r"^unknown flag: --bogus$"):
        parse_command("docker network create -d macvlan --bogus n")
    with pytest.raises(CLIError, match=r"^unknown flag: --frob$"):
        parse_command("docker run --net=n --frob=1 -itd alpine /bin/sh")


def test_unknown_shorthand_flag_is_named():
    with pytest.raises(CLIError, match=r"^unknown shorthand flag: 'x' in -x$"):
        parse_command("docker network create -x n")
    with pytest.raises(CLIError, match=r"^unknown shorthand flag: 'z' in -itz$"):
        parse_command("docker run --net=n -itz alpine /bin/sh")


def test_missing_flag_argument():
    with pytest.raises(CLIError, match=r"^flag needs an argument: --subnet$"):
        parse_command("docker network create --subnet")
    with pytest.raises(CLIError, match=r"^flag needs an argument: 'o' in -o$"):
        parse_command("docker network create n -o")


def test_wrong_argument_counts():
    with pytest.raises(CLIError) as exc:
        parse_command("docker network create -d macvlan")
    assert str(exc.value) == '"docker network create" requires exactly 1 argument.'
    with pytest.raises(CLIError) as exc:
        parse_command("docker network create -d macvlan a b")
    assert str(exc.value) == '"docker network create" requires exactly 1 argument.'
    with pytest.raises(CLIError) as exc:
        parse_command("docker network connect net1")
    assert str(exc.value) == '"docker network connect" requires exactly 2 arguments.'
    with pytest.raises(CLIError) as exc:
        parse_command("docker network rm")
    assert str(exc.value) == '"docker network rm" requires at least 1 argument.'
    with pytest.raises(CLIError) as exc:
        parse_command("docker run --net=n -itd")
    assert str(exc.value) == '"docker run" requires at least 1 argument.'


def test_the_vlan60_stray_dash_o_of_the_documentation_is_rejected():
    # libnetwork-macvlan.md, VLAN 60, verbatim: pflag takes the second `-o` as the first one's value,
    # which leaves two positionals.
    text = (
        "docker network create -d macvlan \\\n"
        "    --subnet=192.168.60.0/24 \\\n"
        "    --gateway=192.168.60.1 \\\n"
        "    -o parent=eth0.60 -o \\\n"
        "    -o macvlan_mode=bridge macvlan60\n"
    )
    with pytest.raises(CLIError) as exc:
        parse_command(text)
    assert str(exc.value) == '"docker network create" requires exactly 1 argument.'


def test_opt_without_key_value_pair_is_rejected():
    with pytest.raises(CLIError, match="key=value"):
        parse_command("docker network create -d macvlan --aux-address=172.16.86.250 n")


@pytest.mark.parametrize("command", ["ip a", "/bin/true", "ping -c 4", "sleep"])
def test_unsupported_container_commands(command):
    with pytest.raises(CLIError, match=r"^unsupported container command .* is not emulated by the harness"):
        parse_command(f"docker run --net=n -itd alpine {command}")


@pytest.mark.parametrize("text", [
    "docker network rm $(docker network ls -q)",
    "docker run --net=`cat net` -itd alpine /bin/sh",
])
def test_command_substitution_is_refused(text):
    with pytest.raises(CLIError, match="command substitution"):
        parse_command(text)


@pytest.mark.parametrize("text, words", [
    ("docker ps", "`docker ps` is not emulated by the harness"),
    ("docker network prune", "`docker network prune` is not emulated by the harness"),
    ("podman run alpine", "unsupported command 'podman'"),
    ("", "empty command"),
    ("# only a comment", "empty command"),
])
def test_other_commands_are_refused_with_a_reason(text, words):
    with pytest.raises(CLIError) as exc:
        parse_command(text)
    assert words in str(exc.value)


def test_unbalanced_quote_is_a_cli_error():
    with pytest.raises(CLIError, match="cannot split"):
        parse_command('docker network create --aux-address="a=1.2.3.4 n')


def test_net_and_network_fill_one_list_as_in_dockers_cli():
    # docker/cli v20.10.24 cli/command/container/opts.go: --net and --network are the same option list;
    # 20.10's daemon then refuses two (daemon/create.go:331-341, harness.docker.driver).
    cmd = parse_command("docker run --net=a --network=b -itd alpine /bin/sh")
    assert cmd.networks == ("a", "b") and cmd.network == "a"


# --- names Docker, iproute2 or the kernel would refuse (issue #10) ----------------------------------------


@pytest.mark.parametrize("name", ["a/b", "a/../b", "..", ".hidden", "-x", "a b", "ćma", "[/x]", "", "x\n"])
def test_a_container_name_outside_dockers_rule_is_refused_in_dockers_words(name):
    cmd = parse_command(f"docker run --net=n --name={shlex.quote(name)} -itd alpine /bin/sh")
    # moby v20.10.24 daemon/names.go reserveName: "Invalid container name (%s), only %s are allowed",
    # %s = daemon/names/names.go RestrictedNameChars
    assert cmd == Refused(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", "docker run")


def test_a_leading_slash_is_trimmed_as_docker_trims_it():
    assert parse_command("docker run --net=n --name=/web -itd alpine /bin/sh").name == "web"
    assert parse_command("docker run --net=n --name=web.1_a-b -itd alpine /bin/sh").name == "web.1_a-b"


@pytest.mark.parametrize("name, message", [
    ("host", "operation is not permitted on predefined host network "),  # daemon/network.go PredefinedNetworkError
    ("bridge", "operation is not permitted on predefined bridge network "),
    ("none", "operation is not permitted on predefined none network "),
    ("' '", "invalid name:  "),  # libnetwork error.go ErrInvalidName, config.go IsValidName
])
def test_a_network_name_docker_refuses(name, message):
    assert parse_command(f"docker network create -d macvlan {name}") == Refused(message, "docker network create")


@pytest.mark.parametrize("name", ["a/b", "../x", "eth0;rm", "x" * 200])
def test_any_other_network_name_is_accepted_as_docker_accepts_it(name):
    assert parse_command(f"docker network create -d macvlan {shlex.quote(name)}").name == name


@pytest.mark.parametrize("text, message", [
    ("ip link add link eth0 name a/b type vlan id 4", 'Error: argument "a/b" is wrong: "name" not a valid ifname'),
    ("ip link add link eth0 name 'a b' type vlan id 4", 'Error: argument "a b" is wrong: "name" not a valid ifname'),
    ("ip link add link eth0 name abcdefghijklmnop type vlan id 4",
     'Error: argument "abcdefghijklmnop" is wrong: "name" not a valid ifname'),
    ("ip link add link eth0 name .. type vlan id 4", "RTNETLINK answers: Invalid argument"),
    ("ip link add link eth0 name a:b type vlan id 4", "RTNETLINK answers: Invalid argument"),
    ("ip link set a/b up", 'Error: argument "a/b" is wrong: "dev" not a valid ifname'),
    ("ip link del dev a/b", 'Error: argument "a/b" is wrong: "dev" not a valid ifname'),
])
def test_an_interface_name_iproute2_or_the_kernel_refuses(text, message):
    # iproute2 6.1 (Debian 12) and kernel 6.1, observed in a throwaway `unshare -n`
    assert parse_command(text).message == message


def test_a_vlan_id_must_be_ascii_digits():
    with pytest.raises(CLIError, match='vlan id "٣" is not a number'):
        parse_command("ip link add link eth0 name eth0.3 type vlan id ٣")
