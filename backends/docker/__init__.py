"""The docker backend: the scenarios' commands run verbatim by a real Docker 20.10 engine.

`DockerBackend` (backend.py) builds the same emulated world as the netns backend and starts a private
`dockerd` inside its Docker host namespace (daemon.py); `RealDocker` (real.py) runs each documented
command through the real client and reads back what the engine built; `DockerSession` (session.py) lets
the engine observe and probe the containers in their own network namespaces; image.py builds the offline
busybox image every scenario image name points at.
"""

from backends.docker.backend import DockerBackend

__all__ = ["DockerBackend"]
