"""Running the bench: `BenchRunner` builds every topology in its own backend session, keeps one iperf3 server
and one request/response server per topology running, and runs rounds: every test on every topology, the
order rotated each round (`rotated`), so that ratios are taken between measurements seconds apart.

Before each round it measures the idle machine (/proc/stat) and waits a little for somebody else's load to
pass; a round that was noisy anyway is flagged (a fixed-rounds run leaves it out of the statistics and
replaces it; an adaptive run keeps it, see `harness.bench.stats.usable_rounds`). An adaptive run
spends its time on pairs, TCP macvlan then bridge or bridge then macvlan, with a few full rounds (every
test on every topology) spread over its budget (`_round_plan`), and stops (`harness.bench.stats.StopRule`)
when the macvlan/bridge interval is narrow enough and the full rounds are in, or the budget is spent. `Progress` is what the runner
tells its display (`RichProgress`: a bar on stderr); `BenchRunner.document` gives the results document.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness import proc
from harness.bench.document import RoundRecord, TopologyStatus, build_document, rr_cpu
from harness.bench.metrics import PRIMARY, compute_stats, primary_id, primary_stat
from harness.bench.params import BenchError, BenchParams, BenchUnavailable
from harness.bench.parse import (
    Result,
    RrResult,
    Sample,
    listening_ports,
    parse_iperf3_tcp,
    parse_iperf3_udp,
    parse_iperf3_version,
    parse_rr,
)
from harness.bench.stats import Load, MetricStat, StopRule, read_cpu_times, usable_rounds
from harness.bench.topologies import CLIENT, SERVER, SERVER_ADDR, Topology, topology_for
from harness.errors import KernelError
from harness.plan import FEATURES

# The probe runs as a script inside the nodes (`python -I rrprobe.py`), next to this module.
RRPROBE = Path(__file__).resolve().parent / "rrprobe.py"
IPERF_PORT, RR_PORT, RR_FLOOR_PORT = 5201, 5301, 5302


def rotated(names: Sequence[str], round_index: int) -> list[str]:
    """Round r starts with topology r mod n, so every topology runs first, middle and last equally often."""
    if not names:
        return []
    k = round_index % len(names)
    return list(names[k:]) + list(names[:k])


class Progress:
    """What the runner tells its display; the default says nothing (tests, --quiet)."""

    def start(self, total: float | None, unit: str) -> None: ...

    def step(self, text: str) -> None: ...

    def advance(self, completed: float, status: str) -> None: ...

    def stop(self) -> None: ...


class RichProgress(Progress):
    """A rich progress bar on stderr: over the time budget (adaptive) or over rounds (fixed)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as _Progress

        self._bar = _Progress(TextColumn("[bold]bench[/bold]"), BarColumn(), TextColumn("{task.description}"),
                              TimeElapsedColumn(), console=Console(stderr=True), transient=False)
        self._task = None
        self._status = ""

    def start(self, total: float | None, unit: str) -> None:
        self._bar.start()
        self._task = self._bar.add_task("setting up", total=total)

    def step(self, text: str) -> None:
        if self._task is not None:
            self._bar.update(self._task, description=f"{text}  {self._status}")

    def advance(self, completed: float, status: str) -> None:
        self._status = status
        if self._task is not None:
            self._bar.update(self._task, completed=completed, description=status)

    def stop(self) -> None:
        self._bar.stop()


@dataclass
class _Live:
    """A built topology with its servers running."""

    topology: Topology
    session: object


