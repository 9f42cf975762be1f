"""ICMP echo prober and netlink observer, outside the harness process (a script, stdlib C modules only).

Two modes. The batch mode, `python3 -I -S prober.py --batch LINE...` (harness.observe builds the lines:
`BatchTarget`, `probe_batch`, `observe_node`, `flush_neighbours`, rules above `probe_batch`), serves a
whole wave of a scenario in one process: it enters each source node's network namespace to open that
node's ICMP sockets, dumps the links, addresses and routes of the nodes it is asked to observe with its
own netlink decoder (the harness configures with pyroute2: independent paths), sends every probe from one
loop, derives the isolation window from the replies of the same batch, and deletes the wave's neighbour
entries when asked. The per-source mode, `prober.py INTERVAL DEADLINE WAIT PACKETS SPEC...` run inside the
source node's namespace (SPEC `r:ADDRESS`, expected reachable: an echo every INTERVAL seconds until the
first reply or DEADLINE, what `ping -c 1 -w DEADLINE` does; `i:ADDRESS`, an isolation probe: PACKETS echoes
INTERVAL apart, then WAIT seconds for a reply after the last, what `ping -c PACKETS -W WAIT` does), serves
sessions whose nodes have no namespace file. Each prints one JSON object per line and destination:
`dst`, `sent`, `received`, `first_ms` (from the first echo sent to the first reply), `rtt_ms` (that
reply's round trip), `error` (a send error, e.g. "Network is unreachable"), in batch mode also `src` and
`waited_ms` (how long a silent isolation probe listened after its last echo), after a first line naming the
socket kind (and, in batch mode, the window and the time of each phase).

Why a prober, and why this one:
  * A process per probe costs about 4 ms of CPU here (fork, exec, ping's set-up) and far more under TCG;
    the full matrix of N containers is about N^2 probes (40,000 for 200 containers: minutes of CPU). The
    batch prober costs one interpreter start per wave (only C modules are imported, no
    `socket`/`json`/`argparse`, and `-S` skips site; ctypes for setns, in batch mode only) and then only
    system calls: a documented scenario is one process, the 200-container matrix one per wave.
  * ICMP echo through a SOCK_DGRAM ICMP socket when net.ipv4.ping_group_range allows it (new namespaces
    default to "1 0": nobody), else a raw socket (the harness runs as root; ICMP_FILTER/ICMP6_FILTER let
    only echo replies through, and replies are matched by identifier, sequence and source address). Either
    way it is a real echo request from inside the source namespace, as ping sends it.
  * `-I` keeps the harness directory off sys.path: the script imports nothing of the project.
"""

import _heapq as heapq
import _socket
import posix
import select
import sys
import time

ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}
SOL_RAW, ICMP_FILTER, ICMP6_FILTER = 255, 1, 1
NO_ROUTE_ERRNOS = (101, 113, 99)  # ENETUNREACH, EHOSTUNREACH, EADDRNOTAVAIL
TRANSIENT_ERRNOS = (105, 11)  # ENOBUFS, EAGAIN: try again at the next interval
PAYLOAD = b"hx-probe" * 2


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def open_socket(version: int):
    """(socket, kind): a ping socket if this namespace allows it, else a raw one with an echo-reply filter."""
    family = _socket.AF_INET if version == 4 else _socket.AF_INET6
    proto = _socket.IPPROTO_ICMP if version == 4 else _socket.IPPROTO_ICMPV6
    try:
        return _socket.socket(family, _socket.SOCK_DGRAM, proto), "dgram"
    except OSError:
        pass
    sock = _socket.socket(family, _socket.SOCK_RAW, proto)
    if version == 4:
        sock.setsockopt(SOL_RAW, ICMP_FILTER, (~(1 << ECHO_REPLY[4]) & 0xFFFFFFFF).to_bytes(4, sys.byteorder))
    else:
        words = [0xFFFFFFFF] * 8
        words[ECHO_REPLY[6] >> 5] &= ~(1 << (ECHO_REPLY[6] & 31)) & 0xFFFFFFFF
        sock.setsockopt(_socket.IPPROTO_ICMPV6, ICMP6_FILTER, b"".join(w.to_bytes(4, sys.byteorder) for w in words))
    return sock, "raw"


