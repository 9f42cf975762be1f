"""Write a large scenario: N containers on one macvlan bridge network, plus the host and the gateway.

A stress topology of the harness itself, not a documented example: it exists to show that probing and
judging scale (issue #10: 200 containers with the full reachability/isolation matrix must pass on the
namespace backend). Every container reaches every other one and the gateway; the host is isolated from
all of them (a macvlan child never reaches its parent's own address), so the matrix holds about N^2
expected-reachable pairs and 2N isolation pairs.

    python3 tools/make_big_scenario.py 200 > /tmp/big.yaml
    python3 -m harness run --backend netns /tmp/big.yaml

`big_scenario(n)` returns the YAML text (tests/integration/test_scale.py writes it to a temporary file).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

SUBNET = ipaddress.ip_network("10.64.0.0/16")


def big_scenario(n: int, name: str | None = None) -> str:
    if not 1 <= n <= SUBNET.num_addresses - 8:
        raise ValueError(f"between 1 and {SUBNET.num_addresses - 8} containers")
    gateway = SUBNET.network_address + 1
    host = SUBNET.broadcast_address - 1  # IPAM hands out addresses from the bottom: no clash
    lines = [
        f"name: {name or f'stress-macvlan-{n}'}",
        "source: >-",
        "  The harness's own stress topology (tools/make_big_scenario.py), not documentation: one macvlan",
        f"  bridge network with {n} containers, the Docker host and the upstream gateway, judged with the full matrix.",
        "topology:",
        f"  host: {{parent: eth0, address: {host}/{SUBNET.prefixlen}}}",
        f"  router: [{gateway}/{SUBNET.prefixlen}]",
        "commands:",
        f"  - docker network create -d macvlan --subnet={SUBNET} --gateway={gateway} -o parent=eth0 big_net",
    ]
    lines += ["  - docker run --net=big_net -itd alpine /bin/sh"] * n
    last = f"c{n}"
    lines += [
        "expect:",
        f'  reach: ["c1 -> {last}", "{last} -> {gateway}"]',
        f'  isolate: ["c1 -> host", "host -> {last}"]',
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("containers", type=int, nargs="?", default=200)
    parser.add_argument("--name", default=None)
    parser.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    text = big_scenario(args.containers, args.name)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