def _process_exited(pid: int) -> bool:
    """True when `pid` is gone or a zombie (exited, not yet reaped by the backend)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


class BenchRunner:
    """Builds the topologies, keeps their servers running and runs interleaved rounds until told to stop."""

    def __init__(self, params: BenchParams, backend, progress: Progress | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.params = params
        self.backend = backend
        self.progress = progress or Progress()
        self.clock = clock
        self.statuses: dict[str, TopologyStatus] = {}
        self.samples: list[Sample] = []
        self.rounds: list[RoundRecord] = []
        self.rr_floor: RrResult | None = None
        self.iperf3_version: str | None = None
        self.kernel: str = ""
        self.stop_reason = ""
        self.error: str | None = None  # a measurement that failed mid-run (the samples before it are kept)
        self._gave_up_waiting = False
        self._live: dict[str, _Live] = {}
        self._logdir = ""
        self._udp_len = self.params.mtu - 28  # one datagram per packet: IPv4 (20) + UDP (8) headers

    # -- set-up --------------------------------------------------------------------------------------------

    def check_tools(self) -> None:
        needs_iperf = any(t in self.params.tests for t in ("tcp", "udp"))
        if needs_iperf and shutil.which("iperf3") is None:
            raise BenchUnavailable("iperf3 is not installed: install the Debian package `iperf3` (apt-get install iperf3)")
        reason = self.backend.available()
        if reason:
            raise BenchUnavailable(f"backend {self.params.backend}: {reason}")

    def plan_topologies(self) -> list[Topology]:
        """Every requested topology, with those the backend cannot build recorded as skipped (and why)."""
        caps = self.backend.capabilities()
        runnable = []
        for name in self.params.topologies:
            topo = topology_for(name, self.params.mtu)
            missing = [f for f in topo.features if not (f in caps and caps[f].available)]
            if missing:
                why = "; ".join(caps[f].detail if f in caps and caps[f].detail else f"kernel lacks {FEATURES.get(f, f)}"
                                for f in missing)
                self.statuses[name] = TopologyStatus(name, topo.description, "skipped",
                                                     f"{self.params.backend} backend cannot build it: {why}", topo.features)
                continue
            runnable.append(topo)
        return runnable

    def _build(self, stack: ExitStack, topo: Topology) -> None:
        session = stack.enter_context(self.backend.session(f"bench-{topo.name}"))
        self.kernel = self.kernel or session.kernel
        try:
            for op in topo.ops:
                session.apply(op)
        except KernelError as exc:
            # The capability probe said yes but this exact topology was refused (a mode, a hairpin flag):
            # the others still measure, and the reason is recorded.
            self.statuses[topo.name] = TopologyStatus(topo.name, topo.description, "skipped",
                                                      f"kernel refused a step: {exc}", topo.features)
            return
        # A topology that was built but passes no traffic (a flag the backend did not set) is recorded as
        # failed with the evidence, instead of ending the whole run with a connect timeout later.
        res = session.run(CLIENT, ["ping", "-c", "1", "-W", "2", SERVER_ADDR], timeout=10)
        if not res.ok:
            lines = [x for x in (res.stdout + res.stderr).strip().splitlines() if x.strip()]
            self.statuses[topo.name] = TopologyStatus(
                topo.name, topo.description, "failed",
                f"built, but {CLIENT} cannot reach {SERVER} ({SERVER_ADDR}): `{res.command}` exited {res.exit_code}"
                + (f": {lines[-1].strip()}" if lines else ""), topo.features)
            return
        self._live[topo.name] = _Live(topo, session)
        self.statuses[topo.name] = TopologyStatus(topo.name, topo.description, "ran", None, topo.features)

    @contextmanager
    def server(self, session, node: str, argv: Sequence[str], port: int, what: str, log: str | None = None,
               timeout: float = 10.0) -> Iterator[object]:
        """A background server in `node`, yielded once its port is listening (polled, with a deadline).

        If it exits first, or is not listening by the deadline, it is stopped and the error carries its
        stderr (and its log file, where iperf3 writes even its errors when given --logfile)."""
        with ExitStack() as stack:
            proc = stack.enter_context(session.spawn(node, list(argv)))
            problem = self._wait_listening(session, node, proc.pid, port, timeout)
            if problem:
                stack.close()
                out, err = proc.output()
                logged = Path(log).read_text(errors="replace").strip() if log and os.path.exists(log) else ""
                detail = "\n".join(x for x in (err.strip(), out.strip(), logged) if x) or "(it printed nothing)"
                raise BenchError(f"{what} in node {node} ({' '.join(argv)}) {problem}; its output:\n{detail}")
            yield proc

    def _wait_listening(self, session, node: str, pid: int, port: int, timeout: float) -> str | None:
        deadline = self.clock() + timeout
        delay = 0.005
        while True:
            if _process_exited(pid):
                return "exited before it was ready"
            res = session.run(node, ["cat", "/proc/net/tcp", "/proc/net/tcp6"], timeout=5)
            if port in listening_ports(res.stdout):
                return None
            if self.clock() > deadline:
                return f"was not listening on port {port} after {timeout:.0f} s"
            time.sleep(delay)  # a poll interval with a deadline, growing so a slow start costs few probes
            delay = min(delay * 2, 0.1)

    def _start_servers(self, stack: ExitStack, live: _Live) -> None:
        s = live.session
        if any(t in self.params.tests for t in ("tcp", "udp")):
            log = os.path.join(self._logdir, f"iperf3-{live.topology.name}.log")
            # --logfile keeps the server off its stdout pipe (nobody drains it while it runs), -i 0 keeps it short
            argv = ["iperf3", "-s", "-B", SERVER_ADDR, "-p", str(IPERF_PORT), "-i", "0", "--forceflush", "--logfile", log]
            stack.enter_context(self.server(s, SERVER, argv, IPERF_PORT, f"the iperf3 server of {live.topology.name}", log))
        if "rr" in self.params.tests:
            argv = self._rr_argv("serve", "--bind", SERVER_ADDR, "--port", str(RR_PORT), "--size", str(self.params.rr_size))
            stack.enter_context(self.server(s, SERVER, argv, RR_PORT, f"the request/response server of {live.topology.name}"))

    def _rr_argv(self, *args: str) -> list[str]:
        argv = [sys.executable, "-I", str(RRPROBE), *args]
        if self.params.rr_pin:
            argv += ["--cpu", str(rr_cpu())]
        return argv

    # -- one measurement -------------------------------------------------------------------------------------

    def _iperf3(self, session, extra: Sequence[str], timeout: float) -> str:
        argv = ["iperf3", "-c", SERVER_ADDR, "-p", str(IPERF_PORT), "-J", "--connect-timeout", "3000", *extra]
        deadline = self.clock() + 5
        while True:
            res = session.run(CLIENT, argv, timeout=timeout)
            if res.timed_out:
                raise BenchError(f"`{res.command}` in node {CLIENT} did not finish within {timeout:.0f} s")
            busy = '"the server is busy' in res.stdout
            # The server may still be closing the previous test for a moment; anything else is a failure.
            if busy and self.clock() < deadline:
                time.sleep(0.05)
                continue
            if not res.ok and not res.stdout.strip():
                raise BenchError(f"`{res.command}` in node {CLIENT} exited {res.exit_code}: {res.stderr.strip()}")
            return res.stdout

    def measure(self, live: _Live, test: str) -> Result:
        p = self.params
        s = live.session
        if test == "tcp":
            extra = ["-t", str(p.duration), "-O", str(p.omit), "-P", str(p.streams)]
            return parse_iperf3_tcp(self._iperf3(s, extra, timeout=p.duration + p.omit + 20))
        if test == "udp":
            length = ["-k", str(p.udp_blocks)] if p.udp_blocks else ["-t", str(p.udp_duration)]
            extra = ["-u", "-b", p.udp_rate, *length, "-l", str(self._udp_len)]
            return parse_iperf3_udp(self._iperf3(s, extra, timeout=p.udp_duration + 30))
        if test == "rr":
            argv = self._rr_argv("client", "--host", SERVER_ADDR, "--port", str(RR_PORT), "--count", str(p.rr_count),
                                 "--warmup", str(p.rr_warmup), "--size", str(p.rr_size))
            res = s.run(CLIENT, argv, timeout=30 + p.rr_count / 1000)
            if not res.ok:
                raise BenchError(f"request/response probe in node {CLIENT} exited {res.exit_code}: {res.stderr.strip()}")
            return parse_rr(res.stdout)
        raise ValueError(f"unknown test {test!r}")

    def measure_rr_floor(self, live: _Live) -> RrResult:
        """The probe over 127.0.0.1 inside one node: its own cost, without any link in the path."""
        s = live.session
        serve = self._rr_argv("serve", "--bind", "127.0.0.1", "--port", str(RR_FLOOR_PORT), "--size", str(self.params.rr_size))
        with self.server(s, CLIENT, serve, RR_FLOOR_PORT, "the request/response loopback server"):
            argv = self._rr_argv("client", "--host", "127.0.0.1", "--port", str(RR_FLOOR_PORT), "--count",
                                 str(self.params.rr_count), "--warmup", str(self.params.rr_warmup), "--size", str(self.params.rr_size))
            res = s.run(CLIENT, argv, timeout=30 + self.params.rr_count / 1000)
        if not res.ok:
            raise BenchError(f"request/response probe on loopback exited {res.exit_code}: {res.stderr.strip()}")
        return parse_rr(res.stdout)

    # -- the run -----------------------------------------------------------------------------------------------

    def _load_before(self, window: float | None = None) -> Load:
        t0, c0 = self.clock(), read_cpu_times()
        time.sleep(self.params.load_window if window is None else window)  # a deliberate window of an idle bench
        return Load.between(c0, read_cpu_times(), self.clock() - t0)

    def used_rounds(self) -> tuple[list[int], bool]:
        """The rounds the statistics use, and whether noisy ones had to be included (see usable_rounds)."""
        return usable_rounds([r.noisy for r in self.rounds], keep_noisy=self.params.rounds is None)

    def rounds_in_stats(self) -> list[int]:
        return self.used_rounds()[0]

    def current_stats(self) -> list[MetricStat]:
        p = self.params
        return compute_stats(self.samples, list(self._live), self.rounds_in_stats(), seed=p.seed,
                             confidence=p.confidence, resamples=p.resamples)

    def run(self) -> None:
        p = self.params
        self.check_tools()
        rule = p.stop_rule()
        t_start = self.clock()
        self.progress.start(p.budget if p.rounds is None else p.rounds, "s" if p.rounds is None else "rounds")
        try:
            with ExitStack() as stack:
                # iperf3's logs; named after this process so `harness clean` removes it after a kill
                self._logdir = proc.temp_dir("bench")
                stack.callback(shutil.rmtree, self._logdir, True)
                self.progress.step("checking kernel features")
                for topo in self.plan_topologies():
                    self.progress.step(f"building {topo.name}")
                    self._build(stack, topo)
                for live in self._live.values():
                    self.progress.step(f"starting servers in {live.topology.name}")
                    self._start_servers(stack, live)
                if not self._live:
                    raise BenchUnavailable("no topology could be built: " + "; ".join(
                        f"{s.name}: {s.reason}" for s in self.statuses.values()))
                first = next(iter(self._live.values()))
                if any(t in p.tests for t in ("tcp", "udp")):
                    res = first.session.run(CLIENT, ["iperf3", "--version"], timeout=10)
                    self.iperf3_version = parse_iperf3_version(res.stdout)
                if "rr" in p.tests:
                    self.progress.step("measuring the probe's own overhead on loopback")
                    self.rr_floor = self.measure_rr_floor(first)
                self._rounds(rule, t_start)
        finally:
            self.progress.stop()

    def _wait_for_quiet(self, rule: StopRule, t_start: float, estimate: float,
                        window: float | None = None) -> tuple[Load, float]:
        """The idle load before a round; while somebody else keeps the machine busy, wait (polling) rather
        than spend a whole round on numbers that would be thrown away, up to `quiet_wait` seconds and
        never past the budget. Then the round runs anyway and is flagged if it is noisy."""
        p = self.params
        began = self.clock()
        # Once a wait ran out, the machine is busy for a while: do not pay the wait again every round
        # until a quiet window has been seen.
        limit = 0.0 if self._gave_up_waiting else p.quiet_wait
        if rule.budget is not None:
            limit = min(limit, max(0.0, rule.budget - (began - t_start) - estimate))
        while True:
            before = self._load_before(window)
            waited = self.clock() - began
            reasons = p.noise.before_reasons(before)
            if not reasons:
                self._gave_up_waiting = False
                return before, waited
            if waited >= limit:
                self._gave_up_waiting = True
                return before, waited
            self.progress.step(f"waiting for a quiet machine: {reasons[0]}")
            time.sleep(0.3)

    def _full_rounds_done(self, names: Sequence[str]) -> int:
        """Full rounds (every test on every topology) the statistics use."""
        used = set(self.rounds_in_stats())
        return sum(1 for r in self.rounds
                   if r.index in used and len(r.order) == len(names) and len(r.tests) == len(self.params.tests))

    def _focused(self, names: Sequence[str]) -> bool:
        """Whether this run spends its time between full rounds on TCP pairs of the primary topologies."""
        p = self.params
        return (p.rounds is None and p.focus and "tcp" in p.tests and all(t in names for t in PRIMARY))

    def _round_plan(self, names: Sequence[str], index: int, since: float = 0.0,
                    slot: float = 0.0, target_met: bool = False) -> tuple[tuple[str, ...], list[str]]:
        """The tests and the topology order of round `index`.

        A fixed-rounds run measures everything every round. An adaptive run is mostly pairs: TCP on
        macvlan and bridge, the order alternating, so that the time buys as many pairs of the primary
        ratio as it can. It also runs `full_rounds` full rounds (every test on every topology, the other
        ratios, UDP and latency), spread over the budget: full round k is due `k * slot` seconds after the
        first round (`since` is the time since then), so that they sample the whole run's machine rather
        than its first seconds; once the primary target is met, the missing ones run at once."""
        p = self.params
        if not self._focused(names):
            return p.tests, rotated(names, index)
        done = self._full_rounds_done(names)
        if done < p.full_rounds and (target_met or since >= done * slot):
            return p.tests, rotated(names, done)
        # the order alternates from pair to pair, whatever full rounds come between
        pairs = sum(1 for r in self.rounds if r.tests == ("tcp",) and r.order in (PRIMARY, PRIMARY[::-1]))
        return ("tcp",), rotated(list(PRIMARY), pairs)

    def _rounds(self, rule: StopRule, t_start: float) -> None:
        p = self.params
        names = list(self._live)
        primary = primary_id(names)
        focused = self._focused(names)
        index = 0
        t_first = self.clock()
        # the budget left for rounds, shared out between the full rounds (see _round_plan)
        left = (rule.budget - (t_first - t_start) - rule.reserve) if rule.budget is not None else 0.0
        slot = max(0.0, left) / p.full_rounds if focused and p.full_rounds else 0.0
        durations: dict[bool, list[float]] = {True: [], False: []}  # seconds per round: full, focused
        while True:
            half = self._half_width(primary)
            quiet = len(self.rounds_in_stats())
            target_met = rule.reached(quiet, half)
            tests, order = self._round_plan(names, index, self.clock() - t_first, slot, target_met)
            full = len(tests) == len(p.tests) and len(order) == len(names)
            # the last round of the same kind predicts the next one best
            same = durations[full] or durations[not full]
            estimate = same[-1] if same else 0.0
            missing = max(0, p.full_rounds - self._full_rounds_done(names)) if focused else 0
            reason = rule.decide(quiet, len(self.rounds), half, self.clock() - t_start, estimate, missing)
            if reason:
                if reason.startswith("time budget"):
                    reason += self._what_target_needs(primary, rule, quiet, half, durations[False][-1] if durations[False] else estimate)
                self.stop_reason = reason
                return
            # a pair is short: a shorter idle window before it (it still sees a busy machine)
            window = p.load_window if full else min(p.load_window, p.pair_load_window)
            before, waited = self._wait_for_quiet(rule, t_start, estimate, window)
            r_start_wall, r_start, c0 = time.time(), self.clock(), read_cpu_times()
            for test in tests:
                for pos, name in enumerate(order):
                    self.progress.step(f"round {index + 1}: {test} {name}")
                    t0 = time.time()
                    try:
                        result = self.measure(self._live[name], test)
                    except BenchError as exc:
                        # Keep what was measured: the results so far are written, with the failure.
                        self.error = f"round {index + 1}, {test} on {name}: {exc}"
                        self.stop_reason = f"failed: {self.error}"
                        return
                    self.samples.append(Sample(index, pos, name, test, t0, time.time(), result))
            seconds = self.clock() - r_start
            during = Load.between(c0, read_cpu_times(), seconds)
            record = RoundRecord(index, tuple(order), r_start_wall, seconds, before, during,
                                 tuple(p.noise.reasons(before, during)), tuple(tests), waited)
            self.rounds.append(record)
            durations[full].append(seconds + window)
            index += 1
            self.progress.advance(len(self.rounds_in_stats()) if p.rounds is not None else self.clock() - t_start,
                                  self._status(primary, record))

    def _what_target_needs(self, primary: str | None, rule: StopRule, quiet: int, half: float | None,
                           round_seconds: float) -> str:
        """When the budget ran out first: how much scatter the ratio showed and what the target would take."""
        if rule.rounds is not None or rule.reached(quiet, half) or not primary or not round_seconds:
            return ""
        stat = self._primary_stat(primary)
        if not stat or half is None or stat.summary.n < 3:
            return ""
        # The half-width shrinks as 1/sqrt(pairs): the target needs (half/target)^2 times the pairs.
        needed = math.ceil(stat.summary.n * (half / rule.target) ** 2)
        return (f"; per-pair scatter of {primary} is {stat.summary.cv:.1%} (CV), so ±{rule.target:.0%} needs about "
                f"{needed} pairs (~{needed * round_seconds:.0f} s at {round_seconds:.1f} s per pair)")

    def _primary_stat(self, primary: str | None) -> MetricStat | None:
        if not primary:
            return None
        p = self.params
        return primary_stat(self.samples, primary, self.rounds_in_stats(), confidence=p.confidence)

    def _half_width(self, primary: str | None) -> float | None:
        stat = self._primary_stat(primary)
        return stat.interval.rel_half_width if stat else None

    def document(self, started: float, finished: float) -> dict:
        statuses = [self.statuses[n] for n in self.params.topologies if n in self.statuses]
        return build_document(self.params, topologies=statuses, samples=self.samples, rounds=self.rounds,
                              rr_floor=self.rr_floor, kernel=self.kernel, iperf3_version=self.iperf3_version,
                              stop_reason=self.stop_reason, started=started, finished=finished)

    def _status(self, primary: str | None, record: RoundRecord) -> str:
        from rich.markup import escape

        text = f"round {record.index + 1}" + (" [yellow]noisy[/yellow]" if record.noisy else "")
        if primary:
            stat = self._primary_stat(primary)
            if stat:
                hw = stat.interval.rel_half_width
                text += f"  {escape(primary)} {stat.interval.estimate:.3f}" + (f" ±{hw:.1%}" if hw is not None else "")
                text += f" (target ±{self.params.target:.0%})" if self.params.rounds is None else ""
        return text
