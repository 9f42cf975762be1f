"""Unit tests of the `harness` command line through harness.cli.main (no root: plan, validate, list, dry-run)."""

from __future__ import annotations

import json
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from harness.checks import error_matches
from harness.cli import main
from harness.loader import load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


@pytest.fixture(autouse=True)
def _keep_sigterm():
    # main() installs its own SIGTERM handler; give pytest's back afterwards.
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def plan_json(capsys, name: str, *extra: str) -> dict:
    code, out, err = run(capsys, "plan", "--json", *extra, str(SCENARIOS / name))
    assert code == 0, err
    return json.loads(out)


# --- validate -----------------------------------------------------------------------------------------------


def test_validate_the_shipped_scenarios(capsys):
    code, out, err = run(capsys, "validate", str(SCENARIOS))
    assert code == 0
    assert out.count("valid") >= len(list(SCENARIOS.glob("*.yaml")))
    assert "invalid" not in out
    assert "macvlan-bridge.yaml (macvlan-bridge)" in out


def test_validate_a_directory_with_one_broken_file(tmp_path, capsys):
    good = (SCENARIOS / "macvlan-bridge.yaml").read_text()
    (tmp_path / "good.yaml").write_text(good)
    (tmp_path / "broken.yaml").write_text(textwrap.dedent("""\
        name: broken
        source: s
        commands:
          - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=eth0 n
          - docker run --net=n --bogus -itd alpine /bin/sh
    """))
    code, out, err = run(capsys, "validate", str(tmp_path))
    assert code == 1
    assert f"{tmp_path / 'broken.yaml'}:5:" in out
    assert "unknown flag: --bogus" in out
    assert f"valid   {tmp_path / 'good.yaml'}" in out


def test_validate_an_empty_directory(tmp_path, capsys):
    code, out, err = run(capsys, "validate", str(tmp_path))
    assert code == 2
    assert "no scenario files found" in err


def test_validate_a_missing_path(tmp_path, capsys):
    code, out, err = run(capsys, "validate", str(tmp_path / "nope"))
    assert code == 2
    assert "no such file or directory" in err


# --- plan ---------------------------------------------------------------------------------------------------


def test_plan_json_for_the_ip_range_example(capsys):
    doc = plan_json(capsys, "macvlan-ip-range.yaml")
    assert doc["scenario"] == "macvlan-ip-range" and doc["profile"] == "docker-20.10"
    assert doc["errors"] == []
    (net,) = doc["networks"]
    assert net["name"] == "macnet32"
    assert (net["driver"], net["mode"], net["parent"], net["parent_created_by_driver"]) == (
        "macvlan", "bridge", "eth0", False)
    assert net["subnets"] == [{"subnet": "192.168.32.0/24", "gateway": "192.168.32.254",
                               "ip_range": "192.168.32.128/25", "aux_addresses": {}}]
    first = doc["containers"][0]
    assert first["name"] == "c1"
    (eth0,) = first["interfaces"]
    assert eth0["name"] == "eth0" and eth0["network"] == "macnet32"
    assert eth0["addresses"] == ["192.168.32.128/24"]
    assert eth0["mac"] == "02:42:c0:a8:20:80"
    assert eth0["routes"][0] == "default via 192.168.32.254 dev eth0"
    assert "vlan" not in doc["required_features"] and "macvlan" in doc["required_features"]


def test_plan_json_for_the_bridge_example(capsys):
    doc = plan_json(capsys, "macvlan-bridge.yaml")
    by_name = {c["name"]: c for c in doc["containers"]}
    assert by_name["c1"]["interfaces"][0]["addresses"] == ["172.16.86.10/24"]
    assert by_name["c2"]["interfaces"][0]["addresses"] == ["172.16.86.2/24"]
    assert by_name["c3"]["transient"] is True and by_name["c3"]["running"] is False


def test_plan_json_for_the_vlan50_example_shows_the_driver_made_parent(capsys):
    doc = plan_json(capsys, "macvlan-vlan50.yaml")
    assert doc["networks"][0]["parent"] == "eth0.50"
    assert doc["networks"][0]["parent_created_by_driver"] is True
    assert {"name": "eth0.50", "kind": "vlan", "parent": "eth0", "vlan_id": 50, "created_by": "driver"} in doc["host_links"]
    assert "vlan" in doc["required_features"]


