"""Unit tests of harness.docker.ipam: the CLI's subnet pairing, libnetwork's allocator, MACs and link-local addresses."""

from __future__ import annotations

import ipaddress

import pytest

from harness.docker.ipam import (
    ADDRESS_IN_USE,
    NO_AVAILABLE_IPS,
    POOL_OVERLAP,
    AddressSpace,
    Pool,
    consolidate_ipam,
    link_local_from_mac,
    mac_from_ip,
)
from harness.errors import DockerError

ip = ipaddress.ip_address
net = ipaddress.ip_network


def docker_error(fn, *args) -> str:
    with pytest.raises(DockerError) as exc:
        fn(*args)
    return exc.value.message


# --- consolidate_ipam: the Docker CLI's client-side pairing ---------------------------------------------


def test_pairs_gateways_ranges_and_aux_addresses_with_their_subnet():
    configs = consolidate_ipam(
        ("192.168.136.0/24", "192.168.138.0/24", "fd11::/64"),
        ("192.168.138.0/25", "192.168.136.0/25"),
        ("fd11::10", "192.168.136.1"),
        (("reserved1", "fd11::2"), ("reserved2", "192.168.136.2"), ("reserved3", "192.168.138.2")),
    )
    assert [c.subnet for c in configs] == [net("192.168.136.0/24"), net("192.168.138.0/24"), net("fd11::/64")]
    a, b, v6 = configs
    assert (a.gateway, a.ip_range, a.aux) == (ip("192.168.136.1"), net("192.168.136.0/25"),
                                              (("reserved2", ip("192.168.136.2")),))
    assert (b.gateway, b.ip_range, b.aux) == (None, net("192.168.138.0/25"), (("reserved3", ip("192.168.138.2")),))
    assert (v6.gateway, v6.ip_range, v6.aux) == (ip("fd11::10"), None, (("reserved1", ip("fd11::2")),))


def test_no_subnet_no_config():
    assert consolidate_ipam((), (), (), ()) == ()


@pytest.mark.parametrize("subnets, ranges, gateways, aux, message", [
    (("172.16.86.0/24",), (), ("10.0.0.1",), (), "no matching subnet for gateway 10.0.0.1"),
    (("172.16.86.0/24",), ("10.0.0.0/25",), (), (), "no matching subnet for range 10.0.0.0/25"),
    (("172.16.86.0/24",), (), (), (("x", "10.0.0.9"),), "no matching subnet for aux-address 10.0.0.9"),
    ((), (), ("172.16.86.1",), (), "every ip-range or gateway must have a corresponding subnet"),
    ((), ("172.16.86.0/25",), (), (), "every ip-range or gateway must have a corresponding subnet"),
    (("172.16.86.0/24",), (), ("172.16.86.1", "172.16.86.2"), (),
     "every ip-range or gateway must have a corresponding subnet"),
])
def test_client_side_errors_verbatim(subnets, ranges, gateways, aux, message):
    assert docker_error(consolidate_ipam, subnets, ranges, gateways, aux) == message


def test_two_gateways_for_one_subnet():
    message = docker_error(consolidate_ipam, ("10.1.0.0/24", "10.2.0.0/24"), (), ("10.1.0.1", "10.1.0.254"), ())
    assert message == "cannot configure multiple gateways (10.1.0.254, 10.1.0.1) for the same subnet (10.1.0.0/24)"


def test_two_ranges_for_one_subnet():
    message = docker_error(consolidate_ipam, ("10.1.0.0/24", "10.2.0.0/24"), ("10.1.0.0/25", "10.1.0.128/25"), (), ())
    assert message == "cannot configure multiple ranges (10.1.0.128/25, 10.1.0.0/25) on the same subnet (10.1.0.0/24)"


def test_overlapping_subnets_in_one_command():
    message = docker_error(consolidate_ipam, ("10.1.0.0/16", "10.1.2.0/24"), (), (), ())
    assert message == "multiple overlapping subnet configuration is not supported"


def test_an_ipv6_gateway_does_not_match_an_ipv4_subnet():
    assert docker_error(consolidate_ipam, ("10.1.0.0/24",), (), ("fd00::1",), ()) == "no matching subnet for gateway fd00::1"


# --- Pool: libnetwork's bitmap allocator ----------------------------------------------------------------


def pool(subnet, gateway=None, ip_range=None, aux=()):
    p = Pool(subnet=net(subnet), ip_range=net(ip_range) if ip_range else None)
    p.gateway = p.request(ip(gateway)) if gateway else p.request()
    for name, value in aux:
        p.aux[name] = p.request(ip(value))
    return p


