"""A small TCP request/response latency probe, run inside the bench's nodes (stdlib only, no harness imports).

iperf3 measures throughput, not round trips, and ping is dominated by ICMP wake-up time; what separates a
macvlan from a bridge path at the latency level is the cost of one small request and its reply over an
established TCP connection, netperf's TCP_RR. Debian ships no netperf; this probe is that test, honestly
small: `serve` echoes every `size`-byte request back; `client` sends `warmup` untimed then `count` timed
requests, one at a time, and prints one JSON object with the round-trip quantiles.

What one sample includes, so its figures are read correctly:
  * two `time.perf_counter_ns()` calls (their own cost is measured and reported as `timer_overhead_ns`,
    typically well under 0.1 us);
  * on the client: one `send` and one or more `recv_into` system calls plus a pass of the Python loop;
  * on the server: the same, plus its wake-up when the request arrives;
  * the kernel path between the two namespaces, twice (the part the bench compares).
The Python and wake-up parts are the same for every topology, so differences between topologies are the
path's; absolute values are several microseconds above a C tool's. The bench runs the probe once over
`127.0.0.1` inside a single node and reports that as the probe's floor, so readers can subtract it.
Both sockets set TCP_NODELAY (no Nagle delay on 1-byte writes); the garbage collector is off while timing.
`--cpu` pins a process to one CPU: with client and server on the same CPU a round trip costs no
cross-CPU wake-up (an inter-processor interrupt, tens of microseconds on a VM), which otherwise swamps
the few microseconds the path itself costs; the bench pins both by default. (On the 2-vCPU development
VM the loopback p50 is ~7 us pinned and ~85 us unpinned, almost all of it the wake-up.)

Run as a script with `python -I rrprobe.py ...`: `-I` keeps the harness directory off `sys.path`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import sys
import time

QUANTILES = 101  # p0, p1, ..., p100: enough to draw a distribution without storing every sample


def _recv_exact(sock: socket.socket, view: memoryview, size: int) -> bool:
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            return False
        got += n
    return True


def echo(conn: socket.socket, size: int) -> None:
    """Answer every `size`-byte request on one connection with `size` bytes, until the peer closes."""
    view = memoryview(bytearray(size))
    while _recv_exact(conn, view, size):
        conn.sendall(view)


def serve(bind: str, port: int, size: int) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((bind, port))
    listener.listen(8)
    # One connection at a time: the bench never runs two clients against one server.
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            echo(conn, size)


def _quantile(sorted_values: list[int], q: float) -> float:
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def timer_overhead_ns(samples: int = 2001) -> int:
    clock = time.perf_counter_ns
    deltas = []
    for _ in range(samples):
        t0 = clock()
        t1 = clock()
        deltas.append(t1 - t0)
    deltas.sort()
    return deltas[len(deltas) // 2]


def client(host: str, port: int, count: int, warmup: int, size: int, timeout: float) -> dict:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with sock:
        return measure(sock, count, warmup, size)


def measure(sock: socket.socket, count: int, warmup: int, size: int) -> dict:
    """Time `count` request/response round trips on a connected socket (after `warmup` untimed ones)."""
    request = b"x" * size
    view = memoryview(bytearray(size))
    clock = time.perf_counter_ns
    rtts = [0] * count
    for _ in range(warmup):
        sock.sendall(request)
        if not _recv_exact(sock, view, size):
            raise ConnectionError("server closed the connection during warm-up")
    gc.disable()  # a collection inside the loop would show up as a fake latency spike
    began = clock()
    try:
        for i in range(count):
            t0 = clock()
            sock.sendall(request)
            if not _recv_exact(sock, view, size):
                raise ConnectionError(f"server closed the connection after {i} requests")
            rtts[i] = clock() - t0
    finally:
        elapsed = clock() - began
        gc.enable()
    rtts.sort()
    us = 1e-3
    return {
        "probe": "rrprobe",
        "count": count,
        "warmup": warmup,
        "size": size,
        "elapsed_s": elapsed / 1e9,
        "transactions_per_s": count / (elapsed / 1e9) if elapsed else None,
        "timer_overhead_ns": timer_overhead_ns(),
        "min_us": rtts[0] * us,
        "p50_us": _quantile(rtts, 0.50) * us,
        "p90_us": _quantile(rtts, 0.90) * us,
        "p99_us": _quantile(rtts, 0.99) * us,
        "max_us": rtts[-1] * us,
        "mean_us": sum(rtts) / count * us,
        "quantiles_us": [round(_quantile(rtts, i / (QUANTILES - 1)) * us, 3) for i in range(QUANTILES)],
        "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rrprobe", description="TCP request/response latency probe")
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve", help="echo fixed-size requests until terminated")
    s.add_argument("--bind", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--size", type=int, default=1)
    c = sub.add_parser("client", help="time request/response round trips and print JSON")
    c.add_argument("--host", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--count", type=int, default=5000)
    c.add_argument("--warmup", type=int, default=500)
    c.add_argument("--size", type=int, default=1)
    c.add_argument("--timeout", type=float, default=5.0, help="socket timeout in seconds")
    for p in (s, c):
        p.add_argument("--cpu", type=int, help="run on this CPU only (give client and server the same one)")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.mode == "serve":
        try:
            serve(args.bind, args.port, args.size)
        except KeyboardInterrupt:
            pass
        return 0
    if args.count < 1 or args.size < 1:
        parser.error("--count and --size must be at least 1")
    try:
        result = client(args.host, args.port, args.count, args.warmup, args.size, args.timeout)
    except OSError as exc:
        print(f"rrprobe: {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
