"""Judging: observations against the scenario's explicit expectations and the oracle's derived ones.

`Judge` turns `NodeView`s and `PingResult`s into `Check`s. Explicit expectations come from the
scenario's `expect` (addresses, routes, MACs, links, reach, isolate); derived ones from the `Oracle`
(the reachability matrix and each container's link, MAC, addresses and default route). `error_matches`
compares Docker's answer with the expected one (`*` matches any text; Docker's and the CLI's prefixes
and a trailing period are ignored). Messages speak the domain: who could not reach whom, expected vs
observed, and the probe command with its output.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from harness.model import Probe, Scenario
from harness.observe import NodeView, PingJob, PingResult, RouteView, parse_route_get
from harness.oracle import HOST, Oracle
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

    # -- probes ---------------------------------------------------------------------------------------

    def explicit_probe_jobs(self) -> tuple[list[tuple[Probe, bool, PingJob | None, str]], list[Check]]:
        """Each `reach`/`isolate` entry as concrete pings; entries that cannot be probed become failed checks."""
        jobs, failed = [], []
        running = set(self.oracle.state.containers) | {HOST}
        addrs = self.oracle.addresses()
        for want, probes in ((True, self.scenario.expect.reach), (False, self.scenario.expect.isolate)):
            for probe in probes:
                kind = "reach" if want else "isolate"
                if probe.src not in running:
                    failed.append(Check(kind, str(probe), "a running source", f"{probe.src} is not running at the end of the scenario",
                                        False, location=str(probe.location)))
                    continue
                families = {a.ip.version for a in addrs if a.owner == probe.src}
                if probe.dst in running or probe.dst == HOST:
                    targets = [a for a in addrs if a.owner == probe.dst and a.ip.version in families]
                    if not targets:
                        failed.append(Check(kind, str(probe), "an address to probe",
                                            f"{probe.dst} has no address in a family {probe.src} has", False,
                                            location=str(probe.location)))
                        continue
                    for t in targets:
                        jobs.append((probe, want, PingJob(probe.src, str(t.ip), want), t.label))
                elif probe.dst in self.oracle.state.history:
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

    def probe_checks(self, explicit, matrix, results: dict[tuple, PingResult]) -> list[Check]:
        checks = []
        for probe, want, job, label in explicit:
            res = results[(job.src, job.dst, want)]
            src_label = self._src_label(job.src, job.dst)
            checks.append(Check(
                "reach" if want else "isolate", f"{src_label} -> {label}",
                "reachable" if want else "isolated", describe_ping(res), _agrees(res, want),
                evidence=res.evidence, location=str(probe.location), origin="expect"))
        for exp in matrix:
            res = results[(exp.src.owner, str(exp.dst.ip), exp.reachable)]
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
                checks.append(Check("address", name, cidr, ", ".join(have) or "no global address",
                                    _cidr_in(cidr, have), evidence=self._evidence(name, "addr"), location=str(loc)))
        for name, routes, loc in exp.routes:
            view = self.views.get(name)
            for text in routes:
                spec = RouteSpec.parse(text)
                ok = view is not None and any(spec.matches(r) for r in view.routes)
                checks.append(Check("route", name, text, _fmt_routes(view) if view else "node missing", ok,
                                    evidence=self._evidence(name, "route"), location=str(loc)))
        for name, mac, loc in exp.macs:
            link = self.views[name].links.get("eth0") if name in self.views else None
            observed = link.mac if link else "no eth0"
            checks.append(Check("mac", f"{name} eth0", mac, observed or "none", observed == mac,
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
        for name in sorted(self.oracle.state.containers):
            container = self.oracle.state.containers[name]
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
        host = self.views.get(HOST)
        for link in sorted(self.oracle.state.host_links.values(), key=lambda link: link.name):
            if link.kind not in ("vlan", "dummy"):
                continue
            seen = host.links.get(link.name) if host else None
            observed = "absent" if seen is None else (seen.kind or "device")
            checks.append(Check("link", f"host {link.name}", link.kind, observed, observed == link.kind,
                                evidence=self._evidence(HOST, "link"), origin="model"))
        return checks

    def _evidence(self, node: str, what: str) -> str:
        view = self.views.get(node)
        if view is None:
            return f"node {node} was not observed"
        if what in ("addr", "address"):
            return f"`ip -json addr show` in {node}: " + (", ".join(f"{i} {c}" for i, c, _ in view.addresses) or "none")
        if what == "route":
            return f"`ip -json route show` in {node}: {_fmt_routes(view)}"
        return f"`ip -json -details link show` in {node}: " + ", ".join(
            f"{link.name} {link.kind or 'device'}{' ' + link.mode if link.mode else ''} {link.mac or ''}".strip()
            for link in view.links.values())


def _cidr_in(cidr: str, have: list[str]) -> bool:
    want = ipaddress.ip_interface(cidr)
    return any(ipaddress.ip_interface(h) == want for h in have)
