"""Conformance: the facts a run records, and the diff between the emulation and a real engine.

A run records, in `ScenarioResult.facts`, what Docker built and what was seen, in a form the emulation and
a real engine share (`record_facts`, called by the engine at the end of a scenario). Each fact is a dict
`{kind, node, interface, value}`:

| kind | node | interface | value |
|---|---|---|---|
| `version` | `docker` | | the Docker that ran the commands: `docker-20.10 (emulated)`, or the engine's server version |
| `command` | `command N` | the command line | `ok`, or `error: <Docker's message, normalized>` |
| `ping` | `command N` | `c3 -> 172.16.86.10` | a transient container's documented ping: `reachable` or `unreachable` |
| `network` | the network | | `macvlan bridge parent eth0` (+ `internal`, `ipv6`; an ipvlan flag other than `bridge`) |
| `subnet` | the network | | one per pool: `172.16.86.0/24` (+ `range R`, `aux NAME=IP`) |
| `parent` | `host` | the link | a host link Docker manages: `vlan 50 on eth0, made by NET` |
| `endpoint` | a running container | its interface | the network it attaches to |
| `link`, `mac`, `address`, `route`, `hostname` | a running container | its interface | `harness.oracle.Oracle.expected_state` |
| `gateway` | a running container | its interface | the endpoint's gateways, `none` without one |
| `conflict` | the address | its segment | who holds it: `db on hostb, web on hosta` (several Docker hosts) |
| `reach` | a probe's source | `-> ` its destination's label | what the probe saw: reachable, isolated, no verdict, broken probe |

`compare(emulated, real, divergences)` pairs the facts of two results by (kind, node, interface) (the values of
one key are compared as a set: a container's addresses on one interface are one row) and returns a
`Comparison`: one `Row` per key, `equal`, `differs`, `emulated only` or `real only`, each difference
matched against the known, explained divergences (`load_divergences`, `conformance/divergences.yaml`).
Where Docker's choice is random (a network's subnet order: `harness.docker.choices`), `real_choices` reads
the order the real engine took from its facts, and `harness conform` runs the emulation pinned to it, so
the two sides are compared on the same choice.
Docker's ids (12 or 64 hex digits, also in names such as the dummy parent `dm-<id>`) compare as `<id>`:
both sides make their own. The `version` fact is shown,
never a difference: it says which Docker each side was.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from harness.checks import normalize_error
from harness.docker.fleet import as_fleet
from harness.errors import HarnessError
from harness.model import NOWHERE
from harness.oracle import segment_text
from harness.results import ERROR, SKIP, ScenarioResult

DIVERGENCES_PATH = Path(__file__).resolve().parent.parent / "conformance" / "divergences.yaml"

# Row status
EQUAL, DIFFERS, EMULATED_ONLY, REAL_ONLY, INFO = "equal", "differs", "emulated only", "real only", "info"
ROW_STATUSES = (DIFFERS, EMULATED_ONLY, REAL_ONLY)
# Scenario status
CONFORMS, EXPLAINED, DIFFERENT, NOT_COMPARED = "conforms", "explained", "differs", "not compared"

# The order kinds are shown in; a kind not listed goes last.
KIND_ORDER = ("version", "command", "ping", "network", "subnet", "parent", "endpoint", "link", "mac", "address",
              "gateway", "route", "hostname", "conflict", "reach")
FACT_KINDS = KIND_ORDER
_ID = re.compile(r"\b[0-9a-f]{64}\b|\b[0-9a-f]{12}\b")


def fact(kind: str, node: str, interface: str | None, value: str) -> dict:
    return {"kind": kind, "node": node, "interface": interface, "value": value}


# -- recording -----------------------------------------------------------------------------------------


def docker_version(docker) -> str:
    """Which Docker ran the commands: a real engine's server version, or the emulated profile's name."""
    version = getattr(docker, "version", None)
    if version:
        return str(version)
    name = str(getattr(docker, "name", "") or "")
    if name.startswith("emulated "):
        return f"{name[len('emulated '):]} (emulated)"
    return name or "unknown"


def _one_line(text: str) -> str:
    return " ".join(text.replace("\\\n", " ").split())


def reach_value(ping) -> str:
    """A probe's observation in one word (`harness.checks.describe_ping` without the counts)."""
    if ping.probe_error:
        return "broken probe"
    if ping.reached:
        return "reachable"
    if ping.unbacked:
        return "no verdict"
    return "isolated"


