"""Judging: observations against the scenario's explicit expectations and the oracle's derived ones.

`Judge` turns `NodeView`s and `PingResult`s into `Check`s. Explicit expectations come from the
scenario's `expect` (addresses, routes, MACs, links, reach, isolate, conflicts); derived ones from the
`Oracle` (the reachability matrix, each container's link, MAC, addresses, default route and hostname, and
the interface and source address a node with several of them uses, `path_checks`). Address
conflicts (several Docker hosts handing out one address on one segment) are judged on their own from
the switch's ARP view (`conflict_checks`, `ScanResult`s); a probe that depends on one is reported with
what it saw but without a verdict (`Check.judged` False). `error_matches`
compares Docker's answer with the expected one (`*` matches any text; Docker's and the CLI's prefixes
and a trailing period are ignored). Messages speak the domain: who could not reach whom, expected vs
observed, and the probe command with its output.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from harness.model import Probe, Scenario, one_of
from harness.observe import LinkView, NodeView, PingJob, PingResult, RouteView, ScanResult, parse_route_get
from harness.oracle import Conflict, Oracle, segment_text
from harness.results import Check

_PREFIXES = ("docker: ", "Error response from daemon: ")


def normalize_error(message: str) -> str:
    text = " ".join(message.split())
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if text.startswith(prefix):
                text, changed = text[len(prefix):], True
    return text.rstrip(".").strip()


def error_matches(expected: str, observed: str | None) -> bool:
    """Docker's answer against the expected one, where only `*` is a wildcard: Docker's own texts hold
    `[`, `]` and `?` (`only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed`), which must match themselves."""
    if observed is None:
        return False
    pattern = "".join(".*" if part == "*" else re.escape(part) for part in re.split(r"(\*)", normalize_error(expected)))
    return re.fullmatch(pattern, normalize_error(observed), flags=re.DOTALL) is not None


@dataclass(frozen=True)
class RouteSpec:
    dst: str
    gateway: str | None
    dev: str | None

    @classmethod
    def parse(cls, text: str) -> RouteSpec:
        words = text.split()
        if not words:
            raise ValueError("empty route")
        spec = dict(zip(words[1::2], words[2::2])) if len(words) > 1 else {}
        # "default via X dev Y", "10.0.0.0/24 dev eth0 proto kernel scope link src ..." – pairs after dst.
        gateway = spec.get("via")
        dev = spec.get("dev")
        return cls(words[0], gateway, dev)

    def matches(self, route: RouteView) -> bool:
        dst = route.dst
        want = self.dst
        if want in ("default", "0.0.0.0/0", "::/0"):
            want = "default"
        elif "/" not in want:
            want = f"{want}/{32 if ':' not in want else 128}"
        if dst != "default" and "/" not in dst:
            dst = f"{dst}/{32 if ':' not in dst else 128}"
        if dst != want:
            try:
                if ipaddress.ip_network(dst, strict=False) != ipaddress.ip_network(want, strict=False):
                    return False
            except ValueError:
                return False
        if self.gateway and route.gateway != self.gateway:
            return False
        if self.gateway is None and route.gateway is not None and self.dst == "default":
            return False  # "default dev eth0" is a device route, not one via a gateway
        return not (self.dev and route.dev != self.dev)


def _fmt_routes(view: NodeView) -> str:
    return "; ".join(str(r) for r in view.routes) or "no routes"


_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")


def describe_ping(result: PingResult) -> str:
    if result.probe_error:
        return f"a broken probe ({result.summary})"
    if result.unbacked and not result.reached:
        return f"no verdict: no reply, but {result.unbacked}"
    m = _SUMMARY.search(result.summary)
    if result.reached:
        got = f"{m.group(2)}/{m.group(1)} replies" if m else "a reply"
        return f"reachable ({got})"
    if m:
        return f"no reply ({m.group(2)}/{m.group(1)} replies)"
    return f"no reply ({result.summary})"


def _agrees(result: PingResult, want: bool) -> bool:
    """A probe's verdict matches: a reply for reachable; for isolated, silence that its batch backs."""
    if result.probe_error:
        return False
    return result.reached if want else not result.reached and not result.unbacked


