"""Parsing what `ping` and `ip -json` print, and when isolation probes are asked again."""

from __future__ import annotations

from dataclasses import dataclass, replace

from harness.observe import ISOLATION_WAIT, PingJob, PingResult, isolation_retry_wait, parse_pings, ping_argv


@dataclass
class Ran:
    stdout: str
    exit_code: int
    stderr: str = ""
    command: str = "ping"


def reply(max_ms: float) -> Ran:
    return Ran("1 packets transmitted, 1 received, 0% packet loss, time 0ms\n"
               f"rtt min/avg/max/mdev = 0.040/0.050/{max_ms}/0.010 ms\n", 0)


SILENT = Ran("2 packets transmitted, 0 received, 100% packet loss, time 51ms\n", 1)
NO_ROUTE = Ran("", 2, stderr="ping: connect: Network is unreachable\n")
BROKEN = Ran("", 2, stderr="ping: invalid argument: 'x'\n")


def test_verdicts_come_from_the_exit_status_and_no_route_is_isolation():
    jobs = [PingJob("a", "10.0.0.1", True), PingJob("a", "10.0.0.2", False), PingJob("a", "10.9.0.1", False),
            PingJob("a", "10.0.0.3", False)]
    ok, silent, no_route, broken = parse_pings(jobs, [reply(0.06), SILENT, NO_ROUTE, BROKEN])
    assert ok.reached and ok.rtt_max_ms == 0.06 and not ok.probe_error
    assert not silent.reached and not silent.probe_error and "0 received" in silent.summary
    assert not no_route.reached and not no_route.probe_error
    assert broken.probe_error


def test_fast_replies_leave_isolation_probes_alone():
    results = parse_pings([PingJob("a", "10.0.0.1", True)] * 2, [reply(0.2), reply(3.0)])
    assert isolation_retry_wait(results) is None


def test_slow_replies_ask_silent_isolation_probes_again_with_more_time():
    slow_ms = ISOLATION_WAIT * 1000 / 2  # half the wait: a silent probe proves little
    results = parse_pings([PingJob("a", "10.0.0.1", True)], [reply(slow_ms)])
    wait = isolation_retry_wait(results)
    assert wait is not None and wait >= 10 * slow_ms / 1000 and wait >= 1.0
    argv = ping_argv("10.0.0.2", 4, False, wait)
    assert argv[argv.index("-W") + 1] == f"{wait:g}"
    assert ping_argv("10.0.0.2", 4, False)[ping_argv("10.0.0.2", 4, False).index("-W") + 1] == f"{ISOLATION_WAIT:g}"


# -- probing at scale: waves, the prober's answers, trust and backing ----------------------------------

import json  # noqa: E402

from harness.observe import (  # noqa: E402
    LOOPBACK,
    MAX_ROUNDS,
    NEIGH_BUDGET,
    ProbeStats,
    parse_prober,
    plan_waves,
    probe_all,
    prober_argv,
)


@dataclass
class Done:
    """A CommandResult as the fake session returns it."""

    stdout: str
    exit_code: int = 0
    stderr: str = ""
    command: str = "cmd"
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def prober_output(records: list[dict], kind: str = "raw") -> str:
    return "\n".join([json.dumps({"sockets": {"4": kind}}), *map(json.dumps, records)]) + "\n"


def test_prober_answers_become_ping_results_with_evidence():
    jobs = [PingJob("c1", "10.0.0.2", True), PingJob("c1", "10.0.0.3", False), PingJob("c1", "10.9.0.1", False)]
    out = prober_output([
        {"dst": "10.0.0.2", "reach": True, "sent": 1, "received": 1, "first_ms": 0.4, "rtt_ms": 0.4, "error": None},
        {"dst": "10.0.0.3", "reach": False, "sent": 2, "received": 0, "first_ms": None, "rtt_ms": None, "error": None},
        {"dst": "10.9.0.1", "reach": False, "sent": 0, "received": 0, "first_ms": None, "rtt_ms": None,
         "error": "Network is unreachable"},
    ])
    ok, silent, no_route = parse_prober(jobs, Done(out))
    assert ok.reached and ok.reply_ms == 0.4 and not ok.probe_error
    assert "1 packets transmitted, 1 received" in ok.summary and "raw ICMP socket" in ok.evidence
    assert not silent.reached and not silent.probe_error and "2 packets transmitted, 0 received" in silent.summary
    assert not no_route.reached and not no_route.probe_error  # no route is isolation, as with ping


