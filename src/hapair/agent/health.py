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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from hapair.agent.pingverdict import PING_EVERY_INTERVALS as PING_EVERY_INTERVALS
from hapair.agent.pingverdict import PingVerdict
from hapair.errors import OperationError
from hapair.haproxy_stats import show_stat_async
from hapair.httpget import FAILURES, get_head

if TYPE_CHECKING:
    from hapair.agent.config import VipConfig

SLOW_REQUEST_MS: Final = 100.0
"""A request through HAProxy still unanswered after this long starts the next one at once while
the cadence is calm: the calm spacing (:data:`CALM_REQUEST_FACTOR`) must not add its spacing to
the ``fall`` failures needed."""

CALM_REQUEST_FACTOR: Final = 3
"""While :attr:`HealthGate.calm`, a real request goes through HAProxy every this many health
intervals instead of every one: the stats socket, still read every interval, notices a dead
HAProxy or lost backends as fast as before, and the first failed request brings the full
cadence back. Each request costs a TCP connection through HAProxy to a web node; on a
saturated machine that comes out of the data plane."""


@dataclass(frozen=True)
class Health:
    """The local HAProxy's health, as placement acts on it.

    :ivar healthy: HAProxy can serve: it answers, sees a backend UP and real requests succeed.
    :ivar summary: the reason, in words.
    :ivar backends_up: backends HAProxy sees UP.
    :ivar backends_total: backends HAProxy has.
    :ivar hard: HAProxy does not answer at all (its stats socket is silent).
    """

    healthy: bool
    summary: str
    backends_up: int = 0
    backends_total: int = 0
    hard: bool = False

    @property
    def answers(self) -> bool:
        """HAProxy answers clients, if only with an error page."""
        return not self.hard


class HealthGate:
    """Turns a stream of readings into the health to act on. Pure; times in ms.

    Two sources: the stats socket (does HAProxy answer, how many backends does it see UP)
    and real requests through HAProxy, started every health interval without waiting for the
    previous one. HAProxy's own view counts at once, because HAProxy already debounced it with
    its check ``rise``/``fall``: a silent stats socket is a hard failure, no backend UP is a
    failure. Requests are judged over a window: ``fall`` failed requests in a row make a
    healthy node unhealthy, ``rise`` successes in a row make it healthy again (hysteresis), so
    one slow request on a lossy link moves nothing.
    """

    def __init__(self, rise: int = 2, fall: int = 3) -> None:
        self.rise = rise
        self.fall = fall
        self.current: Health = Health(False, "not checked yet")
        #: when the last successful request through HAProxy began (``None``: never)
        self.ok_started_ms: float | None = None
        #: when the last failed request through HAProxy began (``None``: none failed)
        self.failed_started_ms: float | None = None
        self._answers = False
        self._up = 0
        self._total = 0
        self._requests_ok: bool | None = None
        self._streak = 0

    @property
    def calm(self) -> bool:
        """Healthy, and the last request succeeded like the ones before it: nothing is
        changing, so requests may come less often (:data:`CALM_REQUEST_FACTOR`)."""
        return self.current.healthy and self._requests_ok is True and self._streak == 0

    def stats(self, answers: bool, up: int = 0, total: int = 0) -> Health:
        """One reading of the stats socket; returns the health to act on."""
        self._answers, self._up, self._total = answers, up, total
        return self._update()

    def request(self, ok: bool, started_ms: float) -> Health:
        """The outcome of one real request through HAProxy (a request too slow counts as
        failed); returns the health to act on."""
        if ok:
            self.ok_started_ms = max(self.ok_started_ms or started_ms, started_ms)
        else:
            self.failed_started_ms = max(self.failed_started_ms or started_ms, started_ms)
        if self._requests_ok is None:
            self._requests_ok, self._streak = ok, 0
        elif ok == self._requests_ok:
            self._streak = 0
        else:
            self._streak += 1
            if self._streak >= (self.rise if ok else self.fall):
                self._requests_ok, self._streak = ok, 0
        return self._update()

    def _update(self) -> Health:
        up, total = self._up, self._total
        if not self._answers:
            h = Health(False, "haproxy does not answer on its stats socket", hard=True)
        elif up == 0:
            h = Health(False, f"haproxy has no backend up (0/{total})", up, total)
        elif self._requests_ok is None:
            h = Health(
                False, f"no request through haproxy yet ({up}/{total} backends up)", up, total
            )
        elif not self._requests_ok:
            h = Health(
                False,
                f"{self.fall} requests in a row through haproxy failed ({up}/{total} backends up)",
                up,
                total,
            )
        else:
            h = Health(True, f"haproxy serves ({up}/{total} backends up)", up, total)
        self.current = h
        return h


