"""Unit tests of harness.bench.cli: options to parameters, and the options forwarded to the bench in a VM."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from harness.bench import cli
from harness.bench.cli import params_from_args
from harness.bench.params import BenchUnavailable


def _args(*argv):
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return p.parse_args(list(argv))


def test_default_parameters_follow_the_measurements():
    p = params_from_args(_args())
    # one stream, 1 s samples, nothing omitted: the steadiest ratio per second spent (docs/performance.md)
    assert (p.streams, p.duration, p.mtu, p.omit, p.rounds, p.budget, p.target) == (1, 1, 1500, 0, None, 120.0, 0.03)
    assert p.backend == "netns" and p.udp_blocks == 40000
    # a UDP duration asked for replaces the default datagram count
    assert params_from_args(_args("--udp-duration", "2")).udp_blocks is None
    assert params_from_args(_args("--udp-blocks", "500")).udp_blocks == 500


def test_quick_is_one_full_round_then_pairs_in_25_s_and_options_override():
    p = params_from_args(_args("--quick"))
    assert p.quick and p.rounds is None and p.full_rounds == 1 and p.duration == 1 and p.budget == 25.0
    assert p.min_rounds == 6  # the target may stop it only once the ratio has an interval
    p = params_from_args(_args("--quick", "--streams", "2", "--topologies", "macvlan,bridge", "--target", "5"))
    assert p.streams == 2 and p.topologies == ("macvlan", "bridge") and p.target == pytest.approx(0.05)
    p = params_from_args(_args("--rounds", "7"))
    assert p.rounds == 7 and p.budget is None  # a fixed number of rounds is not cut by the default budget


@pytest.mark.parametrize("argv, message", [
    (("--topologies", "macvlan,ovs"), "unknown topology ovs"),
    (("--tests", "tcp,sctp"), "unknown test sctp"),
    (("--duration", "0"), "whole seconds"),
])
def test_bad_parameters_are_refused_with_the_reason(argv, message):
    with pytest.raises(BenchUnavailable, match=message):
        params_from_args(_args(*argv))


def test_the_vm_guest_gets_every_option_given_except_this_machines_own():
    given = ("--quick", "--rounds", "3", "--mtu", "9000", "--udp-rate", "500M", "--no-rr-pin", "--budget", "60.0",
             "--target", "2.5", "--tests", "tcp", "--topologies", "ipvlan,bridge", "--seed", "7")
    args = _args(*given, "--backend", "vm", "--json", "out.json", "--save-baseline", "b.json", "-q")
    words = cli._forwarded(args)
    assert words == list(given)
    guest = _args("--backend", "netns", "--json", "/out/bench.json", "-q", *words)
    assert params_from_args(guest) == dataclasses.replace(params_from_args(args), backend="netns")
    assert cli._forwarded(_args()) == []


def test_the_summary_says_what_the_run_can_detect_or_why_it_cannot():
    metric = {"id": "tcp.gbps[macvlan/bridge]", "kind": "ratio", "ci_low": 1.05, "ci_high": 1.11}
    doc = {"stats": {"primary": "tcp.gbps[macvlan/bridge]", "metrics": [metric]},
           "stop": {"detectable_change_pct": 6.1}}
    text = cli.summary_caption(doc)
    assert "tcp.gbps[macvlan/bridge] this run can detect: 6.1 %" in text and "fewer than 6" not in text
    few = {"stats": {"primary": "tcp.gbps[macvlan/bridge]", "metrics": [dict(metric, ci_low=None, ci_high=None)]},
           "stop": {"detectable_change_pct": None}}
    text = cli.summary_caption(few)
    assert "fewer than 6 rounds" in text and "no interval, so no detectable change" in text