def normalize(address: str):
    """(version, canonical text) of an address literal, or of the first address a name resolves to."""
    for version, family in ((4, _socket.AF_INET), (6, _socket.AF_INET6)):
        try:
            return version, _socket.inet_ntop(family, _socket.inet_pton(family, address))
        except OSError:
            continue
    infos = _socket.getaddrinfo(address, None, _socket.AF_INET, _socket.SOCK_RAW)
    return 4, infos[0][4][0]


class Target:
    def __init__(self, spec: str):
        self.reach = spec[0] == "r"
        self.text = spec[2:]
        self.dst, self.version = None, 4
        self.sent = self.received = 0
        self.first_sent = self.first_ms = self.rtt_ms = None
        self.next_send = 0.0
        self.until = float("inf")  # when the probe gives up
        self.error = None
        self.done = False


def json_text(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in value) + '"'
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def resolve(t) -> bool:
    """Give a target its address family and numeric address; False (the target done, with its error) when
    the name does not resolve."""
    try:
        t.version, t.dst = normalize(t.text)
    except OSError as exc:
        t.error, t.done = f"unknown host {t.text}: {exc.strerror or exc}", True
        return False
    return True


def probe(specs, interval: float, deadline: float, wait: float, packets: int):
    targets = [Target(s) for s in specs]
    sockets, kinds = {}, {}
    ident = posix.getpid() & 0xFFFF
    for t in targets:
        if not resolve(t):
            continue
        if t.version not in sockets:
            try:
                sockets[t.version], kinds[t.version] = open_socket(t.version)
            except OSError as exc:
                sockets[t.version], kinds[t.version] = None, "error: " + str(exc.strerror or exc)
        if sockets[t.version] is None:
            t.error, t.done = "cannot open an ICMP socket: " + kinds[t.version], True
    seqs = {}  # (version, sequence) -> (target, sent at)
    counters = {4: 0, 6: 0}
    start = time.monotonic()
    # Spread the first echoes of a long list over a few milliseconds: each one may need an ARP/ND request.
    spacing = 0.0005 if len(targets) > 16 else 0.0
    for i, t in enumerate(targets):
        t.next_send = start + i * spacing
        if t.reach:
            t.until = t.next_send + deadline
    by_fd = {s.fileno(): (v, s) for v, s in sockets.items() if s is not None}
    buf_size = 2048
    while True:
        now = time.monotonic()
        pending = False
        soonest = now + 1.0
        for t in targets:
            if t.done:
                continue
            if now >= t.until:
                t.done = True
                continue
            if t.next_send <= now:
                sock = sockets[t.version]
                counters[t.version] = seq = (counters[t.version] + 1) & 0xFFFF
                header = bytes((ECHO_REQUEST[t.version], 0, 0, 0)) + ident.to_bytes(2, "big") + seq.to_bytes(2, "big")
                packet = header + PAYLOAD
                if t.version == 4 and kinds[4] == "raw":
                    packet = packet[:2] + checksum(packet).to_bytes(2, "big") + packet[4:]
                try:
                    sock.sendto(packet, (t.dst, 0))
                except OSError as exc:
                    if exc.errno in TRANSIENT_ERRNOS:
                        t.next_send = now + interval
                    else:
                        t.error, t.done = exc.strerror or str(exc), True
                        continue
                else:
                    seqs[(t.version, seq)] = (t, now)
                    t.sent += 1
                    if t.first_sent is None:
                        t.first_sent = now
                    if t.reach:
                        t.next_send = now + interval
                    elif t.sent < packets:
                        t.next_send = now + interval
                    else:
                        t.next_send = float("inf")
                        t.until = now + wait
            pending = True
            soonest = min(soonest, t.next_send, t.until)
        if not pending:
            break
        timeout = max(0.0, soonest - time.monotonic())
        readable, _, _ = select.select(list(by_fd), [], [], timeout)
        for fd in readable:
            version, sock = by_fd[fd]
            while True:
                try:
                    data, addr = sock.recvfrom(buf_size, _socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                got = time.monotonic()
                if version == 4 and kinds[4] == "raw":
                    data = data[(data[0] & 0x0F) * 4:]
                if len(data) < 8 or data[0] != ECHO_REPLY[version]:
                    continue
                if kinds[version] == "raw" and int.from_bytes(data[4:6], "big") != ident:
                    continue
                entry = seqs.get((version, int.from_bytes(data[6:8], "big")))
                if entry is None:
                    continue
                t, sent_at = entry
                if t.done:
                    continue
                if addr[0] != t.dst:
                    continue
                t.received += 1
                if t.first_ms is None:
                    t.first_ms = (got - t.first_sent) * 1000
                    t.rtt_ms = (got - sent_at) * 1000
                t.done = True
    return targets, kinds


def main(argv) -> int:
    if len(argv) >= 2 and argv[1] == "--batch":
        return batch_main("\n".join(argv[2:]))
    if len(argv) < 5:
        sys.stderr.write("usage: prober.py INTERVAL DEADLINE WAIT PACKETS r:ADDRESS|i:ADDRESS...\n"
                         "       prober.py --batch SPEC-LINE...\n")
        return 2
    interval, deadline, wait, packets = float(argv[1]), float(argv[2]), float(argv[3]), int(argv[4])
    targets, kinds = probe(argv[5:], interval, deadline, wait, packets)
    sockets = ", ".join(f'"{v}": {json_text(k)}' for v, k in sorted(kinds.items()))
    out = ['{"sockets": {' + sockets + '}}']
    for t in targets:
        fields = (("dst", t.text), ("reach", "true" if t.reach else "false"), ("sent", t.sent),
                  ("received", t.received), ("first_ms", t.first_ms), ("rtt_ms", t.rtt_ms), ("error", t.error))
        out.append("{" + ", ".join('"{}": {}'.format(k, v if k == "reach" else json_text(v)) for k, v in fields) + "}")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


# -- batch mode: one process for every source of a batch ---------------------------------------------
#
# `prober.py --batch LINE...` takes its work as arguments, one line each:
#   window INTERVAL DEADLINE FLOOR CAP FACTOR PACKETS GAP
#   ns SOURCE PATH            the network namespace file of a source node (a /run/netns or /proc/PID/ns path)
#   probe SOURCE r|i ADDRESS  in the order of the output
#   observe NODE              the node's links, addresses and routes (after the probes in the output)
#   flush NODE                after the probes, the node's dynamic neighbour entries are deleted (the waves
#                             of a big matrix, harness.observe), reported last
# It enters each source's namespace only to open that source's ICMP sockets (a socket stays in the
# namespace it was created in), then sends every probe from one loop. Expected-reachable probes (`r`, the
# witnesses) send an echo every INTERVAL until the first reply or DEADLINE. Isolation probes (`i`) send
# PACKETS echoes GAP apart and then listen for the isolation window:
#     window = max(FLOOR, FACTOR x the slowest first reply of every witness of the batch)
# and never conclude while a witness is still unanswered (they stop at CAP after their last echo, whatever
# the witnesses do). So the window is derived from replies measured in the same batch, at the same moment,
# on the same machine: when the machine is slow, the witnesses are slow and the window grows with them.
# Every socket is drained before a silent probe is concluded, so a reply that reached the kernel while
# this process was not scheduled still counts. Each isolation probe reports `waited_ms`, how long it
# listened after its last echo; the harness (harness.observe) decides from the reported figures, not from
# this process's word, whether the silence is backed.

CLONE_NEWNET = 0x40000000


def isolation_window(slowest_ms: float, floor_ms: float, factor: float, cap_ms: float) -> float:
    """How long a silent isolation probe listens after its last echo, in ms (see above)."""
    return min(cap_ms, max(floor_ms, factor * slowest_ms))


def parse_batch(text: str):
    """(window parameters, {node: namespace path}, [(source, reach, address)], [node to observe],
    [node to flush]) of a spec."""
    params, paths, probes, observe, flush = None, {}, [], [], []
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "window" and len(words) == 8:
            params = [float(w) for w in words[1:]]
        elif words[0] == "ns" and len(words) == 3:
            paths[words[1]] = words[2]
        elif words[0] == "probe" and len(words) == 4 and words[2] in ("r", "i"):
            probes.append((words[1], words[2] == "r", words[3]))
        elif words[0] == "observe" and len(words) == 2:
            observe.append(words[1])
        elif words[0] == "flush" and len(words) == 2:
            flush.append(words[1])
        else:
            raise ValueError("bad batch line: " + line[:200])
    if params is None:
        raise ValueError("the batch has no window line")
    return params, paths, probes, observe, flush


_libc_setns = []  # ctypes' setns, loaded on first use


def _setns(path: str) -> None:
    if not _libc_setns:
        import ctypes  # only the batch mode needs it (Python 3.11 has no os.setns)

        libc = ctypes.CDLL(None, use_errno=True)
        _libc_setns.extend((libc.setns, ctypes.get_errno))
    setns, get_errno = _libc_setns
    fd = posix.open(path, posix.O_RDONLY)
    try:
        if setns(fd, CLONE_NEWNET) != 0:
            err = get_errno()
            raise OSError(err, posix.strerror(err))
    finally:
        posix.close(fd)


class BatchTarget(Target):
    def __init__(self, src: str, reach: bool, text: str):
        super().__init__(("r:" if reach else "i:") + text)
        self.src = src
        self.sock = None
        self.kind = ""
        self.last_sent = None
        self.waited_ms = None


def open_batch_sockets(targets, paths):
    """Resolve each target and give it its source's socket; {(source, version): kind} for the report."""
    sockets, kinds = {}, {}
    for t in targets:
        if not resolve(t):
            continue
        key = (t.src, t.version)
        if key not in sockets:
            try:
                if t.src not in paths:
                    raise OSError(2, "no namespace given for source " + t.src)
                _setns(paths[t.src])
                sock, kind = open_socket(t.version)
                # Many replies may land at once: a reply dropped on a full buffer would look like isolation.
                for opt in (33, 8):  # SO_RCVBUFFORCE (root), else SO_RCVBUF
                    try:
                        sock.setsockopt(_socket.SOL_SOCKET, opt, 8 << 20)
                        break
                    except OSError:
                        continue
                sock.setblocking(False)
                sockets[key], kinds[key] = sock, kind
            except OSError as exc:
                sockets[key], kinds[key] = None, "error: " + str(exc.strerror or exc)
        t.sock, t.kind = sockets[key], kinds[key]
        if t.sock is None:
            t.error, t.done = "cannot open an ICMP socket: " + t.kind, True
    return sockets, kinds


def _send(t, now, ident, counters, seqs):
    counters[t.version] = seq = (counters[t.version] + 1) & 0xFFFF
    packet = bytes((ECHO_REQUEST[t.version], 0, 0, 0)) + ident.to_bytes(2, "big") + seq.to_bytes(2, "big") + PAYLOAD
    if t.version == 4 and t.kind == "raw":
        packet = packet[:2] + checksum(packet).to_bytes(2, "big") + packet[4:]
    t.sock.sendto(packet, (t.dst, 0))
    seqs[(t.sock.fileno(), seq)] = (t, now)
    t.sent += 1
    t.last_sent = now
    if t.first_sent is None:
        t.first_sent = now


def _drain(sock, kind, version, ident, seqs, replied) -> None:
    """Read every reply waiting on a socket; each first reply of a target is appended to `replied`."""
    while True:
        try:
            data, addr = sock.recvfrom(2048)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        got = time.monotonic()
        if version == 4 and kind == "raw":
            data = data[(data[0] & 0x0F) * 4:]
        if len(data) < 8 or data[0] != ECHO_REPLY[version]:
            continue
        if kind == "raw" and int.from_bytes(data[4:6], "big") != ident:
            continue
        entry = seqs.get((sock.fileno(), int.from_bytes(data[6:8], "big")))
        if entry is None:
            continue
        t, sent_at = entry
        if t.received or addr[0] != t.dst:
            continue
        t.received += 1
        t.first_ms = (got - t.first_sent) * 1000
        t.rtt_ms = (got - sent_at) * 1000
        replied.append(t)


ECHO, DEADLINE = 0, 1


def probe_batch(targets, sockets, params):
    """Run every target of the batch to its end (the rules are above); returns the final window in ms.

    Timers (the next echo of a target, a witness's deadline) sit in a heap, and isolation probes listen in
    the order they sent their last echo, so each event costs O(log n), not a pass over the whole batch.
    """
    interval, deadline, floor, cap, factor, packets, gap = params
    packets = int(packets)
    floor_ms, cap_ms = floor * 1000, cap * 1000
    ident = posix.getpid() & 0xFFFF
    counters = {4: 0, 6: 0}
    seqs = {}
    live = [(key, s) for key, s in sockets.items() if s is not None]
    by_fd = {s.fileno(): (s, key[1]) for key, s in live}
    kinds = {t.sock.fileno(): t.kind for t in targets if t.sock is not None}
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    replied = []

    def drain_all():
        for fd, (sock, version) in by_fd.items():
            _drain(sock, kinds.get(fd, "raw"), version, ident, seqs, replied)

    state = {"remaining": sum(1 for t in targets if not t.done),
             "witnesses": sum(1 for t in targets if t.reach and not t.done), "slowest": 0.0}

    def finish(t, now, error=None):
        t.done = True
        state["remaining"] -= 1
        if error is not None:
            t.error = error
        if t.reach:
            state["witnesses"] -= 1
            if t.received:
                state["slowest"] = max(state["slowest"], t.first_ms)
        else:
            t.waited_ms = 0.0 if error is not None else (now - t.last_sent) * 1000

    timers = []  # (when, order, ECHO or DEADLINE, target): the target's next echo, or a witness's deadline
    order = 0
    listening = []  # isolation probes after their last echo, in the order they sent it

    def send(t, now):
        nonlocal order
        try:
            _send(t, now, ident, counters, seqs)
        except OSError as exc:
            if exc.errno not in TRANSIENT_ERRNOS:
                finish(t, now, exc.strerror or str(exc))
                return
        order += 1
        if t.reach or t.sent < packets:
            heapq.heappush(timers, (now + (interval if t.reach else gap), order, ECHO, t))
        else:
            listening.append(t)

    start = time.monotonic()
    for i, t in enumerate(targets):
        if t.done:
            continue
        if t.reach:
            t.until = start + deadline
            order += 1
            heapq.heappush(timers, (t.until, order, DEADLINE, t))
        send(t, time.monotonic())
        if i % 32 == 31:
            drain_all()  # keep the receive buffers short while a long batch is sent
    head = 0  # listening[:head] are concluded
    while state["remaining"] > 0:
        # Drain first, then judge with the time taken before the drain: every reply that reached the
        # kernel before `check` has been counted when a silent probe is concluded at `check`.
        check = time.monotonic()
        drain_all()
        for t in replied:
            if not t.done:
                finish(t, check)
        replied.clear()
        while timers and timers[0][0] <= check:
            _, _, kind, t = heapq.heappop(timers)
            if t.done:
                continue
            if kind == DEADLINE:  # a witness's deadline: it stays unanswered
                finish(t, check)
            else:
                send(t, check)
        window = isolation_window(state["slowest"], floor_ms, factor, cap_ms)
        limit = window if state["witnesses"] == 0 else cap_ms
        while head < len(listening):
            t = listening[head]
            if not t.done:
                if (check - t.last_sent) * 1000 < limit:
                    break
                finish(t, check)
            head += 1
        if state["remaining"] <= 0:
            break
        while timers and timers[0][3].done:
            heapq.heappop(timers)
        soonest = check + 1.0
        if timers:
            soonest = min(soonest, timers[0][0])
        if head < len(listening):
            soonest = min(soonest, listening[head].last_sent + limit / 1000)
        timeout_ms = max(0.0, (soonest - time.monotonic()) * 1000)
        poller.poll(min(timeout_ms, 1000.0))
    return isolation_window(state["slowest"], floor_ms, factor, cap_ms)


# -- observation: links, addresses and routes read over netlink, with this script's own decoder ---------
#
# `observe NODE` lines (with the node's `ns` line) ask for what `ip -json -details addr show` and
# `ip -json -4/-6 route show table main` print, in their JSON shape (only the fields the harness reads),
# from netlink dumps made in the node's namespace before any probe is sent. The decoder below is this
# script's own (the harness configures with pyroute2): a bug in either cannot confirm the other.

NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE = 18, 22, 26
RTM_F_CLONED, RT_TABLE_MAIN = 0x200, 254
IFF_NAMES = ((0x8, "LOOPBACK"), (0x2, "BROADCAST"), (0x10, "POINTOPOINT"), (0x1000, "MULTICAST"), (0x80, "NOARP"),
             (0x200, "ALLMULTI"), (0x100, "PROMISC"), (0x400, "MASTER"), (0x800, "SLAVE"), (0x1, "UP"),
             (0x10000, "LOWER_UP"), (0x20000, "DORMANT"))
MACVLAN_MODES = {1: "private", 2: "vepa", 4: "bridge", 8: "passthru", 16: "source"}
IPVLAN_MODES = {0: "l2", 1: "l3", 2: "l3s"}
SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}