def test_plan_json_lists_the_failing_commands_of_the_errors_example(capsys):
    doc = plan_json(capsys, "macvlan-errors.yaml")
    got = {e["command"]: e["error"] for e in doc["errors"]}
    assert got == {
        1: "requested macvlan mode 'foo' is not valid, 'bridge' mode is the macvlan driver default",
        2: "loopback interface is not a valid macvlan parent link",
        3: "vlan id must be between 1-4094, received: 5000",
        4: "invalid subinterface vlan name nosuchif0, example formatting is eth0.10",
        5: "no matching subnet for gateway 10.0.0.1",
        7: "Pool overlaps with other one on this address space",
        8: "network with name pub_net already exists",
        9: "Address already in use",
        10: "Invalid address 10.99.0.5: It does not belong to any of this network's subnets",
        11: "network nosuchnet not found",
        12: "Error: No such network: nosuchnet",
    }
    assert doc["errors"][0]["text"].startswith("docker network create -d macvlan --subnet=172.16.86.0/24")
    # and every one is what the scenario file says Docker answers
    scenario = load_scenario(SCENARIOS / "macvlan-errors.yaml")
    for step in scenario.steps:
        if step.expect_error is not None:
            assert error_matches(step.expect_error, got.get(step.index)), step.index


def test_plan_with_another_profile(capsys):
    doc = plan_json(capsys, "macvlan-bridge.yaml", "--profile", "moby-29")
    assert doc["profile"] == "moby-29"
    mac = doc["containers"][0]["interfaces"][0]["mac"]
    assert mac != "02:42:ac:10:56:0a"


