"""`harness conform` without root: the facts a run records, the diff, the divergences file, the command.

The diff is tested on synthetic results and on the engine's whole flow over the fake kernel session of
test_engine.py: the same scenario emulated with the documented profile and with a deliberately altered
one (moby-29, or a profile whose MAC and gateway knobs are changed) must show differing MACs and gateways,
so the diff is proven able to fail.
"""

from __future__ import annotations

import json
import signal
import textwrap
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_engine import FakeBackend, FakeKernel, as_the_oracle_says

from harness import conform
from harness.cli import main
from harness.conform import (
    CONFORMS,
    DIFFERENT,
    DIFFERS,
    EMULATED_ONLY,
    EQUAL,
    EXPLAINED,
    INFO,
    NOT_COMPARED,
    REAL_ONLY,
    DivergenceFileError,
    compare,
    exit_status,
    fact,
    load_divergences,
    parse_divergences,
    state_facts,
)
from harness.docker import driver
from harness.docker.profiles import get_profile
from harness.engine import Engine
from harness.loader import load_scenario
from harness.results import ERROR, FAIL, PASS, SKIP, ScenarioResult, write_json

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"


@pytest.fixture(autouse=True)
def _keep_sigterm():
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def result(facts, status=PASS, version="docker-20.10 (emulated)", backend="netns", name="s") -> ScenarioResult:
    r = ScenarioResult(name, f"scenarios/{name}.yaml", backend, "6.1", status)
    r.facts = [fact("version", "docker", None, version), *facts]
    return r


BASE = [
    fact("command", "command 1", "docker network create -d macvlan ... pub_net", "ok"),
    fact("mac", "c1", "eth0", "02:42:ac:10:56:0a"),
    fact("address", "c1", "eth0", "172.16.86.10/24"),
    fact("address", "c1", "eth0", "fd11::a/64"),
    fact("reach", "c1", "-> c2 (172.16.86.2)", "reachable"),
]


def rows_by(comparison, status):
    return {(r.kind, r.node, r.interface) for r in comparison.rows if r.status == status}


# -- the diff ------------------------------------------------------------------------------------------


def test_identical_facts_conform_and_the_version_is_shown_not_compared():
    c = compare(result(BASE), result(BASE, version="20.10.24+dfsg1", backend="docker"))
    assert c.status == CONFORMS and c.differences == [] and exit_status([c]) == 0
    version = next(r for r in c.rows if r.kind == "version")
    assert (version.status, version.emulated, version.real) == (INFO, "docker-20.10 (emulated)", "20.10.24+dfsg1")
    # One row per (kind, node, interface): both addresses of c1 eth0 are one row, in address order.
    address = next(r for r in c.rows if r.kind == "address")
    assert address.emulated == "172.16.86.10/24, fd11::a/64" and address.status == EQUAL


def test_a_changed_value_a_missing_fact_and_an_extra_fact_are_differences():
    real = [f for f in BASE if f["kind"] != "reach"]
    real = [{**f, "value": "02:42:ac:10:56:0b"} if f["kind"] == "mac" else f for f in real]
    real.append(fact("address", "c2", "eth0", "172.16.86.2/24"))
    c = compare(result(BASE), result(real, version="20.10.24+dfsg1"))
    assert c.status == DIFFERENT and exit_status([c]) == 1
    assert rows_by(c, DIFFERS) == {("mac", "c1", "eth0")}
    assert rows_by(c, EMULATED_ONLY) == {("reach", "c1", "-> c2 (172.16.86.2)")}
    assert rows_by(c, REAL_ONLY) == {("address", "c2", "eth0")}
    assert len(c.unexplained) == 3
    record = c.to_dict()
    assert record["unexplained"] == 3 and record["real"]["docker"] == "20.10.24+dfsg1"
    mac = next(r for r in record["rows"] if r["kind"] == "mac")
    assert (mac["emulated"], mac["real"], mac["status"], mac["explained_by"]) == \
        ("02:42:ac:10:56:0a", "02:42:ac:10:56:0b", DIFFERS, None)
    json.dumps(record)  # serializable as it is


def test_one_address_more_on_an_interface_is_a_difference():
    real = [*BASE, fact("address", "c1", "eth0", "10.0.0.2/24")]
    c = compare(result(BASE), result(real))
    assert rows_by(c, DIFFERS) == {("address", "c1", "eth0")}