def test_first_usable_address_becomes_the_gateway_and_containers_follow():
    p = pool("172.16.86.0/24")
    assert p.gateway == ip("172.16.86.1")
    assert [p.request() for _ in range(3)] == [ip("172.16.86.2"), ip("172.16.86.3"), ip("172.16.86.4")]


def test_lowest_free_skips_the_given_gateway_aux_and_static_addresses():
    p = pool("172.16.86.0/24", gateway="172.16.86.2", aux=[("exclude_host", "172.16.86.4")])
    assert p.request(ip("172.16.86.5")) == ip("172.16.86.5")
    assert [p.request() for _ in range(3)] == [ip("172.16.86.1"), ip("172.16.86.3"), ip("172.16.86.6")]


def test_ordinal_zero_and_ipv4_broadcast_are_reserved():
    p = Pool(subnet=net("10.0.0.0/24"))
    with pytest.raises(DockerError, match=f"^{ADDRESS_IN_USE}$"):
        p.request(ip("10.0.0.0"))
    with pytest.raises(DockerError, match=f"^{ADDRESS_IN_USE}$"):
        p.request(ip("10.0.0.255"))


def test_gateway_aux_and_taken_static_addresses_are_in_use():
    p = pool("172.16.86.0/24", gateway="172.16.86.1", aux=[("exclude_host", "172.16.86.250")])
    p.request(ip("172.16.86.10"))
    for taken in ("172.16.86.1", "172.16.86.250", "172.16.86.10"):
        with pytest.raises(DockerError) as exc:
            p.request(ip(taken))
        assert exc.value.message == "Address already in use"


def test_a_freed_address_is_reused_at_once():
    p = pool("172.16.86.0/24")
    a, b, c = p.request(), p.request(), p.request()
    p.release(b)
    assert p.request() == b == ip("172.16.86.3")
    assert p.request() == ip("172.16.86.5")
    assert (a, c) == (ip("172.16.86.2"), ip("172.16.86.4"))


def test_ip_range_starts_at_the_ranges_first_address():
    p = pool("192.168.32.0/24", gateway="192.168.32.254", ip_range="192.168.32.128/25")
    assert [p.request() for _ in range(2)] == [ip("192.168.32.128"), ip("192.168.32.129")]
    # a static address inside the subnet but outside the range is accepted
    assert p.request(ip("192.168.32.10")) == ip("192.168.32.10")


def test_ip_range_skips_an_aux_address_as_in_the_observed_docker():
    p = pool("192.168.32.0/24", gateway="192.168.32.254", ip_range="192.168.32.128/25",
             aux=[("my-router", "192.168.32.129")])
    assert [p.request() for _ in range(3)] == [ip("192.168.32.128"), ip("192.168.32.130"), ip("192.168.32.131")]


def test_range_exhaustion_does_not_spill_into_the_rest_of_the_subnet():
    p = pool("10.0.0.0/24", gateway="10.0.0.1", ip_range="10.0.0.252/30")
    assert [p.request() for _ in range(3)] == [ip("10.0.0.252"), ip("10.0.0.253"), ip("10.0.0.254")]
    with pytest.raises(DockerError, match=f"^{NO_AVAILABLE_IPS}$"):
        p.request()


def test_a_slash_30_holds_a_gateway_and_one_container():
    p = pool("10.9.9.0/30")
    assert p.gateway == ip("10.9.9.1")
    assert p.request() == ip("10.9.9.2")
    with pytest.raises(DockerError) as exc:
        p.request()
    assert exc.value.message == "No available addresses on this pool"


def test_ipv6_reserves_only_ordinal_zero():
    p = Pool(subnet=net("2001:db8:abc8::/64"))
    with pytest.raises(DockerError, match=ADDRESS_IN_USE):
        p.request(ip("2001:db8:abc8::"))
    last = ip("2001:db8:abc8::ffff:ffff:ffff:ffff")
    assert p.request(last) == last  # no broadcast in IPv6


def test_ipv6_with_gateway_10_gives_the_first_container_1():
    p = pool("2001:db8:abc8::/64", gateway="2001:db8:abc8::10")
    assert [p.request() for _ in range(2)] == [ip("2001:db8:abc8::1"), ip("2001:db8:abc8::2")]


def test_ipv6_without_gateway_takes_1_and_the_first_container_gets_2():
    p = pool("fd00:1::/64")
    assert p.gateway == ip("fd00:1::1")
    assert p.request() == ip("fd00:1::2")


def test_contains():
    p = Pool(subnet=net("192.168.50.0/24"))
    assert p.contains(ip("192.168.50.7"))
    assert not p.contains(ip("192.168.51.7"))
    assert not p.contains(ip("fd00::1"))


# --- AddressSpace: overlap and default pools -------------------------------------------------------------


