"""Scenario files (YAML) -> `Scenario`, with errors that name the file, the line and what is wrong.

`load_scenario(path)` composes the YAML node tree (which keeps line numbers), validates it against the
published JSON Schema (`scenarios/schema.json`), parses every command line with the Docker CLI front end
and checks that expectations name containers and addresses that exist. `find_scenarios(paths)` expands
files and directories in a stable, sorted order (pytest-xdist needs every worker to see the same order).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from harness.docker.cli import CLIError, RunNamer, parse_command
from harness.docker.driver import DRIVERS
from harness.errors import ScenarioError
from harness.model import (
    ContainerRun,
    Expect,
    LinkExpect,
    Location,
    NetworkCreate,
    Probe,
    RouterAddress,
    Scenario,
    Step,
    Topology,
)

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "scenarios" / "schema.json"
LINK_KINDS = ("veth", "macvlan", "ipvlan", "vlan", "dummy", "bridge")
_PROBE = re.compile(r"^\s*(\S+)\s*->\s*(\S+)\s*$")


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def find_scenarios(paths: Iterable[str | Path]) -> list[Path]:
    found: set[Path] = set()
    for p in map(Path, paths):
        if p.is_dir():
            found.update(q for q in p.rglob("*.yaml") if q.is_file())
            found.update(q for q in p.rglob("*.yml") if q.is_file())
        elif p.is_file():
            found.add(p)
        else:
            raise ScenarioError("no such file or directory", str(p))
    return sorted(found)


class _Doc:
    """The composed YAML tree, to find the line of any JSON path."""

    def __init__(self, path: str, text: str):
        self.path = path
        try:
            self.root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark else None
            raise ScenarioError(f"not valid YAML: {getattr(exc, 'problem', exc)}", path, line) from None
        if self.root is None:
            raise ScenarioError("the file is empty", path)
        self.data = yaml.safe_load(text)

    def node(self, *keys: str | int) -> yaml.Node | None:
        node = self.root
        for key in keys:
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if k.value == key), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
            else:
                return None
            if node is None:
                return None
        return node

    def line(self, *keys: str | int) -> int:
        for depth in range(len(keys), -1, -1):
            node = self.node(*keys[:depth])
            if node is not None:
                return node.start_mark.line + 1
        return 1

    def loc(self, *keys: str | int) -> Location:
        return Location(self.path, self.line(*keys))

    def error(self, message: str, *keys: str | int) -> ScenarioError:
        return ScenarioError(message, self.path, self.line(*keys))


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(f"cannot read: {exc.strerror}", str(path)) from None
    return parse_scenario(text, str(path))


def parse_scenario(text: str, path: str = "<memory>") -> Scenario:
    doc = _Doc(path, text)
    _validate_schema(doc)
    data = doc.data
    steps = _steps(doc, data["commands"])
    containers = {s.command.name for s in steps if isinstance(s.command, ContainerRun)}
    expect = _expect(doc, data.get("expect") or {}, containers, steps)
    if "error" in (data.get("expect") or {}):
        last = steps[-1]
        if last.expect_error is not None:
            raise doc.error("expect.error and the last command's own `error` both name an error", "expect", "error")
        steps = (*steps[:-1], Step(last.index, last.text, last.command, last.location, data["expect"]["error"]))
    return Scenario(
        name=data["name"],
        source=data["source"],
        description=data.get("description", ""),
        topology=_topology(doc, data.get("topology") or {}),
        steps=tuple(steps),
        expect=expect,
        path=path,
    )


def _validate_schema(doc: _Doc) -> None:
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(doc.data), key=lambda e: (doc.line(*e.absolute_path), list(e.absolute_path)))
    if errors:
        err = errors[0]
        path = list(err.absolute_path)
        where = "/".join(map(str, path)) or "the document"
        message = err.message
        if err.validator == "additionalProperties":
            # The error belongs to the enclosing mapping; point at the first unexpected key itself.
            allowed = set(err.schema.get("properties", {}))
            extra = sorted(k for k in err.instance if k not in allowed)
            if extra:
                path.append(extra[0])
            message = f"unknown key: {message}"
        raise doc.error(f"{where}: {message}", *path)


def _interface(doc: _Doc, text: str, *keys) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    try:
        if "/" not in str(text):
            raise ValueError("an address with its prefix length is needed, e.g. 172.16.86.250/24")
        return ipaddress.ip_interface(text)
    except ValueError as exc:
        raise doc.error(f"{text!r} is not an address/prefix: {exc}", *keys) from None


def _topology(doc: _Doc, topo: dict) -> Topology:
    host = topo.get("host") or {}
    addresses = host.get("address", [])
    addresses = [addresses] if isinstance(addresses, str) else addresses
    router = topo.get("router") or []
    forwarding = False
    if isinstance(router, dict):
        forwarding = bool(router.get("forwarding", False))
        entries, key = router.get("addresses", []), ("topology", "router", "addresses")
    else:
        entries, key = router, ("topology", "router")
    routers = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            routers.append(RouterAddress(_interface(doc, entry, *key, i)))
        else:
            routers.append(RouterAddress(_interface(doc, entry["address"], *key, i, "address"), entry.get("vlan")))
    return Topology(
        host_parent=host.get("parent", "eth0"),
        host_addresses=tuple(_interface(doc, a, "topology", "host", "address") for a in addresses),
        router_addresses=tuple(routers),
        router_forwarding=forwarding,
        switch_hairpin=bool((topo.get("switch") or {}).get("hairpin", False)),
    )


def _steps(doc: _Doc, commands: Sequence[Any]) -> tuple[Step, ...]:
    texts = []
    for i, entry in enumerate(commands):
        if isinstance(entry, str):
            texts.append((i, entry, None))
        else:
            texts.append((i, entry["command"], entry.get("error")))
    # Containers without --name are called c1, c2, ... in order; first learn the names given explicitly.
    explicit: set[str] = set()
    for _, text, _ in texts:
        try:
            cmd = parse_command(text, RunNamer())
        except CLIError:
            continue
        if isinstance(cmd, ContainerRun) and cmd.named_by_user:
            explicit.add(cmd.name)
    namer = RunNamer(explicit)
    steps = []
    for i, text, error in texts:
        keys = ("commands", i) if isinstance(commands[i], str) else ("commands", i, "command")
        try:
            cmd = parse_command(text, namer)
        except CLIError as exc:
            raise doc.error(f"{exc} in `{_one_line(text)}`", *keys) from None
        if isinstance(cmd, NetworkCreate) and cmd.driver not in DRIVERS:
            raise doc.error(
                f"driver {cmd.driver!r} is not emulated (the harness emulates {' and '.join(DRIVERS)}): "
                f"`{_one_line(text)}`", *keys)
        if isinstance(cmd, ContainerRun) and cmd.network is None:
            raise doc.error(f"`docker run` needs --net/--network: the harness emulates only macvlan/ipvlan "
                            f"networks, not Docker's default bridge: `{_one_line(text)}`", *keys)
        steps.append(Step(index=i + 1, text=_one_line(text), command=cmd, location=doc.loc(*keys), expect_error=error))
    return tuple(steps)


def _one_line(text: str) -> str:
    return " ".join(text.replace("\\\n", " ").split())


def _probe(doc: _Doc, text: str, containers: set[str], keys) -> Probe:
    m = _PROBE.match(text)
    if not m:
        raise doc.error(f"{text!r} is not a probe: expected `SOURCE -> DESTINATION`, e.g. `c1 -> 172.16.86.1`", *keys)
    src, dst = m.groups()
    if src not in containers and src != "host":
        raise doc.error(f"probe source {src!r} is neither a container of this scenario "
                        f"({', '.join(sorted(containers)) or 'none'}) nor `host`", *keys)
    if dst not in containers and dst != "host":
        try:
            ipaddress.ip_address(dst)
        except ValueError:
            raise doc.error(f"probe destination {dst!r} is not a container, `host`, or an IP address", *keys) from None
    return Probe(src, dst, doc.loc(*keys))


def _expect(doc: _Doc, exp: dict, containers: set[str], steps) -> Expect:
    def known(name: str, *keys) -> str:
        if name not in containers and name != "host":
            raise doc.error(f"{name!r} is not a container of this scenario ({', '.join(sorted(containers)) or 'none'})", *keys)
        return name

    reach = tuple(_probe(doc, t, containers, ("expect", "reach", i)) for i, t in enumerate(exp.get("reach", [])))
    isolate = tuple(_probe(doc, t, containers, ("expect", "isolate", i)) for i, t in enumerate(exp.get("isolate", [])))
    addresses = []
    for name, values in (exp.get("addresses") or {}).items():
        known(name, "expect", "addresses", name)
        for j, v in enumerate(values):
            _interface(doc, v, "expect", "addresses", name, j)
        addresses.append((name, tuple(values), doc.loc("expect", "addresses", name)))
    routes = [(known(n, "expect", "routes", n), tuple(v), doc.loc("expect", "routes", n))
              for n, v in (exp.get("routes") or {}).items()]
    macs = [(known(n, "expect", "macs", n), str(v).lower(), doc.loc("expect", "macs", n))
            for n, v in (exp.get("macs") or {}).items()]
    links = []
    for node, spec in (exp.get("links") or {}).items():
        known(node, "expect", "links", node)
        for link, kind in spec.items():
            words = str(kind).split()
            if words[0] not in (*LINK_KINDS, "absent"):
                raise doc.error(f"link kind {kind!r} is not one of {', '.join(LINK_KINDS)} or `absent`",
                                "expect", "links", node, link)
            links.append(LinkExpect(node, link, None if words[0] == "absent" else words[0],
                                    words[1] if len(words) > 1 else None, doc.loc("expect", "links", node, link)))
    return Expect(reach=reach, isolate=isolate, addresses=tuple(addresses), routes=tuple(routes), macs=tuple(macs),
                  links=tuple(links), matrix=bool(exp.get("matrix", True)))


def load_all(paths: Iterable[str | Path]) -> list[Scenario]:
    return [load_scenario(p) for p in find_scenarios(paths)]
