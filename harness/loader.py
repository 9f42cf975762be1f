"""Scenario files (YAML) -> `Scenario`, with errors that name the file, the line and what is wrong.

`load_scenario(path)` reads at most `MAX_FILE_BYTES` of UTF-8, composes the YAML node tree (which keeps line
numbers) with `_Loader`, a SafeLoader that bounds nesting and alias expansion and refuses duplicate or
non-string keys, validates it against the published JSON Schema (`scenarios/schema.json`), parses every
command line with the Docker CLI front end and checks that expectations name containers and addresses
that exist. `find_scenarios(paths)` expands files and directories in a stable, sorted order
(pytest-xdist needs every worker to see the same order).

Every bad input is a `ScenarioError` naming file and line: a scenario needs a few KB, five levels of
nesting and no aliases, so the limits below are far above any real scenario and far below what would
exhaust memory (a 1.4 KB alias bomb expands to billions of nodes) or Python's stack.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import re
import stat
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from yaml.error import MarkedYAMLError

from harness.docker.cli import CLIError, RunNamer, parse_command
from harness.docker.driver import DRIVERS
from harness.errors import ScenarioError
from harness.model import (
    DEFAULT_HOST,
    HOST_NAME_MAX,
    MAIN_SWITCH,
    RESERVED_NODES,
    ContainerRun,
    DockerHost,
    Expect,
    LinkExpect,
    Location,
    NetworkCreate,
    Nic,
    Probe,
    Refused,
    RouterAddress,
    Scenario,
    Step,
    Topology,
    ifname_error,
    one_of,
)

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "scenarios" / "schema.json"
LINK_KINDS = ("veth", "macvlan", "ipvlan", "vlan", "dummy", "bridge")
_PROBE = re.compile(r"^\s*(\S+)\s*->\s*(\S+)\s*$")

MAX_FILE_BYTES = 1 << 20  # 1 MiB; the largest shipped scenario is under 3 KB
MAX_DEPTH = 32  # nesting of YAML collections, aliases expanded; a scenario needs 5
MAX_ALIASES = 64  # uses of `*anchor`; a scenario needs none
MAX_NODES = 200_000  # YAML nodes with every alias expanded (what the schema check walks)
MAX_MESSAGE = 400  # characters of a schema message (it quotes the offending value)


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def _unreadable(path: Path, exc: OSError) -> ScenarioError:
    if exc.errno == errno.ELOOP:
        return ScenarioError("symlink loop: the path resolves to itself (too many levels of symbolic links)", str(path))
    if exc.errno == errno.ENOENT:
        what = f"dangling symlink to {os.readlink(path)}" if path.is_symlink() else "no such file or directory"
        return ScenarioError(what, str(path))
    return ScenarioError(f"cannot read: {exc.strerror or exc}", str(path))


def find_scenarios(paths: Iterable[str | Path]) -> list[Path]:
    found: set[Path] = set()
    for p in map(Path, paths):
        try:
            mode = p.stat().st_mode
        except OSError as exc:
            raise _unreadable(p, exc) from None
        if stat.S_ISDIR(mode):
            for q in p.rglob("*"):
                # A broken or looping symlink named *.yaml is reported by load_scenario, not skipped.
                if q.suffix in (".yaml", ".yml") and (q.is_file() or (q.is_symlink() and not q.exists())):
                    found.add(q)
        else:
            found.add(p)
    return sorted(found)


class _LimitError(MarkedYAMLError):
    """A YAML document the loader refuses to expand (too deep, too many aliases or nodes)."""


class _Loader(yaml.SafeLoader):
    """SafeLoader with bounds: nesting depth and alias uses counted while composing."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _LimitError(None, None, f"more than {MAX_ALIASES} YAML aliases (*name); "
                                              "a scenario needs none", self.peek_event().start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _LimitError(None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"


def _check_tree(root: yaml.Node) -> None:
    """Keys unique and strings; the tree, aliases expanded, within MAX_DEPTH and MAX_NODES; no cycles.

    Walks in document order, so an alias's target is complete (memoized) before the alias is reached,
    and the walk's own recursion stays within the composed depth.
    """
    size: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, expanded depth)
    open_: set[int] = set()
    total = 0

    def walk(node: yaml.Node) -> tuple[int, int]:
        nonlocal total
        key = id(node)
        if key in size:
            n, d = size[key]
            total += n
            if total > MAX_NODES:
                raise _LimitError(None, None, f"the document expands to more than {MAX_NODES} nodes "
                                              "(YAML aliases)", node.start_mark)
            return n, d
        if key in open_:
            raise _LimitError(None, None, "a YAML alias refers to the collection that contains it", node.start_mark)
        open_.add(key)
        total += 1
        n, d = 1, 0
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, yaml.Node] = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.tag == _MERGE:
                    pass
                elif not isinstance(k, yaml.ScalarNode) or k.tag != _STR:
                    shown = k.value if isinstance(k, yaml.ScalarNode) else "a collection"
                    raise _LimitError(None, None, f"key {shown!r} is not a string (quote it)", k.start_mark)
                elif k.value in seen:
                    raise _LimitError(None, None, f"duplicate key {k.value!r} (first on line "
                                                  f"{seen[k.value].start_mark.line + 1})", k.start_mark)
                else:
                    seen[k.value] = k
                cn, cd = walk(v)
                n, d = n + cn + 1, max(d, cd)
        elif isinstance(node, yaml.SequenceNode):
            for v in node.value:
                cn, cd = walk(v)
                n, d = n + cn, max(d, cd)
        if isinstance(node, yaml.CollectionNode):
            d += 1
            if d > MAX_DEPTH:
                raise _LimitError(None, None, f"nested deeper than {MAX_DEPTH} levels (YAML aliases expanded)",
                                  node.start_mark)
        open_.discard(key)
        size[key] = (n, d)
        if total > MAX_NODES:
            raise _LimitError(None, None, f"the document expands to more than {MAX_NODES} nodes", node.start_mark)
        return n, d

    walk(root)


