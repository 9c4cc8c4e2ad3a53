"""The N-node agent's heartbeat mesh: one :class:`~hapair.agent.membership.Membership` per
peer, heartbeats to every peer, and probes of the HAProxy of peers whose heartbeats are late.

A full mesh, not gossip: with at most 16 LBs a node sends 15 peers x 2 addresses x 20
datagrams/s = 600 datagrams/s of about 100 bytes (60 KB/s, one HMAC-SHA256 each, a few
microseconds), and every silence is seen first-hand after ``deadtime``, with no relay that
could hide or delay it. A gossip fan-out would save bandwidth nobody lacks and add hops to
the detection time, which is what the cluster is judged on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from hapair.agent.health import http_ok
from hapair.agent.keyring import Keyring
from hapair.agent.membership import Membership, PeerState
from hapair.agent.metrics import Metrics
from hapair.agent.nconfig import NodeConfig
from hapair.agent.nnode import PeerView, Probe, liveness
from hapair.agent.protocol import Decoder, Heartbeat, encode

#: A dropped datagram's reason is logged at most once in this many seconds.
DROP_LOG_EVERY_S = 10.0


class Mesh:
    """Heartbeats to and from every peer.

    :param on_change: called when a peer's view or state changed, or a probe failed.
    :param event: logs a sentence (kept for ``/status``).
    """

    def __init__(
        self,
        cfg: NodeConfig,
        keyring: Keyring,
        metrics: Metrics,
        now_ms: Callable[[], float],
        on_change: Callable[[], None],
        event: Callable[[str, int], None],
    ) -> None:
        self.cfg = cfg
        self.keyring = keyring
        self.metrics = metrics
        self.now_ms = now_ms
        self.on_change = on_change
        self.event = event
        self.decoder = Decoder(keyring, cfg.cluster, cfg.node, cfg.peer_names)
        self.members = {p.name: Membership.from_spec(p.name, cfg, 0.0) for p in cfg.peers}
        self.probes: dict[str, Probe] = {}
        self.seq = 0
        self._probing: dict[str, asyncio.Task[None]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._dropped: dict[str, int] = {}
        self._drop_logged: dict[str, float] = {}
        self._last_send: float | None = None

    # ------------------------------------------------------------------ receiving
    def receive(self, data: bytes) -> None:
        """A datagram on the heartbeat port: decoded, checked, counted, or dropped."""
        hb = self.decoder.decode(data)
        if hb is None:
            self._count_drops()
            return
        self.metrics.hb_received.inc()
        m = self.members[hb.node]
        before, was = m.last(), m.current
        m.observe(hb, self.now_ms())
        old = self._timers.pop(hb.node, None)
        if old is not None:
            old.cancel()
        # Decide again the moment this peer could turn dead, not at the next periodic tick.
        self._timers[hb.node] = asyncio.get_running_loop().call_later(
            self.cfg.deadtime_ms / 1000 + 0.001, self.on_change
        )
        if before is None or was is not PeerState.UP or _view_changed(before, hb):
            self.on_change()

    def _count_drops(self) -> None:
        now = time.monotonic()
        for reason, total in self.decoder.dropped.items():
            counted = self._dropped.get(reason, 0)
            if total == counted:
                continue
            self.metrics.hb_dropped.labels(reason).inc(total - counted)
            self._dropped[reason] = total
            if now - self._drop_logged.get(reason, -1e9) >= DROP_LOG_EVERY_S:
                self._drop_logged[reason] = now
                self.event(
                    f"dropped heartbeat datagram(s): {reason} ({total} so far)", logging.WARNING
                )

    # ------------------------------------------------------------------ sending
    def send(
        self, transport: asyncio.DatagramTransport | None, make: Callable[[int], Heartbeat]
    ) -> None:
        """Send ``make(seq)`` to every address of every peer, one sequence number per datagram
        (a copy to a peer's second address is no replay of the first). A late call means this
        node itself stalled: the peers' silence meanwhile is not held against them."""
        now = time.monotonic()
        last, self._last_send = self._last_send, now
        if last is not None and now - last > 3 * self.cfg.interval_ms / 1000:
            for m in self.members.values():
                m.blind(self.now_ms(), (now - last) * 1000)
        if transport is None:
            return
        key = self.keyring.signing_key(time.time())
        for p in self.cfg.peers:
            for addr in p.addresses:
                self.seq += 1
                with contextlib.suppress(OSError):
                    transport.sendto(encode(make(self.seq), key), (addr, self.cfg.port))
                self.metrics.hb_sent.inc()

    # ------------------------------------------------------------------ probes
    def probe_late(self) -> None:
        """Start a request through each late peer's HAProxy: one at a time per peer, at most
        one per deadtime (a dead peer is not hammered)."""
        now = self.now_ms()
        for p in self.cfg.peers:
            if self.members[p.name].state(now) not in (PeerState.WARN, PeerState.DEAD):
                continue
            last = self.probes.get(p.name)
            if p.name in self._probing or (
                last is not None and now - last.started_ms < self.cfg.deadtime_ms
            ):
                continue
            task = asyncio.get_running_loop().create_task(
                self._probe(p.name, p.probe_address), name=f"probe-{p.name}"
            )
            self._probing[p.name] = task
            task.add_done_callback(self._probe_done)

    def _probe_done(self, task: asyncio.Task[None]) -> None:
        self._probing.pop(task.get_name().removeprefix("probe-"), None)

    async def _probe(self, name: str, address: str) -> None:
        started = self.now_ms()
        timeout = self.cfg.deadtime_ms / 1000
        ok = await http_ok(address, self.cfg.http_port, self.cfg.check_path, timeout=timeout)
        self.probes[name] = Probe(started, ok)
        if not ok:
            self.on_change()

    # ------------------------------------------------------------------ views
    def transitions(self) -> list[str]:
        """Every peer's state changes since the last call, as sentences."""
        now = self.now_ms()
        return [
            f"peer {m.peer}: {t.old} -> {t.new} ({t.reason})"
            for m in self.members.values()
            for t in m.poll(now)
        ]

    def views(self, now: float) -> tuple[PeerView, ...]:
        """Every peer as a decision sees it."""
        out = []
        grace = self.cfg.deadtime_ms * 2.0
        for name, m in self.members.items():
            hb, silence = m.last(), m.silence_ms(now)
            live = liveness(m.state(now), silence, self.probes.get(name), now, grace)
            if hb is None:
                out.append(PeerView(name, live, silence_ms=silence))
            else:
                out.append(
                    PeerView(
                        name,
                        live,
                        hb.healthy,
                        hb.answers,
                        hb.pingable,
                        hb.standby,
                        hb.held,
                        silence,
                        hb.coordinated,
                    )
                )
        return tuple(out)

    async def close(self) -> None:
        """Cancel the timers and the probes under way."""
        for timer in self._timers.values():
            timer.cancel()
        for task in list(self._probing.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _view_changed(before: Heartbeat, hb: Heartbeat) -> bool:
    """Whether a peer's heartbeat says something a decision reads that the last did not."""
    fields = ("healthy", "answers", "pingable", "standby", "held")
    return any(getattr(before, f) != getattr(hb, f) for f in fields)
