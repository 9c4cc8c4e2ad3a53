"""Peer liveness from heartbeats: init, up, warn, dead. Pure; the clock is passed in (ms).

- ``init``: never heard from, and ``initdead`` has not passed since start.
- ``up``: heard from less than ``warntime`` ago.
- ``warn``: silent for ``warntime`` or more (logged; placement treats it like ``up``).
- ``dead``: silent for the effective deadtime or more, or never heard from once ``initdead``
  has passed.

**Loss-tolerant.** The effective deadtime is ``deadtime`` on a clean link. When heartbeats have
been missing lately (a lossy or jittery link, not a dead peer), it stretches so that a run of
lost heartbeats stays unlikely to look like a death: with ``q`` the share of intervals in the
last :data:`LOSS_WINDOW_MS` that brought no heartbeat, the peer is dead only after ``k + 1``
silent intervals where ``q ** k <= FALSE_DEATH_TARGET``, never beyond ``MAX_STRETCH`` times
``deadtime``. A crash on a clean link is still detected after ``deadtime``.

**Blind, not silent.** Time during which this node itself did not look (its own process was
stopped or starved: :meth:`Membership.blind`) is not the peer's silence: for one effective
deadtime after such a gap the peer is at worst ``warn``, so the heartbeats that queued up
meanwhile can arrive first.

Every change goes through one setter that checks it against :data:`TRANSITIONS`, logs
``peer lb2: up -> dead (silent for 162 ms)`` at INFO and queues it for :meth:`Membership.poll`.
A heartbeat with a larger boot id than the last one means the peer restarted; it is logged and
counted in :attr:`Membership.restarts`.
"""

from __future__ import annotations

import bisect
import collections
import logging
import math
from enum import StrEnum
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol

if TYPE_CHECKING:
    from hapair.agent.protocol import Heartbeat

logger = logging.getLogger(__name__)

LOSS_WINDOW_MS: Final = 10_000.0
"""Heartbeat arrivals over this long estimate the share of silent intervals."""
FALSE_DEATH_TARGET: Final = 1e-4
"""Chance per interval, at the measured loss, that a live peer looks dead."""
MAX_STRETCH: Final = 10.0
"""The effective deadtime is at most this many times ``deadtime``."""
SHORT_WINDOW_MS: Final = 1_000.0
"""... and over this long, so that a link that just turned lossy is noticed at once."""
MIN_INTERVALS: Final = 10
"""Fewer intervals observed than this: too little to estimate loss; use ``deadtime``."""


class LivenessTimings(Protocol):
    """The liveness timings (``HaSpec`` and ``AgentConfig`` both have them)."""

    @property
    def interval_ms(self) -> int: ...
    @property
    def warntime_ms(self) -> int: ...
    @property
    def deadtime_ms(self) -> int: ...
    @property
    def initdead_ms(self) -> int: ...


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
        #: arrival times within :data:`LOSS_WINDOW_MS`, and beside each the running count of
        #: intervals that brought no heartbeat up to it (so a window's loss is one bisect)
        self._arrivals: collections.deque[float] = collections.deque()
        self._missed: collections.deque[int] = collections.deque()
        self._blind_until: float | None = None

    @classmethod
    def from_spec(cls, peer: str, ha: LivenessTimings, start_ms: float) -> Membership:
        """Build from ``[ha]`` timings (the spec's or the agent config's).

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

    def retime(self, ha: LivenessTimings) -> None:
        """Take new timings (a reload)."""
        self.interval_ms, self.warntime_ms = ha.interval_ms, ha.warntime_ms
        self.deadtime_ms, self.initdead_ms = ha.deadtime_ms, ha.initdead_ms
        arrivals = list(self._arrivals)
        self._clear_arrivals()
        for t in arrivals:
            self._add_arrival(t)

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

    def loss(self, now: float) -> float:
        """The share of heartbeat intervals that brought no heartbeat: the larger of the last
        :data:`LOSS_WINDOW_MS` and the last :data:`SHORT_WINDOW_MS` (so a link that just turned
        lossy is noticed within a second), 0 when too little was observed.

        :param now: the current time (ms).
        """
        self._forget(now)
        return max(self._loss_since(now - LOSS_WINDOW_MS), self._loss_since(now - SHORT_WINDOW_MS))

    def _loss_since(self, start: float) -> float:
        first = bisect.bisect_left(self._arrivals, start)
        if len(self._arrivals) - first < 2:
            return 0.0
        # Completed gaps only: the silence under way is what is being judged.
        span = self._arrivals[-1] - self._arrivals[first]
        if span < MIN_INTERVALS * self.interval_ms:
            return 0.0
        missed = self._missed[-1] - self._missed[first]
        return min(1.0, missed / (span / self.interval_ms))

    def _add_arrival(self, t: float) -> None:
        missed = 0
        if self._arrivals:
            gap = round((t - self._arrivals[-1]) / self.interval_ms) - 1
            missed = self._missed[-1] + max(0, gap)
        self._arrivals.append(t)
        self._missed.append(missed)

    def _clear_arrivals(self) -> None:
        self._arrivals.clear()
        self._missed.clear()

    def effective_deadtime_ms(self, now: float) -> float:
        """``deadtime``, stretched by the measured loss (see the module docstring).

        :param now: the current time (ms).
        """
        q = self.loss(now)
        if q <= 0:
            return float(self.deadtime_ms)
        cap = MAX_STRETCH * self.deadtime_ms
        if q >= 1:
            return cap
        k = math.ceil(math.log(FALSE_DEATH_TARGET) / math.log(q))
        return min(cap, max(float(self.deadtime_ms), (k + 1) * self.interval_ms))

    def blind(self, now: float, gap_ms: float) -> None:
        """This node did not look for ``gap_ms`` (its process stalled): do not count that time
        as the peer's silence. The peer stays at worst ``warn`` for one effective deadtime.

        :param now: the current time (ms), just after the gap.
        :param gap_ms: how long this node did not run.
        """
        self._blind_until = now + self.effective_deadtime_ms(now)
        logger.info("this node did not run for %d ms: not judging %s yet", gap_ms, self.peer)

    def _forget(self, now: float) -> None:
        while self._arrivals and now - self._arrivals[0] > LOSS_WINDOW_MS:
            self._arrivals.popleft()
            self._missed.popleft()

    def state(self, now: float) -> PeerState:
        """The peer's state at ``now``, without recording a transition.

        :param now: the current time (ms).
        """
        silence = self.silence_ms(now)
        blind = (
            self._blind_until is not None
            and now < self._blind_until
            and self._state is not PeerState.DEAD
        )
        if silence is None:
            if blind or now - self.start_ms < self.initdead_ms:
                return PeerState.INIT
            return PeerState.DEAD
        if silence >= self.effective_deadtime_ms(now):
            return PeerState.WARN if blind else PeerState.DEAD
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
        if restarted or (self._last is not None and hb.boot_id != self._last.boot_id):
            self._clear_arrivals()
        self._last = hb
        self._heard_ms = now
        self._add_arrival(now)
        self._forget(now)
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