def record_facts(docker, oracle, result: ScenarioResult, steps: Sequence, probes: dict | None = None) -> list[dict]:
    """The facts of one scenario's run (see the module docstring): `docker` is the `DockerUnderTest` that ran
    the commands, `oracle` reads its state, `result` holds the commands' answers and the transient pings'
    checks, `probes` maps (source node, destination address) to what the probe saw (None: nothing observed).
    """
    out = [fact("version", "docker", None, docker_version(docker))]
    records = {r.index: r for r in result.steps}
    pings = {c.location: c for c in result.checks if c.origin == "command" and c.kind == "reach"}
    for step in steps:
        record = records.get(step.index)
        if record is None:
            continue
        node = f"command {step.index}"
        outcome = "ok" if record.error is None else f"error: {normalize_error(record.error)}"
        out.append(fact("command", node, _one_line(step.text), outcome))
        check = pings.get(str(step.location))
        if check is not None:
            subject = check.subject.split(" (`")[0]
            out.append(fact("ping", node, subject, "reachable" if check.ok else "unreachable"))
    out += state_facts(oracle)
    for c in oracle.conflicts():  # several holders of one address on one segment (issue #13)
        out.append(fact("conflict", str(c.ip), segment_text(c.segment), ", ".join(a.holder for a in c.holders)))
    if probes:
        labels = {str(a.ip): a.label for a in oracle.addresses()}
        for (src, dst), ping in sorted(probes.items()):
            out.append(fact("reach", src, f"-> {labels.get(dst, dst)}", reach_value(ping)))
    return out


def state_facts(oracle) -> list[dict]:
    """What Docker says it configured: networks, the host links it manages, every running container."""
    out = []
    fleet = as_fleet(oracle.state)
    for host, state in fleet.hosts.items():
        out += _host_facts(host, state, fleet.multi_host)
    containers = fleet.containers
    for name in sorted(containers):
        container = containers[name]
        for ep in container.endpoints:
            out.append(fact("endpoint", name, ep.ifname, ep.network))
            gateways = [str(g) for g in (ep.gateway4, ep.gateway6) if g is not None]
            out.append(fact("gateway", name, ep.ifname, " ".join(gateways) or "none"))
        for f in oracle.expected_state(container):
            out.append(fact(f.kind, f.node, f.interface, f.value))
    return out


def _host_facts(host: str, state, multi_host: bool) -> list[dict]:
    """One Docker host's networks and the host links it manages; with several hosts, a network is
    `<host>/<network>` (the same name on two hosts is two networks)."""
    out = []
    names_by_id = {net.id: net.name for net in state.networks.values()}
    for net in sorted(state.networks.values(), key=lambda n: n.name):
        node = f"{host}/{net.name}" if multi_host else net.name
        # ipvlan's flag is `bridge` unless -o ipvlan_flag says otherwise (20.10 has no flag: bridge behaviour)
        flag = net.flag if net.driver == "ipvlan" and net.flag not in (None, "bridge") else None
        mode = f"{net.driver} {net.mode}" + (f" {flag}" if flag else "")
        extra = "".join(f" {word}" for word, on in (("internal", net.internal), ("ipv6", net.ipv6)) if on)
        out.append(fact("network", node, None, f"{mode} parent {net.parent}{extra}"))
        for pool in net.pools:
            text = str(pool.subnet)
            if pool.ip_range is not None:
                text += f" range {pool.ip_range}"
            for name, ip in sorted((pool.aux or {}).items()):
                text += f" aux {name}={ip}"
            out.append(fact("subnet", node, None, text))
    for link in sorted(state.host_links.values(), key=lambda link: link.name):
        if link.owner == "topology":
            continue
        what = link.kind + (f" {link.vlan_id}" if link.vlan_id is not None else "")
        on = f" on {link.parent}" if link.parent else ""
        by = "by the user" if link.owner == "user" else f"made by {names_by_id.get(link.owner, link.owner)}"
        out.append(fact("parent", host, link.name, f"{what}{on}, {by}"))
    return out


def version_of(result: ScenarioResult | None) -> str:
    for f in (result.facts if result is not None else ()):
        if f.get("kind") == "version":
            return str(f.get("value", ""))
    return ""


# -- Docker's random choices ---------------------------------------------------------------------------