class _Doc:
    """The composed YAML tree, to find the line of any JSON path."""

    def __init__(self, path: str, text: str):
        self.path = path
        if len(text) > MAX_FILE_BYTES:
            raise ScenarioError(f"the file has {len(text)} characters; a scenario file is at most "
                                f"{MAX_FILE_BYTES} bytes (1 MiB)", path)
        loader = None
        try:
            loader = _Loader(text)  # its reader refuses control characters right away
            self.root = loader.get_single_node()
            if self.root is None:
                raise ScenarioError("the file is empty", path)
            _check_tree(self.root)
            self.data = loader.construct_document(self.root)
        except _LimitError as exc:
            raise ScenarioError(exc.problem, path, exc.problem_mark.line + 1) from None
        except yaml.reader.ReaderError as exc:
            line = text.count("\n", 0, exc.position) + 1
            raise ScenarioError(f"not valid YAML: character {exc.character!r} at offset {exc.position}: "
                                f"{exc.reason}", path, line) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark else None
            what = ", ".join(filter(None, (getattr(exc, "context", None), getattr(exc, "problem", None)))) or str(exc)
            raise ScenarioError(f"not valid YAML: {what}", path, line) from None
        except RecursionError:  # a backstop: the limits above keep the composer far from it
            raise ScenarioError(f"nested too deeply (at most {MAX_DEPTH} levels)", path) from None
        finally:
            if loader is not None:
                loader.dispose()

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
        if not stat.S_ISREG(path.stat().st_mode):
            raise ScenarioError("not a regular file", str(path))
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise _unreadable(path, exc) from None
    if len(data) > MAX_FILE_BYTES:
        raise ScenarioError(f"the file is larger than {MAX_FILE_BYTES} bytes (1 MiB), the limit of a scenario file",
                            str(path))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ScenarioError(f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} ({exc.reason}); "
                            "a scenario file is UTF-8 YAML", str(path), line) from None
    return parse_scenario(text, str(path))