def test_a_prober_that_fails_makes_every_probe_a_broken_one():
    jobs = [PingJob("c1", "10.0.0.2", True), PingJob("c1", "10.0.0.3", False)]
    for res in (Done("", 1, "Traceback: boom"), Done(prober_output([]), 0)):
        assert all(r.probe_error and not r.reached for r in parse_prober(jobs, res))


def test_prober_argv_marks_reach_and_isolation_probes():
    argv = prober_argv([PingJob("c1", "10.0.0.2", True), PingJob("c1", "fd00::3", False)], 0.2)
    assert argv[1:3] == ["-I", "-S"] and argv[3].endswith("prober.py")
    assert argv[-2:] == ["r:10.0.0.2", "i:fd00::3"] and argv[6] == "0.2"


def matrix_jobs(n: int) -> tuple[list[PingJob], dict[str, str]]:
    owners = {f"10.0.{i // 250}.{i % 250 + 2}": f"c{i}" for i in range(n)}
    ips = {v: k for k, v in owners.items()}
    jobs = [PingJob(f"c{a}", ips[f"c{b}"], True) for a in range(n) for b in range(n) if a != b]
    return jobs, owners


def test_a_small_batch_is_one_wave_and_a_big_matrix_respects_the_neighbour_budget():
    jobs, owners = matrix_jobs(10)
    assert plan_waves(jobs, owners) == [list(range(len(jobs)))]
    jobs, owners = matrix_jobs(60)
    waves = plan_waves(jobs, owners)
    assert sorted(i for w in waves for i in w) == list(range(len(jobs)))
    for wave in waves:
        # Each pair of nodes that meet leaves an entry at both ends (one for either direction).
        pairs = {frozenset((jobs[i].src, owners[jobs[i].dst])) for i in wave}
        assert 2 * len(pairs) <= NEIGH_BUDGET
    assert len(waves) <= 30  # 60 nodes in blocks of 17: 4 blocks, 10 block pairs


class FakeSession:
    """Answers `ip` with nothing, ping and the prober from `reply(src, dst, round) -> reply ms or None`."""

    def __init__(self, reply):
        self.reply = reply
        self.batches: list[list[tuple[str, list[str]]]] = []

    def run_many(self, jobs, timeout=10.0):
        self.batches.append(list(jobs))
        round_ = sum(1 for b in self.batches if any(a[0] != "ip" for _, a in b))
        out = []
        for src, argv in jobs:
            if argv[0] == "ip":
                out.append(Done("[]"))
            elif argv[0] == "ping":
                ms = self.reply(src, argv[-1], round_)
                out.append(reply(ms) if ms is not None else SILENT)
            else:
                records = []
                for spec in argv[8:]:
                    ms = self.reply(src, spec[2:], round_)
                    records.append({"dst": spec[2:], "sent": 1, "received": int(ms is not None), "first_ms": ms,
                                    "rtt_ms": ms, "error": None})
                out.append(Done(prober_output(records)))
        return out


def test_fast_witnesses_back_isolation_in_one_round():
    session = FakeSession(lambda src, dst, r: 0.1 if (src, dst) in (("c1", "10.0.0.2"), ("host", LOOPBACK)) else None)
    stats = ProbeStats()
    jobs = [PingJob("c1", "10.0.0.2", True), PingJob("c1", "10.0.0.9", False), PingJob("host", "10.0.0.2", False)]
    extra, results = probe_all(session, jobs, {"10.0.0.2": "c2"}, [("c1", ["ip", "-json", "addr"])], stats)
    assert len(extra) == 1 and stats.rounds == 1 and len(session.batches) == 1
    assert [r.reached for r in results] == [True, False, False]
    assert not any(r.unbacked for r in results)
    # The host had only an isolation probe: a loopback echo of its own backs it.
    assert ("host", ping_argv(LOOPBACK, 4, True)) in session.batches[0]


