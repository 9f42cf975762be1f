"""Owner records of the namespace backend: who owns a prefix's namespaces, read back tolerantly.

No root needed: the records directory and the namespace directory are temporary ones, and removing a
"namespace" there is unlinking a plain file. The process start time the records rely on is read here
independently, from /proc/<pid>/stat, so the code under test does not grade itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

import backends.netns_owners as nbo


@pytest.fixture
def owners(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "owners"
    monkeypatch.setattr(nbo, "OWNERS_DIR", str(directory))
    return directory


@pytest.fixture
def netns_dir(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "netns"
    directory.mkdir()
    monkeypatch.setattr(nbo, "NETNS_DIR", str(directory))
    monkeypatch.setattr(nbo, "_remove_netns", lambda name: os.unlink(directory / name))
    return directory


def start_time(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat, counted after the command name's closing parenthesis."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 1:].split()[22 - 3])


def write_record(owners: Path, prefix: str, content) -> None:
    owners.mkdir(exist_ok=True)
    (owners / f"{prefix}.pid").write_text(content if isinstance(content, str) else json.dumps(content))


@pytest.fixture
def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


# --- the record ------------------------------------------------------------------------------------------


def test_a_claim_names_the_process_its_start_time_and_the_scenario(owners):
    before = datetime.now().astimezone()
    nbo._claim("hxab12m1", "macvlan-bridge")
    record = json.loads((owners / "hxab12m1.pid").read_text())
    assert set(record) == {"pid", "scenario", "started", "starttime"}
    assert record["pid"] == os.getpid() and record["scenario"] == "macvlan-bridge"
    assert record["starttime"] == start_time(os.getpid())
    started = datetime.fromisoformat(record["started"])
    assert started.tzinfo is not None and abs((started - before).total_seconds()) < 5
    assert [p.name for p in owners.iterdir()] == ["hxab12m1.pid"]  # no temporary file left beside it

    owner = nbo._live_owner("hxab12m1")
    assert owner is not None and owner.pid == os.getpid() and owner.scenario == "macvlan-bridge"
    assert owner.describe() == f"scenario macvlan-bridge, pid {os.getpid()}"


def test_release_removes_the_record_and_the_empty_directory(owners):
    nbo._claim("hxab12m1", "a")
    nbo._claim("hxab12m2", "b")
    nbo._release("hxab12m1")
    assert [p.name for p in owners.iterdir()] == ["hxab12m2.pid"]  # another run's record stays
    nbo._release("hxab12m2")
    assert not owners.exists()
    nbo._release("hxab12m3")  # nothing to release: fine


def test_a_reused_pid_is_not_the_owner(owners):
    # The PID is alive, but the process that has it started at another time than the owner did.
    live = os.getpid()
    write_record(owners, "hxab12m1", {"pid": live, "scenario": "macvlan-bridge", "started": "2024-01-01T00:00:00+00:00",
                                      "starttime": start_time(live) - 1})
    assert nbo._read_owner("hxab12m1").pid == live  # the record itself reads fine
    assert nbo._live_owner("hxab12m1") is None


def test_a_live_owner_with_a_matching_start_time_is_alive(owners):
    with subprocess.Popen(["sleep", "30"]) as child:
        try:
            write_record(owners, "hxab12m1", {"pid": child.pid, "scenario": "ipvlan-l2",
                                              "started": "2024-01-01T00:00:00+00:00", "starttime": start_time(child.pid)})
            owner = nbo._live_owner("hxab12m1")
            assert owner is not None and (owner.pid, owner.scenario) == (child.pid, "ipvlan-l2")
        finally:
            child.kill()
        child.wait()
    assert nbo._live_owner("hxab12m1") is None  # once it is gone


def test_a_zombie_owner_is_dead(owners):
    child = subprocess.Popen(["true"])
    stat = Path(f"/proc/{child.pid}/stat")
    deadline = time.monotonic() + 10
    while stat.read_text().split(")")[-1].split()[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        write_record(owners, "hxab12m1", {"pid": child.pid, "scenario": "x", "started": "", "starttime": None})
        assert nbo._live_owner("hxab12m1") is None
    finally:
        child.wait()


def test_an_old_plain_pid_record_is_still_understood(owners, dead_pid):
    write_record(owners, "hxab12m1", f"{os.getpid()}\n")
    owner = nbo._live_owner("hxab12m1")
    assert owner is not None and owner.pid == os.getpid() and owner.scenario == "" and owner.starttime is None
    assert owner.describe() == f"pid {os.getpid()}"
    write_record(owners, "hxab12m2", str(dead_pid))
    assert nbo._read_owner("hxab12m2").pid == dead_pid and nbo._live_owner("hxab12m2") is None


@pytest.mark.parametrize("content", ["", "not json", "0", "-5", "true", "[1, 2]", '{"pid": "42"}', '{"scenario": "x"}',
                                     '{"pid": true}'])
def test_an_unreadable_record_names_no_owner(owners, content):
    write_record(owners, "hxab12m1", content)
    assert nbo._read_owner("hxab12m1") is None and nbo._live_owner("hxab12m1") is None


def test_no_record_names_no_owner(owners):
    assert nbo._read_owner("hxab12m1") is None and nbo._live_owner("hxab12m1") is None


def test_a_record_without_start_time_falls_back_to_the_pid(owners):
    write_record(owners, "hxab12m1", {"pid": os.getpid(), "scenario": "s"})
    owner = nbo._live_owner("hxab12m1")
    assert owner is not None and owner.scenario == "s" and owner.starttime is None


# --- clean ------------------------------------------------------------------------------------------------


def test_clean_removes_the_dead_and_names_whose_it_keeps(owners, netns_dir, dead_pid):
    names = ["hxab12m1-host", "hxab12m1-up", "hxab12m2-host", "hxab12m3-c1", "hxab12m4-rt", "hxkeepme", "other"]
    for name in names:
        (netns_dir / name).touch()
    nbo._claim("hxab12m1", "macvlan-bridge")  # a live session of this process
    write_record(owners, "hxab12m2", {"pid": os.getpid(), "scenario": "reused", "starttime": start_time(os.getpid()) + 7})
    write_record(owners, "hxab12m3", str(dead_pid))  # an old record of a dead run
    # hxab12m4: no record at all (a run killed before it wrote one, or one whose record was cleaned)

    removed, kept = nbo.clean_leftovers()

    me = os.getpid()
    assert kept == [f"hxab12m1-host (scenario macvlan-bridge, pid {me})", f"hxab12m1-up (scenario macvlan-bridge, pid {me})"]
    assert removed == ["hxab12m2-host", "hxab12m3-c1", "hxab12m4-rt"]
    assert sorted(p.name for p in netns_dir.iterdir()) == ["hxab12m1-host", "hxab12m1-up", "hxkeepme", "other"]
    assert sorted(p.name for p in owners.iterdir()) == ["hxab12m1.pid"]  # the dead owners' records went too


def test_clean_can_be_narrowed_to_one_run(owners, netns_dir):
    for name in ("hxab12m1-host", "hxcd34m1-host"):
        (netns_dir / name).touch()
    assert nbo.clean_leftovers(match="hxcd34") == (["hxcd34m1-host"], [])
    assert [p.name for p in netns_dir.iterdir()] == ["hxab12m1-host"]