def parse_scenario(text: str, path: str = "<memory>") -> Scenario:
    doc = _Doc(path, text)
    _validate_schema(doc)
    data = doc.data
    topology = _topology(doc, data.get("topology") or {})
    steps = _steps(doc, data["commands"], (data.get("expect") or {}).get("error"), topology.hosts)
    containers = {s.command.name for s in steps if isinstance(s.command, ContainerRun)}
    expect = _expect(doc, data.get("expect") or {}, containers, steps, tuple(h.name for h in topology.hosts))
    return Scenario(
        name=data["name"],
        source=data["source"],
        description=data.get("description", ""),
        topology=topology,
        steps=tuple(steps),
        expect=expect,
        path=path,
        docker_choices=tuple((str(key), tuple(str(v) for v in order), doc.loc("docker_choices", key))
                             for key, order in (data.get("docker_choices") or {}).items()),
    )


def _validate_schema(doc: _Doc) -> None:
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(doc.data), key=lambda e: (doc.line(*e.absolute_path), list(e.absolute_path)))
    if errors:
        err = errors[0]
        path = list(err.absolute_path)
        where = "/".join(map(str, path)) or "the document"
        message = err.message if len(err.message) <= MAX_MESSAGE else err.message[:MAX_MESSAGE] + "..."
        if err.validator == "additionalProperties":
            # The error belongs to the enclosing mapping; point at the first unexpected key itself.
            allowed = set(err.schema.get("properties", {}))
            extra = sorted(str(k) for k in err.instance if k not in allowed)
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


def _addresses(doc: _Doc, value, *keys) -> tuple:
    values = [value] if isinstance(value, str) else (value or [])
    return tuple(_interface(doc, a, *keys) for a in values)


def _docker_host(doc: _Doc, spec: dict, name: str, *keys) -> DockerHost:
    """One Docker host: `parent` (eth0) with `address` on `switch`, then `nics`, each on its own `switch`."""
    parent = spec.get("parent", "eth0")
    problem = ifname_error(parent) or ("every namespace has its own loopback `lo`" if parent == "lo" else None)
    if problem:
        raise doc.error(f"{'/'.join(map(str, keys))}/parent {parent!r} cannot be an interface name: {problem}", *keys, "parent")
    nics = [Nic(parent, _addresses(doc, spec.get("address"), *keys, "address"), spec.get("switch", MAIN_SWITCH))]
    for i, nic in enumerate(spec.get("nics") or []):
        nic_name = nic["name"]
        problem = ifname_error(nic_name) or ("every namespace has its own loopback `lo`" if nic_name == "lo" else None)
        if problem or any(n.name == nic_name for n in nics):
            why = problem or "it is already a NIC of the host"
            raise doc.error(f"{'/'.join(map(str, keys))}/nics {nic_name!r} cannot be a NIC name: {why}", *keys, "nics", i)
        nics.append(Nic(nic_name, _addresses(doc, nic.get("address"), *keys, "nics", i, "address"),
                        nic.get("switch", MAIN_SWITCH)))
    return DockerHost(name, tuple(nics))


def _hosts(doc: _Doc, topo: dict) -> tuple[DockerHost, ...]:
    if "hosts" not in topo:
        return (_docker_host(doc, topo.get("host") or {}, DEFAULT_HOST, "topology", "host"),)
    if "host" in topo:
        raise doc.error("topology has both `host` and `hosts`: name every Docker host under `hosts`",
                        "topology", "hosts")
    hosts: list[DockerHost] = []
    ports: dict[str, str] = {}
    for i, spec in enumerate(topo["hosts"]):
        name = spec["name"]
        keys = ("topology", "hosts", i, "name")
        if name in ("rt", "up"):
            raise doc.error(f"host name {name!r} is reserved by the harness for {RESERVED_NODES[name]}", *keys)
        if len(name) > HOST_NAME_MAX:
            raise doc.error(f"host name {name!r} is longer than {HOST_NAME_MAX} characters (its switch ports are "
                            "named p-<host><n>, at most 15)", *keys)
        if any(h.name == name for h in hosts):
            raise doc.error(f"host name {name!r} is given twice (each Docker host is a node: names are unique)", *keys)
        host = _docker_host(doc, spec, name, "topology", "hosts", i)
        for _, port in host.ports():
            if port in ports:
                raise doc.error(f"hosts {ports[port]!r} and {name!r} would share the switch port name {port!r}: "
                                "rename one", *keys)
            ports[port] = name
        hosts.append(host)
    return tuple(hosts)