def real_choices(scenario, real: ScenarioResult | None, profile: str) -> tuple:
    """The order a real engine took at each of the scenario's random choices (`harness.docker.choices`),
    read back from the facts each choice shows in (`docker network inspect` lists a network's subnets in
    the order the daemon received and allocates from them; a refused `docker run` names its networks), as
    `Scenario.docker_choices` entries; () when the scenario has no
    random choice, pins its own in the file, or the real run recorded nothing to read it from."""
    from harness.docker.emulated import choice_points_of, compile_scenario  # the diff itself needs none

    if real is None or not real.facts or scenario.docker_choices:
        return ()
    points = choice_points_of(compile_scenario(scenario, profile).emulator)
    shown: dict[tuple[str, str], list[str]] = {}
    for f in real.facts:
        shown.setdefault((str(f.get("kind")), str(f.get("node"))), []).append(str(f.get("value", "")))
    pinned = []
    for key, point in sorted(points.items()):
        # Where each option first appears in the facts that show the order (a network's subnets, one per
        # fact; a command's error text naming the networks).
        text = "\n".join(shown.get(point.seen_in, ()))
        where = {o: m.start() for o in point.options
                 if (m := re.search(rf"(?<![\w.:/-]){re.escape(o)}(?![\w.:/-])", text))}
        if len(where) == len(point.options):
            pinned.append((key, tuple(sorted(point.options, key=where.__getitem__)), NOWHERE))
    return tuple(pinned)


def describe_choices(choices: tuple) -> list[str]:
    return [f"{key}: {', '.join(order)}" for key, order, _ in choices]


# -- known divergences -------------------------------------------------------------------------------


class DivergenceFileError(HarnessError):
    """The divergences file is malformed; the message names file:line."""

    def __init__(self, message: str, file: str, line: int | None = None):
        self.file, self.line = file, line
        super().__init__(f"{file}:{line}: {message}" if line else f"{file}: {message}")


@dataclass(frozen=True)
class Divergence:
    """A known difference between the emulation and a real engine, explained (one entry of the file).

    Globs (`fnmatch`, case-sensitive) over the scenario's name, the fact's kind, node and interface, the real
    engine's version and, optionally, each side's value; `status` restricts it to some row statuses.
    """

    scenario: str
    kinds: tuple[str, ...]
    versions: tuple[str, ...]
    explanation: str
    node: str = "*"
    interface: str = "*"
    emulated: tuple[str, ...] = ()  # globs one of which the emulated value must match (empty: any)
    real: tuple[str, ...] = ()
    status: tuple[str, ...] = ROW_STATUSES
    location: str = ""  # file:line of the entry

    def matches(self, scenario: str, version: str, row: Row) -> bool:
        if row.status not in self.status or not fnmatch.fnmatchcase(scenario, self.scenario):
            return False
        if not any(fnmatch.fnmatchcase(row.kind, k) for k in self.kinds):
            return False
        if not fnmatch.fnmatchcase(row.node, self.node) or not fnmatch.fnmatchcase(row.interface or "", self.interface):
            return False
        if not any(fnmatch.fnmatchcase(version, v) for v in self.versions):
            return False
        for globs, value in ((self.emulated, row.emulated), (self.real, row.real)):
            if globs and (value is None or not any(fnmatch.fnmatchcase(value, g) for g in globs)):
                return False
        return True


_FIELDS = {"scenario", "kind", "node", "interface", "emulated", "real", "status", "versions", "explanation"}
_REQUIRED = ("scenario", "kind", "versions", "explanation")


class _LineLoader(yaml.SafeLoader):
    pass


