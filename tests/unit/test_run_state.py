"""Run state without root: namespace names checked before any syscall, exclusive owner claims under
stress, temporary directories that name their owner, signal delivery that is never lost, and the
command line's early errors (unwritable --json/--junit, a --kernel that does not exist, missing tools).

The namespace and records directories are temporary ones here; "processes" are this one and children it
starts and ends itself.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
from pathlib import Path

import pytest

import backends.netns as nb
import backends.netns_owners as nbo
from harness import proc
from harness.errors import HarnessError

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


@pytest.fixture
def owners(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "owners"
    monkeypatch.setattr(nbo, "OWNERS_DIR", str(directory))
    return directory


@pytest.fixture
def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


# --- namespace names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hx1234m1-host", "hx1234m1-c1", "a", "x.y_z-1", "A" * 15])
def test_a_good_namespace_name_passes(name):
    assert nb.check_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x", "/run/netns/x", "hx1234m1-a/b", "a b", "c\n1",
                                  "A" * 16, "hx1234m1-é", "x\0y", None, b"bytes"])
def test_a_bad_namespace_name_is_refused(name):
    with pytest.raises(HarnessError, match="invalid network namespace name"):
        nb.check_name(name)


def test_removing_a_bad_name_touches_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").write_text("keep")
    touched = []
    monkeypatch.setattr(nbo.netns, "remove", lambda name: touched.append(name))
    with pytest.raises(HarnessError):
        nbo._remove_netns("../x")
    with pytest.raises(HarnessError):
        nbo._remove_netns("x/..")
    assert touched == [] and (tmp_path / "x").read_text() == "keep"


# --- owner claims -------------------------------------------------------------------------------------------


def test_a_claim_is_exclusive(owners, dead_pid):
    assert nbo._claim("hxab12m1", "first") is True
    assert nbo._claim("hxab12m1", "second") is False  # even by the same process: one claim, one owner
    assert nbo._read_owner("hxab12m1").scenario == "first"
    owners.joinpath("hxab12m2.pid").write_text(str(dead_pid))  # a killed run's record: not taken over
    assert nbo._claim("hxab12m2", "third") is False
    assert sorted(p.name for p in owners.iterdir()) == ["hxab12m1.pid", "hxab12m2.pid"]  # no temporary file


def test_a_prefix_claimed_or_used_is_skipped(owners, tmp_path, monkeypatch):
    netns_dir = tmp_path / "netns"
    netns_dir.mkdir()
    monkeypatch.setattr(nbo, "NETNS_DIR", str(netns_dir))
    candidates = ["hxab12m1", "hxab12m2", "hxab12m3"]
    monkeypatch.setattr(nbo, "prefix_candidates", lambda: list(candidates))
    nbo._claim("hxab12m1", "a live run")
    (netns_dir / "hxab12m2-up").touch()  # a killed run's namespace, no record
    assert nbo._claim_prefix("mine") == "hxab12m3"
    with pytest.raises(HarnessError, match="every namespace prefix of this run .* is in use"):
        nbo._claim_prefix("one too many")


def _claim_and_release(directory: str, worker: int, cycles: int, queue) -> None:
    nbo.OWNERS_DIR = directory
    failures = 0
    for i in range(cycles):
        prefix = f"hx{worker:02x}{i % 16:x}0m1"
        try:
            if not nbo._claim(prefix, "stress"):
                failures += 1
            nbo._release(prefix)
        except OSError:
            failures += 1
    queue.put(failures)


def test_claims_never_fail_while_other_runs_release_under_stress(tmp_path):
    """Eight processes claim and release at once; each release may remove the emptied directory while
    another process is between creating it and writing its record (measured: about 7 % of claims failed
    with FileNotFoundError before claims retried)."""
    workers, cycles = 8, 400
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_claim_and_release, args=(str(tmp_path / "owners"), w, cycles, queue))
             for w in range(workers)]
    for p in procs:
        p.start()
    failures = sum(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    print(f"\n{workers * cycles} claims by {workers} processes at once, {failures} failed")
    assert failures == 0


# --- temporary directories ----------------------------------------------------------------------------------


def test_clean_removes_dead_runs_temp_dirs_only(tmp_path, dead_pid):
    me, start = os.getpid(), proc.process_start(os.getpid())
    dead = [f"hxspawn-{dead_pid}.123-abc", f"hxvm-{dead_pid}.1-x", f"hxctl-{dead_pid}.1-y", f"hxvm-share-{dead_pid}.1-z",
            f"hxvm-{me}.{start + 1}-reused"]  # this PID, another start time: a dead owner whose PID was reused
    live = [f"hxspawn-{me}.{start}-abc", f"hxvm-share-{me}.{start}-def"]
    foreign = ["hxspawn-oldstyle", "hxsomething", "other-123.4-x"]
    for name in dead + live + foreign:
        (tmp_path / name).mkdir()
    for name, owners_line in (("hxbatch-dead", f"{dead_pid}.5\n"), ("hxbatch-live", f"{dead_pid}.5\n{me}.{start}\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / proc.OWNERS_FILE).write_text(owners_line)
    (tmp_path / "hxbatch-noowners").mkdir()
    removed, kept = proc.clean_temp_dirs(str(tmp_path))
    assert sorted(Path(p).name for p in removed) == sorted([*dead, "hxbatch-dead"])
    assert sorted(Path(p).name for p in kept) == sorted([*live, "hxbatch-live"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*live, *foreign, "hxbatch-live", "hxbatch-noowners"])


def test_a_temp_dir_names_its_owner(tmp_path, monkeypatch):
    monkeypatch.setattr(proc.tempfile, "tempdir", str(tmp_path))
    path = proc.temp_dir("vm")
    assert Path(path).name.startswith(f"hxvm-{os.getpid()}.{proc.process_start(os.getpid())}-")
    assert proc.temp_dir_alive(path) is True
    proc.add_owner(tmp_path)
    assert (tmp_path / proc.OWNERS_FILE).read_text() == proc.owner_tag() + "\n"


# --- signals ------------------------------------------------------------------------------------------------


@pytest.fixture
def handlers():
    previous = proc.handle_signals()
    yield
    proc.finish_signals(0, previous)


def test_a_signal_inside_a_deferred_section_is_raised_when_it_ends(handlers):
    reached = False
    with pytest.raises(SystemExit) as caught:
        with proc.deferred_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # many bytecode boundaries: the handler has run by now, and not raised
                pass
            reached = True
    assert reached and caught.value.code == 128 + signal.SIGTERM
    assert proc.signal_received() == signal.SIGTERM


def test_a_signal_during_a_fork_kills_the_child_and_is_raised(handlers, monkeypatch):
    # The at-fork hooks (logging's) run Python code in the parent right after fork: a signal handled
    # there used to vanish. Here the signal arrives while Popen runs; the child must not outlive it.
    started = []
    real_popen = proc.subprocess.Popen

    def popen(*args, **kwargs):
        child = real_popen(*args, **kwargs)
        started.append(child)
        os.kill(os.getpid(), signal.SIGINT)
        return child

    monkeypatch.setattr(proc.subprocess, "Popen", popen)
    with pytest.raises(KeyboardInterrupt):
        proc.run(["sleep", "30"])
    assert started and started[0].poll() is not None  # killed with its group, and reaped


def test_a_swallowed_signal_still_decides_the_exit_status(handlers):
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
    except SystemExit:
        pass  # what an at-fork hook or a __del__ does with it: printed, dropped
    with proc.deferred_signals():  # a later section does not raise it again: it was raised once
        pass
    assert proc.finish_signals(0, {}) == 128 + signal.SIGTERM


def test_a_signal_during_the_undos_waits_until_every_undo_ran(handlers):
    done = []

    def interrupted_undo():
        os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of a normal teardown
        for _ in range(1000):
            pass
        done.append("second")

    with pytest.raises(KeyboardInterrupt):
        with proc.UndoStack() as stack:
            stack.callback(done.append, "first")
            stack.callback(interrupted_undo)
    assert done == ["second", "first"]


def test_another_threads_section_defers_nothing(handlers):
    # Handlers run in the main thread, which a worker's fork (a VM of a kernel matrix) never blocks:
    # deferring there would only hold the main thread's signal back.
    import threading

    seen = []

    def worker():
        with proc.deferred_signals():
            seen.append(proc._signals.deferring)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [0]


def test_no_signal_keeps_the_status(handlers):
    with proc.deferred_signals():
        pass
    assert proc.signal_received() is None
    assert proc.finish_signals(1, {}) == 1


# --- the command line's early errors -------------------------------------------------------------------------


@pytest.fixture
def keep_signal_handlers():
    previous = {sig: signal.getsignal(sig) for sig in proc.SIGNALS}
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("option", ["--json", "--junit"])
@pytest.mark.parametrize("where", ["missing-dir/out", "a-directory", "read-only/out"])
def test_an_unwritable_output_is_an_error_before_anything_runs(tmp_path, capsys, keep_signal_handlers, monkeypatch,
                                                               option, where):
    from harness.cli import main

    (tmp_path / "a-directory").mkdir()
    (tmp_path / "read-only").mkdir()
    real_open = os.open

    def refusing_open(path, flags, *args):  # root ignores permission bits: a read-only file system, then
        if "read-only" in os.fspath(path) and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(30, os.strerror(30), path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing_open)
    ran = []
    monkeypatch.setattr("harness.cli.run.selected_scenarios", lambda *a, **k: ran.append(a) or [])
    code = main(["run", "--backend", "dry-run", option, str(tmp_path / where), str(SCENARIOS / "macvlan-bridge.yaml")])
    out, err = capsys.readouterr()
    assert code == 2 and ran == [], out + err
    assert f"cannot write {option} {tmp_path / where}" in " ".join((out + err).split())
    assert "Traceback" not in out + err
    assert list((tmp_path / "a-directory").iterdir()) == [] and list((tmp_path / "read-only").iterdir()) == []


def test_a_writable_output_is_left_as_it_was(tmp_path, capsys, keep_signal_handlers):
    from harness.cli.run import _unwritable_outputs

    existing = tmp_path / "old.json"
    existing.write_text("previous results")

    class Args:
        json = str(existing)
        junit = str(tmp_path / "new.xml")

    assert _unwritable_outputs(Args) is None
    assert existing.read_text() == "previous results" and not (tmp_path / "new.xml").exists()


def test_a_kernel_that_does_not_exist_is_an_error_naming_it(tmp_path, capsys, keep_signal_handlers):
    from harness.cli import main

    missing = tmp_path / "nonexistent" / "vmlinuz"
    code = main(["run", "--backend", "vm", "--kernel", str(missing), str(SCENARIOS / "macvlan-bridge.yaml")])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert f"VM kernel {missing} (--kernel) does not exist" in " ".join((out + err).split())


@pytest.mark.parametrize(("tool", "message"), [("ip", "iproute2 is not installed: `ip` not found"),
                                               ("ping", "iputils-ping is not installed: `ping` not found")])
def test_a_missing_tool_makes_the_netns_backend_unavailable_and_doctor_says_so(monkeypatch, capsys,
                                                                               keep_signal_handlers, tool, message):
    import shutil

    from harness.cli import main

    real_which = shutil.which
    monkeypatch.setattr(nb.os, "geteuid", lambda: 0)
    monkeypatch.setattr(nb.shutil, "which", lambda name, *a, **k: None if name == tool else real_which(name, *a, **k))
    assert nb.NetnsBackend().available() == message
    code = main(["doctor", str(SCENARIOS / "macvlan-bridge.yaml")])
    out, _ = capsys.readouterr()
    assert code == 0 and message in " ".join(out.split()).replace("│ ", "")
