"""Garbage on udp/694, for the chaos suite's flood scenario. Two commands, each run inside a lab
namespace by ``ip netns exec``:

* ``capture``: copy the payloads of real heartbeats seen on an interface (a packet socket; the
  heartbeats still reach the agent), to replay them later;
* ``send``: send datagrams to the given addresses: random bytes of random length, and, with
  ``--replay``, captured heartbeats, alternately, at a bounded rate.

Bounded by design: at most :data:`MAX_COUNT` datagrams, :data:`MAX_RATE` per second and
:data:`MAX_SECONDS` seconds; every destination must be inside 198.18.0.0/15 (the lab's range),
anything else is refused before a single datagram leaves.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import socket
import struct
import sys
import time
from pathlib import Path

LAB_RANGE = ipaddress.ip_network("198.18.0.0/15")
MAX_COUNT = 100_000
MAX_RATE = 20_000.0
MAX_SECONDS = 120.0
ETH_P_IP = 0x0800


def check_destinations(dests: list[str]) -> None:
    """:raises ValueError: a destination outside the lab's range."""
    for d in dests:
        if ipaddress.ip_address(d) not in LAB_RANGE:
            raise ValueError(f"refusing to send to {d}: outside {LAB_RANGE}")


def capture(iface: str, port: int, sources: set[str], count: int, timeout: float) -> list[bytes]:
    """UDP payloads to ``port`` from ``sources`` seen on ``iface`` (at most ``count``)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    s.bind((iface, 0))
    s.settimeout(0.2)
    got: list[bytes] = []
    deadline = time.monotonic() + min(timeout, MAX_SECONDS)
    try:
        while len(got) < count and time.monotonic() < deadline:
            try:
                pkt = s.recv(65536)
            except TimeoutError:
                continue
            if len(pkt) < 28 or pkt[9] != socket.IPPROTO_UDP:
                continue
            ihl = (pkt[0] & 0x0F) * 4
            src = socket.inet_ntoa(pkt[12:16])
            dport = struct.unpack_from("!H", pkt, ihl + 2)[0]
            if dport == port and src in sources:
                got.append(pkt[ihl + 8 :])
    finally:
        s.close()
    return got


def send(
    dests: list[str],
    port: int,
    count: int,
    rate: float,
    replay: list[bytes],
    seed: int | None = None,
) -> dict[str, int]:
    """Send ``count`` datagrams round-robin to ``dests`` at ``rate`` per second."""
    check_destinations(dests)
    count = min(count, MAX_COUNT, int(rate * MAX_SECONDS))
    rate = min(rate, MAX_RATE)
    rng = random.Random(seed)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = {"random": 0, "replay": 0, "errors": 0}
    begin = time.monotonic()
    try:
        for i in range(count):
            at = begin + i / rate
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if replay and i % 2:
                payload, kind = replay[(i // 2) % len(replay)], "replay"
            else:
                payload, kind = rng.randbytes(rng.randint(1, 1200)), "random"
            try:
                # Pairs (random, replay) rotate over the destinations: each gets both kinds.
                s.sendto(payload, (dests[(i // 2) % len(dests)], port))
                sent[kind] += 1
            except OSError:
                sent["errors"] += 1
    finally:
        s.close()
    sent["seconds_ms"] = int((time.monotonic() - begin) * 1000)
    return sent


def main() -> None:
    """CLI (see the module docstring)."""
    p = argparse.ArgumentParser(prog="hapair-flood")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("capture")
    c.add_argument("--iface", default="eth0")
    c.add_argument("--port", type=int, default=694)
    c.add_argument("--source", action="append", required=True)
    c.add_argument("--count", type=int, default=40)
    c.add_argument("--timeout", type=float, default=3.0)
    c.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("send")
    s.add_argument("--dest", action="append", required=True)
    s.add_argument("--port", type=int, default=694)
    s.add_argument("--count", type=int, default=20_000)
    s.add_argument("--rate", type=float, default=4000.0)
    s.add_argument("--replay", type=Path)
    s.add_argument("--seed", type=int)
    a = p.parse_args()
    if a.cmd == "capture":
        got = capture(a.iface, a.port, set(a.source), min(a.count, 1000), a.timeout)
        a.out.write_text("\n".join(x.hex() for x in got) + "\n")
        print(json.dumps({"captured": len(got)}))
        return
    if not 0 < a.count <= MAX_COUNT or not 0 < a.rate <= MAX_RATE:
        p.error(f"bounded: 1..{MAX_COUNT} datagrams at most {MAX_RATE:g}/s")
    try:
        check_destinations(a.dest)
    except ValueError as exc:
        p.error(str(exc))
    replay = []
    if a.replay is not None:
        replay = [bytes.fromhex(x) for x in a.replay.read_text().split()]
    print(json.dumps(send(a.dest, a.port, a.count, a.rate, replay, a.seed)))
    sys.exit(0)


if __name__ == "__main__":
    main()