Answer = Literal["ok", "refused", "failed"]
"""How a request went: answered 2xx/3xx; refused (a reset to the SYN: the host is up and
nothing listens there, proof HAProxy is not serving); failed (anything else: a timeout, an
error status, a broken answer)."""


async def http_answer(
    host: str, port: int, path: str, timeout: float, host_header: str = "hapair"
) -> Answer:
    """``GET path`` on host:port within ``timeout`` seconds, and how it went."""
    try:
        status, _ = await get_head(host, port, path, host_header, timeout, "hapair-agent")
    except ConnectionRefusedError:
        return "refused"
    except FAILURES:
        return "failed"
    return "ok" if 200 <= status < 400 else "failed"


async def http_ok(
    host: str, port: int, path: str, timeout: float, host_header: str = "hapair"
) -> bool:
    """Whether ``GET path`` on host:port answers 2xx/3xx within ``timeout`` seconds."""
    return await http_answer(host, port, path, timeout, host_header) == "ok"


def peer_witnesses(
    vips: Sequence[VipConfig], peer_held: Iterable[str], held_here: Iterable[str]
) -> list[str]:
    """The second path to a silent peer: the addresses of the VIPs it said it holds (its last
    heartbeat) and this node does not. A request to one of them reaches whoever carries it,
    by another address than the peer's own; only ``l2`` VIPs (an ``aws_eip`` address is public,
    and an LB without one has no way out to it)."""
    theirs, mine = set(peer_held), set(held_here)
    return [v.address for v in vips if v.driver == "l2" and v.name in theirs - mine]


async def peer_answers(
    address: str, witnesses: Sequence[str], port: int, path: str, timeout: float
) -> tuple[bool, str]:
    """Whether the peer's HAProxy serves, asked at its own address and, at the same time, at
    the VIPs it holds (:func:`peer_witnesses`); returns the verdict and, when a witness decided
    it, that witness's address (else ``""``).

    The first answer decides: a success anywhere (a dead HAProxy answers nowhere), or a refusal
    at the peer's own address (the host is up and HAProxy is not listening: a crash is judged
    as fast as without witnesses). A timeout there is no proof (a firewall or a cut between
    the two LBs only), so it waits for the witnesses, which end by the same ``timeout``.
    """
    direct = asyncio.ensure_future(http_answer(address, port, path, timeout))
    names: dict[asyncio.Future[Answer], str] = {
        asyncio.ensure_future(http_answer(w, port, path, timeout)): w for w in witnesses
    }
    pending: set[asyncio.Future[Answer]] = {direct, *names}
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                answer = task.result()
                if answer == "ok":
                    return True, names.get(task, "")
                if task is direct and answer == "refused":
                    return False, ""
        return False, ""
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def read_stats(stats_socket: str, timeout: float = 0.5) -> tuple[bool, int, int]:
    """``(answers, backends up, backends total)`` from the local HAProxy's stats socket."""
    try:
        servers = await show_stat_async(stats_socket, timeout)
    except OperationError:
        return False, 0, 0
    return True, sum(1 for s in servers if s.up), len(servers)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return int(~s & 0xFFFF)


class Pinger:
    """ICMP echo to the ping nodes over one raw socket. What the replies prove is for the pure
    :class:`~hapair.agent.pingverdict.PingVerdict` it feeds (each round sent, each reply read)
    to say.

    :param verdict: the verdict fed; its ``targets`` are the ping nodes.
    :param clock: the agent's monotonic clock, in ms.
    """

    def __init__(self, verdict: PingVerdict, clock: Callable[[], float]) -> None:
        self.verdict = verdict
        self.clock = clock
        self._ident = os.getpid() & 0xFFFF
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
        seq = self.verdict.sent(self.clock())
        header = struct.pack("!BBHHH", 8, 0, 0, self._ident, seq)
        payload = b"hapair"
        packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), self._ident, seq)
        for t in self.verdict.targets:
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
            typ, _code, _ck, ident, seq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if typ == 0 and ident == self._ident:
                self.verdict.replied(addr[0], seq, self.clock())
