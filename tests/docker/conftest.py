"""Shared by the real-engine comparison tests: a docker backend that can start here, or a skip naming why."""

from __future__ import annotations

import signal

import pytest


@pytest.fixture(autouse=True)
def _keep_sigterm():
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="module")
def docker_backend():
    try:
        from backends.docker import DockerBackend
        from backends.netns import NetnsBackend
    except ImportError as exc:  # pyroute2 missing
        pytest.skip(f"the docker backend cannot be imported: {exc}")
    reason = NetnsBackend().available() or DockerBackend().available()
    if reason:
        pytest.skip(reason)
    return DockerBackend()