def _compose(text: str, path: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise DivergenceFileError(f"not valid YAML: {exc.problem or exc.context}", path,
                                  mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise DivergenceFileError(f"not valid YAML: {exc}", path) from None


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _scalar(node: yaml.Node, what: str, path: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or node.tag == "tag:yaml.org,2002:null":
        raise DivergenceFileError(f"{what} must be a string", path, _line(node))
    value = str(node.value).strip()
    if not value:
        raise DivergenceFileError(f"{what} must not be empty", path, _line(node))
    return value


def _strings(node: yaml.Node, what: str, path: str) -> tuple[str, ...]:
    """A string or a non-empty list of strings."""
    if isinstance(node, yaml.SequenceNode):
        if not node.value:
            raise DivergenceFileError(f"{what} must not be an empty list", path, _line(node))
        return tuple(_scalar(item, what, path) for item in node.value)
    return (_scalar(node, what, path),)


def parse_divergences(text: str, path: str = "<memory>") -> list[Divergence]:
    """The entries of a divergences file; a `DivergenceFileError` naming file:line for anything wrong."""
    root = _compose(text, path)
    if root is None:
        return []
    if not isinstance(root, yaml.MappingNode):
        raise DivergenceFileError("the file must be a mapping with the key `divergences`", path, _line(root))
    entries_node = None
    for key, value in root.value:
        name = _scalar(key, "a key", path)
        if name != "divergences":
            raise DivergenceFileError(f"unknown key {name!r} (the only key is `divergences`)", path, _line(key))
        entries_node = value
    if entries_node is None or (isinstance(entries_node, yaml.ScalarNode) and entries_node.tag.endswith(":null")):
        return []
    if not isinstance(entries_node, yaml.SequenceNode):
        raise DivergenceFileError("`divergences` must be a list of entries", path, _line(entries_node))
    out = []
    for entry in entries_node.value:
        where = _line(entry)
        if not isinstance(entry, yaml.MappingNode):
            raise DivergenceFileError("an entry must be a mapping (scenario, kind, versions, explanation, ...)",
                                      path, where)
        fields: dict[str, yaml.Node] = {}
        for key, value in entry.value:
            name = _scalar(key, "a key", path)
            if name not in _FIELDS:
                raise DivergenceFileError(f"unknown key {name!r} (known: {', '.join(sorted(_FIELDS))})", path,
                                          _line(key))
            if name in fields:
                raise DivergenceFileError(f"duplicate key {name!r}", path, _line(key))
            fields[name] = value
        # Each field as it is written (the first bad one is the error), then what is missing.
        values: dict[str, object] = {}
        for name, node in fields.items():
            if name in ("kind", "versions", "emulated", "real", "status"):
                values[name] = _strings(node, name, path)
            else:
                values[name] = _scalar(node, name, path)
            if name == "kind":
                for k in values[name]:
                    if not any(fnmatch.fnmatchcase(known, k) for known in FACT_KINDS):
                        raise DivergenceFileError(f"kind {k!r} matches no fact kind (kinds: {', '.join(FACT_KINDS)})",
                                                  path, _line(node))
            elif name == "status":
                for st in values[name]:
                    if st not in ROW_STATUSES:
                        raise DivergenceFileError(f"status {st!r} is not one of: {', '.join(ROW_STATUSES)}", path,
                                                  _line(node))
            elif name == "explanation":
                values[name] = " ".join(str(values[name]).split())
                if len(values[name]) < 20:
                    raise DivergenceFileError("the explanation must say why the emulation differs on purpose "
                                              "(a sentence, at least 20 characters)", path, _line(node))
        for name in _REQUIRED:
            if name not in values:
                raise DivergenceFileError(f"the entry has no {name!r}", path, where)
        out.append(Divergence(
            scenario=values["scenario"],
            kinds=values["kind"],
            versions=values["versions"],
            explanation=values["explanation"],
            node=values.get("node", "*"),
            interface=values.get("interface", "*"),
            emulated=values.get("emulated", ()),
            real=values.get("real", ()),
            status=values.get("status", ROW_STATUSES),
            location=f"{path}:{where}",
        ))
    return out


def load_divergences(path: str | Path = DIVERGENCES_PATH) -> list[Divergence]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DivergenceFileError("no such file", str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DivergenceFileError(f"cannot read: {getattr(exc, 'strerror', None) or exc}", str(path)) from None
    return parse_divergences(text, str(path))


# -- the diff ----------------------------------------------------------------------------------------


@dataclass
class Row:
    kind: str
    node: str
    interface: str | None
    emulated: str | None  # the values, joined; None when this side has no such fact
    real: str | None
    status: str  # equal | differs | emulated only | real only | info
    divergence: Divergence | None = None

    @property
    def explained(self) -> bool:
        return self.divergence is not None

    @property
    def unexplained(self) -> bool:
        return self.status in ROW_STATUSES and self.divergence is None

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "divergence"}
        d["explained_by"] = ({"location": self.divergence.location, "explanation": self.divergence.explanation}
                             if self.divergence else None)
        return d


@dataclass
class Comparison:
    scenario: str
    path: str
    status: str  # conforms | explained | differs | not compared
    reason: str = ""
    emulated: ScenarioResult | None = None
    real: ScenarioResult | None = None
    rows: list[Row] = field(default_factory=list)
    choices: list[str] = field(default_factory=list)  # Docker's random choices, as the real engine took them

    @property
    def differences(self) -> list[Row]:
        return [r for r in self.rows if r.status in ROW_STATUSES]

    @property
    def unexplained(self) -> list[Row]:
        return [r for r in self.rows if r.unexplained]

    @property
    def explained(self) -> list[Row]:
        return [r for r in self.rows if r.status in ROW_STATUSES and r.divergence is not None]

    def to_dict(self) -> dict:
        def side(r: ScenarioResult | None) -> dict | None:
            if r is None:
                return None
            return {"backend": r.backend, "kernel": r.kernel, "status": r.status, "reason": r.reason,
                    "docker": version_of(r), "profile": r.profile}

        return {
            "scenario": self.scenario, "path": self.path, "status": self.status, "reason": self.reason,
            "emulated": side(self.emulated), "real": side(self.real),
            "docker_choices": self.choices,
            "differences": len(self.differences), "unexplained": len(self.unexplained),
            "rows": [r.to_dict() for r in self.rows],
            "results": {"emulated": self.emulated.to_dict() if self.emulated else None,
                        "real": self.real.to_dict() if self.real else None},
        }


def canonical(value: str) -> str:
    """A value as compared: Docker's ids (each side makes its own) as `<id>`."""
    return _ID.sub("<id>", value)


def _natural(text: str | None) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text or ""))


def _value_key(value: str):
    """Addresses in numeric order (172.16.86.2 before .10), anything else after them, by text."""
    head = value.split()[0] if value.split() else value
    try:
        iface = ipaddress.ip_interface(head)
        return (0, iface.version, int(iface.ip), value)
    except ValueError:
        return (1, 0, 0, value)


def _grouped(facts: Iterable[dict]) -> dict[tuple, list[str]]:
    out: dict[tuple, list[str]] = {}
    for f in facts:
        interface = f.get("interface")
        key = (str(f.get("kind", "")), canonical(str(f.get("node", ""))),
               canonical(str(interface)) if interface is not None else None)
        out.setdefault(key, []).append(str(f.get("value", "")))
    return out


def _row_order(row: Row) -> tuple:
    kind = KIND_ORDER.index(row.kind) if row.kind in KIND_ORDER else len(KIND_ORDER)
    per_container = row.kind in ("endpoint", "link", "mac", "address", "gateway", "route")
    # A container's facts together, interface by interface; everything else kind by kind.
    if per_container:
        return (KIND_ORDER.index("endpoint"), _natural(row.node), _natural(row.interface), kind)
    return (kind, _natural(row.node), _natural(row.interface), 0)


def not_compared_reason(emulated: ScenarioResult | None, real: ScenarioResult | None) -> str | None:
    for side, r in (("the emulation", emulated), ("the real engine", real)):
        if r is None:
            return f"{side} did not run it"
        if r.status in (SKIP, ERROR):
            first = r.reason.strip().splitlines()[0] if r.reason.strip() else ""
            return f"{side} ({r.backend}): {r.status}" + (f": {first}" if first else "")
        if not r.facts:
            return f"{side} ({r.backend}) recorded no facts (a result from before `harness conform`, or a backend " \
                   f"that observes nothing)"
    return None


def compare(emulated: ScenarioResult | None, real: ScenarioResult | None,
            divergences: Sequence[Divergence] = (), choices: Sequence[str] = ()) -> Comparison:
    """The rows of one scenario, emulated vs real, with the known divergences applied; `choices` says which
    of Docker's random choices the real engine took (and the emulation was pinned to)."""
    base = emulated or real
    name = base.scenario if base else "?"
    comparison = Comparison(name, base.path if base else "", CONFORMS, emulated=emulated, real=real,
                            choices=list(choices))
    reason = not_compared_reason(emulated, real)
    if reason:
        comparison.status, comparison.reason = NOT_COMPARED, reason
        return comparison
    version = version_of(real)
    left, right = _grouped(emulated.facts), _grouped(real.facts)
    rows = []
    for key in set(left) | set(right):
        kind, node, interface = key
        a, b = left.get(key), right.get(key)
        shown_a = ", ".join(sorted(a, key=_value_key)) if a is not None else None
        shown_b = ", ".join(sorted(b, key=_value_key)) if b is not None else None
        if kind == "version":
            status = INFO
        elif a is None:
            status = REAL_ONLY
        elif b is None:
            status = EMULATED_ONLY
        elif sorted(map(canonical, a)) == sorted(map(canonical, b)):
            status = EQUAL
        else:
            status = DIFFERS
        row = Row(kind, node, interface, shown_a, shown_b, status)
        if status in ROW_STATUSES:
            row.divergence = next((d for d in divergences if d.matches(name, version, row)), None)
        rows.append(row)
    comparison.rows = sorted(rows, key=_row_order)
    if comparison.unexplained:
        comparison.status = DIFFERENT
        comparison.reason = f"{len(comparison.unexplained)} unexplained difference(s)"
    elif comparison.explained:
        comparison.status = EXPLAINED
        comparison.reason = f"{len(comparison.explained)} explained difference(s)"
    return comparison


def exit_status(comparisons: Sequence[Comparison]) -> int:
    """1: an unexplained difference; 3: none, but a scenario was not compared; 0: every scenario compared
    and every difference explained."""
    if any(c.status == DIFFERENT for c in comparisons):
        return 1
    if any(c.status == NOT_COMPARED for c in comparisons):
        return 3
    return 0
