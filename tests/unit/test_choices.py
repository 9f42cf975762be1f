"""Docker's random choices (harness.docker.choices): alternatives, `docker_choices:` pins, `A or B`
expectations, and `harness conform` following the order a real engine took."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from test_engine import FakeBackend, FakeKernel, as_the_oracle_says

from backends.batch import stage_scenarios
from harness.checks import expectations_hold
from harness.conform import CONFORMS, DIFFERENT, compare, real_choices
from harness.docker.emulated import alternatives, compile_scenario
from harness.engine import Engine
from harness.loader import find_scenarios, load_scenario, parse_scenario
from harness.oracle import HostSetup, Oracle
from harness.results import FAIL, PASS
from harness.world import World

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
MCV0 = SCENARIOS / "macvlan-mcv0-dual-stack.yaml"
PIN_138 = "\ndocker_choices:\n  mcv0 IPv4 subnets: [192.168.138.0/24, 192.168.136.0/24]\n"


def addresses(compiled, container: str) -> list[str]:
    return [c for ep in compiled.emulator.containers[container].endpoints for c in ep.cidrs()]


def unmet(scenario, compiled) -> list:
    """The expectations Docker's predicted state does not meet, judged by the oracle as the engine builds it
    (with what each host's own commands configured, e.g. macvlan-host-shim's mac0)."""
    done = [(step, cs.error) for step, cs in zip(compiled.scenario.steps, compiled.plan.steps)]
    oracle = Oracle(compiled.emulator, World.of(scenario.topology, compiled.vlans), HostSetup.by_host(done))
    return expectations_hold(scenario, oracle)


def run(scenario):
    return Engine(FakeBackend(FakeKernel(ping=as_the_oracle_says(scenario)))).run(scenario)


def test_two_ipv4_subnets_are_two_alternatives_and_the_command_line_order_is_the_default():
    scenario = load_scenario(MCV0)
    default, other = alternatives(scenario)
    assert "192.168.136.3/24" in addresses(default, "c1") and "192.168.138.3/24" in addresses(other, "c1")
    point = default.emulator.choice_points["mcv0 IPv4 subnets"]
    assert point.options == ("192.168.136.0/24", "192.168.138.0/24")
    assert "docker/cli v20.10.24 cli/command/network/create.go" in point.note
    assert compile_scenario(scenario).emulator.containers["c1"].endpoints[0].mac == "02:42:c0:a8:88:03"
    assert other.emulator.containers["c1"].endpoints[0].mac == "02:42:c0:a8:8a:03"


def test_a_network_with_one_subnet_per_family_has_no_random_choice():
    assert len(alternatives(load_scenario(SCENARIOS / "macvlan-bridge.yaml"))) == 1


@pytest.mark.parametrize("path", find_scenarios([SCENARIOS]), ids=lambda p: p.stem)
def test_every_shipped_scenario_is_stated_for_each_of_dockers_choices(path):
    scenario = load_scenario(path)
    for compiled in alternatives(scenario):
        assert unmet(scenario, compiled) == [], compiled.scenario.docker_choices


def test_an_expectation_stated_for_one_choice_only_is_found():
    text = MCV0.read_text().replace("192.168.136.3/24 or 192.168.138.3/24", "192.168.136.3/24")
    scenario = parse_scenario(text, str(MCV0))
    default, other = alternatives(scenario)
    assert unmet(scenario, default) == []
    [check] = unmet(scenario, other)
    assert (check.kind, check.subject, check.expected) == ("address", "c1", "192.168.136.3/24")


def test_a_pinned_order_is_what_the_emulation_does_and_either_expected_value_passes():
    scenario = parse_scenario(MCV0.read_text() + PIN_138, str(MCV0))
    assert "192.168.138.3/24" in addresses(compile_scenario(scenario), "c1")
    result = run(scenario)
    assert result.status == PASS, result.failure_report()
    # The same run judged against the documented value alone fails, naming what was expected and seen.
    strict = parse_scenario(MCV0.read_text().replace("192.168.136.3/24 or 192.168.138.3/24", "192.168.136.3/24")
                            + PIN_138, str(MCV0))
    failed = run(strict)
    assert failed.status == FAIL
    [check] = [c for c in failed.failures if c.kind == "address"]
    assert check.subject == "c1" and check.expected == "192.168.136.3/24" and "192.168.138.3/24" in check.observed


def test_conform_follows_the_order_the_real_engine_took():
    scenario = load_scenario(MCV0)
    # A stand-in for a real engine that received 192.168.138.0/24 first (its facts list the subnets so).
    real = run(parse_scenario(MCV0.read_text() + PIN_138, str(MCV0)))
    unpinned = compare(run(scenario), real)
    assert unpinned.status == DIFFERENT
    assert ("address", "c1", "eth0") in {(r.kind, r.node, r.interface) for r in unpinned.differences}
    pinned = real_choices(scenario, real, "docker-20.10")
    assert [(key, order) for key, order, _ in pinned] == [
        ("mcv0 IPv4 subnets", ("192.168.138.0/24", "192.168.136.0/24"))]
    followed = compare(run(replace(scenario, docker_choices=pinned)), real)
    assert followed.status == CONFORMS, [r for r in followed.differences]
    # The command-line order taken by the engine pins nothing new: the emulation's default is that order.
    assert [order for _, order, _ in real_choices(scenario, run(scenario), "docker-20.10")] == [
        ("192.168.136.0/24", "192.168.138.0/24")]


def test_a_pinned_scenario_is_staged_for_a_guest_with_its_choices_and_its_line_numbers(tmp_path):
    scenario = load_scenario(MCV0)
    real = run(parse_scenario(MCV0.read_text() + PIN_138, str(MCV0)))
    pinned = replace(scenario, docker_choices=real_choices(scenario, real, "docker-20.10"))
    [guest_path] = stage_scenarios([pinned], tmp_path, "/out/scenarios")
    staged = load_scenario(tmp_path / Path(guest_path).name)
    assert [(k, o) for k, o, _ in staged.docker_choices] == [(k, o) for k, o, _ in pinned.docker_choices]
    assert [s.location.line for s in staged.steps] == [s.location.line for s in scenario.steps]
    # an unpinned scenario is copied as it is
    [plain] = stage_scenarios([scenario], tmp_path / "..", "/x")
    assert (tmp_path / ".." / Path(plain).name).read_text() == MCV0.read_text()


def test_conform_reads_no_choice_from_a_multi_host_scenario_without_one():
    # Every host's daemon is asked (harness.docker.fleet): a fleet of daemons is no special case.
    scenario = load_scenario(SCENARIOS / "multihost-flat.yaml")
    assert real_choices(scenario, run(scenario), "docker-20.10") == ()


def test_a_refused_run_names_its_networks_in_either_order_and_conform_reads_which():
    scenario = load_scenario(SCENARIOS / "docker-connect-refusals.yaml")
    texts = {err for c in alternatives(scenario) for step in c.plan.steps
             if (err := step.error) and err.startswith("Container cannot be connected to network endpoints")}
    assert texts == {"Container cannot be connected to network endpoints: zeta, alpha",
                     "Container cannot be connected to network endpoints: alpha, zeta"}
    real = run(scenario)
    real.facts = [{**f, "value": f["value"].replace("zeta, alpha", "alpha, zeta")} for f in real.facts]
    [(key, order, _)] = real_choices(scenario, real, "docker-20.10")
    assert key.endswith(" networks") and order == ("alpha", "zeta")
