"""Run identity: who made a namespace, a temp directory or a process, in four hex characters and a worker.

`run_id()` is four hex characters shared by a whole run: taken from `HARNESS_RUN_ID` when the caller
set it (a guest, a Vagrant box, a test that wants to find its own leftovers), from pytest-xdist's
`testrun_uid` through `adopt()` (every worker derives the same one), else drawn once per process. It is
kept here, never written into `os.environ`; `child_env()` is what a process on another machine (a VM, a
Vagrant box) must be given to carry it on. `worker_char()` is the pytest-xdist worker as one character,
and `next_prefix()` the prefix of one session's names: `hx` + run id + worker + sequence (8 characters,
leaving 7 of IFNAMSIZ's 15 for the node). `prefix_candidates()` lists every sequence character from the
next one on, for a backend that must skip prefixes already claimed (two runs given the same
`HARNESS_RUN_ID`, or a killed run's leftovers).
"""

from __future__ import annotations

import os
import re
import secrets
import threading

PREFIX = "hx"
ENV = "HARNESS_RUN_ID"
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_HEX4 = re.compile(r"[0-9a-f]{4}")

_lock = threading.Lock()
_run_id: str | None = None
_sequence = 0


def run_id() -> str:
    global _run_id
    with _lock:
        if _run_id is None:
            given = os.environ.get(ENV, "")
            _run_id = given if _HEX4.fullmatch(given) else secrets.token_hex(2)
        return _run_id


def adopt(uid: str | None) -> str:
    """Take the run id from a shared token (pytest-xdist's testrun_uid) unless HARNESS_RUN_ID names one."""
    global _run_id
    with _lock:
        given = os.environ.get(ENV, "")
        candidate = (uid or "")[:4].lower()
        if _HEX4.fullmatch(given):
            _run_id = given
        elif _HEX4.fullmatch(candidate):
            _run_id = candidate
    return run_id()


def child_env() -> dict[str, str]:
    """The environment a harness started elsewhere (a guest, a box) needs to carry this run's id."""
    return {ENV: run_id()}


def worker_char() -> str:
    """pytest-xdist's worker id (gw0, gw1, ...) as one character, so parallel workers never collide."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    digits = "".join(c for c in worker if c.isdigit())
    if not digits:
        return "m"
    return _ALPHABET[int(digits) % len(_ALPHABET)]


def next_prefix() -> str:
    """A new session's name prefix: hx + run id + worker + a per-process sequence character."""
    global _sequence
    with _lock:
        _sequence += 1
        seq = _ALPHABET[_sequence % len(_ALPHABET)]
    return f"{PREFIX}{run_id()}{worker_char()}{seq}"


def prefix_candidates() -> list[str]:
    """Every prefix of this run and worker, the next in sequence first: the caller claims the first free one."""
    global _sequence
    with _lock:
        _sequence += 1
        start = _sequence
    head = f"{PREFIX}{run_id()}{worker_char()}"
    return [head + _ALPHABET[(start + i) % len(_ALPHABET)] for i in range(len(_ALPHABET))]