def u(data, offset: int, size: int) -> int:
    return int.from_bytes(data[offset:offset + size], sys.byteorder)


def attributes(data, offset: int = 0) -> dict:
    """{type: payload} of a run of netlink attributes (the nested flag masked off)."""
    out = {}
    while offset + 4 <= len(data):
        length, kind = u(data, offset, 2), u(data, offset + 2, 2) & 0x3FFF
        if length < 4:
            break
        out[kind] = data[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return out


def dump(sock, kind: int, body: bytes, seq: int) -> list:
    """The messages of one netlink dump: (type, payload) pairs."""
    header = (16 + len(body)).to_bytes(4, sys.byteorder) + kind.to_bytes(2, sys.byteorder) + \
        (NLM_F_REQUEST | NLM_F_DUMP).to_bytes(2, sys.byteorder) + seq.to_bytes(4, sys.byteorder) + bytes(4)
    sock.send(header + body)
    out = []
    while True:
        data = sock.recv(1 << 20)
        offset = 0
        while offset + 16 <= len(data):
            length, mtype = u(data, offset, 4), u(data, offset + 4, 2)
            if length < 16:
                return out
            if mtype == NLMSG_DONE:
                return out
            if mtype == NLMSG_ERROR:
                code = -int.from_bytes(data[offset + 16:offset + 20], sys.byteorder, signed=True)
                if code:
                    raise OSError(code, posix.strerror(code))
                return out
            out.append((mtype, data[offset + 16:offset + length]))
            offset += (length + 3) & ~3


def text(raw) -> str:
    return bytes(raw).split(b"\0", 1)[0].decode("utf-8", "replace")


def mac(raw) -> str:
    return ":".join(f"{b:02x}" for b in bytes(raw))


def address(family: int, raw) -> str:
    return _socket.inet_ntop(family, bytes(raw))


def observe_node() -> dict:
    """This namespace's links (with their addresses) and main-table routes, as `ip -json` shows them."""
    sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, 0)
    try:
        sock.bind((0, 0))
        links, names = [], {}
        for _, msg in dump(sock, RTM_GETLINK, bytes(16), 1):
            index, flags = int.from_bytes(msg[4:8], sys.byteorder, signed=True), u(msg, 8, 4)
            attrs = attributes(msg, 16)
            link = {"ifindex": index, "ifname": text(attrs.get(3, b"")), "flags": [n for bit, n in IFF_NAMES if flags & bit]}
            if flags & 0x1 and not flags & 0x40:  # up, not running
                link["flags"].insert(0, "NO-CARRIER")
            if 1 in attrs:
                link["address"] = mac(attrs[1])
            if 18 in attrs:
                info = attributes(attrs[18])
                kind = text(info.get(1, b""))
                data = attributes(info[2]) if 2 in info else {}
                linkinfo = {"info_kind": kind}
                if kind == "macvlan" and 1 in data:
                    linkinfo["info_data"] = {"mode": MACVLAN_MODES.get(u(data[1], 0, 4), str(u(data[1], 0, 4)))}
                elif kind == "ipvlan" and 1 in data:
                    linkinfo["info_data"] = {"mode": IPVLAN_MODES.get(u(data[1], 0, 2), str(u(data[1], 0, 2)))}
                elif kind == "vlan" and 1 in data:
                    linkinfo["info_data"] = {"id": u(data[1], 0, 2)}
                link["linkinfo"] = linkinfo
            link["addr_info"] = []
            names[index] = link["ifname"]
            links.append(link)
        by_index = {link["ifindex"]: link for link in links}
        for _, msg in dump(sock, RTM_GETADDR, bytes(8), 2):
            family, prefixlen, scope, index = msg[0], msg[1], msg[3], u(msg, 4, 4)
            attrs = attributes(msg, 8)
            raw = attrs.get(2, attrs.get(1))  # IFA_LOCAL, else IFA_ADDRESS
            if raw is None or index not in by_index:
                continue
            fam = _socket.AF_INET if family == 2 else _socket.AF_INET6
            by_index[index]["addr_info"].append({"family": "inet" if family == 2 else "inet6",
                                                 "local": address(fam, raw), "prefixlen": prefixlen,
                                                 "scope": SCOPES.get(scope, str(scope))})
        routes = {4: [], 6: []}
        for version, family in ((4, _socket.AF_INET), (6, _socket.AF_INET6)):
            body = bytes((family,)) + bytes(11)
            for _, msg in dump(sock, RTM_GETROUTE, body, 3 + version):
                dst_len, table, flags = msg[1], msg[4], u(msg, 8, 4)
                attrs = attributes(msg, 12)
                if 15 in attrs:
                    table = u(attrs[15], 0, 4)
                if table != RT_TABLE_MAIN or flags & RTM_F_CLONED:
                    continue
                route = {}
                if 1 in attrs and dst_len:
                    dst = address(family, attrs[1])
                    route["dst"] = dst if dst_len == (32 if version == 4 else 128) else f"{dst}/{dst_len}"
                else:
                    route["dst"] = "default"
                if 5 in attrs:
                    route["gateway"] = address(family, attrs[5])
                if 4 in attrs:
                    route["dev"] = names.get(u(attrs[4], 0, 4), str(u(attrs[4], 0, 4)))
                routes[version].append(route)
        for link in links:
            del link["ifindex"]
        return {"links": links, "routes4": routes[4], "routes6": routes[6]}
    finally:
        sock.close()


