"""ARP/NDP scanner: who answers for an address on a segment (a script; the evidence of address conflicts).

Run inside the switch node as `python3 -I -S arpscan.py ROUNDS INTERVAL WAIT FLOOR FACTOR SPEC...`, where
SPEC is `IFACE,ADDRESS` (IFACE: the monitor port of the segment, `mon0` or `mon0.50`). For each round it
asks once for every address: an ARP probe for IPv4 (RFC 5227: sender address 0.0.0.0, so no neighbour
table learns anything), a neighbour solicitation for IPv6 (to the solicited-node group, from a link-local
address of its own). Every node holding the address answers, and each answer is counted, with the MAC
it came from. It prints one JSON object per line and SPEC: `iface`, `ip`, `rounds` (per round, the
source MAC of every answer), `error` and `listened_ms` (how long each round, then the final wait, listened).

How long it listens, derived from the answers of the same scan (the batch prober's rule for isolation,
harness/prober.py): a round lasts FACTOR times the slowest first answer of the scan so far, at least FLOOR,
once every address has answered it, and INTERVAL while one has not; after the last round it listens the
same window again, or WAIT while an address is unanswered. A second holder answers the same broadcast in
the same kernel as the first, so its answer comes within a few times the first one's; when the machine is
slow, the first answers are slow and the window grows with them. An answer counts for its round whenever
it comes, up to the end of the scan. Measured in the TCG guest (2026-11-30): the fixed 3 x 0.3 s + 1 s
this replaced were 1.9 s of a multi-host scenario's 3 s of checks.

Why answers are told apart by round with a MAC of the round: two containers on two hosts holding one
address often hold one MAC too (Docker 20.10 derives the MAC from the address), so counting distinct
MACs would miss them; counting answers per request does not, but a late answer must not count for the
next round. So each round asks from a MAC of its own (locally administered, 02:68:78:..: "hx"), and an
answer belongs to the round whose MAC it is sent to. The monitor port is promiscuous to hear them.
Nothing is sent but these requests, only on the harness's own switch.
"""

import json
import select
import socket
import struct
import sys
import time

ETH_P_ARP, ETH_P_IPV6 = 0x0806, 0x86DD
SOL_PACKET, PACKET_ADD_MEMBERSHIP, PACKET_MR_PROMISC = 263, 1, 1
PACKET_OUTGOING = 4
BROADCAST = b"\xff" * 6


def round_mac(index: int) -> bytes:
    return bytes([0x02, 0x68, 0x78, 0x00, 0x00, index & 0xFF])


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def arp_probe(mac: bytes, target: bytes) -> bytes:
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, b"\0" * 4, b"\0" * 6, target)
    return BROADCAST + mac + struct.pack("!H", ETH_P_ARP) + arp


def link_local(mac: bytes) -> bytes:
    eui = bytes([mac[0] ^ 0x02]) + mac[1:3] + b"\xff\xfe" + mac[3:]
    return b"\xfe\x80" + b"\0" * 6 + eui


def neighbour_solicitation(mac: bytes, target: bytes) -> bytes:
    src = link_local(mac)
    group = b"\xff\x02" + b"\0" * 9 + b"\x01\xff" + target[13:]
    body = struct.pack("!BBHI16sBB6s", 135, 0, 0, 0, target, 1, 1, mac)  # + source link-layer address
    pseudo = src + group + struct.pack("!I", len(body)) + b"\0\0\0" + bytes([58])
    body = body[:2] + struct.pack("!H", checksum(pseudo + body)) + body[4:]
    ip6 = struct.pack("!IHBB16s16s", 0x60000000, len(body), 58, 255, src, group)
    return b"\x33\x33" + group[12:] + mac + struct.pack("!H", ETH_P_IPV6) + ip6 + body


def answer(frame: bytes, proto: int):
    """(destination MAC, answered address as bytes, source MAC) of an ARP reply or a neighbour advertisement."""
    if len(frame) < 14:
        return None
    dst, src = frame[:6], frame[6:12]
    payload = frame[14:]
    if proto == ETH_P_ARP and len(payload) >= 28:
        op = struct.unpack("!H", payload[6:8])[0]
        if op == 2:
            return dst, payload[14:18], src
    elif proto == ETH_P_IPV6 and len(payload) >= 40 + 24 and payload[6] == 58 and payload[40] == 136:
        return dst, payload[48:64], src
    return None