def test_dockers_ids_compare_as_equal_whatever_each_side_made():
    a = [fact("command", "command 2", "docker network create ... two", "error: network dm-0123456789ab is "
              "already using parent interface eth0")]
    b = [fact("command", "command 2", "docker network create ... two", "error: network dm-fedcba987654 is "
              "already using parent interface eth0")]
    assert compare(result(a), result(b)).status == CONFORMS
    c = [fact("command", "command 2", "docker network create ... two", "error: Pool overlaps")]
    assert compare(result(a), result(c)).status == DIFFERENT


@pytest.mark.parametrize("side", ["emulated", "real"])
@pytest.mark.parametrize("status", [SKIP, ERROR])
def test_a_side_that_did_not_run_is_not_compared_never_conforming(side, status):
    bad = result(BASE, status=status)
    bad.reason = "kernel lacks 802.1q VLAN support (CONFIG_VLAN_8021Q)\nmore"
    pair = (bad, result(BASE)) if side == "emulated" else (result(BASE), bad)
    c = compare(*pair)
    assert c.status == NOT_COMPARED and c.rows == []
    assert f"{status}: kernel lacks 802.1q VLAN support (CONFIG_VLAN_8021Q)" in c.reason
    assert ("emulation" if side == "emulated" else "real engine") in c.reason
    assert exit_status([c]) == 3
    assert exit_status([c, compare(result(BASE), result(BASE))]) == 3
    assert exit_status([c, compare(result(BASE), result(BASE[:1]))]) == 1


def test_a_result_without_facts_or_missing_is_not_compared():
    empty = result([])
    empty.facts = []
    assert "recorded no facts" in compare(empty, result(BASE)).reason
    assert compare(result(BASE), None).status == NOT_COMPARED


def test_a_failed_side_is_still_compared():
    # A scenario can fail on the real engine (its expectation is the emulation's): the facts still say why.
    assert compare(result(BASE), result(BASE, status=FAIL)).status == CONFORMS


# -- divergences -----------------------------------------------------------------------------------------

DIVERGENCES = textwrap.dedent("""\
    divergences:
      - scenario: s
        kind: [mac, address]
        node: c1
        real: ["02:42:ac:10:56:0b", "*10.0.0.*"]
        versions: ["20.10.*"]
        explanation: the real engine is random here and the emulation follows the documentation
      - scenario: "*"
        kind: reach
        interface: "-> c2 (*"
        status: emulated only
        versions: "20.10.*"
        explanation: the documentation's c2 is only started on the emulation in this made-up example
    """)


def test_a_known_divergence_explains_a_difference_for_its_versions_only():
    divergences = parse_divergences(DIVERGENCES, "d.yaml")
    real = [f for f in BASE if f["kind"] != "reach"]
    real = [{**f, "value": "02:42:ac:10:56:0b"} if f["kind"] == "mac" else f for f in real]
    c = compare(result(BASE), result(real, version="20.10.24+dfsg1"), divergences)
    assert c.status == EXPLAINED and c.unexplained == [] and exit_status([c]) == 0
    assert {r.divergence.location for r in c.explained} == {"d.yaml:2", "d.yaml:8"}
    assert any(r["explained_by"] and r["explained_by"]["location"] == "d.yaml:2" for r in c.to_dict()["rows"])
    # Another engine version: the same differences are unexplained.
    other = compare(result(BASE), result(real, version="29.0.1"), divergences)
    assert other.status == DIFFERENT and len(other.unexplained) == 2
    # A value the entry does not name is not explained by it.
    wrong = [{**f, "value": "02:42:ac:10:56:99"} if f["kind"] == "mac" else f for f in real]
    assert compare(result(BASE), result(wrong, version="20.10.24+dfsg1"), divergences).status == DIFFERENT


def test_a_status_restricted_divergence_does_not_hide_a_changed_verdict():
    divergences = parse_divergences(DIVERGENCES, "d.yaml")
    real = [{**f, "value": "isolated"} if f["kind"] == "reach" else f for f in BASE]
    c = compare(result(BASE), result(real, version="20.10.24+dfsg1"), divergences)
    assert c.status == DIFFERENT and rows_by(c, DIFFERS) == {("reach", "c1", "-> c2 (172.16.86.2)")}