def test_slow_or_failed_witnesses_make_silent_isolation_probes_ask_again():
    # First round: the witness needs 120 ms (the machine is loaded); later rounds answer fast.
    session = FakeSession(lambda src, dst, r: (120.0 if r == 1 else 0.3) if dst == "10.0.0.2" else
                          (0.1 if dst == LOOPBACK else None))
    stats = ProbeStats()
    jobs = [PingJob("c1", "10.0.0.2", True), PingJob("c1", "10.0.0.9", False)]
    _, results = probe_all(session, jobs, {}, (), stats)
    assert stats.rounds == 2
    again = [argv for _, argv in session.batches[1]]
    assert any(a[-1] == "10.0.0.9" and float(a[a.index("-W") + 1]) >= 1.0 for a in again)
    assert results[1].reached is False and not results[1].unbacked


def test_a_late_reply_is_reachable_and_an_isolation_never_backed_has_no_verdict():
    # The reach probe fails at first and answers in round 2; c9's own witness never answers in time.
    def reply(src, dst, r):
        if dst == "10.0.0.2":
            return 0.2 if r >= 2 else None
        if src == "c9" and dst == LOOPBACK:
            return 5000.0
        return None

    stats = ProbeStats()
    jobs = [PingJob("c1", "10.0.0.2", True), PingJob("c9", "10.0.0.3", False)]
    _, (late, unbacked) = probe_all(FakeSession(reply), jobs, {}, (), stats)
    assert late.reached
    # Its own witness took 5 s: no wait up to the last round's is ten times that, so the silence proves nothing.
    assert stats.rounds == MAX_ROUNDS and not unbacked.reached and "less than 10 times the slowest" in unbacked.unbacked
    from harness.checks import _agrees, describe_ping

    assert not _agrees(unbacked, False) and describe_ping(unbacked).startswith("no verdict")


def test_probes_killed_at_the_deadline_are_asked_again():
    class Slow(FakeSession):
        def run_many(self, jobs, timeout=10.0):
            out = super().run_many(jobs, timeout)
            if len(self.batches) == 1:  # the first batch overran its deadline: every process was killed
                return [Done("", -9, "", timed_out=True) for _ in out]
            return out

    session = Slow(lambda src, dst, r: 0.2 if dst in ("10.0.0.2", LOOPBACK) else None)
    stats = ProbeStats()
    jobs = [PingJob("c1", "10.0.0.2", True), PingJob("c1", "10.0.0.9", False)]
    _, (reach, isolated) = probe_all(session, jobs, {}, (), stats)
    assert stats.rounds == 2 and reach.reached and not isolated.reached
    assert not isolated.probe_error and not isolated.unbacked


# -- the batch prober's window: derived from the replies of the same batch (fake timings, no clock) ------

from harness.observe import (  # noqa: E402
    ISOLATION_FLOOR,
    WINDOW_FACTOR,
    isolation_backing,
    parse_batch_prober,
    required_listen_ms,
)


def test_a_silent_probe_must_listen_ten_times_the_slowest_reply_and_at_least_the_floor():
    assert required_listen_ms(0.05) == ISOLATION_FLOOR * 1000  # local replies: the floor decides
    assert required_listen_ms(40.0) == WINDOW_FACTOR * 40.0  # a loaded machine: the window grows with it
    job = PingJob("c1", "10.0.0.9", False)
    silent = PingResult(job, False, "", "prober", 1, waited_ms=30.0)
    assert isolation_backing(silent, 0.2, {"c1"}) == ""
    assert "less than 10 times" in isolation_backing(silent, 4.0, {"c1"})  # 30 ms < 40 ms
    assert "no timely reply of its own" in isolation_backing(silent, 0.2, {"c2"})
    assert isolation_backing(replace(silent, waited_ms=None, no_route=True), 4.0, set()) == ""