def window_s(slowest: float, floor: float, factor: float, cap: float) -> float:
    """How long a round listens after its requests once every address has answered it: FACTOR times the
    slowest first answer of the scan so far, at least FLOOR, at most the round's cap (see the docstring)."""
    return min(cap, max(floor, factor * slowest))


def main(argv: list[str]) -> int:
    rounds, interval, wait = int(argv[0]), float(argv[1]), float(argv[2])
    floor, factor = float(argv[3]), float(argv[4])
    specs = []
    for spec in argv[5:]:
        iface, _, ip = spec.partition(",")
        version = 6 if ":" in ip else 4
        specs.append((iface, ip, version, socket.inet_pton(socket.AF_INET6 if version == 6 else socket.AF_INET, ip)))
    sockets: dict[tuple[str, int], socket.socket] = {}
    errors: dict[tuple[str, str], str] = {}
    for iface, ip, version, _ in specs:
        proto = ETH_P_IPV6 if version == 6 else ETH_P_ARP
        if (iface, proto) in sockets:
            continue
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
            sock.bind((iface, proto))
            index = socket.if_nametoindex(iface)
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b""))
            sock.setblocking(False)
            sockets[(iface, proto)] = sock
        except OSError as exc:
            errors[(iface, ip)] = f"{iface}: {exc.strerror or exc}"
    heard: dict[tuple[str, bytes], list[list[str]]] = {(i, t): [[] for _ in range(rounds)] for i, _, _, t in specs}
    macs = {round_mac(r): r for r in range(rounds)}
    asked = [(iface, target) for iface, ip, version, target in specs
             if (iface, ETH_P_IPV6 if version == 6 else ETH_P_ARP) in sockets]
    sent_at = [0.0] * rounds
    slowest = 0.0
    poller = select.poll()
    for sock in sockets.values():
        poller.register(sock, select.POLLIN)

    def drain() -> None:
        nonlocal slowest
        for (iface, proto), sock in sockets.items():
            while True:
                try:
                    frame, addr = sock.recvfrom(2048)
                except (BlockingIOError, InterruptedError):
                    break
                got_at = time.monotonic()
                if addr[2] == PACKET_OUTGOING:
                    continue
                got = answer(frame, proto)
                if got is None or got[0] not in macs:
                    continue
                key, r = (iface, got[1]), macs[got[0]]
                if key in heard:
                    if not heard[key][r]:
                        slowest = max(slowest, got_at - sent_at[r])
                    heard[key][r].append(mac_text(got[2]))

    windows = []
    for r in range(rounds + 1):
        if r < rounds:
            for iface, ip, version, target in specs:
                proto = ETH_P_IPV6 if version == 6 else ETH_P_ARP
                sock = sockets.get((iface, proto))
                if sock is None:
                    continue
                frame = neighbour_solicitation(round_mac(r), target) if version == 6 else arp_probe(round_mac(r), target)
                try:
                    sock.send(frame)
                except OSError as exc:
                    errors[(iface, ip)] = f"send on {iface}: {exc.strerror or exc}"
            sent_at[r] = start = time.monotonic()
            cap = interval
        else:
            start, cap = time.monotonic(), wait
        last = min(r, rounds - 1)  # the final wait listens for the last round's answers
        while True:
            # Drain first, then judge with the time taken before the drain: every answer that reached the
            # kernel before `check` has been counted when the round ends at `check`.
            check = time.monotonic()
            drain()
            answered = all(heard[key][last] for key in asked)
            limit = window_s(slowest, floor, factor, cap) if answered else cap
            if check - start >= limit:
                break
            poller.poll(max(0.0, (start + limit - time.monotonic()) * 1000))
        windows.append(round((check - start) * 1000, 3))
    for iface, ip, _, target in specs:
        print(json.dumps({"iface": iface, "ip": ip, "rounds": heard[(iface, target)],
                          "error": errors.get((iface, ip)), "listened_ms": windows}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
