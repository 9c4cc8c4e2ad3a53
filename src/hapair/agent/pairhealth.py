"""The pair agent's health loops and probes: this node's HAProxy (stats socket and real
requests through it, into the health gate), the side channel to the peer's HAProxy while its
heartbeats are late, and the reconcile pass that reads back what each VIP really is."""

from __future__ import annotations

import asyncio

from hapair.agent.core import reconcile
from hapair.agent.health import (
    CALM_REQUEST_FACTOR,
    SLOW_REQUEST_MS,
    Health,
    http_ok,
    peer_answers,
    peer_witnesses,
    read_stats,
)
from hapair.agent.pairstate import PairState

MAX_SELF_PROBES = 8
"""Requests through the local HAProxy in flight at once, at most."""


class PairHealth(PairState):
    """This node's health, the peer probe, and the reconcile pass."""

    async def _read_stats(self) -> None:
        answers, up, total = await read_stats(
            self.cfg.stats_socket, timeout=min(0.5, self.cfg.health_interval_ms / 1000 * 5)
        )
        self._apply_health(self.gate.stats(answers, up, total))

    def _request_period_ms(self) -> float:
        calm = self.gate.calm and not self.standby
        return self.cfg.health_interval_ms * (CALM_REQUEST_FACTOR if calm else 1)

    def _probe_self(self) -> None:
        """Start one request through the local HAProxy, without waiting for the last one."""
        if len(self._probes) >= MAX_SELF_PROBES:
            self._apply_health(self.gate.request(False, self.now_ms()))
            return
        task = asyncio.get_running_loop().create_task(self._request_self(), name="self-probe")
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    def _hurry(self) -> None:
        """A request is slow: while the cadence is the calm one, start the next now (it may
        hurry the one after it in turn: one every SLOW_REQUEST_MS, the full cadence)."""
        if self.gate.calm and len(self._probes) < MAX_SELF_PROBES:
            self._probe_self()

    async def _request_self(self) -> None:
        started = self.now_ms()
        # Slow: the next request now, not at the next (calm) tick (SLOW_REQUEST_MS).
        slow = asyncio.get_running_loop().call_later(SLOW_REQUEST_MS / 1000, self._hurry)
        try:
            ok = await http_ok(
                "127.0.0.1",
                self.cfg.http_port,
                self.cfg.check_path,
                timeout=self.cfg.request_timeout_ms / 1000,
            )
        finally:
            slow.cancel()
        self.guarded("health", lambda: self._apply_health(self.gate.request(ok, started)))

    def _apply_health(self, h: Health) -> None:
        before = self.health
        self.health = h
        g = self.gate
        changed = self.controller.observe_health(
            h.healthy, h.answers, g.ok_started_ms, g.failed_started_ms
        )
        if h.healthy != before.healthy or h.answers != before.answers:
            self.event(f"health: {h.summary}")
            self.metrics.healthy.set(1 if h.healthy else 0)
        if self._ready and changed:
            self.tick()

    def _kick_peer_probe(self) -> None:
        """The peer's next heartbeat is late: start probing it (unless a probe runs)."""
        if self._peer_probe is None or self._peer_probe.done():
            loop = asyncio.get_running_loop()
            self._peer_probe = loop.create_task(self._probe_peer_while_late(), name="peer-probe")

    async def _probe_peer_while_late(self) -> None:
        """The side channel: real requests through the peer's HAProxy, one after the other,
        made only while its heartbeats are late (in steady state the heartbeats say
        everything, and nothing wakes up for it)."""
        while not self._stopping and self.controller.should_probe(self.now_ms()):
            try:
                await self._probe_peer()
            except Exception:
                self.unexpected("peer-probe")
            await asyncio.sleep(self.cfg.interval_ms / 2000)

    async def _probe_peer(self) -> None:
        """One request through the peer's HAProxy; a failure decides at once."""
        c = self.controller
        started = self.now_ms()
        last = c.membership.last()
        witnesses = peer_witnesses(self.cfg.vips, last.held if last else (), self._held())
        ok, witness = await peer_answers(
            self.cfg.peer_probe_address,
            witnesses,
            self.cfg.http_port,
            self.cfg.check_path,
            timeout=c.probe_timeout_ms() / 1000,
        )
        # Once per silence (the peer's last heartbeat), not per probe: when both paths answer,
        # either may be first.
        heard = (last.boot_id, last.seq) if last else None
        if witness and self._witness != heard:
            self._witness = heard
            self.event(f"{self.cfg.peer} answers at {witness}, a VIP it holds: serving")
        c.observe_probe(ok, started)
        if not ok and self._ready:
            self.tick()  # the verdict a silent peer's death waited for

    async def _reconcile(self) -> None:
        await reconcile(
            self.actors.values(), self.cfg.action_timeout_ms / 1000, self.metrics, self.event
        )
