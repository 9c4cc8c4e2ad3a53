"""The ping verdict: whether this node still reaches a ping node, as its decisions see it. Pure.

The raw socket (:class:`~hapair.agent.health.Pinger`) and the simulated world
(:mod:`hapair.agent.simulate`) feed one :class:`PingVerdict` what happened: a round of echo
requests sent, a reply from a ping node to one of them, a heartbeat accepted from the peer, a
stretch of time this process did not run; it answers the two questions
:meth:`~hapair.agent.controller.Controller.step` asks. No I/O, no clock: every method takes
``now`` in ms on the agent's monotonic clock.

- :meth:`PingVerdict.pingable`: a ping node answered within the window (:func:`ping_window_ms`);
  what the heartbeat tells the peer, and the verdict while the peer is heard.
- :meth:`PingVerdict.pingable_now`: the same, but only the reply to a request **sent after the
  peer's next heartbeat was due** counts; the verdict once the peer is dead. If the peer's
  silence is this node's own link going down, a reply that crossed just before the cut
  proves nothing about the present.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

PING_EVERY_INTERVALS: Final = 2
"""The ping nodes are pinged every this many heartbeat intervals."""

REQUESTS_KEPT: Final = 64
"""Rounds of requests whose send time is remembered; a reply to an older one still counts as a
reply, but proves nothing about when its request left."""


def ping_window_ms(interval_ms: float) -> float:
    """How recent a ping reply must be to count: one second, or three ping rounds when they
    are further apart (the AWS profile pings every 2 s: a 1 s window would see a reply only
    half of the time, and the node would flap between reachable and cut off)."""
    return max(1000.0, 3 * PING_EVERY_INTERVALS * interval_ms)


class PingVerdict:
    """What the replies of the ping nodes prove. Pure; times in ms.

    :param targets: the ping nodes (none: every verdict is True).
    :param interval_ms: the heartbeat interval (the window and the heartbeat's due time).

    ``targets`` and ``interval_ms`` are plain attributes: a reload sets them.
    """

    def __init__(self, targets: Iterable[str], interval_ms: float) -> None:
        self.targets = list(targets)
        self.interval_ms = interval_ms
        #: per ping node, when its latest reply came in
        self.last_reply: dict[str, float] = {}
        #: per ping node, when the request of its latest reply was sent
        self.last_reply_sent: dict[str, float] = {}
        #: when the last heartbeat of the peer was accepted (``None``: never)
        self.heard_ms: float | None = None
        self._sent: dict[int, float] = {}
        self._seq = 0
        #: since when the ping nodes answer again after a spell without any reply (``None``:
        #: no such spell, or not answering yet)
        self._back_since: float | None = None
        self._cut = False
        #: whether a ping node ever answered within a window (as :meth:`pingable` saw it)
        self._seen = False

    # ------------------------------------------------------------------ observations
    def sent(self, now: float) -> int:
        """A round of requests leaves now (one to every ping node); returns its number, which
        the replies carry back (the ICMP sequence number)."""
        self._seq = (self._seq + 1) & 0xFFFF
        self._sent[self._seq] = now
        if len(self._sent) > REQUESTS_KEPT:
            self._sent.pop(next(iter(self._sent)))
        return self._seq

    def replied(self, target: str, seq: int, now: float) -> None:
        """A reply from ``target`` to the round numbered ``seq`` came in now (a reply from
        anything but a ping node is ignored)."""
        if target not in self.targets:
            return
        self.last_reply[target] = now
        sent = self._sent.get(seq)
        if sent is not None:
            self.last_reply_sent[target] = max(self.last_reply_sent.get(target, sent), sent)

    def heard(self, now: float) -> None:
        """A heartbeat of the peer was accepted now: its next one is due an interval later."""
        self.heard_ms = now

    def blind(self, gap_ms: float, now: float) -> None:
        """This process did not run for ``gap_ms``: replies it could not read are not the
        ping nodes' silence, so each last reply counts as that much more recent (never later
        than now). The request times are kept: they still prove nothing about the present."""
        for t, at in self.last_reply.items():
            self.last_reply[t] = min(now, at + gap_ms)

    # ------------------------------------------------------------------ verdicts
    def window_ms(self) -> float:
        """How recent a reply must be to count (:func:`ping_window_ms`)."""
        return ping_window_ms(self.interval_ms)

    def reachable(self, now: float, since: float | None = None) -> bool:
        """Whether any ping node answered within the window and, with ``since``, to a request
        sent at or after that moment (True when no ping node is set)."""
        if not self.targets:
            return True
        oldest = now - self.window_ms()
        if since is None:
            return any(t >= oldest for t in self.last_reply.values())
        # Only the reply to a request SENT after ``since`` proves the path works now: a reply
        # to an older request may have crossed the link just before it was cut.
        return any(
            self.last_reply.get(t, 0) >= oldest and sent >= since
            for t, sent in self.last_reply_sent.items()
        )

    def pingable(self, now: float) -> bool:
        """Whether a ping node answered within the window: the heartbeat's flag, and the
        verdict while the peer is heard (a late heartbeat on a lossy link must not make this
        node look cut off).

        With hysteresis: after a spell without any reply, the node counts as reaching a ping
        node again only once replies have kept coming for a whole window. On a lossy link a
        window without a reply comes now and then; without this, each one would hand the VIP
        over and the next reply would hand it back a second later (flapping)."""
        if not self.reachable(now):
            # A spell without replies after replies (a start without any yet is no spell)
            self._cut, self._back_since = self._cut or self._seen, None
            return False
        self._seen = True
        if self._cut:
            if self._back_since is None:
                self._back_since = now
            if now - self._back_since < self.window_ms():
                return False
            self._cut, self._back_since = False, None
        return True

    def due_ms(self) -> float | None:
        """When the peer's next heartbeat was due (``None``: the peer was never heard)."""
        return None if self.heard_ms is None else self.heard_ms + self.interval_ms

    def pingable_now(self, now: float) -> bool:
        """Whether a ping node answered a request sent after the peer's next heartbeat was due
        (the controller relies on it once the peer is dead); before the peer was ever heard,
        the plain verdict."""
        return self.reachable(now, since=self.due_ms())
