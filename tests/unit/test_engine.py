"""The engine's flow without root: a fake kernel session applies the plan, answers `ip -json` and ping.

`FakeKernel` keeps the links, addresses and routes the operations create, node by node, and answers the
engine's observation queries from that state as iproute2's JSON would; pings are answered by a policy the
test chooses. So the whole flow (build the world, have the emulated Docker execute the commands, undo a
refused command, observe, judge) runs here, and each test can break one part of it.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import textwrap
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from backends.base import SESSION, Capability, CommandResult
from harness.docker import emulated
from harness.docker.driver import DockerEmulator
from harness.docker.emulated import EmulatedDocker
from harness.docker.ipam import link_local_from_mac
from harness.engine import Engine
from harness.errors import KernelError
from harness.loader import load_scenario, parse_scenario
from harness.oracle import Oracle
from harness.plan import (
    FEATURES,
    AddAddress,
    AddLink,
    AddRoute,
    CreateNode,
    DeleteLink,
    DeleteNode,
    MoveLink,
    SetLink,
)
from harness.results import ERROR, FAIL, PASS, SKIP
from harness.world import World

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


@dataclass
class FakeKernel:
    """A session whose 'kernel' is a dict of nodes; `refuse(op)` may return an errno to refuse an op."""

    ping: Callable[[str, str], bool]  # (source node, destination address) -> a reply comes
    refuse: Callable[[object], int | None] = lambda op: None
    kernel: str = "fake-1.0"
    observes: bool = True
    nodes: dict[str, dict] = field(default_factory=dict)  # node -> {links: {name: {...}}, addrs, routes}
    applied: list = field(default_factory=list)

    def apply(self, op) -> None:
        code = self.refuse(op)
        if code:
            raise KernelError(op, code, "Operation not supported" if code == errno.EOPNOTSUPP else "Invalid argument",
                              getattr(op, "node", ""))
        self.applied.append(op)
        if isinstance(op, CreateNode):
            self.nodes[op.node] = {"links": {"lo": {"kind": None, "mode": None, "mac": "00:00:00:00:00:00"}},
                                   "addrs": [], "routes": []}
        elif isinstance(op, DeleteNode):
            self.nodes.pop(op.node, None)
        elif isinstance(op, AddLink):
            links = self.nodes[op.node]["links"]
            links[op.name] = {"kind": op.kind, "mode": op.mode, "mac": f"aa:bb:cc:00:00:{len(links):02x}"}
            if op.kind == "veth":
                self.nodes[op.peer_node]["links"][op.peer] = {"kind": "veth", "mode": None, "mac": "aa:bb:cc:ff:ff:ff"}
        elif isinstance(op, MoveLink):
            link = self.nodes[op.node]["links"].pop(op.name)
            self.nodes[op.to_node]["links"][op.new_name] = link
        elif isinstance(op, SetLink) and op.mac:
            self.nodes[op.node]["links"][op.name]["mac"] = op.mac
        elif isinstance(op, DeleteLink):
            self.nodes.get(op.node, {"links": {}})["links"].pop(op.name, None)
        elif isinstance(op, AddAddress):
            self.nodes[op.node]["addrs"].append((op.dev, op.address))
            net = ipaddress.ip_interface(op.address).network
            self.nodes[op.node]["routes"].append({"dst": str(net), "dev": op.dev, "family": net.version})
        elif isinstance(op, AddRoute):
            route = {"dst": op.dst, "dev": op.dev, "family": op.family}
            if op.gateway:
                route["gateway"] = op.gateway
            self.nodes[op.node]["routes"].append(route)

    def _route_get(self, node: str, dst: str) -> str:
        """`ip -json route get DST` as the kernel answers: the longest matching route, the source address
        of its device (one whose subnet holds DST first)."""
        state = self.nodes[node]
        ip = ipaddress.ip_address(dst)
        best = None
        for r in state["routes"]:
            net = ipaddress.ip_network("0.0.0.0/0" if ip.version == 4 else "::/0") if r["dst"] == "default" \
                else ipaddress.ip_network(r["dst"], strict=False)
            if r["family"] == ip.version and ip in net and (best is None or net.prefixlen > best[0]):
                best = (net.prefixlen, r)
        if best is None:
            return ""
        route = best[1]
        mine = [ipaddress.ip_interface(c) for dev, c in state["addrs"] if dev == route["dev"]]
        mine = [a for a in mine if a.version == ip.version]
        src = next((a.ip for a in mine if ip in a.network), mine[0].ip if mine else None)
        answer = {"dst": dst, **({"gateway": route["gateway"]} if route.get("gateway") else {}), "dev": route["dev"]}
        if src is not None:
            answer["prefsrc"] = str(src)
        return json.dumps([answer])

    def _show(self, node: str, argv) -> str:
        state = self.nodes[node]
        if "get" in argv:
            return self._route_get(node, argv[-1])
        if "addr" in argv:
            out = []
            for name, link in state["links"].items():
                info = {"info_kind": link["kind"], "info_data": {"mode": link["mode"]}} if link["kind"] else {}
                addrs = [{"local": cidr.split("/")[0], "prefixlen": int(cidr.split("/")[1]), "scope": "global"}
                         for dev, cidr in state["addrs"] if dev == name]
                if any(":" in a["local"] for a in addrs):  # the kernel's EUI-64 link-local, from the MAC
                    addrs.append({"local": str(link_local_from_mac(link["mac"])).split("/")[0], "prefixlen": 64, "scope": "link"})
                out.append({"ifname": name, "address": link["mac"], "flags": ["UP"], "linkinfo": info,
                            "addr_info": addrs})
            return json.dumps(out)
        family = 6 if "-6" in argv else 4
        return json.dumps([{k: v for k, v in r.items() if k != "family"} for r in state["routes"]
                           if r["family"] == family])

    def run_many(self, jobs, timeout: float = 10.0) -> list[CommandResult]:
        out = []
        for node, argv in jobs:
            argv = tuple(argv)
            if argv[0] == "ip":
                out.append(CommandResult(node, argv, 0, self._show(node, argv), ""))
                continue
            reached = self.ping(node, argv[-1])
            summary = f"1 packets transmitted, {int(reached)} received"
            out.append(CommandResult(node, argv, 0 if reached else 1, summary, ""))
        return out

    def run(self, node, argv, timeout: float = 10.0) -> CommandResult:
        return self.run_many([(node, argv)], timeout)[0]

    def spawn(self, node, argv):
        raise NotImplementedError

    def physical_name(self, node: str) -> str:
        return node


class FakeBackend:
    name = "fake"
    description = "a dict standing in for the kernel"
    kind = SESSION

    def __init__(self, session: FakeKernel, missing: tuple[str, ...] = ()):
        self._session = session
        self.missing = missing
        self.sessions = 0

    def available(self):
        return None

    def capabilities(self):
        return {f: Capability(f, f not in self.missing) for f in FEATURES}

    def kernel_release(self) -> str:
        return "fake-1.0"

    def prepare(self) -> str:
        return "nothing to prepare"

    def docker(self, compiled, session):
        return EmulatedDocker(compiled, session)

    @contextmanager
    def session(self, label: str):
        self.sessions += 1
        yield self._session


def as_the_oracle_says(scenario) -> Callable[[str, str], bool]:
    """Pings answered exactly as the model expects: the kernel behaves as Docker would make it."""
    compiled = emulated.compile_scenario(scenario)
    oracle = Oracle(compiled.emulator, World.of(scenario.topology, compiled.vlans))
    verdicts = {(e.src.owner, str(e.dst.ip)): e.reachable for e in oracle.matrix()}
    explicit = {(p.src, p.dst): True for p in scenario.expect.reach}
    return lambda src, dst: verdicts.get((src, dst), explicit.get((src, dst), True))


def test_a_scenario_passes_when_the_kernel_does_what_docker_would():
    scenario = load_scenario(SCENARIOS / "macvlan-bridge.yaml")
    kernel = FakeKernel(ping=as_the_oracle_says(scenario))
    result = Engine(FakeBackend(kernel)).run(scenario)
    assert result.status == PASS, result.failure_report()
    assert result.kernel == "fake-1.0"
    kinds = {c.kind for c in result.checks}
    assert {"reach", "isolate", "address", "mac", "route", "link", "error"} <= kinds
    # The container c1 really holds the child Docker made, renamed eth0, with the IP-derived MAC.
    assert kernel.nodes["c1"]["links"]["eth0"] == {"kind": "macvlan", "mode": "bridge", "mac": "02:42:ac:10:56:0a"}


def test_the_engine_compiles_the_scenario_once(monkeypatch):
    scenario = load_scenario(SCENARIOS / "macvlan-ip-range.yaml")
    calls = []
    original = DockerEmulator.compile

    def counting(self, step):
        calls.append(step.index)
        return original(self, step)

    monkeypatch.setattr(DockerEmulator, "compile", counting)
    Engine(FakeBackend(FakeKernel(ping=as_the_oracle_says(scenario)))).run(scenario)
    assert sorted(calls) == [s.index for s in scenario.steps]


def test_a_kernel_refusal_undoes_the_command_and_answers_with_dockers_message():
    scenario = load_scenario(SCENARIOS / "macvlan-passthru.yaml")
    children = []

    def refuse_second_passthru_child(op):
        if isinstance(op, AddLink) and op.kind == "macvlan":
            children.append(op.name)
            return errno.EINVAL if len(children) > 1 else None
        return None

    kernel = FakeKernel(ping=as_the_oracle_says(scenario), refuse=refuse_second_passthru_child)
    result = Engine(FakeBackend(kernel)).run(scenario)
    assert result.status == PASS, result.failure_report()
    assert result.steps[-1].error == "failed to create the macvlan port: invalid argument"
    # Docker removes the refused container: its namespace was created, then deleted again.
    assert "second" not in kernel.nodes
    assert any(isinstance(op, DeleteNode) and op.node == "second" for op in kernel.applied)


def test_after_a_refusal_later_commands_see_the_state_docker_really_has():
    scenario = parse_scenario(textwrap.dedent("""\
        name: t
        source: s
        topology: {host: {parent: eth0, address: 172.16.86.250/24}, router: [172.16.86.1/24]}
        commands:
          - docker network create -d macvlan --subnet=172.16.86.0/24 --gateway=172.16.86.1 -o parent=eth0 n
          - command: docker run --net=n --name aa -itd alpine /bin/sh
            error: "failed to create the macvlan port: operation not supported"
          - docker run --net=n --name bb -itd alpine /bin/sh
        expect: {addresses: {bb: [172.16.86.2/24]}, matrix: false}
    """))
    refused = []

    def refuse_first_child(op):
        if isinstance(op, AddLink) and op.kind == "macvlan" and not refused:
            refused.append(op)
            return errno.EOPNOTSUPP
        return None

    kernel = FakeKernel(ping=lambda src, dst: True, refuse=refuse_first_child)
    result = Engine(FakeBackend(kernel)).run(scenario)
    # The compile assumed aa got .2 and bb .3; after the refusal, Docker freed .2 and gives it to bb.
    assert result.status == PASS, result.failure_report()
    assert ("eth0", "172.16.86.2/24") in kernel.nodes["bb"]["addrs"]


def test_a_kernel_that_answers_every_ping_fails_the_isolation_checks():
    scenario = load_scenario(SCENARIOS / "macvlan-private.yaml")
    result = Engine(FakeBackend(FakeKernel(ping=lambda src, dst: True))).run(scenario)
    assert result.status == FAIL
    failed = [c for c in result.failures if c.kind == "isolate"]
    assert failed and all(c.observed.startswith("reachable") for c in failed)
    assert "expected isolated" in result.failure_report()


def test_a_missing_kernel_feature_is_a_skip_that_names_it_and_opens_no_session():
    scenario = load_scenario(SCENARIOS / "macvlan-vlan50.yaml")
    backend = FakeBackend(FakeKernel(ping=lambda src, dst: True), missing=("vlan",))
    result = Engine(backend).run(scenario)
    assert result.status == SKIP
    assert "kernel lacks 802.1q VLAN support (CONFIG_VLAN_8021Q)" in result.reason
    assert backend.sessions == 0


def test_a_world_the_kernel_refuses_is_an_error_naming_the_operation():
    scenario = load_scenario(SCENARIOS / "macvlan-bridge.yaml")
    kernel = FakeKernel(ping=lambda src, dst: True,
                        refuse=lambda op: errno.EOPNOTSUPP if isinstance(op, AddLink) and op.kind == "bridge" else None)
    result = Engine(FakeBackend(kernel)).run(scenario)
    assert result.status == ERROR
    assert result.reason.startswith("building the emulated network failed: ip -n up link add name br0 type bridge")


@pytest.mark.parametrize("name", ["macvlan-bridge", "macvlan-ip-range", "ipvlan-l2", "macvlan-mcv0-dual-stack"])
def test_documented_scenarios_pass_on_a_kernel_that_behaves(name):
    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    result = Engine(FakeBackend(FakeKernel(ping=as_the_oracle_says(scenario)))).run(scenario)
    assert result.status == PASS, result.failure_report()
