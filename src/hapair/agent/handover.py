"""The pair agent's stop: on SIGTERM it hands its VIPs to a healthy peer (make-before-break),
or keeps them configured when the peer cannot take them, then ends its loops and closes."""

from __future__ import annotations

import asyncio
import logging
import time

from hapair.agent.core import HANDOFF_S
from hapair.agent.membership import PeerState
from hapair.agent.pairstate import PairState


class Handover(PairState):
    """Shutdown and hand-over."""

    def _peer_cannot_take(self) -> str | None:
        """Why the peer cannot take this node's VIPs now (stopping), or ``None``."""
        m = self.controller.membership
        state = m.state(self.now_ms())
        if state not in (PeerState.UP, PeerState.WARN):
            return f"{self.cfg.peer} is {state}"
        last = m.last()
        if last is not None and last.standby:
            return f"{self.cfg.peer} is in standby or leaving too"
        return None

    async def _settle_actions(self, timeout: float) -> None:
        """Let actions under way finish (bounded), so that what is kept is what is held."""
        deadline = time.monotonic() + timeout
        while any(a.busy for a in self.actors.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def _shutdown(self) -> None:
        """SIGTERM: hand our VIPs to a healthy peer (make-before-break), then exit. A peer
        that cannot take them (in standby, leaving too, silent) gets nothing: this node
        stops deciding and exits with what it holds still configured, so that HAProxy keeps
        serving it and the next start finds it (handing a VIP to a peer that is leaving too
        only makes it come back, and its announcement can outlive it)."""
        held = [n for n, a in self.actors.items() if a.held]
        if held and self.exit_code == 0:
            self.event(f"stopping: handing {', '.join(held)} to {self.cfg.peer}")
            self.standby = True
            deadline = time.monotonic() + HANDOFF_S
            while time.monotonic() < deadline:
                self._send()
                why = self._peer_cannot_take()
                if why is not None:
                    self._frozen = True  # no decision from here on, heartbeat-driven included
                    await self._settle_actions(1.0)
                    self.event(f"stopping: {why}; keeping what this node holds")
                    break
                self.tick()
                if not any(a.held for a in self.actors.values()):
                    break
                await asyncio.sleep(self.cfg.interval_ms / 1000)
            left = [n for n, a in self.actors.items() if a.held]
            if left:
                self.event(
                    f"stopping: {', '.join(left)} kept configured, "
                    f"{self.cfg.peer} could not take it",
                    logging.WARNING,
                )
        await self._end_tasks([*self._probes, *([self._peer_probe] if self._peer_probe else [])])
        await self.drainer.close()  # failback drain: end running drains, remove their rules
        await self._close(self.cfg.node)
