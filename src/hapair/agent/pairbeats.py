"""The pair agent's heartbeats: the datagrams it receives (decoded, counted or dropped) and the
timers each one re-arms, and the heartbeats it sends to the peer's addresses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from hapair.agent.membership import PeerState
from hapair.agent.pairstate import PairState
from hapair.agent.protocol import Heartbeat, encode

DROP_LOG_EVERY_S = 10.0
"""Dropped datagrams are logged at most once per reason in this many seconds."""


class PairHeartbeats(PairState):
    """Heartbeats in and out, and what this node's ping verdict is."""

    def on_datagram(self, data: bytes) -> None:
        """A datagram on the heartbeat port: decoded, checked, counted, or dropped."""
        hb = self.decoder.decode(data)
        if hb is None:
            self._count_drops()
            return
        self.metrics.hb_received.inc()
        before = self.controller.membership.last()
        changed = self.controller.observe_heartbeat(hb, self.now_ms())
        self.history.observe_peer(before, hb)  # dashboard hook: the peer's moves
        self.ping.heard(self.now_ms())  # the ping verdict: when the next one is due
        # If the next heartbeat is late, ping at once (is it the peer or this node's own link?),
        # and decide again the moment the peer could turn dead, not at the next periodic tick.
        for timer in self._timers:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._timers = [
            loop.call_later(1.5 * self.cfg.interval_ms / 1000, self.pinger.send),
            loop.call_later(1.5 * self.cfg.interval_ms / 1000 + 0.001, self._kick_peer_probe),
            loop.call_later(self.cfg.deadtime_ms / 1000 + 0.001, self.tick),
        ]
        self._announce_if_released(before, hb)
        if self._ready and changed:
            self.tick()  # a peer's change of view matters now

    def _count_drops(self) -> None:
        """Count drops by reason; log the first at once, then at most one summary per reason
        every :data:`DROP_LOG_EVERY_S` (a flood of garbage must not flood the log)."""
        now = time.monotonic()
        for reason, total in self.decoder.dropped.items():
            counted = self._dropped_counted.get(reason, 0)
            if total == counted:
                continue
            self.metrics.hb_dropped.labels(reason).inc(total - counted)
            self._dropped_counted[reason] = total
            at, logged = self._dropped_logged.get(reason, (0.0, 0))
            if logged == 0 or now - at >= DROP_LOG_EVERY_S:
                self.event(
                    f"dropped {total - logged} heartbeat datagram(s): {reason} ({total} so far)",
                    logging.WARNING,
                )
                self._dropped_logged[reason] = (now, total)

    def _announce_if_released(self, before: Heartbeat | None, hb: Heartbeat) -> None:
        """The peer just stopped holding a VIP this node holds and wants: announce it again, so
        that no late gratuitous ARP of the peer's leaves clients pointing at it."""
        for vip in sorted(self.controller.peer_released(hb, before)):
            actor = self.actors.get(vip)
            if actor is not None and actor.held and actor.desired:
                self.event(f"announcing {vip} again: {self.cfg.peer} released it")
                actor.want(True, announce=True)

    def _heartbeat(self) -> Heartbeat:
        self.seq += 1
        c = self.controller
        return Heartbeat(
            cluster=self.cfg.cluster,
            node=self.cfg.node,
            boot_id=self.boot_id,
            seq=self.seq,
            healthy=self.health.healthy,
            answers=self.health.answers,
            pingable=self.ping.pingable(self.now_ms()),
            stable_ms=int(c.stable_ms(self.now_ms())),
            standby=self.standby,
            held=c.claimed(self._held()),
            wanted=c.wanted_set(),
        )

    def _notice_stall(self) -> None:
        """If this node itself did not run for a while (stopped, starved), say so and keep
        that time from counting as the peer's silence. Called first by whatever runs first
        after such a gap: the heartbeat loop, or a decision (the peer's death timer is
        overdue too, and must not judge the peer before the gap is known)."""
        gap = self.controller.loop_ran(self.now_ms())
        if gap is not None:
            self.event(gap, logging.WARNING)
            # The ping replies that came in meanwhile could not be read either: the last
            # verdict stands until a fresh ping round has had its chance.
            self.ping.blind(self.controller.last_gap_ms, self.now_ms())
            self.pinger.send()

    def _send(self) -> None:
        self._notice_stall()
        if self.transport is None:
            return
        for addr in self.cfg.peer_addresses:
            # One sequence number per datagram: the copy sent to the peer's second address
            # is not a replay of the first.
            data = encode(self._heartbeat(), self.keyring.signing_key(time.time()))
            with contextlib.suppress(OSError):
                self.transport.sendto(data, (addr, self.cfg.port))
            self.metrics.hb_sent.inc()

    def pingable(self) -> bool:
        """Whether this node reaches a ping node, as its decisions see it (for status)."""
        if self.controller.membership.current is PeerState.DEAD:
            return self.pingable_now()
        return self.ping.pingable(self.now_ms())

    def pingable_now(self) -> bool:
        """Whether a ping node answered a request sent after the peer's next heartbeat was due
        (:meth:`~hapair.agent.pingverdict.PingVerdict.pingable_now`)."""
        return self.ping.pingable_now(self.now_ms())