class Judge:
    def __init__(self, scenario: Scenario, oracle: Oracle, views: dict[str, NodeView]):
        self.scenario = scenario
        self.oracle = oracle
        self.views = views
        self.hostnames: dict = {}  # node -> the CommandResult of reading its hostname (harness.observe)
        self.conflicts: list[Conflict] = oracle.conflicts()

    # -- probes ---------------------------------------------------------------------------------------

    def explicit_probe_jobs(self) -> tuple[list[tuple[Probe, bool, PingJob | None, str]], list[Check]]:
        """Each `reach`/`isolate` entry as concrete pings; entries that cannot be probed become failed checks."""
        jobs, failed = [], []
        hosts = set(self.oracle.host_names)
        running = set(self.oracle.fleet.containers) | hosts
        addrs = self.oracle.addresses()
        for want, probes in ((True, self.scenario.expect.reach), (False, self.scenario.expect.isolate)):
            for probe in probes:
                kind = "reach" if want else "isolate"
                if probe.src not in running:
                    failed.append(Check(kind, str(probe), "a running source", f"{probe.src} is not running at the end of the scenario",
                                        False, location=str(probe.location)))
                    continue
                families = {a.ip.version for a in addrs if a.owner == probe.src}
                if probe.dst in running:
                    targets = [a for a in addrs if a.owner == probe.dst and a.ip.version in families]
                    if not targets:
                        failed.append(Check(kind, str(probe), "an address to probe",
                                            f"{probe.dst} has no address in a family {probe.src} has", False,
                                            location=str(probe.location)))
                        continue
                    for t in targets:
                        jobs.append((probe, want, PingJob(probe.src, str(t.ip), want), t.label))
                elif probe.dst in self.oracle.fleet.history:
                    failed.append(Check(kind, str(probe), "a running destination",
                                        f"{probe.dst} is not running at the end of the scenario", False,
                                        location=str(probe.location)))
                else:
                    jobs.append((probe, want, PingJob(probe.src, probe.dst, want), self._label(probe.dst)))
        return jobs, failed

    def _label(self, ip: str) -> str:
        for a in self.oracle.addresses():
            if str(a.ip) == ip:
                return a.label
        return ip

    def _conflict_in(self, src: str, dst_ip: str) -> Conflict | None:
        """The conflict a probe from node `src` to `dst_ip` depends on: on its destination, or on the
        source's own address of that family."""
        try:
            ip = ipaddress.ip_address(dst_ip)
        except ValueError:
            return None
        for c in self.conflicts:
            if c.ip == ip or (c.ip.version == ip.version and src in c.owners):
                return c
        return None

    def probe_checks(self, explicit, matrix, results: dict[tuple, PingResult]) -> list[Check]:
        checks = []
        for probe, want, job, label in explicit:
            res = results[(job.src, job.dst, want)]
            src_label = self._src_label(job.src, job.dst)
            conflict = self._conflict_in(job.src, job.dst)
            if conflict is not None:
                checks.append(_unjudged(f"{src_label} -> {label}", conflict, res, str(probe.location), "expect"))
                continue
            checks.append(Check(
                "reach" if want else "isolate", f"{src_label} -> {label}",
                "reachable" if want else "isolated", describe_ping(res), _agrees(res, want),
                evidence=res.evidence, location=str(probe.location), origin="expect"))
        for exp in matrix:
            res = results[(exp.src.owner, str(exp.dst.ip), exp.reachable)]
            if exp.reachable is None:
                checks.append(_unjudged(f"{exp.src.label} -> {exp.dst.label}", exp.conflict, res, "", "matrix"))
                continue
            checks.append(Check(
                "reach" if exp.reachable else "isolate", f"{exp.src.label} -> {exp.dst.label}",
                ("reachable" if exp.reachable else "isolated") + f" ({exp.reason})", describe_ping(res),
                _agrees(res, exp.reachable), evidence=res.evidence, origin="matrix"))
        return checks

    def _src_label(self, src: str, dst_ip: str) -> str:
        """The source as the kernel will send: from the address its route to `dst_ip` picks."""
        try:
            dst = ipaddress.ip_address(dst_ip)
        except ValueError:
            dst = ipaddress.ip_address("0.0.0.0")
        found = self.oracle.source_of(src, dst)
        return found.label if found is not None else src

    def path_checks(self, paths, results) -> list[Check]:
        """Each path fact against the kernel's own routing decision (`ip -json route get` in the node)."""
        checks = []
        for fact, res in zip(paths, results):
            observed = parse_route_get(res)
            checks.append(Check("path", fact.node, fact.value, observed, observed == fact.value,
                                evidence=f"`{res.command}` in {fact.node}: exit {res.exit_code}: "
                                         f"{(res.stdout or res.stderr).strip()}", origin="model"))
        return checks

    # -- state ----------------------------------------------------------------------------------------

    def state_checks(self) -> list[Check]:
        checks = []
        exp = self.scenario.expect
        for name, values, loc in exp.addresses:
            view = self.views.get(name)
            have = view.global_addresses() if view else []
            for cidr in values:
                ok = any(_cidr_in(one, have) for one in one_of(cidr))
                checks.append(Check("address", name, cidr, ", ".join(have) or "no global address",
                                    ok, evidence=self._evidence(name, "addr"), location=str(loc)))
        for name, routes, loc in exp.routes:
            view = self.views.get(name)
            for text in routes:
                specs = [RouteSpec.parse(one) for one in one_of(text)]
                ok = view is not None and any(spec.matches(r) for spec in specs for r in view.routes)
                checks.append(Check("route", name, text, _fmt_routes(view) if view else "node missing", ok,
                                    evidence=self._evidence(name, "route"), location=str(loc)))
        for name, mac, loc in exp.macs:
            link = self.views[name].links.get("eth0") if name in self.views else None
            observed = link.mac if link else "no eth0"
            checks.append(Check("mac", f"{name} eth0", mac, observed or "none", observed in one_of(mac),
                                evidence=self._evidence(name, "link"), location=str(loc)))
        for le in exp.links:
            view = self.views.get(le.node)
            link = view.links.get(le.name) if view else None
            if le.kind is None:
                checks.append(Check("link", f"{le.node} {le.name}", "absent",
                                    "absent" if link is None else f"present ({link.kind or 'device'})",
                                    link is None, evidence=self._evidence(le.node, "link"), location=str(le.location)))
                continue
            observed = "absent" if link is None else " ".join(filter(None, [link.kind or "device", link.mode if le.mode else None]))
            want = " ".join(filter(None, [le.kind, le.mode]))
            checks.append(Check("link", f"{le.node} {le.name}", want, observed, observed == want,
                                evidence=self._evidence(le.node, "link"), location=str(le.location)))
        return checks

    def model_checks(self) -> list[Check]:
        """What Docker 20.10 would show in every running container, and the parents it manages."""
        checks = []
        containers = self.oracle.fleet.containers
        for name in sorted(containers):
            container = containers[name]
            view = self.views.get(name)
            for fact in self.oracle.expected_state(container):
                link = view.links.get(fact.interface) if view else None
                if fact.kind == "hostname":
                    res = self.hostnames.get(name)
                    observed = (res.stdout.strip() or "empty") if res is not None and res.ok else \
                        f"not read ({res.stderr.strip() if res is not None else 'not asked'})"
                    checks.append(Check("hostname", name, fact.value, observed, observed == fact.value,
                                        evidence=f"`{res.command}` in {name}'s UTS namespace: exit {res.exit_code}"
                                        if res is not None else "", origin="model"))
                    continue
                if fact.kind == "link":
                    observed = "absent" if link is None else f"{link.kind} {link.mode}"
                    ok = observed == fact.value
                elif fact.kind == "mac":
                    observed = link.mac if link else "absent"
                    ok = observed == fact.value
                elif fact.kind == "address":
                    have = view.cidrs_on(fact.interface) if view else []
                    observed, ok = ", ".join(have) or "none", fact.value in have
                else:
                    spec = RouteSpec.parse(fact.value)
                    observed = _fmt_routes(view) if view else "node missing"
                    ok = view is not None and any(spec.matches(r) for r in view.routes)
                checks.append(Check(fact.kind, fact.subject, fact.value, observed, ok,
                                    evidence=self._evidence(name, fact.kind), origin="model"))
        for node, state in self.oracle.fleet.hosts.items():
            host = self.views.get(node)
            for link in sorted(state.host_links.values(), key=lambda link: link.name):
                if link.kind not in ("vlan", "dummy"):
                    continue
                seen = host.links.get(link.name) if host else None
                observed = "absent" if seen is None else (seen.kind or "device")
                checks.append(Check("link", f"{node} {link.name}", link.kind, observed, observed == link.kind,
                                    evidence=self._evidence(node, "link"), origin="model"))
        return checks

    # -- address conflicts ----------------------------------------------------------------------------

    def conflict_checks(self, scan: dict[tuple[str, str], ScanResult]) -> list[Check]:
        """Each address conflict, judged on its own: the model's prediction (two holders on one segment),
        the ARP view of the switch (`scan`: two answers to one request), and the scenario's `conflicts`.
        An unexpected conflict fails, an expected one passes only when the wire shows it; with no conflict
        at all, one check says that every scanned address had one holder."""
        world = self.oracle.world
        expected = {ip: (holders, loc) for ip, holders, loc in self.scenario.expect.conflicts}
        checks = []
        seen_ips = set()

        def view(ip, segment) -> ScanResult | None:
            kind, vlan, *rest = segment
            if kind != "wire" or not world.monitor:
                return None
            return scan.get((world.monitor_iface(rest[0] if rest else "", vlan), str(ip)))

        for c in self.conflicts:
            seen_ips.add(str(c.ip))
            heard = view(c.ip, c.segment)
            want = expected.get(str(c.ip))
            observed = heard.describe() if heard is not None else "no ARP view (no monitor port on the switch)"
            on_wire = heard is not None and self._holders(heard) > 1
            subject = f"address {c.ip} ({segment_text(c.segment)})"
            holders = ", ".join(a.holder for a in c.holders)
            if want is None:
                checks.append(Check("conflict", subject, "no address conflict",
                                    f"a conflict: {c.ip} is held by {holders}; the wire: {observed}", False,
                                    evidence=heard.evidence if heard else "", origin="model"))
                continue
            names, loc = want
            ok = on_wire and tuple(names) == c.owners
            checks.append(Check("conflict", subject, f"a conflict between {', '.join(names)} (more than one answer per "
                                "request on the wire)", f"held by {holders}; the wire: {observed}", ok,
                                evidence=heard.evidence if heard else "", location=str(loc), origin="expect"))
        for ip, (names, loc) in sorted(expected.items()):
            if ip not in seen_ips:
                checks.append(Check("conflict", f"address {ip}", f"a conflict between {', '.join(names)}",
                                    "no two nodes hold it on one segment (Docker's state)", False,
                                    location=str(loc), origin="expect"))
        # What the model does not predict but the wire shows is a conflict too (e.g. an address set by hand).
        predicted = {(str(c.ip)) for c in self.conflicts}
        for (iface, ip), heard in sorted(scan.items()):
            if heard.error:
                checks.append(Check("conflict", f"address {ip} on {iface}", "an ARP view", heard.describe(), False,
                                    evidence=heard.evidence, origin="model"))
            elif self._holders(heard) > 1 and ip not in predicted:
                checks.append(Check("conflict", f"address {ip} on {iface}", "one holder (Docker's state)",
                                    heard.describe(), False, evidence=heard.evidence, origin="model"))
        if scan and not self.conflicts and all(not h.error and self._holders(h) <= 1 for h in scan.values()):
            checks.append(Check("conflict", "the wire", "no address conflict",
                                f"{len(scan)} addresses, each answered by one node at most",
                                True, evidence="; ".join(f"{ip}: {h.describe()}" for (_, ip), h in sorted(scan.items())),
                                origin="model"))
        return checks

    def _holders(self, heard: ScanResult) -> int:
        """How many nodes answered one request (the most of any round). A Docker host answers ARP for all its
        addresses on every interface that hears the request (arp_ignore 0: the weak host model), so its NIC
        and its macvlan shim (`mac0`) on one segment are two answers from one holder: answers from MACs that
        only one observed node has count once per node. A MAC that several nodes share (20.10 derives it
        from the address) or no observed node has counts once per answer."""
        owners: dict[str, set[str]] = {}
        for node, view in self.views.items():
            for link in view.links.values():
                if link.mac:
                    owners.setdefault(link.mac.lower(), set()).add(node)
        most = 0
        for macs in heard.rounds:
            seen: set = set()
            for i, mac in enumerate(macs):
                nodes = owners.get(mac.lower(), set())
                seen.add(next(iter(nodes)) if len(nodes) == 1 else (mac, i))
            most = max(most, len(seen))
        return most

    def _evidence(self, node: str, what: str) -> str:
        view = self.views.get(node)
        if view is None:
            return f"node {node} was not observed"
        if what in ("addr", "address"):
            return f"`{view.query('addr')}` in {node}: " + (", ".join(f"{i} {c}" for i, c, _ in view.addresses) or "none")
        if what == "route":
            return f"`{view.query('route')}` in {node}: {_fmt_routes(view)}"
        return f"`{view.query('link')}` in {node}: " + ", ".join(
            f"{link.name} {link.kind or 'device'}{' ' + link.mode if link.mode else ''} {link.mac or ''}".strip()
            for link in view.links.values())