def _topology(doc: _Doc, topo: dict) -> Topology:
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
    hosts = _hosts(doc, topo)
    first = hosts[0]
    return Topology(
        host_parent=first.parent,
        host_nics=tuple((n.name, n.addresses) for n in first.nics[1:]),
        host_addresses=first.addresses,
        router_addresses=tuple(routers),
        router_forwarding=forwarding,
        switch_hairpin=bool((topo.get("switch") or {}).get("hairpin", False)),
        docker_hosts=hosts,
    )


def _steps(doc: _Doc, commands: Sequence[Any], last_error: str | None = None,
           hosts: Sequence[DockerHost] = (DockerHost(),)) -> tuple[Step, ...]:
    """The parsed commands; `last_error` is `expect.error`, the error the last command must end in. A command
    runs on the Docker host its `host:` names, the first host when it names none."""
    texts = []
    names = [h.name for h in hosts]
    on: dict[int, str] = {}
    for i, entry in enumerate(commands):
        if isinstance(entry, str):
            texts.append((i, entry, None))
        else:
            texts.append((i, entry["command"], entry.get("error")))
            if "host" in entry:
                if entry["host"] not in names:
                    raise doc.error(f"command {i + 1} runs on host {entry['host']!r}, which is not a Docker host of "
                                    f"this scenario ({', '.join(names)})", "commands", i, "host")
                on[i] = entry["host"]
    if last_error is not None:
        i, text, own = texts[-1]
        if own is not None:
            raise doc.error("expect.error and the last command's own `error` both name an error", "expect", "error")
        texts[-1] = (i, text, last_error)
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
    named_on: dict[str, str] = {}  # container name -> the host whose `docker run` named it first
    for i, text, error in texts:
        keys = ("commands", i) if isinstance(commands[i], str) else ("commands", i, "command")
        try:
            cmd = parse_command(text, namer)
        except CLIError as exc:
            raise doc.error(f"{exc} in `{_one_line(text)}`", *keys) from None
        if isinstance(cmd, Refused) and error is None:
            # Whether an expected error is this one is judged like any Docker answer (harness.checks).
            raise doc.error(f"`{cmd.verb}` refuses `{_one_line(text)}`: {cmd.message.strip()}", *keys)
        if isinstance(cmd, ContainerRun) and cmd.name in RESERVED_NODES:
            raise doc.error(f"container name {cmd.name!r} is reserved by the harness for "
                            f"{RESERVED_NODES[cmd.name]}: `{_one_line(text)}`", *keys)
        host = on.get(i, names[0])
        if isinstance(cmd, ContainerRun) and cmd.name in names:
            raise doc.error(f"container name {cmd.name!r} is the name of a Docker host of this scenario: "
                            f"`{_one_line(text)}`", *keys)
        if isinstance(cmd, ContainerRun):
            first = named_on.setdefault(cmd.name, host)
            if first != host:
                # Each daemon would accept it, but a container is a node of the run: one name, one node.
                raise doc.error(f"container name {cmd.name!r} is used on host {first} and on host {host}: container "
                                "names must be unique across a scenario's hosts", *keys)
        if isinstance(cmd, NetworkCreate) and cmd.driver not in DRIVERS:
            raise doc.error(
                f"driver {cmd.driver!r} is not emulated (the harness emulates {' and '.join(DRIVERS)}): "
                f"`{_one_line(text)}`", *keys)
        if isinstance(cmd, ContainerRun) and cmd.network is None:
            raise doc.error(f"`docker run` needs --net/--network: the harness emulates only macvlan/ipvlan "
                            f"networks, not Docker's default bridge: `{_one_line(text)}`", *keys)
        steps.append(Step(index=i + 1, text=_one_line(text), command=cmd, location=doc.loc(*keys), expect_error=error,
                          host=host))
    return tuple(steps)


