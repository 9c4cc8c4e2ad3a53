"""Local health: can this node's HAProxy serve, and does this node still reach a ping node?

Health for placement is "HAProxy can serve", not "HAProxy runs": the stats socket must answer,
at least one backend must be UP, and a real HTTP request through the local HAProxy must succeed
(keepalived's pid check let a node take a VIP back while every backend was still DOWN).
No pid is read: a zombie HAProxy answers ``kill -0`` but not its socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from dataclasses import dataclass

from hapair.errors import OperationError
from hapair.haproxy_stats import show_stat_async
from hapair.httpget import FAILURES, get_head


@dataclass(frozen=True)
class Health:
    """One health reading of the local HAProxy."""

    healthy: bool
    summary: str
    backends_up: int = 0
    backends_total: int = 0
    #: a failure that cannot be transient (HAProxy does not answer at all)
    hard: bool = False


class HealthGate:
    """Debounces readings like HAProxy's own checks: ``fall`` failed readings in a row make a
    healthy node unhealthy (a hard failure at once), ``rise`` good ones make it healthy again.
    Pure: feed it readings, it returns the health to act on."""

    def __init__(self, rise: int = 2, fall: int = 2) -> None:
        self.rise = rise
        self.fall = fall
        self.current: Health | None = None
        self._streak = 0

    def update(self, reading: Health) -> Health:
        """The effective health after one more reading."""
        cur = self.current
        if cur is None or reading.hard:
            self.current, self._streak = reading, 0
            return reading
        if reading.healthy == cur.healthy:
            self._streak = 0
            self.current = reading
            return reading
        self._streak += 1
        if self._streak >= (self.rise if reading.healthy else self.fall):
            self.current, self._streak = reading, 0
            return reading
        return cur


async def http_ok(
    host: str, port: int, path: str, timeout: float, host_header: str = "hapair"
) -> bool:
    """Whether ``GET path`` on host:port answers 2xx/3xx within ``timeout`` seconds."""
    try:
        status, _ = await get_head(host, port, path, host_header, timeout, "hapair-agent")
    except FAILURES:
        return False
    return 200 <= status < 400


async def check_haproxy(stats_socket: str, port: int, path: str, timeout: float = 0.5) -> Health:
    """Read the local HAProxy's health (stats socket, backends UP, real request through it)."""
    try:
        servers = await show_stat_async(stats_socket, timeout)
    except OperationError:
        return Health(False, "haproxy does not answer on its stats socket", hard=True)
    up = sum(1 for s in servers if s.up)
    total = len(servers)
    if up == 0:
        return Health(False, f"haproxy has no backend up (0/{total})", up, total)
    if not await http_ok("127.0.0.1", port, path, timeout):
        return Health(
            False, f"a request through haproxy failed ({up}/{total} backends up)", up, total
        )
    return Health(True, f"haproxy serves ({up}/{total} backends up)", up, total)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return int(~s & 0xFFFF)


class Pinger:
    """ICMP echo to the ping nodes over one raw socket; remembers when each last answered."""

    def __init__(self, targets: list[str]) -> None:
        self.targets = targets
        self.last_reply: dict[str, float] = {}
        self._ident = os.getpid() & 0xFFFF
        self._seq = 0
        self._sock: socket.socket | None = None

    def open(self) -> None:
        """Open the raw ICMP socket (needs CAP_NET_RAW) and start reading replies."""
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        s.setblocking(False)
        self._sock = s
        asyncio.get_running_loop().add_reader(s.fileno(), self._on_readable)

    def close(self) -> None:
        """Stop reading and close the socket."""
        if self._sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def send(self) -> None:
        """Send one echo request to every ping node."""
        if self._sock is None:
            return
        self._seq = (self._seq + 1) & 0xFFFF
        header = struct.pack("!BBHHH", 8, 0, 0, self._ident, self._seq)
        payload = b"hapair"
        packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), self._ident, self._seq)
        for t in self.targets:
            with contextlib.suppress(OSError):
                self._sock.sendto(packet + payload, (t, 0))

    def _on_readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data, addr = self._sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            ihl = (data[0] & 0x0F) * 4
            if len(data) < ihl + 8:
                continue
            typ, _code, _ck, ident, _seq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if typ == 0 and ident == self._ident and addr[0] in self.targets:
                self.last_reply[addr[0]] = time.monotonic()

    def reachable(self, window: float, since: float | None = None) -> bool:
        """Whether any ping node answered within the last ``window`` seconds and, with
        ``since`` (monotonic), after that moment too (True when no ping node is set)."""
        if not self.targets:
            return True
        oldest = time.monotonic() - window
        if since is not None:
            oldest = max(oldest, since)
        return any(t >= oldest for t in self.last_reply.values())
