"""Parsing what `ping` and `ip -json` print, and when isolation probes are asked again."""

from __future__ import annotations

from dataclasses import dataclass

from harness.observe import ISOLATION_WAIT, PingJob, isolation_retry_wait, parse_pings, ping_argv


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
