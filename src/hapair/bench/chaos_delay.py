"""A userspace delay line for one lab node's link (this kernel has no netem).

Run inside the node's namespace (``ip netns exec <c>-lb1 python -m hapair.bench.chaos_delay``):

* two TAP devices, ``hpdly-in`` and ``hpdly-out``, are created; ``hpdly-in`` gets the MAC of
  the node's interface, so that frames written into it are taken as the node's own;
* a ``clsact`` qdisc on the interface redirects every IPv4 frame (ARP is left alone) to the
  TAPs: arriving frames to ``hpdly-in``, leaving ones to ``hpdly-out``;
* each frame read from a TAP waits a delay drawn uniformly from ``[min, max]`` ms (frames are
  independent, so they can overtake each other, as on a path with jitter), then arriving frames
  are written back into ``hpdly-in`` (the kernel receives them as if from the wire) and leaving
  ones are sent out of the interface through a packet socket that bypasses the qdisc (so that
  they are not redirected again).

Bounded: it ends after ``--seconds`` (at most 600) or on SIGTERM/SIGINT, holds at most
:data:`MAX_QUEUE` frames (drops beyond, counted), and on the way out removes the qdisc first
(so new frames flow directly again), sends every frame still queued at once, and closes the TAPs
(they disappear with their file descriptors). It prints ``ready`` once the redirection is in
place, and a JSON line of counters at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import heapq
import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
PACKET_QDISC_BYPASS = 20
MAX_QUEUE = 20_000
MAX_SECONDS = 600.0
TAP_IN = "hpdly-in"
TAP_OUT = "hpdly-out"


def _sh(*argv: str, check: bool = True) -> None:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed: {proc.stderr.strip()}")


def open_tap(name: str) -> int:
    """Create (or attach to) TAP ``name`` in this namespace; returns its non-blocking fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    ifr = struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI)
    fcntl.ioctl(fd, TUNSETIFF, ifr)
    return fd


def remove_redirect(ifname: str) -> None:
    """Take the clsact qdisc (and its redirect filters) off ``ifname``; idempotent."""
    _sh("tc", "qdisc", "del", "dev", ifname, "clsact", check=False)


def install(ifname: str) -> tuple[int, int, socket.socket]:
    """The TAPs, the qdisc and the packet socket (see the module docstring)."""
    mac = Path(f"/sys/class/net/{ifname}/address").read_text().strip()
    fd_in = open_tap(TAP_IN)
    fd_out = open_tap(TAP_OUT)
    _sh("ip", "link", "set", "dev", TAP_IN, "address", mac, "up")
    _sh("ip", "link", "set", "dev", TAP_OUT, "up")
    _sh("sysctl", "-q", "-w", f"net.ipv4.conf.{TAP_IN}.rp_filter=0")
    out = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    out.bind((ifname, 0))
    out.setsockopt(263, PACKET_QDISC_BYPASS, 1)  # SOL_PACKET
    remove_redirect(ifname)
    _sh("tc", "qdisc", "add", "dev", ifname, "clsact")
    for hook, tap in (("ingress", TAP_IN), ("egress", TAP_OUT)):
        _sh(
            "tc", "filter", "add", "dev", ifname, hook, "protocol", "ip", "prio", "1",
            "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", tap,
        )  # fmt: skip
    return fd_in, fd_out, out


def run(
    ifname: str, lo_ms: float, hi_ms: float, seconds: float, seed: int | None
) -> dict[str, int]:
    """The delay line (see the module docstring); returns its counters."""
    rng = random.Random(seed)
    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    counters = {"in": 0, "out": 0, "dropped": 0, "max_queue": 0, "send_errors": 0}
    queue: list[tuple[float, int, int, bytes]] = []
    n = 0
    fd_in, fd_out, sock = install(ifname)

    def emit(kind: int, frame: bytes) -> None:
        try:
            if kind == 0:
                os.write(fd_in, frame)
            else:
                sock.send(frame)
        except OSError:
            counters["send_errors"] += 1

    try:
        print("ready", flush=True)
        end = time.monotonic() + min(seconds, MAX_SECONDS)
        while not stop:
            now = time.monotonic()
            if now >= end:
                break
            wait = min(end - now, 0.05, max(0.0, queue[0][0] - now) if queue else 0.05)
            try:
                ready, _, _ = select.select([fd_in, fd_out], [], [], wait)
            except InterruptedError:
                continue
            for kind, fd in ((0, fd_in), (1, fd_out)):
                if fd not in ready:
                    continue
                for _ in range(256):
                    try:
                        frame = os.read(fd, 65536)
                    except BlockingIOError:
                        break
                    if len(queue) >= MAX_QUEUE:
                        counters["dropped"] += 1
                        continue
                    counters["in" if kind == 0 else "out"] += 1
                    due = time.monotonic() + rng.uniform(lo_ms, hi_ms) / 1000
                    n += 1
                    heapq.heappush(queue, (due, n, kind, frame))
            counters["max_queue"] = max(counters["max_queue"], len(queue))
            now = time.monotonic()
            while queue and queue[0][0] <= now:
                _, _, kind, frame = heapq.heappop(queue)
                emit(kind, frame)
    finally:
        remove_redirect(ifname)
        while queue:
            _, _, kind, frame = heapq.heappop(queue)
            emit(kind, frame)
        for fd in (fd_in, fd_out):
            with contextlib.suppress(OSError):
                os.close(fd)
        sock.close()
    return counters


def main() -> None:
    """CLI (see the module docstring)."""
    p = argparse.ArgumentParser(prog="hapair-delay-line")
    p.add_argument("--iface", default="eth0")
    p.add_argument("--min-ms", type=float, default=10.0)
    p.add_argument("--max-ms", type=float, default=90.0)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args()
    if not 0 <= a.min_ms <= a.max_ms <= 2000:
        p.error("need 0 <= --min-ms <= --max-ms <= 2000")
    if not 0 < a.seconds <= MAX_SECONDS:
        p.error(f"--seconds must be in (0, {MAX_SECONDS:g}]")
    counters = run(a.iface, a.min_ms, a.max_ms, a.seconds, a.seed)
    print(json.dumps(counters), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