def _unjudged(subject: str, conflict: Conflict, res: PingResult, location: str, origin: str) -> Check:
    """A probe that depends on an address conflict: reported with what it saw, without a verdict."""
    return Check("reach?", subject, f"no verdict ({conflict.ip} is in conflict: {', '.join(a.holder for a in conflict.holders)})",
                 describe_ping(res), True, evidence=res.evidence, location=location, origin=origin, judged=False)


def _cidr_in(cidr: str, have: list[str]) -> bool:
    want = ipaddress.ip_interface(cidr)
    return any(ipaddress.ip_interface(h) == want for h in have)


def predicted_views(oracle: Oracle) -> dict[str, NodeView]:
    """What each running container would show if the kernel did exactly what Docker asked (the oracle's
    facts, plus the connected route the kernel adds for each address): the scenario's explicit
    expectations judged against Docker's prediction instead of an observation (`expectations_hold`)."""
    views = {}
    for name, container in oracle.fleet.containers.items():
        links, addresses, routes = {}, [], []
        for fact in oracle.expected_state(container):
            if fact.kind == "hostname":
                continue  # not a network fact: nothing the state checks read
            iface = fact.interface or "eth0"
            link = links.setdefault(iface, LinkView(iface, None, None, None, True))
            if fact.kind == "link":
                kind, _, mode = fact.value.partition(" ")
                links[iface] = LinkView(iface, kind, mode or None, link.mac, True)
            elif fact.kind == "mac":
                links[iface] = LinkView(iface, link.kind, link.mode, fact.value, True)
            elif fact.kind == "address":
                cidr = ipaddress.ip_interface(fact.value)
                scope = "link" if cidr.ip.is_link_local else "global"
                addresses.append((iface, fact.value, scope))
                if cidr.network.prefixlen < cidr.max_prefixlen:
                    routes.append(RouteView(str(cidr.network), None, iface, cidr.version))
            elif fact.kind == "route":
                spec = RouteSpec.parse(fact.value)
                family = 6 if spec.gateway and ":" in spec.gateway else 4
                routes.append(RouteView("default", spec.gateway, spec.dev, family))
        views[name] = NodeView(name, links, tuple(addresses), tuple(routes))
    return views


