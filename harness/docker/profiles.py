"""Docker behaviour profiles: what differs between Docker versions, as data.

`Profile` holds the knobs the driver and IPAM consult; `PROFILES` names them. The default,
`docker-20.10`, is the documented behaviour, which Debian's docker.io 20.10 still shows. `moby-29` is
current Docker: no gateway allocated unless `--gateway` is given, random MACs, and several macvlan
networks may share a parent unless one of them is in passthru mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    default_gateway: bool  # allocate the first usable address as gateway when --gateway is absent
    mac: str  # "ip": 02:42 + IPv4 bytes; "random": a random locally administered MAC
    parent_sharing: str  # "exclusive": one network per parent; "except-passthru": shared unless passthru
    reserved_pools: tuple[str, ...] = ()  # pools already in use by the daemon (docker0)


PROFILES: dict[str, Profile] = {
    "docker-20.10": Profile(
        name="docker-20.10",
        description="the documented behaviour (libnetwork as in Docker 1.12-20.10)",
        default_gateway=True,
        mac="ip",
        parent_sharing="exclusive",
        reserved_pools=("172.17.0.0/16",),
    ),
    "moby-29": Profile(
        name="moby-29",
        description="current Docker (moby 27-29): no implicit gateway, random MACs, shared parents",
        default_gateway=False,
        mac="random",
        parent_sharing="except-passthru",
        reserved_pools=("172.17.0.0/16",),
    ),
}

DEFAULT_PROFILE = "docker-20.10"


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise HarnessError(f"unknown profile {name!r}; valid profiles: {', '.join(sorted(PROFILES))}") from None
