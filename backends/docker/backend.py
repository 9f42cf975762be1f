"""`DockerBackend`: a session backend whose Docker is a real engine, on this machine's kernel.

Cheap checks only in `available()` (root, the docker.io binaries, namespaces, the offline image or
the busybox to build it); `capabilities()` are the netns backend's (the same kernel creates the links,
whoever asks); `prepare()` builds the offline image; `session(label)` opens the world (a `NetnsSession`)
and wraps it in a `DockerSession`; `docker(compiled, session)` is the `DockerUnderTest` the engine uses:
a `RealDocker`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from backends.base import SESSION, Capability, unavailable_everywhere
from backends.docker.daemon import missing_binaries
from backends.docker.image import build_image, cached_image, default_cache_dir, find_busybox
from backends.docker.real import RealDocker, RealFleet
from backends.docker.session import DockerSession
from harness.errors import BackendUnavailable


def docker_base_dir() -> str:
    """Where each run's daemon keeps its data and exec roots (`<dir>/<prefix>-docker`)."""
    return os.environ.get("HARNESS_DOCKER_DIR", "/tmp")

class DockerBackend:
    name = "docker"
    description = ("a real Docker 20.10 engine (docker.io) started privately in the emulated Docker host's "
                   "namespace; runs the documented commands verbatim (needs root)")
    kind = SESSION

    def __init__(self, cache_dir: str | None = None, base_dir: str | None = None):
        from backends.netns import NetnsBackend  # pyroute2 only when this backend is used

        self._netns = NetnsBackend()
        self._cache_dir = Path(cache_dir) if cache_dir else None
        self.base_dir = base_dir or docker_base_dir()
        self.last_session: DockerSession | None = None  # for tests and reports: timings, leftovers

    def cache_dir(self) -> Path:
        return self._cache_dir or default_cache_dir()

    def available(self) -> str | None:
        if os.geteuid() != 0:
            return "the docker backend needs root (it starts dockerd in a network namespace)"
        missing = missing_binaries()
        if missing:
            return f"docker.io is not installed ({', '.join(missing)} missing; apt-get install docker.io)"
        reason = self._netns.available()
        if reason:
            return reason
        if find_busybox() is None and cached_image(self.cache_dir()) is None:
            return "no static busybox to build the offline image from (apt-get install busybox-static)"
        return None

    def capabilities(self) -> dict[str, Capability]:
        reason = self.available()
        if reason:
            return unavailable_everywhere(reason)
        return self._netns.capabilities()

    def kernel_release(self) -> str:
        return self._netns.kernel_release()

    def prepare(self) -> str:
        reason = self.available()
        if reason:
            raise BackendUnavailable(reason)
        path = build_image(self.cache_dir())
        return f"offline image (busybox rootfs) ready: {path}"

    @contextmanager
    def session(self, label: str) -> Iterator[DockerSession]:
        reason = self.available()
        if reason:
            raise BackendUnavailable(reason)
        image = build_image(self.cache_dir())
        with ExitStack() as stack:
            world = stack.enter_context(self._netns.session(label))
            session = DockerSession(world, stack, image, self.base_dir)
            self.last_session = session
            yield session

    def docker(self, compiled, session) -> RealDocker | RealFleet:
        """One real dockerd per Docker host: a `RealDocker`, or a `RealFleet` of them."""
        if compiled.scenario.topology.multi_host:
            return RealFleet(compiled, session)
        return RealDocker(compiled, session)
