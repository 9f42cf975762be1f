"""The session backends (netns, dry-run) declare their kind, prepare nothing, and name the emulated Docker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backends.base import SESSION, SessionBackend, backend_class
from backends.dryrun import DryRunBackend
from backends.netns import NetnsBackend
from harness.docker.emulated import EmulatedDocker, compile_scenario
from harness.errors import BackendUnavailable
from harness.loader import load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


# --- declared kinds --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["netns", "dry-run"])
def test_session_backends_declare_their_kind(name):
    cls = backend_class(name)  # the registry checks the declared kind against the methods
    assert cls.kind == SESSION and isinstance(cls(), SessionBackend) and not hasattr(cls, "run_batch")


def test_dry_run_prepares_nothing_and_observes_nothing():
    backend = DryRunBackend()
    said = backend.prepare()
    assert "nothing to prepare" in said and "\n" not in said
    with backend.session("x") as session:
        assert session.observes is False
        with session.spawn("c1", ["iperf3", "-s"]) as handle:
            assert handle is None
        assert session.commands == ["ip netns exec c1 iperf3 -s &"]


def test_netns_prepare_says_there_is_nothing_to_prepare_or_why_it_cannot_run():
    backend = NetnsBackend()
    if backend.available():
        with pytest.raises(BackendUnavailable, match="root"):
            backend.prepare()
    else:
        said = backend.prepare()
        assert said.startswith("nothing to prepare") and os.uname().release in said and "\n" not in said


def test_the_docker_under_test_of_a_session_backend_is_the_emulation():
    backend = DryRunBackend()
    compiled = compile_scenario(load_scenario(str(SCENARIOS / "macvlan-bridge.yaml")))
    with backend.session("macvlan-bridge") as session:
        docker = backend.docker(compiled, session)
        assert isinstance(docker, EmulatedDocker) and docker.session is session and docker.compiled is compiled
    assert isinstance(NetnsBackend().docker(compiled, session), EmulatedDocker)