def _one_line(text: str) -> str:
    return " ".join(text.replace("\\\n", " ").split())


def _probe(doc: _Doc, text: str, containers: set[str], keys, hosts: Sequence[str] = (DEFAULT_HOST,)) -> Probe:
    m = _PROBE.match(text)
    if not m:
        raise doc.error(f"{text!r} is not a probe: expected `SOURCE -> DESTINATION`, e.g. `c1 -> 172.16.86.1`", *keys)
    src, dst = m.groups()
    if src not in containers and src not in hosts:
        what = "`host`" if tuple(hosts) == (DEFAULT_HOST,) else f"a Docker host ({', '.join(hosts)})"
        raise doc.error(f"probe source {src!r} is neither a container of this scenario "
                        f"({', '.join(sorted(containers)) or 'none'}) nor {what}", *keys)
    if dst not in containers and dst not in hosts:
        try:
            ipaddress.ip_address(dst)
        except ValueError:
            raise doc.error(f"probe destination {dst!r} is not a container, `host`, or an IP address", *keys) from None
    return Probe(src, dst, doc.loc(*keys))


def _expect(doc: _Doc, exp: dict, containers: set[str], steps, hosts: Sequence[str] = (DEFAULT_HOST,)) -> Expect:
    def known(name: str, *keys) -> str:
        if name not in containers and name not in hosts:
            raise doc.error(f"{name!r} is not a container of this scenario ({', '.join(sorted(containers)) or 'none'})", *keys)
        return name

    reach = tuple(_probe(doc, t, containers, ("expect", "reach", i), hosts) for i, t in enumerate(exp.get("reach", [])))
    isolate = tuple(_probe(doc, t, containers, ("expect", "isolate", i), hosts)
                    for i, t in enumerate(exp.get("isolate", [])))
    addresses = []
    for name, values in (exp.get("addresses") or {}).items():
        known(name, "expect", "addresses", name)
        for j, v in enumerate(values):
            for one in one_of(v):
                _interface(doc, one, "expect", "addresses", name, j)
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
            if not words or words[0] not in (*LINK_KINDS, "absent") or len(words) > 2:
                raise doc.error(f"link kind {kind!r} is not one of {', '.join(LINK_KINDS)} or `absent`",
                                "expect", "links", node, link)
            links.append(LinkExpect(node, link, None if words[0] == "absent" else words[0],
                                    words[1] if len(words) > 1 else None, doc.loc("expect", "links", node, link)))
    conflicts = []
    for address, holders in (exp.get("conflicts") or {}).items():
        keys = ("expect", "conflicts", address)
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise doc.error(f"conflict {address!r} is not an IP address (expected `ADDRESS: [holders]`)", *keys) from None
        if len(set(holders)) < 2:
            raise doc.error(f"conflict on {address}: a conflict needs at least two holders, got "
                            f"{', '.join(holders) or 'none'}", *keys)
        for name in holders:
            known(name, *keys)
        conflicts.append((str(ip), tuple(sorted(set(holders))), doc.loc(*keys)))
    return Expect(reach=reach, isolate=isolate, addresses=tuple(addresses), routes=tuple(routes), macs=tuple(macs),
                  links=tuple(links), matrix=bool(exp.get("matrix", True)), conflicts=tuple(conflicts))


def load_all(paths: Iterable[str | Path]) -> list[Scenario]:
    return [load_scenario(p) for p in find_scenarios(paths)]
