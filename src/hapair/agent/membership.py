"""Peer liveness from heartbeats: init, up, warn, dead. Pure; the clock is passed in (ms).

- ``init``: never heard from, and ``initdead`` has not passed since start.
- ``up``: heard from less than ``warntime`` ago.
- ``warn``: silent for ``warntime`` or more (logged; placement treats it like ``up``).
- ``dead``: silent for ``deadtime`` or more, or never heard from once ``initdead`` has passed.

Every change goes through one setter that checks it against :data:`TRANSITIONS`, logs
``peer lb2: up -> dead (silent for 162 ms)`` at INFO and queues it for :meth:`Membership.poll`.
A heartbeat with a larger boot id than the last one means the peer restarted; it is logged and
counted in :attr:`Membership.restarts`.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import TYPE_CHECKING, Final, NamedTuple

if TYPE_CHECKING:
    from hapair.agent.protocol import Heartbeat
    from hapair.spec import HaSpec

logger = logging.getLogger(__name__)


class PeerState(StrEnum):
    """How alive the peer looks from here."""

    INIT = "init"
    UP = "up"
    WARN = "warn"
    DEAD = "dead"


TRANSITIONS: Final[dict[PeerState, frozenset[PeerState]]] = {
    PeerState.INIT: frozenset({PeerState.UP, PeerState.DEAD}),
    PeerState.UP: frozenset({PeerState.WARN, PeerState.DEAD}),
    PeerState.WARN: frozenset({PeerState.UP, PeerState.DEAD}),
    PeerState.DEAD: frozenset({PeerState.UP}),
}
"""The moves the setter allows (``up -> dead`` happens when polls are further apart than
``deadtime - warntime``)."""


class Transition(NamedTuple):
    """One change of the peer's state, with the reason in words."""

    old: PeerState
    new: PeerState
    reason: str


class Membership:
    """Tracks one peer's liveness from the heartbeats accepted from it.

    :param peer: the peer's node name (for logs).
    :param interval_ms: heartbeat interval.
    :param warntime_ms: silence after which the peer is ``warn``.
    :param deadtime_ms: silence after which the peer is ``dead``.
    :param initdead_ms: how long after ``start_ms`` a never-heard peer stays ``init``.
    :param start_ms: when this node started (same clock as every ``now``).
    :raises ValueError: the timings are not ``0 < interval < warntime <= deadtime``.
    """

    def __init__(
        self,
        peer: str,
        *,
        interval_ms: float,
        warntime_ms: float,
        deadtime_ms: float,
        initdead_ms: float,
        start_ms: float,
    ) -> None:
        if not 0 < interval_ms < warntime_ms <= deadtime_ms or initdead_ms < 0:
            raise ValueError(
                "need 0 < interval_ms < warntime_ms <= deadtime_ms and initdead_ms >= 0 "
                f"(got {interval_ms}, {warntime_ms}, {deadtime_ms}, {initdead_ms})"
            )
        self.peer = peer
        self.interval_ms = interval_ms
        self.warntime_ms = warntime_ms
        self.deadtime_ms = deadtime_ms
        self.initdead_ms = initdead_ms
        self.start_ms = start_ms
        self.restarts = 0
        self._state = PeerState.INIT
        self._last: Heartbeat | None = None
        self._heard_ms: float | None = None
        self._pending: list[Transition] = []

    @classmethod
    def from_spec(cls, peer: str, ha: HaSpec, start_ms: float) -> Membership:
        """Build from the spec's ``[ha]`` timings.

        :param peer: the peer's node name.
        :param ha: the HA settings.
        :param start_ms: when this node started (ms).
        """
        return cls(
            peer,
            interval_ms=ha.interval_ms,
            warntime_ms=ha.warntime_ms,
            deadtime_ms=ha.deadtime_ms,
            initdead_ms=ha.initdead_ms,
            start_ms=start_ms,
        )

    @property
    def current(self) -> PeerState:
        """The state as of the last :meth:`observe` or :meth:`poll`."""
        return self._state

    def last(self) -> Heartbeat | None:
        """The latest heartbeat accepted from the peer (its view), or ``None``."""
        return self._last

    def silence_ms(self, now: float) -> float | None:
        """How long the peer has been silent, or ``None`` if it was never heard.

        :param now: the current time (ms).
        """
        return None if self._heard_ms is None else now - self._heard_ms

    def state(self, now: float) -> PeerState:
        """The peer's state at ``now``, without recording a transition.

        :param now: the current time (ms).
        """
        silence = self.silence_ms(now)
        if silence is None:
            return PeerState.INIT if now - self.start_ms < self.initdead_ms else PeerState.DEAD
        if silence >= self.deadtime_ms:
            return PeerState.DEAD
        if silence >= self.warntime_ms:
            return PeerState.WARN
        return PeerState.UP

    def observe(self, hb: Heartbeat, now: float) -> bool:
        """Record a heartbeat accepted from the peer (the decoder has checked it).

        :param hb: the heartbeat.
        :param now: when it arrived (ms).
        :returns: whether it shows that the peer restarted (a larger boot id).
        """
        restarted = self._last is not None and hb.boot_id > self._last.boot_id
        if restarted:
            self.restarts += 1
            logger.info("peer %s restarted", self.peer)
        self._last = hb
        self._heard_ms = now
        if self._state is not PeerState.UP:
            self._set(PeerState.UP, "heartbeat received")
        return restarted

    def poll(self, now: float) -> list[Transition]:
        """Advance the state to ``now`` and return every transition since the last poll.

        :param now: the current time (ms).
        :returns: the transitions, oldest first (including those made by :meth:`observe`).
        """
        new = self.state(now)
        if new is not self._state:
            silence = self.silence_ms(now)
            if silence is None:
                reason = f"never heard within initdead {round(self.initdead_ms)} ms"
            else:
                reason = f"silent for {round(silence)} ms"
            self._set(new, reason)
        out, self._pending = self._pending, []
        return out

    def _set(self, new: PeerState, reason: str) -> None:
        old = self._state
        if new not in TRANSITIONS[old]:
            raise RuntimeError(f"peer {self.peer}: illegal transition {old} -> {new}")
        self._state = new
        logger.info("peer %s: %s -> %s (%s)", self.peer, old, new, reason)
        self._pending.append(Transition(old, new, reason))