class BatchSession(FakeSession):
    """A session with namespace files: one batch prober per wave, answered from `reply(src, dst, round)`
    (ms or None) and `listened(round)` (how long silent isolation probes listened, ms)."""

    def __init__(self, reply, listened):
        super().__init__(reply)
        self.listened = listened

    def netns_path(self, node):
        return f"/run/netns/hx-{node}"

    def run_many(self, jobs, timeout=10.0):
        self.batches.append(list(jobs))
        round_ = sum(1 for b in self.batches if any(a[0] != "ip" for _, a in b))
        out = []
        for _src, argv in jobs:
            if argv[0] == "ip":
                out.append(Done("[]"))
                continue
            assert "--batch" in argv and argv[argv.index("--batch") + 1].startswith("window ")
            records = []
            for line in argv[argv.index("--batch") + 1:]:
                words = line.split()
                if words[0] != "probe":
                    continue
                ms = self.reply(words[1], words[3], round_)
                isolation = words[2] == "i"
                records.append({"src": words[1], "dst": words[3], "sent": 2 if isolation else 1,
                                "received": int(ms is not None), "first_ms": ms, "rtt_ms": ms, "error": None,
                                "waited_ms": self.listened(round_) if isolation and ms is None else None})
            out.append(Done(prober_output(records)))
        return out


def test_the_batch_prober_runs_a_wave_in_one_process_with_the_observations():
    session = BatchSession(lambda src, dst, r: 0.1 if (src, dst) in (("c1", "10.0.0.2"), ("host", LOOPBACK)) else None,
                           lambda r: 25.0)
    stats = ProbeStats()
    jobs = [PingJob("c1", "10.0.0.2", True), PingJob("c1", "10.0.0.9", False), PingJob("host", "10.0.0.2", False)]
    extra, results = probe_all(session, jobs, {"10.0.0.2": "c2"}, [("c1", ["ip", "-json", "addr"])], stats)
    assert len(extra) == 1 and stats.rounds == 1 and len(session.batches) == 1 and len(session.batches[0]) == 2
    assert [r.reached for r in results] == [True, False, False] and not any(r.unbacked for r in results)
    spec = session.batches[0][1][1]
    assert "ns host /run/netns/hx-host" in spec and "probe host r 127.0.0.1" in spec  # the host's own witness


def test_a_window_shorter_than_the_batch_replies_allow_is_asked_again():
    # Round 1: the witness's first reply took 8 ms, and the silent probe listened only 30 ms (< 80 ms): no
    # verdict from that round. Round 2: replies are fast again, 25 ms is ten times more than enough.
    session = BatchSession(lambda src, dst, r: (8.0 if r == 1 else 0.2) if dst in ("10.0.0.2", LOOPBACK) else None,
                           lambda r: 30.0 if r == 1 else 25.0)
    stats = ProbeStats()
    jobs = [PingJob("c1", "10.0.0.2", True), PingJob("c1", "10.0.0.9", False)]
    _, (reach, isolated) = probe_all(session, jobs, {}, (), stats)
    assert stats.rounds == 2 and reach.reached and not isolated.reached and not isolated.unbacked
    cap = [w for w in session.batches[1][0][1] if w.startswith("window ")][0].split()[4]
    assert float(cap) >= 1.0  # the second round may wait longer


def test_a_window_that_never_suffices_leaves_no_verdict():
    session = BatchSession(lambda src, dst, r: 50.0 if dst in ("10.0.0.2", LOOPBACK) else None, lambda r: 100.0)
    _, (_, isolated) = probe_all(session, [PingJob("c1", "10.0.0.2", True), PingJob("c1", "10.0.0.9", False)],
                                 {}, (), ProbeStats())
    assert not isolated.reached and "less than 10 times" in isolated.unbacked


def test_batch_prober_output_that_does_not_match_its_jobs_is_a_broken_probe():
    jobs = [PingJob("c1", "10.0.0.2", True)]
    wrong = prober_output([{"src": "c2", "dst": "10.0.0.2", "sent": 1, "received": 1, "first_ms": 0.1}])
    (r,) = parse_batch_prober(jobs, Done(wrong))
    assert r.probe_error and not r.reached
