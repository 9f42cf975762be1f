"""harness.proc's registered scripts: `python3 -I -S SCRIPT ARGS` run by `run_many` as the script's `main` in
a fork of this interpreter (no exec), with the outcome an exec would give: output, exit code, deadline."""

from __future__ import annotations

import os
import sys
import time

import pytest

from harness import proc


@pytest.fixture
def script(tmp_path, monkeypatch):
    """Register `main` for a script path of its own (the registry is restored afterwards)."""
    monkeypatch.setattr(proc, "_FORKABLE", dict(proc._FORKABLE))

    def register(main, name="script.py"):
        path = str(tmp_path / name)
        proc.fork_script(path, main)
        return [sys.executable, "-I", "-S", path]
    return register


def test_a_registered_script_runs_in_a_fork_with_its_arguments_output_and_exit_code(script):
    def main(argv):
        sys.stdout.write(f"pid {os.getpid()} ppid {os.getppid()} argv {argv[1:]}\n")
        sys.stderr.write("to stderr\n")
        return 3
    argv = script(main)
    (res,) = proc.run_many([proc.Job([*argv, "a", "b c"], node="n1")], timeout=10)
    assert res.exit_code == 3 and not res.timed_out
    assert res.stdout.endswith(f"ppid {os.getpid()} argv ['a', 'b c']\n")
    assert res.stderr == "to stderr\n"
    assert res.argv == (*argv, "a", "b c") and res.node == "n1"  # the command line stays the evidence


def test_an_exception_in_the_script_is_its_exit_code_1_with_the_traceback(script):
    argv = script(lambda argv: 1 / 0)
    (res,) = proc.run_many([proc.Job(argv)], timeout=10)
    assert res.exit_code == 1 and "ZeroDivisionError" in res.stderr


def test_a_script_past_the_deadline_is_killed_and_marked(script):
    argv = script(lambda argv: time.sleep(60))
    (res,) = proc.run_many([proc.Job(argv)], timeout=0.2)
    assert res.timed_out and res.exit_code == -9


def test_a_long_output_is_read_whole(script):
    argv = script(lambda argv: sys.stdout.write("x" * 300_000) and 0)
    (res,) = proc.run_many([proc.Job(argv)], timeout=10)
    assert res.ok and len(res.stdout) == 300_000


def test_a_job_with_its_own_environment_or_an_unregistered_script_is_execd(script, tmp_path):
    argv = script(lambda argv: 0, name="exit0.py")
    (tmp_path / "exit0.py").write_text("import sys; sys.exit(7)\n")  # what an exec would run
    forked, execd = proc.run_many([proc.Job(argv), proc.Job(argv, env={})], timeout=30)
    assert forked.exit_code == 0 and execd.exit_code == 7


def test_the_forked_child_leads_its_own_process_group(script):
    argv = script(lambda argv: sys.stdout.write(f"{os.getpid()} {os.getpgid(0)}") and 0)
    (res,) = proc.run_many([proc.Job(argv)], timeout=10)
    pid, pgid = res.stdout.split()
    assert pid == pgid
