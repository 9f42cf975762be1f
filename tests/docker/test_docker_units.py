"""The docker backend's pure parts, without an engine: how Docker's answers are read, how a documented
`docker run` is adapted to a harness without a terminal, the shim socket formula, the offline image, and a
backend that cannot run says why (these run everywhere, no root, no docker.io)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

pytest.importorskip("pyroute2")

from backends.docker.daemon import Daemon, shim_socket, shim_socket_of  # noqa: E402
from backends.docker.image import build_image, find_busybox, is_static  # noqa: E402
from backends.docker.real import _without_terminal, docker_error  # noqa: E402
from harness.proc import CommandResult  # noqa: E402


def result(stderr: str, code: int = 125) -> CommandResult:
    return CommandResult("docker", ("docker",), code, "", stderr)


def test_dockers_answer_loses_its_prefixes_hints_log_lines_and_final_period():
    stderr = ("docker: Error response from daemon: Address already in use.\n"
              'time="2026-11-30T17:10:39Z" level=error msg="error waiting for container: context canceled"\n'
              "See 'docker run --help'.\n")
    assert docker_error(result(stderr)) == "Address already in use"
    assert docker_error(result("Error response from daemon: Pool overlaps with other one on this address space\n")) \
        == "Pool overlaps with other one on this address space"
    assert docker_error(result("Error: No such network: nosuchnet\n", 1)) == "Error: No such network: nosuchnet"
    assert docker_error(result("RTNETLINK answers: File exists\n", 2)) == "RTNETLINK answers: File exists"
    assert docker_error(result("", 3)) == "exited 3"


def test_a_several_line_answer_keeps_one_line_per_error():
    stderr = ("Error response from daemon: error while removing network: network a id 1 has active endpoints\n"
              "Error: No such network: b\n")
    assert docker_error(result(stderr, 1)).splitlines() == [
        "error while removing network: network a id 1 has active endpoints", "Error: No such network: b"]


@pytest.mark.parametrize("flags, expected", [
    (["--net=pub_net", "-it", "--rm"], ["--net=pub_net", "-i", "--rm"]),
    (["-itd", "--net", "pub_net"], ["-i", "--net", "pub_net"]),
    (["-t", "--tty", "--detach=true", "--name", "x"], ["--name", "x"]),
    (["-e", "A=1", "--ip=10.0.0.2"], ["-e", "A=1", "--ip=10.0.0.2"]),
])
def test_a_transient_run_needs_no_terminal(flags, expected):
    assert _without_terminal(flags) == expected


def test_the_shim_socket_is_where_containerd_puts_it():
    # containerd 1.6 runtime/v2/shim SocketAddress: /run/containerd/s/<sha256(address/namespace/id)>.
    argv = ["/usr/bin/containerd-shim-runc-v2", "-namespace", "moby", "-id", "abc",
            "-address", "/tmp/x/e/containerd/containerd.sock", ""]
    digest = hashlib.sha256(b"/tmp/x/e/containerd/containerd.sock/moby/abc").hexdigest()
    assert shim_socket_of(argv) == f"/run/containerd/s/{digest}"
    assert shim_socket_of(["/usr/sbin/dockerd", "-namespace", "moby", "-id", "abc", "-address", "x"]) is None
    assert shim_socket(os.getpid()) is None


def test_every_path_of_a_daemon_carries_its_name():
    d = Daemon("hx1234m1-docker", "/run/netns/hx1234m1-host", Path("image.tar"), None, "/tmp")
    assert d.socket == Path("/tmp/hx1234m1-docker/e/docker.sock")
    assert len(f"unix://{d.socket}") < 100
    assert d.cgroup_parent == "hx1234m1-docker"
    assert d.leftovers() == []


@pytest.mark.skipif(find_busybox() is None, reason="no static busybox (apt-get install busybox-static)")
def test_the_offline_image_is_busybox_with_an_applet_per_name(tmp_path):
    path = build_image(tmp_path)
    assert build_image(tmp_path) == path  # cached
    with tarfile.open(path) as tar:
        names = {m.name: m for m in tar.getmembers()}
        assert names["bin/sh"].issym() and names["bin/sh"].linkname == "busybox"
        assert names["bin/ping"].issym()
        assert names["bin/busybox"].isfile() and names["bin/busybox"].mode & 0o111
        assert names["tmp"].mode == 0o1777
        passwd = tar.extractfile("etc/passwd").read()
    assert passwd.startswith(b"root:x:0:0:")
    assert is_static(find_busybox())


def test_a_dynamic_executable_is_not_taken_for_a_static_busybox():
    assert not is_static("/bin/ls" if os.path.exists("/bin/ls") else "/usr/bin/env")
    assert not is_static(io.__file__)  # not even an ELF file


def test_a_backend_that_cannot_run_says_why(monkeypatch):
    from backends.docker import DockerBackend
    from backends.docker import backend as module

    monkeypatch.setattr(module, "missing_binaries", lambda: ["dockerd"])
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    reason = DockerBackend().available()
    assert reason is not None and "docker.io" in reason and "dockerd" in reason
    caps = DockerBackend().capabilities()
    assert caps and all(not c.available and "docker.io" in c.detail for c in caps.values())