RTM_GETNEIGH, RTM_DELNEIGH = 30, 29
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80


def flush_neighbours() -> int:
    """What `ip neigh flush all` does in this namespace: delete every dynamic neighbour entry (not the
    permanent or NOARP ones); the number deleted. rtnetlink handles a request inside send(), so the
    entries are gone when this returns."""
    sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, 0)
    try:
        sock.bind((0, 0))
        gone = 0
        for seq, (_, msg) in enumerate(dump(sock, RTM_GETNEIGH, bytes(12), 40), start=100):
            family, index, state = msg[0], u(msg, 4, 4), u(msg, 8, 2)
            if state & (NUD_NOARP | NUD_PERMANENT):
                continue
            dst = attributes(msg, 12).get(1)  # NDA_DST
            if dst is None:
                continue
            attr = (4 + len(dst)).to_bytes(2, sys.byteorder) + (1).to_bytes(2, sys.byteorder) + bytes(dst)
            attr += bytes((-len(attr)) % 4)
            body = bytes((family, 0, 0, 0)) + index.to_bytes(4, sys.byteorder) + bytes(4) + attr
            header = (16 + len(body)).to_bytes(4, sys.byteorder) + RTM_DELNEIGH.to_bytes(2, sys.byteorder) + \
                NLM_F_REQUEST.to_bytes(2, sys.byteorder) + seq.to_bytes(4, sys.byteorder) + bytes(4)
            sock.send(header + body)  # an entry already gone answers ENOENT, left unread
            gone += 1
        return gone
    finally:
        sock.close()