@pytest.mark.parametrize("text, line, words", [
    ("divergences: [\n", 2, "not valid YAML"),
    ("- a\n", 1, "mapping with the key `divergences`"),
    ("divergence: []\n", 1, "unknown key 'divergence'"),
    ("divergences: {a: 1}\n", 1, "must be a list"),
    ("divergences:\n  - just a string\n", 2, "must be a mapping"),
    ("divergences:\n  - scenario: s\n    kind: mac\n    versions: ['20.10.*']\n", 2, "no 'explanation'"),
    ("divergences:\n  - scenario: s\n    kind: macs\n    versions: ['20.10.*']\n    explanation: " + "x" * 30 + "\n",
     3, "kind 'macs' matches no fact kind"),
    ("divergences:\n  - scenario: s\n    kind: mac\n    versions: []\n    explanation: " + "x" * 30 + "\n",
     4, "versions must not be an empty list"),
    ("divergences:\n  - scenario: s\n    kind: mac\n    versions: ['20.10.*']\n    explanation: because\n",
     5, "at least 20 characters"),
    ("divergences:\n  - scenario: s\n    kind: mac\n    versions: ['20.10.*']\n    explanation: " + "x" * 30 +
     "\n    status: same\n", 6, "status 'same' is not one of"),
    ("divergences:\n  - scenario: s\n    kind: mac\n    kind: address\n", 4, "duplicate key 'kind'"),
    ("divergences:\n  - scenario: s\n    kinds: mac\n", 3, "unknown key 'kinds'"),
    ("divergences:\n  - scenario: {a: b}\n", 2, "scenario must be a string"),
])
def test_a_malformed_divergences_file_is_reported_with_file_and_line(text, line, words):
    with pytest.raises(DivergenceFileError) as info:
        parse_divergences(text, "conformance/divergences.yaml")
    assert str(info.value).startswith(f"conformance/divergences.yaml:{line}: "), str(info.value)
    assert words in str(info.value)


def test_the_shipped_divergences_file_is_valid_and_every_entry_is_explained():
    entries = load_divergences()
    for d in entries:
        assert d.versions and len(d.explanation) >= 20
    assert parse_divergences("", "x") == [] and parse_divergences("divergences:\n", "x") == []


def test_a_missing_divergences_file_is_an_error(tmp_path):
    with pytest.raises(DivergenceFileError, match="no such file"):
        load_divergences(tmp_path / "nope.yaml")


# -- the facts a run records, and a deliberately altered profile -------------------------------------------


def emulate(name: str, profile: str = "docker-20.10") -> ScenarioResult:
    scenario = load_scenario(SCENARIOS / name)
    return Engine(FakeBackend(FakeKernel(ping=as_the_oracle_says(scenario))), profile=profile).run(scenario)


def test_the_engine_records_what_docker_built_and_what_was_seen():
    r = emulate("macvlan-bridge.yaml")
    assert r.status == PASS, r.failure_report()
    facts = {(f["kind"], f["node"], f["interface"]): f["value"] for f in r.facts}
    assert facts[("version", "docker", None)] == "docker-20.10 (emulated)"
    assert facts[("command", "command 2", "docker run --net=pub_net --ip=172.16.86.10 -itd alpine /bin/sh")] == "ok"
    assert facts[("ping", "command 4", "c3 -> 172.16.86.10")] == "reachable"
    assert facts[("network", "pub_net", None)] == "macvlan bridge parent eth0"
    assert facts[("subnet", "pub_net", None)] == "172.16.86.0/24"
    assert facts[("endpoint", "c1", "eth0")] == "pub_net"
    assert facts[("mac", "c1", "eth0")] == "02:42:ac:10:56:0a"
    assert facts[("link", "c2", "eth0")] == "macvlan bridge"
    assert facts[("gateway", "c2", "eth0")] == "172.16.86.1"
    assert facts[("route", "c2", "eth0")] == "default via 172.16.86.1 dev eth0"
    assert facts[("reach", "c1", "-> host (172.16.86.250)")] == "isolated"
    assert facts[("reach", "c2", "-> c1 (172.16.86.10)")] == "reachable"
    # The facts survive the JSON records (a VM guest's results come back that way).
    again = ScenarioResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again.facts == r.facts
    assert compare(r, again).status == CONFORMS


def test_results_without_facts_still_load():
    record = emulate("macvlan-bridge.yaml").to_dict()
    del record["facts"]
    assert ScenarioResult.from_dict(record).facts == []


def test_the_engine_records_dockers_errors_normalized():
    r = emulate("macvlan-errors.yaml")
    commands = {f["node"]: f["value"] for f in r.facts if f["kind"] == "command"}
    assert commands["command 2"] == "error: loopback interface is not a valid macvlan parent link"
    assert commands["command 6"] == "ok"


def test_the_emulation_of_the_same_scenario_twice_conforms():
    assert compare(emulate("macvlan-mcv0-dual-stack.yaml"), emulate("macvlan-mcv0-dual-stack.yaml")).status == CONFORMS