def expectations_hold(scenario: Scenario, oracle: Oracle) -> list[Check]:
    """The scenario's explicit expectations that Docker's predicted state does not meet (addresses, routes,
    MACs and links against `predicted_views`; reach and isolate against the oracle's rules where they can
    say): none, when the scenario is stated for this outcome of Docker's."""
    judge = Judge(scenario, oracle, predicted_views(oracle))
    failed = [c for c in judge.state_checks() if not c.ok and c.subject.split()[0] in judge.views]
    # reach/isolate entries, where the model can say (the oracle's verdict, as the matrix judges a pair: from
    # the address the source's route picks, `Oracle.source_of`)
    addrs = oracle.addresses()
    by_ip = {str(a.ip): a for a in addrs}
    # (only where the scenario keeps the matrix: a scenario that turns it off says the oracle cannot model it)
    explicit, _ = judge.explicit_probe_jobs() if scenario.expect.matrix else ([], [])
    for probe, want, job, label in explicit:
        dst = by_ip.get(job.dst)
        src = oracle.source_of(job.src, dst.ip, addrs) if dst is not None else None
        verdict = oracle.verdict(src, dst, addrs) if src is not None else None
        if verdict is not None and verdict[0] != want:
            failed.append(Check("reach" if want else "isolate", f"{src.label} -> {label}",
                                "reachable" if want else "isolated",
                                ("reachable" if verdict[0] else "isolated") + f" ({verdict[1]})", False,
                                location=str(probe.location), origin="expect"))
    return failed