def in_each_node(nodes, paths, key: str, what: str, action) -> list:
    """`action()` run inside each node's namespace: one `{key: NODE, ...}` JSON line per node, or its error."""
    out = []
    for node in nodes:
        try:
            if node not in paths:
                raise OSError(2, "no namespace given for node " + node)
            _setns(paths[node])
            record = {key: node, **action()}
        except OSError as exc:
            record = {key: node, "error": f"{what} in {node}: {exc.strerror or exc}"}
        out.append(json_value(record))
    return out


def flush_all(nodes, paths) -> list:
    """One `{"flushed": NODE, ...}` line per node: its neighbour entries deleted after the probes."""
    return in_each_node(nodes, paths, "flushed", "neighbour flush", lambda: {"entries": flush_neighbours()})


def json_value(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(json_text(k) + ": " + json_value(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(json_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json_text(value)


def observe_all(nodes, paths) -> list:
    """One `{"observe": NODE, ...}` line per node (or its error), each read inside the node's namespace."""
    return in_each_node(nodes, paths, "observe", "netlink dump", observe_node)


def batch_main(text: str) -> int:
    try:
        params, paths, probes, observe, flush = parse_batch(text)
    except ValueError as exc:
        sys.stderr.write(str(exc) + "\n")
        return 2
    t0 = time.monotonic()
    observed = observe_all(observe, paths)  # before any probe: the state Docker left, not the probes' own
    targets = [BatchTarget(src, reach, address) for src, reach, address in probes]
    t1 = time.monotonic()
    sockets, kinds = open_batch_sockets(targets, paths)
    t2 = time.monotonic()
    window = probe_batch(targets, sockets, params)
    t3 = time.monotonic()
    flushed = flush_all(flush, paths)
    t4 = time.monotonic()
    phases = {"observe": t1 - t0, "open": t2 - t1, "probe": t3 - t2, "flush": t4 - t3}
    by_version = {}
    for (_src, version), kind in sorted(kinds.items()):
        by_version.setdefault(version, kind)
    head = ", ".join(f'"{v}": {json_text(k)}' for v, k in sorted(by_version.items()))
    out = ['{"sockets": {' + head + '}, "window_ms": ' + json_text(float(window)) + ', "phases_ms": ' +
           json_value({k: v * 1000 for k, v in phases.items()}) + '}']
    for t in targets:
        fields = (("src", t.src), ("dst", t.text), ("reach", "true" if t.reach else "false"), ("sent", t.sent),
                  ("received", t.received), ("first_ms", t.first_ms), ("rtt_ms", t.rtt_ms), ("error", t.error),
                  ("waited_ms", t.waited_ms))
        out.append("{" + ", ".join('"{}": {}'.format(k, v if k == "reach" else json_text(v)) for k, v in fields) + "}")
    sys.stdout.write("\n".join(out + observed + flushed) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