def test_a_deliberately_altered_profile_shows_the_differing_macs():
    documented, current = emulate("macvlan-mcv0-dual-stack.yaml"), emulate("macvlan-mcv0-dual-stack.yaml", "moby-29")
    c = compare(documented, current)
    assert c.status == DIFFERENT and exit_status([c]) == 1
    differing = rows_by(c, DIFFERS)
    assert {("mac", "c1", "eth0"), ("mac", "c2", "eth0")} <= differing
    mac = next(r for r in c.rows if (r.kind, r.node) == ("mac", "c1"))
    assert mac.emulated == "02:42:c0:a8:88:03" and mac.real != mac.emulated


class _Altered:
    """A profile whose knobs are the documented ones except those given."""

    def __init__(self, base, name: str, **knobs):
        self._base, self.name, self._knobs = base, name, knobs

    def __getattr__(self, name):
        if name in self._knobs:
            return self._knobs[name]
        return getattr(self._base, name)


def test_a_monkeypatched_profile_knob_shows_the_differing_macs_and_gateways(monkeypatch):
    original = driver.get_profile

    def altered(name):
        if name == "altered":
            return _Altered(original("docker-20.10"), "altered", mac="random", default_gateway="never")
        return original(name)

    monkeypatch.setattr(driver, "get_profile", altered)
    assert get_profile("docker-20.10").mac == "ip"
    documented = emulate("macvlan-mcv0-dual-stack.yaml")
    changed = emulate("macvlan-mcv0-dual-stack.yaml", "altered")
    c = compare(documented, changed, load_divergences())
    assert c.status == DIFFERENT
    differing = rows_by(c, DIFFERS) | rows_by(c, EMULATED_ONLY)
    assert {("mac", "c1", "eth0"), ("mac", "c2", "eth0"), ("gateway", "c1", "eth0")} <= differing
    gateway = next(r for r in c.rows if (r.kind, r.node) == ("gateway", "c1"))
    assert gateway.emulated == "192.168.136.1 fd11::1" and gateway.real != gateway.emulated


def test_a_kernel_that_reaches_differently_shows_in_the_matrix():
    scenario = load_scenario(SCENARIOS / "macvlan-private.yaml")
    documented = as_the_oracle_says(scenario)
    a = Engine(FakeBackend(FakeKernel(ping=documented))).run(scenario)
    b = Engine(FakeBackend(FakeKernel(ping=lambda src, dst: True))).run(scenario)  # private mode ignored
    c = compare(a, b)
    assert c.status == DIFFERENT
    assert {r.kind for r in c.differences} == {"reach"}
    assert all((r.emulated, r.real) == ("isolated", "reachable") for r in c.differences)


# -- the command -----------------------------------------------------------------------------------------


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_conform_compares_two_run_files_and_writes_json(tmp_path, capsys):
    emulated = emulate("macvlan-bridge.yaml")
    real = replace(emulated, backend="docker", facts=[
        {**f, "value": "20.10.24+dfsg1"} if f["kind"] == "version" else f for f in emulated.facts])
    write_json([emulated], tmp_path / "e.json")
    write_json([real], tmp_path / "r.json")
    out_json = tmp_path / "conform.json"
    code, out, err = run(capsys, "conform", "--compare", str(tmp_path / "e.json"), str(tmp_path / "r.json"),
                         "--json", str(out_json))
    assert code == 0, out + err
    assert "macvlan-bridge" in out and "conforms" in out and "20.10.24+dfsg1" in out
    assert "02:42:ac:10:56:0a" in out  # every fact is shown, not only the differences
    records = json.loads(out_json.read_text())
    assert records[0]["status"] == CONFORMS and records[0]["results"]["real"]["backend"] == "docker"


def test_conform_exits_1_on_an_unexplained_difference_and_highlights_it(tmp_path, capsys):
    emulated = emulate("macvlan-bridge.yaml")
    altered = emulate("macvlan-bridge.yaml", "moby-29")
    write_json([emulated], tmp_path / "e.json")
    write_json([altered], tmp_path / "r.json")
    code, out, err = run(capsys, "conform", "--differences", "--compare", str(tmp_path / "e.json"),
                         str(tmp_path / "r.json"))
    assert code == 1
    assert "DIFFERS" in out and "02:42:ac:10:56:0a" in out and "1 differ" in out
    assert "reach" not in out.split("conformance: emulated vs real")[0]  # --differences: equal rows left out


def test_conform_escapes_untrusted_text(tmp_path, capsys):
    base = [fact("command", "command 1", "docker run [/bold] [red]x", "error: [/x] not markup")]
    write_json([result(base, name="n[/b]")], tmp_path / "e.json")
    write_json([result([], name="n[/b]")], tmp_path / "r.json")
    code, out, err = run(capsys, "conform", "--compare", str(tmp_path / "e.json"), str(tmp_path / "r.json"))
    assert code == 1
    assert "[/x] not markup" in out and "n[/b]" in out and "[red]x" in out


