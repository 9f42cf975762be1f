"""The namespace session's commands and owner records, on real namespaces (root).

Commands run through `harness.proc`: inside the node's namespace (checked against the namespace file's
inode, not the code's own word), a program that does not exist is an exit-127 result, and a command past
its deadline is killed with its whole process group. Owner records name the scenario; a record whose
PID now belongs to another process is a dead owner, and `clean_leftovers` removes its namespaces.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import pytest

from harness.errors import CommandFailed
from harness.plan import AddLink, CreateNode, MoveLink

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def backend():
    from backends.netns import NetnsBackend

    backend = NetnsBackend()
    if backend.available():
        pytest.skip(backend.available())
    return backend


@pytest.fixture
def session(backend):
    with backend.session("netns-session-test") as session:
        session.apply(CreateNode("host", "host"))
        session.apply(CreateNode("c1", "container"))
        yield session


def netns_inode(session, node: str) -> int:
    return os.stat(f"/run/netns/{session.physical_name(node)}").st_ino


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"  # a zombie is dead, only not yet reaped


def start_time(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 1:].split()[22 - 3])


# --- operations ------------------------------------------------------------------------------------------


def test_a_link_is_found_by_name_in_its_own_namespace_only(session):
    from backends.netns import _ifindex

    session.apply(AddLink("host", "hxv0", "veth", peer="hxv1", peer_node="host"))
    host, c1 = (session.sockets[session.physical_name(n)] for n in ("host", "c1"))
    assert _ifindex(host, "hxv0") == session.handles[session.physical_name("host")].link_lookup(ifname="hxv0")[0]
    assert _ifindex(c1, "hxv0") is None and _ifindex(host, "lo") == 1
    assert _ifindex(host, "hxv0-but-longer-than-ifnamsiz") is None  # never cut short to another name


def test_a_move_renames_the_link_in_its_new_namespace(session):
    from backends.netns import _ifindex

    session.apply(AddLink("host", "hxm0", "veth", peer="hxm1", peer_node="host"))
    session.apply(MoveLink("host", "hxm0", "c1", "eth0"))
    host, c1 = (session.sockets[session.physical_name(n)] for n in ("host", "c1"))
    assert _ifindex(host, "hxm0") is None and _ifindex(c1, "hxm0") is None
    assert _ifindex(c1, "eth0") is not None and _ifindex(host, "hxm1") is not None


# --- commands ---------------------------------------------------------------------------------------------


def test_run_many_runs_each_job_in_its_node(session):
    results = session.run_many([("host", ["readlink", "/proc/self/ns/net"]), ("c1", ["readlink", "/proc/self/ns/net"]),
                                ("c1", ["ip", "-o", "link", "show"])], timeout=10)
    assert [r.node for r in results] == ["host", "c1", "c1"] and all(r.ok for r in results), results
    assert results[0].stdout.strip() == f"net:[{netns_inode(session, 'host')}]"
    assert results[1].stdout.strip() == f"net:[{netns_inode(session, 'c1')}]"
    # `ip` enters the namespace itself (`ip -n`): a fresh node has only its loopback.
    assert [line.split(":")[1].strip() for line in results[2].stdout.splitlines()] == ["lo"]
    assert results[2].argv == ("ip", "-n", session.physical_name("c1"), "-o", "link", "show")


def test_a_program_that_does_not_exist_is_exit_127_not_an_exception(session):
    missing, present = session.run_many([("c1", ["hx-no-such-program", "-x"]), ("c1", ["true"])], timeout=10)
    assert missing.exit_code == 127 and not missing.ok and not missing.timed_out
    assert missing.node == "c1" and "hx-no-such-program" in missing.stderr
    assert present.ok  # the rest of the batch ran
    assert session.run("c1", ["hx-no-such-program"]).exit_code == 127


def test_an_unknown_node_raises_before_anything_starts(session):
    with pytest.raises(KeyError, match="nowhere"):
        session.run_many([("c1", ["true"]), ("nowhere", ["true"])])


def test_a_timed_out_command_is_killed_with_its_process_group(session):
    t0 = time.monotonic()
    (result,) = session.run_many([("c1", ["sh", "-c", "sleep 30 & echo $!; sleep 30"])], timeout=1)
    assert time.monotonic() - t0 < 10
    assert result.timed_out and not result.ok and result.exit_code < 0
    background = int(result.stdout.split()[0])  # the child the shell started, in the same group
    deadline = time.monotonic() + 5
    while alive(background) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(background), f"sleep {background} outlived the timeout of the shell that started it"


def test_spawn_runs_in_the_node_and_keeps_its_output_after_the_block(session):
    script = "echo ready; echo complaint >&2; sleep 30 & echo $!; wait"
    with session.spawn("c1", ["sh", "-c", script]) as proc:
        assert os.readlink(f"/proc/{proc.pid}/ns/net") == f"net:[{netns_inode(session, 'c1')}]"
        deadline = time.monotonic() + 5
        while len(proc.output()[0].split()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        child = int(proc.output()[0].split()[1])
        assert alive(proc.pid) and alive(child) and proc.poll() is None
    assert not alive(proc.pid) and proc.poll() is not None
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child), "the spawned shell's child outlived the block"
    out, err = proc.output()
    assert out.splitlines()[0] == "ready" and err == "complaint\n"


def test_spawn_of_a_program_that_does_not_exist_fails_with_127(session):
    with pytest.raises(CommandFailed) as caught, session.spawn("c1", ["hx-no-such-program"]):
        pass
    assert caught.value.exit_code == 127


# --- owner records ----------------------------------------------------------------------------------------


def test_a_session_records_its_scenario_and_clean_names_it(backend):
    import backends.netns as nb

    with backend.session("macvlan-owner-test") as session:
        session.apply(CreateNode("host", "host"))
        prefix = session.prefix
        record = json.loads(Path(nb.OWNERS_DIR, f"{prefix}.pid").read_text())
        assert record["pid"] == os.getpid() and record["scenario"] == "macvlan-owner-test"
        assert record["starttime"] == start_time(os.getpid())
        removed, kept = nb.clean_leftovers(match=prefix)
        assert removed == []
        assert kept == [f"{session.physical_name('host')} (scenario macvlan-owner-test, pid {os.getpid()})"]
        assert os.path.exists(f"/run/netns/{session.physical_name('host')}")
    assert not Path(nb.OWNERS_DIR, f"{prefix}.pid").exists()


def test_clean_removes_a_namespace_whose_owner_pid_was_reused(backend):
    from pyroute2 import netns as pyns

    import backends.netns as nb

    run = secrets.token_hex(2)
    reused, live = f"hx{run}m8", f"hx{run}m9"
    names = [f"{reused}-host", f"{live}-host"]
    for name in names:
        pyns.create(name)
    try:
        os.makedirs(nb.OWNERS_DIR, exist_ok=True)
        me = os.getpid()
        # This process's PID, but a start time it never had: the owner that wrote it is gone.
        Path(nb.OWNERS_DIR, f"{reused}.pid").write_text(json.dumps(
            {"pid": me, "scenario": "gone", "started": "2024-01-01T00:00:00+00:00", "starttime": start_time(me) - 1}))
        Path(nb.OWNERS_DIR, f"{live}.pid").write_text(json.dumps(
            {"pid": me, "scenario": "still-here", "started": "2024-01-01T00:00:00+00:00", "starttime": start_time(me)}))
        removed, kept = nb.clean_leftovers(match=f"hx{run}")
        assert removed == [f"{reused}-host"]
        assert kept == [f"{live}-host (scenario still-here, pid {me})"]
        assert not os.path.exists(f"/run/netns/{reused}-host") and os.path.exists(f"/run/netns/{live}-host")
        assert not Path(nb.OWNERS_DIR, f"{reused}.pid").exists()
    finally:
        nb._release(live)
        nb._release(reused)
        for name in names:
            if os.path.exists(f"/run/netns/{name}"):
                pyns.remove(name)


def test_the_capability_probe_claims_its_namespace_under_its_own_label(backend, monkeypatch):
    import backends.netns as nb
    import backends.netns_owners as nbo

    seen = []
    original = nbo._claim
    def claim(prefix, label):
        seen.append((prefix, label))
        return original(prefix, label)

    monkeypatch.setattr(nbo, "_claim", claim)
    nb.probe_capabilities.cache_clear()
    try:
        caps = nb.probe_capabilities()
    finally:
        nb.probe_capabilities.cache_clear()
    assert caps["veth"].available
    assert [label for _, label in seen] == ["capability probe"]
    assert not Path(nbo.OWNERS_DIR, f"{seen[0][0]}.pid").exists()  # released when done