def test_plain_plan_prints_ip_commands(capsys):
    code, out, err = run(capsys, "plan", str(SCENARIOS / "macvlan-bridge.yaml"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("# scenario macvlan-bridge")
    assert "ip -n host link add name eth0 type veth peer name p-host netns up" in lines
    assert any(line.startswith("ip -n host link add link eth0 name veth") and line.endswith("type macvlan mode bridge")
               for line in lines)
    assert "ip -n c1 link set eth0 address 02:42:ac:10:56:0a" in lines
    assert "ip -n c1 addr add 172.16.86.10/24 dev eth0" in lines
    assert "ip -n c1 route add default via 172.16.86.1 dev eth0" in lines
    assert "ip -n host link add link eth0 name eth0.50 type vlan id 50" not in out
    assert "eth0.50" not in out
    assert any(line.startswith("ip netns exec c3 ping -c 1 172.16.86.10") for line in lines)
    assert "ip netns del c3" in lines


def test_plain_plan_for_vlan50_creates_the_sub_interface(capsys):
    code, out, err = run(capsys, "plan", str(SCENARIOS / "macvlan-vlan50.yaml"))
    assert code == 0
    assert "ip -n host link add link eth0 name eth0.50 type vlan id 50" in out.splitlines()


def test_plain_plan_shows_dockers_errors(capsys):
    code, out, err = run(capsys, "plan", str(SCENARIOS / "macvlan-errors.yaml"))
    assert code == 0
    assert "#   Docker: Error response from daemon: loopback interface is not a valid macvlan parent link" in out


def test_plan_of_a_broken_file_exits_2_naming_file_and_line(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("name: b\nsource: s\ncommands:\n  - docker network create -d bridge n\n")
    code, out, err = run(capsys, "plan", str(path))
    assert code == 2
    assert f"{path}:4:" in err


# --- run, list, -k ------------------------------------------------------------------------------------------


def test_run_with_an_unknown_backend_names_the_valid_ones(capsys):
    code, out, err = run(capsys, "run", "--backend", "nosuch", "-q", str(SCENARIOS / "macvlan-bridge.yaml"))
    assert code == 2
    assert "unknown backend 'nosuch'" in err
    assert "valid backends: auto" in err
    for name in ("dry-run", "netns"):
        assert name in err


def test_run_on_the_dry_run_backend_renders_and_skips(tmp_path, capsys):
    results = tmp_path / "results.json"
    code, out, err = run(capsys, "run", "--backend", "dry-run", "-q", "--json", str(results),
                         str(SCENARIOS / "macvlan-bridge.yaml"), str(SCENARIOS / "macvlan-vlan50.yaml"))
    assert code == 0
    assert "0 passed, 0 failed, 2 skipped, 0 errors" in out
    records = json.loads(results.read_text())
    assert [r["scenario"] for r in records] == ["macvlan-bridge", "macvlan-vlan50"]
    for r in records:
        assert r["backend"] == "dry-run" and r["status"] == "skip"
        assert r["reason"] == "backend dry-run observes nothing (plan rendered only)"
        assert [s["index"] for s in r["steps"]] == list(range(1, len(r["steps"]) + 1))


def test_runs_sharing_a_claim_dir_split_the_scenarios_between_them(tmp_path, capsys):
    """What the VM backend's guests do: each takes, in the order given, the files no other run has taken."""
    claims, first_json, second_json = tmp_path / "claims", tmp_path / "first.json", tmp_path / "second.json"
    claims.mkdir()
    files = [str(SCENARIOS / n) for n in ("macvlan-bridge.yaml", "macvlan-vlan50.yaml", "macvlan-private.yaml")]
    (claims / "macvlan-vlan50.yaml").mkdir()  # a run that got there first
    code, out, err = run(capsys, "run", "--backend", "dry-run", "-q", "--json", str(first_json),
                         "--claim-dir", str(claims), *files)
    assert code == 0, err
    assert [r["scenario"] for r in json.loads(first_json.read_text())] == ["macvlan-bridge", "macvlan-private"]
    code, out, err = run(capsys, "run", "--backend", "dry-run", "-q", "--json", str(second_json),
                         "--claim-dir", str(claims), *files)
    assert code == 0 and json.loads(second_json.read_text()) == []  # nothing left to take
    assert sorted(p.name for p in claims.iterdir()) == sorted(Path(f).name for f in files)


def test_a_claim_dir_that_does_not_exist_is_an_error_before_anything_runs(tmp_path, capsys):
    code, out, err = run(capsys, "run", "--backend", "dry-run", "-q", "--claim-dir", str(tmp_path / "nope"),
                         str(SCENARIOS / "macvlan-bridge.yaml"))
    assert code == 2 and f"--claim-dir {tmp_path / 'nope'} is not a directory" in err


def test_an_invalid_file_met_in_claim_mode_is_said_and_fails_the_run(tmp_path, capsys):
    (tmp_path / "claims").mkdir()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    code, out, err = run(capsys, "run", "--backend", "dry-run", "-q", "--claim-dir", str(tmp_path / "claims"),
                         str(bad), str(SCENARIOS / "macvlan-bridge.yaml"))
    assert code == 2
    assert "bad.yaml:2: not valid YAML" in out + err
    assert "0 passed, 0 failed, 1 skipped, 0 errors" in out  # the valid one still ran


def test_run_with_k_selects_by_keyword(capsys):
    code, out, err = run(capsys, "run", "--backend", "dry-run", "-q", "-k", "vlan50 and not multihost", str(SCENARIOS))
    assert code == 0
    assert "macvlan-vlan50" in out and "macvlan-vlan60" not in out
    assert "0 passed, 0 failed, 1 skipped, 0 errors" in out


def test_run_with_k_selecting_nothing(capsys):
    code, out, err = run(capsys, "run", "--backend", "dry-run", "-q", "-k", "nothing_matches_this", str(SCENARIOS))
    assert code == 2
    assert "no scenario selected" in err


def test_list_shows_the_kernel_features_each_scenario_needs(capsys):
    code, out, err = run(capsys, "list", str(SCENARIOS))
    assert code == 0
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    features = {name: row.split("│")[3].strip() for name, row in rows.items()}
    assert features["macvlan-vlan50"] == "bridge_vlan_filtering, macvlan, veth, vlan"  # a VLAN-aware switch
    assert features["macvlan-bridge"] == "bridge, macvlan, veth"
    assert features["ipvlan-multi-subnet-210"] == "bridge, dummy, ipvlan, veth"
    assert features["macvlan-dummy-parent"] == "bridge, dummy, macvlan, veth"
    assert "ipv6" in features["macvlan-dual-stack-218"]


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("harness ")


# --- issue #10: untrusted text is printed as text, plans are quoted, one bad file hides nothing ---------------


def test_brackets_in_a_schema_message_are_printed_not_swallowed(tmp_path, capsys):
    path = tmp_path / "markup.yaml"
    path.write_text("name: '[red]x[/red] [/x]'\nsource: s\ncommands:\n  - docker network rm x\n")
    for argv in (["validate"], ["plan"], ["run", "--backend", "dry-run", "-q"]):
        code, out, err = run(capsys, *argv, str(path))
        assert code in (1, 2)
        assert "'[red]x[/red] [/x]' does not match" in out + err


def test_a_container_name_with_markup_is_dockers_error_not_a_markup_error(tmp_path, capsys):
    path = tmp_path / "name.yaml"
    path.write_text("name: t\nsource: s\ncommands:\n"
                    "  - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=eth0 n\n"
                    "  - docker run --net=n --name '[/x]' -itd alpine /bin/sh\n")
    code, out, err = run(capsys, "run", "--backend", "dry-run", "-q", str(path))
    assert code == 2
    assert f"{path}:5:" in err and "Invalid container name ([/x])" in err


def test_run_writes_json_and_junit_before_printing_untrusted_results(tmp_path, capsys, monkeypatch):
    from harness.engine import Engine
    from harness.results import ScenarioResult

    def fake_run(self, scenario):
        return ScenarioResult("[/x]" + scenario.name, scenario.path + "[/y]", "dry[/z]", "[bold]k", "error",
                              reason="[/reason] broke")

    monkeypatch.setattr(Engine, "run", fake_run)
    results, junit = tmp_path / "r.json", tmp_path / "r.xml"
    code, out, err = run(capsys, "run", "--backend", "dry-run", "-q", "--json", str(results), "--junit", str(junit),
                         str(SCENARIOS / "macvlan-bridge.yaml"))
    assert code == 1
    assert json.loads(results.read_text())[0]["scenario"] == "[/x]macvlan-bridge"
    assert junit.exists()
    flat = " ".join(out.split())
    assert "[/x]macvlan-bridge" in flat and "[/reason] broke" in flat and "kernel [bold]k" in flat


def test_run_writes_the_records_even_when_printing_fails(tmp_path, capsys, monkeypatch):
    import harness.cli.run as run_module

    def broken(*args, **kwargs):
        raise RuntimeError("the terminal went away")

    monkeypatch.setattr(run_module, "_print_results", broken)
    results = tmp_path / "r.json"
    with pytest.raises(RuntimeError):
        main(["run", "--backend", "dry-run", "-q", "--json", str(results), str(SCENARIOS / "macvlan-bridge.yaml")])
    assert json.loads(results.read_text())[0]["scenario"] == "macvlan-bridge"


def test_the_plan_quotes_every_name_for_the_shell(tmp_path, capsys):
    import shlex

    path = tmp_path / "quoted.yaml"
    path.write_text(textwrap.dedent("""\
        name: quoted
        source: "s; touch pwned"
        topology:
          host: {parent: 'eth0;rm', address: 10.0.0.250/24}
          router: [10.0.0.1/24]
        commands:
          - docker network create -d macvlan --subnet=10.0.0.0/24 -o "parent=eth0;rm" n
          - docker run --net=n --name web -itd alpine /bin/sh
          - docker run --net=n -it --rm alpine ping -c 1 "web"
    """))
    code, out, err = run(capsys, "plan", str(path))
    assert code == 0, err
    assert "ip -n host link add name 'eth0;rm' type veth peer name p-host netns up" in out
    assert any(line.startswith("ip -n host link add link 'eth0;rm' name veth") for line in out.splitlines())
    for line in out.splitlines():
        if line and not line.startswith("#"):
            words = shlex.split(line, comments=True)
            assert ";" not in " ".join(w for w in words if w != "eth0;rm"), line


def test_plan_comments_cannot_end_early(tmp_path, capsys):
    path = tmp_path / "newline.yaml"
    path.write_text("name: nl\nsource: s\ncommands:\n"
                    "  - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=eth0 n\n"
                    "  - \"docker run --net=n -it --rm alpine ping -c 1 '10.0.0.9\\n\\nrm -rf x'\"\n")
    code, out, err = run(capsys, "plan", str(path))
    assert "ip netns exec c1 ping -c 1 $'10.0.0.9\\x0a\\x0arm -rf x'   # ping -c 1 10.0.0.9" in out
    for line in out.splitlines():
        assert not line.startswith("rm "), out
        assert line.startswith("#") or line.count("'") % 2 == 0, line  # each line a whole command


def test_plan_exits_1_when_docker_refuses_a_command_the_scenario_does_not_expect(tmp_path, capsys):
    path = tmp_path / "refused.yaml"
    path.write_text("name: refused\nsource: s\ncommands:\n"
                    "  - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=lo n\n")
    code, out, err = run(capsys, "plan", str(path))
    assert code == 1
    assert "#   Docker: Error response from daemon: loopback interface is not a valid macvlan parent link" in out
    assert f"{path}:4: Docker answers" in err
    code, out, err = run(capsys, "validate", str(path))
    assert code == 1 and f"invalid {path}:4:" in out


def test_validate_a_directory_with_a_binary_file_checks_the_others(tmp_path, capsys):
    (tmp_path / "good.yaml").write_text((SCENARIOS / "macvlan-bridge.yaml").read_text())
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    (tmp_path / "loop.yaml").symlink_to("loop.yaml")
    code, out, err = run(capsys, "validate", str(tmp_path))
    assert code == 1
    assert f"valid   {tmp_path / 'good.yaml'}" in out
    assert f"invalid {tmp_path / 'binary.yaml'}:2: not UTF-8 text: byte 0x80 at offset 128" in out
    assert f"invalid {tmp_path / 'loop.yaml'}: symlink loop" in out


def test_validate_names_a_symlink_loop_given_directly(tmp_path, capsys):
    (tmp_path / "loop.yaml").symlink_to("loop.yaml")
    code, out, err = run(capsys, "validate", str(tmp_path / "loop.yaml"))
    assert code == 2 and "symlink loop" in err and "no such file" not in err


@pytest.mark.parametrize("text", ["eth0", "eth0;rm -rf /", "a\nb", "it's\\x", "é\x01", "$(id)"])
def test_a_quoted_plan_word_is_the_same_word_to_bash(text):
    import subprocess

    from harness.plan import quote

    assert "\n" not in quote(text)
    assert subprocess.run(["bash", "-c", f"printf %s {quote(text)}"], capture_output=True, text=True).stdout == text


def test_a_missing_path_with_brackets_is_printed_as_it_is(tmp_path, capsys):
    missing = str(tmp_path / "nope[/x].yaml")
    for argv in (["run", "--backend", "dry-run", "-q"], ["validate"], ["plan"], ["list"]):
        code, out, err = run(capsys, *argv, missing)
        assert code in (1, 2)
        assert f"{missing}: no such file or directory" in " ".join((out + err).split())


def test_a_refusal_the_scenario_expects_is_judged_like_any_docker_error(tmp_path, capsys):
    path = tmp_path / "expected.yaml"
    path.write_text(textwrap.dedent("""\
        name: expected
        source: s
        commands:
          - docker network create -d macvlan --subnet=10.0.0.0/24 -o parent=eth0 n
          - command: docker run --net=n --name a/b -itd alpine /bin/sh
            error: Invalid container name (a/b), only * are allowed
          - command: ip link add link eth0 name .. type vlan id 4
            error: "RTNETLINK answers: Invalid argument"
          - docker run --net=n --name web -itd alpine /bin/sh
    """))
    code, out, err = run(capsys, "validate", str(path))
    assert code == 0, out + err
    code, out, err = run(capsys, "plan", str(path))
    assert code == 0
    assert "#   Docker: Error response from daemon: Invalid container name (a/b)" in out
    assert "ip netns add web" in out and "a/b" not in out.replace("# [2] docker run --net=n --name a/b", "") \
        .replace("Invalid container name (a/b)", "")


@pytest.mark.parametrize("argv, words", [
    (["--backend", "[/x]"], "unknown backend '[/x]'"),
    (["--backend", "dry-run", "-k", "[/x]"], "cannot use '[/x]' in a keyword expression"),
])
def test_a_message_built_without_escaping_still_prints(argv, words, capsys):
    code, out, err = run(capsys, "run", "-q", *argv, str(SCENARIOS / "macvlan-bridge.yaml"))
    assert code == 2
    assert words in err and "MarkupError" not in err


def test_only_the_event_loop_finalizer_noise_is_kept_quiet_at_exit(monkeypatch):
    import asyncio.base_events
    import types

    from harness.cli import _unraisable

    seen = []
    monkeypatch.setattr(sys, "__unraisablehook__", seen.append)
    noise = types.SimpleNamespace(exc_value=ValueError("Invalid file descriptor: -1"),
                                  object=asyncio.base_events.BaseEventLoop.__del__)
    _unraisable(noise)
    assert seen == []
    other = types.SimpleNamespace(exc_value=ValueError("something else"), object=print)
    _unraisable(other)
    assert seen == [other]


def test_clean_removes_a_dead_runs_docker_daemon_directory_and_keeps_nothing_else(tmp_path, monkeypatch, capsys):
    # A daemon directory whose run is gone (no owner record for its prefix): what a killed real-engine run
    # leaves. Another directory that only looks similar is not the harness's and stays.
    monkeypatch.setenv("HARNESS_DOCKER_DIR", str(tmp_path))
    stale = tmp_path / "hxdead00-docker"
    (stale / "data").mkdir(parents=True)
    (stale / "data" / "leftover").write_text("x")
    foreign = tmp_path / "someone-docker"
    foreign.mkdir()
    code, out, _ = run(capsys, "clean")
    assert code == 0
    assert f"removed 1 leftover Docker daemon directories: {stale}" in " ".join(out.split())
    assert not stale.exists() and foreign.exists()