def test_conform_refuses_a_malformed_divergences_file(tmp_path, capsys):
    bad = tmp_path / "d.yaml"
    bad.write_text("divergences:\n  - scenario: s\n    kind: nosuchkind\n")
    code, out, err = run(capsys, "conform", "--divergences", str(bad), "--compare", "a", "b")
    assert code == 2
    assert f"{bad}:3:" in err and "nosuchkind" in err


def test_conform_reports_a_scenario_one_side_skipped_as_not_compared(tmp_path, capsys):
    emulated = emulate("macvlan-bridge.yaml")
    skipped = ScenarioResult("macvlan-bridge", emulated.path, "docker", "6.1", SKIP,
                             reason="docker.io is not installed")
    write_json([emulated], tmp_path / "e.json")
    write_json([skipped], tmp_path / "r.json")
    code, out, err = run(capsys, "conform", "--compare", str(tmp_path / "e.json"), str(tmp_path / "r.json"))
    assert code == 3
    assert "not compared" in out and "docker.io is not installed" in out
    assert "1 conform" not in out


def test_the_module_documents_every_fact_kind():
    for kind in conform.FACT_KINDS:
        assert f"`{kind}`" in conform.__doc__


def _other_subnet_first(facts: list[dict]) -> list[dict]:
    """The facts of a real 20.10 run that started from 192.168.138.0/24 (the CLI's random subnet order)."""
    out = []
    for f in facts:
        if f["kind"] in ("address", "mac", "gateway", "route", "reach"):
            swap = {"192.168.136.": "192.168.138.", "02:42:c0:a8:88:": "02:42:c0:a8:8a:", "fea8:88": "fea8:8a"}
            value, interface = f["value"], f["interface"]
            for old, new in swap.items():
                value = value.replace(old, new)
                interface = interface.replace(old, new) if interface else interface
            f = {**f, "value": value, "interface": interface}
        if f["kind"] == "version":
            f = {**f, "value": "20.10.24+dfsg1"}
        out.append(f)
    return out


def test_the_shipped_file_hides_no_random_subnet_order_conform_pins_it_instead():
    # `harness conform` runs the emulation pinned to the order the engine took (test_choices.py), so the
    # divergences file has no entry for it, and an unpinned comparison shows every fact the order changes.
    emulated = emulate("macvlan-mcv0-dual-stack.yaml")
    real = replace(emulated, backend="docker", facts=_other_subnet_first(emulated.facts))
    divergences = load_divergences()
    c = compare(emulated, real, divergences)
    assert c.status == DIFFERENT and not c.explained
    assert {r.kind for r in c.unexplained} >= {"address", "mac", "gateway", "route", "reach"}
    # And the documented order conforms outright.
    same = replace(emulated, backend="docker", facts=[{**f, "value": "20.10.24+dfsg1"} if f["kind"] == "version"
                                                      else f for f in emulated.facts])
    assert compare(emulated, same, divergences).status == CONFORMS


def test_a_dummy_parent_named_after_each_sides_network_id_is_one_row():
    a = [fact("parent", "host", "dm-a76bac61e69e", "dummy, made by isolated1"),
         fact("network", "isolated1", None, "macvlan bridge parent dm-a76bac61e69e")]
    b = [fact("parent", "host", "dm-2dad9390f408", "dummy, made by isolated1"),
         fact("network", "isolated1", None, "macvlan bridge parent dm-2dad9390f408")]
    c = compare(result(a), result(b))
    assert c.status == CONFORMS
    assert ("parent", "host", "dm-<id>") in rows_by(c, EQUAL)


def test_an_ipvlan_network_without_a_flag_is_a_bridge_flag_network():
    # 20.10 has no -o ipvlan_flag (its ipvlan behaves as the later default, bridge): one fact for both.
    for flag, value in ((None, "ipvlan l2 parent eth0"), ("bridge", "ipvlan l2 parent eth0"),
                        ("private", "ipvlan l2 private parent eth0")):
        net = SimpleNamespace(id="0" * 64, name="n", driver="ipvlan", mode="l2", flag=flag, parent="eth0",
                              internal=False, ipv6=False, pools=[])
        oracle = SimpleNamespace(state=SimpleNamespace(networks={net.id: net}, host_links={}, containers={}))
        assert state_facts(oracle) == [fact("network", "n", None, value)]