def test_overlapping_pool_is_refused_verbatim():
    space = AddressSpace()
    space.reserve(net("172.16.86.0/24"))
    for subnet in ("172.16.86.0/25", "172.16.0.0/16", "172.16.86.0/24"):
        with pytest.raises(DockerError) as exc:
            space.reserve(net(subnet))
        assert exc.value.message == POOL_OVERLAP == "Pool overlaps with other one on this address space"
    space.reserve(net("172.16.87.0/24"))  # adjacent is fine


def test_released_pool_can_be_reserved_again():
    space = AddressSpace()
    space.reserve(net("10.0.0.0/24"))
    space.release(net("10.0.0.0/24"))
    space.reserve(net("10.0.0.0/24"))


def test_families_do_not_overlap():
    space = AddressSpace()
    space.reserve(net("fd00::/64"))
    space.reserve(net("10.0.0.0/8"))
    assert space.overlaps(net("fd00::/80"))
    assert not space.overlaps(net("fd01::/64"))


def test_default_pool_is_172_18_when_docker0_holds_172_17():
    space = AddressSpace()
    space.reserve(net("172.17.0.0/16"))
    first = space.default_v4()
    assert first == net("172.18.0.0/16")
    space.reserve(first)
    assert space.default_v4() == net("172.19.0.0/16")


def test_20_10_default_pools_rotate_a_freed_pool_is_not_reused():
    # moby v20.10.24 libnetwork/ipam/allocator.go:387-448 (getPredefineds, updateStartIndex); seen on a real
    # 20.10 engine: create (172.18), rm, create again -> 172.19.0.0/16.
    space = AddressSpace()
    space.reserve(net("172.17.0.0/16"))
    first = space.default_v4()
    space.reserve(first)
    space.release(first)
    assert space.default_v4() == net("172.19.0.0/16")


def test_moby_27_default_pools_are_first_fit():
    # docker-v29.7.2 daemon/libnetwork/ipams/defaultipam/address_space.go:136-302
    space = AddressSpace()
    space.reserve(net("172.17.0.0/16"))
    first = space.default_v4(rotate=False)
    space.reserve(first)
    space.release(first)
    assert space.default_v4(rotate=False) == net("172.18.0.0/16")


def test_the_same_subnet_twice_is_allowed_with_an_ip_range_and_shares_the_bitmap():
    # moby v20.10.24 libnetwork/ipam/structures.go:261-304 updatePoolDBOnAdd: no overlap check for a pool with
    # a range; seen on a real 20.10 engine (a second network on 10.9.0.0/24 with --ip-range 10.9.0.128/25).
    space = AddressSpace()
    a = space.reserve(net("10.9.0.0/24"))
    b = space.reserve(net("10.9.0.0/24"), net("10.9.0.128/25"))
    assert a is b
    with pytest.raises(DockerError, match="Pool overlaps"):
        space.reserve(net("10.9.0.0/24"), net("10.9.0.128/25"))
    with pytest.raises(DockerError, match="Pool overlaps"):
        space.reserve(net("10.9.0.0/24"))


def test_default_pools_skip_a_user_subnet_inside_them():
    space = AddressSpace([net("172.17.0.0/16"), net("172.18.5.0/24")])
    assert space.default_v4() == net("172.19.0.0/16")


def test_default_pools_continue_into_192_168_slash_20s():
    space = AddressSpace([net("172.16.0.0/12")])
    assert space.default_v4() == net("192.168.0.0/20")


# --- MACs and link-local addresses ------------------------------------------------------------------------


@pytest.mark.parametrize("address, mac", [
    ("172.16.86.10", "02:42:ac:10:56:0a"),
    ("192.168.32.128", "02:42:c0:a8:20:80"),
    ("192.168.216.10", "02:42:c0:a8:d8:0a"),
    ("10.1.20.9", "02:42:0a:01:14:09"),
])
def test_mac_from_ip(address, mac):
    assert mac_from_ip(ip(address)) == mac


@pytest.mark.parametrize("mac, link_local", [
    ("02:42:c0:a8:88:03", "fe80::42:c0ff:fea8:8803"),
    ("02:42:c0:a8:d8:02", "fe80::42:c0ff:fea8:d802"),
    ("02:42:ac:10:56:0a", "fe80::42:acff:fe10:560a"),
    ("00:11:22:33:44:55", "fe80::211:22ff:fe33:4455"),
])
def test_link_local_from_mac_is_eui64(mac, link_local):
    assert link_local_from_mac(mac) == ip(link_local)


def test_link_local_refuses_a_short_mac():
    with pytest.raises(ValueError):
        link_local_from_mac("02:42:c0:a8:88")
