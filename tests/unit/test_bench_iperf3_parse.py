"""Unit tests of harness.bench.parse without root: iperf3 and request/response probe output, recorded from
iperf3 3.12 on a development VM's loopback (tests/unit/data/bench), and the probe itself over a socket pair."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from harness.bench import rrprobe
from harness.bench.params import BenchError
from harness.bench.parse import (
    listening_ports,
    parse_iperf3_tcp,
    parse_iperf3_udp,
    parse_iperf3_version,
    parse_rr,
)

DATA = Path(__file__).resolve().parent / "data" / "bench"  # recorded output; see its README.md
TCP_JSON = (DATA / "iperf3-tcp.json").read_text()
UDP_JSON = (DATA / "iperf3-udp.json").read_text()
REFUSED_JSON = (DATA / "iperf3-refused.json").read_text()
PROC_NET_TCP = (DATA / "proc-net-tcp.txt").read_text()


def test_parse_tcp_takes_the_receivers_rate_and_the_senders_retransmits():
    r = parse_iperf3_tcp(TCP_JSON)
    assert r.gbps == pytest.approx(18.241877456)  # sum_received: what crossed the path
    assert r.sender_gbps == pytest.approx(18.252833832)
    assert r.retransmits == 20651
    assert r.cpu_sender_pct == pytest.approx(96.13, abs=0.01)
    assert r.cpu_receiver_pct == pytest.approx(42.43, abs=0.01)
    assert (r.streams, r.mss) == (2, 1460)
    assert r.seconds == pytest.approx(1.000298)


def test_parse_udp_takes_loss_and_jitter_from_the_receiver():
    r = parse_iperf3_udp(UDP_JSON)
    assert r.gbps == pytest.approx(0.498448561)
    assert r.sender_gbps == pytest.approx(0.499260006)
    assert (r.loss_pct, r.lost_packets, r.packets) == (0, 0, 42424)
    assert r.jitter_ms == pytest.approx(0.000816, rel=1e-3)


def test_parse_udp_of_an_iperf3_without_split_sums():
    doc = json.loads(UDP_JSON)
    del doc["end"]["sum_sent"], doc["end"]["sum_received"]
    doc["end"]["sum"]["lost_percent"] = 2.5
    r = parse_iperf3_udp(json.dumps(doc))
    assert r.loss_pct == 2.5 and r.gbps == pytest.approx(0.499260006)


def test_iperf3_errors_are_reported_in_its_own_words():
    with pytest.raises(BenchError, match="iperf3: unable to connect to server: Connection refused"):
        parse_iperf3_tcp(REFUSED_JSON)
    with pytest.raises(BenchError, match="did not print JSON"):
        parse_iperf3_udp("iperf3: error - unable to send control message\n")
    with pytest.raises(BenchError, match="TCP summary lacks"):
        parse_iperf3_tcp(json.dumps({"start": {}, "end": {"sum_sent": {}}}))


def test_iperf3_version():
    assert parse_iperf3_version("iperf 3.12 (cJSON 1.7.15)\nLinux vm 6.18 ...") == "3.12"
    assert parse_iperf3_version("") is None


def test_listening_ports_reads_only_listen_sockets():
    assert listening_ports(PROC_NET_TCP) == {5201}
    assert listening_ports("") == set()


def _echo_pair():
    """A connected socket pair (AF_UNIX: no network involved) with the probe's echo loop on one end."""
    client, server = socket.socketpair()
    t = threading.Thread(target=rrprobe.echo, args=(server, 1), daemon=True)
    t.start()
    return client, server, t


def test_request_response_probe_measures_real_round_trips_and_parses():
    client, server, t = _echo_pair()
    try:
        doc = rrprobe.measure(client, count=300, warmup=20, size=1)
    finally:
        client.close()
        t.join(5)
        server.close()
    assert doc["count"] == 300 and len(doc["quantiles_us"]) == 101
    q = doc["quantiles_us"]
    assert q == sorted(q)
    assert 0 < doc["min_us"] <= doc["p50_us"] <= doc["p99_us"] <= doc["max_us"]
    r = parse_rr(json.dumps(doc))
    assert r.p50_us == doc["p50_us"] and r.quantiles_us[0] == q[0]
    assert r.timer_overhead_ns >= 0


def test_probe_output_missing_fields_is_an_error():
    with pytest.raises(BenchError, match="probe output lacks"):
        parse_rr('{"count": 1}')
