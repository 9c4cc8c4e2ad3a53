"""The agent's decision core: every piece of bookkeeping between two decisions. Pure.

The daemon feeds a :class:`Controller` what it observes (heartbeats, its health readings, the
side-channel probes of the peer's HAProxy, its own loop running late) and asks it to
:meth:`~Controller.step` with what it holds now; the controller returns what to do, with
reasons. The simulator (:mod:`hapair.agent.simulate`) drives the very same object, so the
thousand-run simulations test the code that runs. No I/O, no clock: every method takes ``now``
in ms on one monotonic clock.

What it keeps:

- the peer's liveness (:class:`~hapair.agent.membership.Membership`, loss-tolerant);
- what this node wanted last step and when each VIP's wish last changed (the anti-flap rule);
- since when this node has been stable, minus a **flap penalty**: each time this node lost
  its VIPs through its own fault (unhealthy, cut off from the ping nodes) within the last
  :data:`DAMPING_WINDOW_MS`, the stability it needs before a failback doubles (the first
  fault costs nothing extra; at most :data:`MAX_PENALTY_MS`), so a node that keeps failing
  does not keep taking its VIP back;
- whether the peer's HAProxy serves while its heartbeats are late (the side channel);
- since when the peer has reported being unhealthy, and when this node's own last
  successful request through HAProxy began (placement's rule 9, fresh evidence); since when
  this node has been healthy again after a fault the peer shared (:data:`SHARED_FAULT_GRACE_MS`)
  and when its own facts (health, standby) last changed: a peer's heartbeat older than that
  change is no ground to take from the peer (it may have changed at the same moment);
- VIPs found configured at start (they may be stale after a crash and are not claimed
  until the peer has been heard).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Protocol

from hapair.agent.membership import Membership, PeerState, Transition
from hapair.agent.movelabel import MoveLabel, move_label
from hapair.agent.placement import ClusterView, Decision, NodeFacts, decide
from hapair.agent.protocol import Heartbeat

DAMPING_WINDOW_MS: Final = 300_000.0
"""Own faults older than this are forgotten by the flap penalty."""
MAX_PENALTY_MS: Final = 60_000.0
"""The flap penalty never asks for more than this much extra stability."""
PROBE_FALL: Final = 2
"""Failed probes in a row (since the peer's last heartbeat) that prove it does not serve. One
is enough unless a probe that began after it succeeded (a probe lost to a loaded machine must
not declare a serving peer dead, and a success clears the failures before it); a probe's
timeout ends by ``deadtime``, and until a probe has answered either way a silent peer is
presumed serving (no death declared on the lack of an answer). Once acted on, the verdict
stands until the peer is heard again."""

SHARED_FAULT_GRACE_MS: Final = 2000.0
"""A node whose health came back while its peer was unhealthy too (every backend lost on both,
say) waits this long before taking the peer's VIPs: the peer is likely recovering from the
same fault a few checks later, and a move there helps nobody."""


class Timings(Protocol):
    """The settings the controller reads (``AgentConfig`` and ``HaSpec`` both have them)."""

    @property
    def interval_ms(self) -> int: ...
    @property
    def warntime_ms(self) -> int: ...
    @property
    def deadtime_ms(self) -> int: ...
    @property
    def initdead_ms(self) -> int: ...
    @property
    def auto_failback(self) -> bool: ...
    @property
    def failback_delay_ms(self) -> int: ...
    @property
    def min_move_interval_ms(self) -> int: ...


@dataclass(frozen=True)
class Move:
    """A VIP this node starts to hold or lets go of.

    :ivar vip: the VIP.
    :ivar take: True to hold it, False to let go.
    :ivar reason: the decision's sentence.
    :ivar label: why, in one word of a closed set (:mod:`hapair.agent.movelabel`).
    :ivar sentence: what to log, e.g. ``took vip1 from lb2: failback: lb1 stable for 3001 ms``.
    :ivar failover_ms: for a take from a dead peer, how long the peer had been silent.
    """

    vip: str
    take: bool
    reason: str
    label: MoveLabel
    sentence: str
    failover_ms: float | None = None


@dataclass(frozen=True)
class Step:
    """What one :meth:`Controller.step` asks the daemon to do.

    :ivar view: the snapshot the decision was made on.
    :ivar decision: placement's decision, one entry per VIP.
    :ivar wishes: per VIP, the new wish when it changed (to hand to that VIP's actor).
    :ivar moves: the changes of what this node holds, with reasons (logged and counted).
    :ivar announce: VIPs to announce again (gratuitous ARP) though the wish did not change.
    :ivar events: other sentences worth an event (peer transitions, announcements).
    """

    view: ClusterView
    decision: Decision
    wishes: dict[str, bool] = field(default_factory=dict)
    moves: tuple[Move, ...] = ()
    announce: tuple[str, ...] = ()
    events: tuple[str, ...] = ()


class Controller:
    """One node's decision core.

    :param node: this node's name.
    :param peer: the peer's name.
    :param vips: ``(vip, home)`` pairs.
    :param timings: the ``[ha]`` timings.
    :param start_ms: when the agent started.
    """

    def __init__(
        self,
        node: str,
        peer: str,
        vips: Iterable[tuple[str, str]],
        timings: Timings,
        start_ms: float,
    ) -> None:
        self.node = node
        self.peer = peer
        self.vips = tuple(vips)
        self.t = timings
        self.membership = Membership.from_spec(peer, timings, start_ms)
        self.wanted: dict[str, bool] = {}
        self.reasons: dict[str, str] = {}
        self.last_move: dict[str, float] = {}
        self.found_at_start: set[str] = set()
        self.announcing: frozenset[str] = frozenset()
        self.healthy = False
        self.answers = False
        self.health_ok_started_ms: float | None = None
        self.health_failed_started_ms: float | None = None
        self.faults: collections.deque[float] = collections.deque()
        self._stable_since: float | None = None
        self._unstable_since: float | None = None
        #: when this node's own (healthy, standby) last changed, and when it last became healthy
        self._own: tuple[bool, bool] | None = None
        self._own_changed_ms: float | None = None
        self._healthy_since: float | None = None
        #: since when this node has had no fault of its own (``None``: in one now)
        self._own_ok_since: float | None = -1e18
        #: the last time this node itself did not run (ms), as :meth:`loop_ran` found it
        self.last_gap_ms = 0.0
        self._peer_unhealthy_since: float | None = None
        self._probe_ok_ms: float | None = None
        self._probe_failures = 0
        self._probe_failed_ms = -1e18
        self._last_loop_ms: float | None = None
        #: when this node last resumed after not running (a stall), as :meth:`loop_ran` saw it
        self._resumed_ms = -1e18

    # ------------------------------------------------------------------ settings
    def retime(self, timings: Timings) -> None:
        """Take new timings (a reload) from the next step on."""
        self.t = timings
        self.membership.retime(timings)

    # ------------------------------------------------------------------ observations
    def observe_heartbeat(self, hb: Heartbeat, now: float) -> bool:
        """A heartbeat accepted from the peer; returns whether it says something placement
        has not seen yet (decide again at once)."""
        before = self.membership.last()
        was = self.membership.current
        self.membership.observe(hb, now)
        self._probe_failures = 0
        if hb.healthy:
            self._peer_unhealthy_since = None
        elif self._peer_unhealthy_since is None:
            self._peer_unhealthy_since = now
        if was is not PeerState.UP or before is None:
            return True
        fields = ("healthy", "answers", "pingable", "standby", "held", "wanted", "boot_id")
        if any(getattr(before, f) != getattr(hb, f) for f in fields):
            return True
        delay = self.t.failback_delay_ms
        return (before.stable_ms >= delay) != (hb.stable_ms >= delay)

    def peer_released(self, hb: Heartbeat, before: Heartbeat | None) -> frozenset[str]:
        """VIPs the peer reported holding in ``before`` and no longer does in ``hb``."""
        if before is None or before.boot_id != hb.boot_id:
            return frozenset()
        return before.held - hb.held

    def observe_health(
        self,
        healthy: bool,
        answers: bool,
        ok_started_ms: float | None,
        failed_started_ms: float | None = None,
    ) -> bool:
        """This node's health as the gate judged it, and when the last successful and the last
        failed request through its HAProxy began; returns whether the health changed."""
        changed = (healthy, answers) != (self.healthy, self.answers)
        self.healthy, self.answers = healthy, answers
        self.health_ok_started_ms = ok_started_ms
        self.health_failed_started_ms = failed_started_ms
        return changed

    def observe_probe(self, ok: bool, started_ms: float) -> None:
        """The outcome of one request through the peer's HAProxy (the side channel)."""
        if ok:
            self._probe_ok_ms = max(self._probe_ok_ms or started_ms, started_ms)
            if self._probe_failures < PROBE_FALL:  # a verdict reached stands until heard
                self._probe_failures = 0
        else:
            self._probe_failures += 1
            self._probe_failed_ms = max(self._probe_failed_ms, started_ms)

    def should_probe(self, now: float) -> bool:
        """Whether to probe the peer's HAProxy now: only while its heartbeats are late."""
        silence = self.membership.silence_ms(now)
        return silence is not None and silence >= 1.5 * self.t.interval_ms

    def probe_timeout_ms(self) -> float:
        """How long one side-channel probe may take: its verdict lands by ``deadtime``."""
        return max(self.t.deadtime_ms - 1.5 * self.t.interval_ms, 0.5 * self.t.interval_ms)

    def loop_ran(self, now: float) -> str | None:
        """Called by the daemon's most frequent loop: notices that this node itself did not run
        for a while (stopped, starved) and keeps that gap from counting as the peer's silence.
        Returns a sentence when it did."""
        last, self._last_loop_ms = self._last_loop_ms, now
        if last is None:
            return None
        gap = now - last
        if gap < max(self.t.deadtime_ms / 2, 2.0 * self.t.interval_ms):
            return None
        self.membership.blind(now, gap)
        self.last_gap_ms = gap
        self._resumed_ms = now
        return (
            f"this node did not run for {round(gap)} ms: not judging {self.peer} until it is heard"
        )

    def _resuming(self, now: float) -> bool:
        """Within ``deadtime`` of resuming from a stall: the heartbeats this node reads were
        queued while it stood still (they may be older than what the peer decided since), and
        its own last heartbeat is as old; a release on that news can cross the peer's own
        release (both let go). A node whose HAProxy answers keeps what it holds meanwhile."""
        return now - self._resumed_ms < self.t.deadtime_ms and (self.answers or self.healthy)

    def found(self, vips: Iterable[str]) -> None:
        """VIPs configured here when the agent started."""
        self.found_at_start.update(vips)

    # ------------------------------------------------------------------ derived facts
    def peer_serving(self, now: float) -> bool:
        """Whether a silent peer counts as alive because its HAProxy serves: a probe that began
        within ``deadtime`` succeeded and none failed since its last heartbeat (a crashed peer
        whose HAProxy came back before its agent is not presumed to hold what it held); while
        no probe has answered yet, it is presumed serving until the probe's time is up."""
        if self._probe_failures >= PROBE_FALL:
            return False
        if self._probe_ok_ms is not None and now - self._probe_ok_ms < self.t.deadtime_ms:
            return self._probe_failures == 0 or self._probe_ok_ms > self._probe_failed_ms
        silence = self.membership.silence_ms(now)
        if silence is None:
            return False
        waiting = silence < self.membership.effective_deadtime_ms(now) + self.t.interval_ms
        return waiting and self._probe_failures == 0

    def penalty_ms(self, now: float) -> float:
        """Extra stability this node needs before a failback (the flap penalty)."""
        while self.faults and now - self.faults[0] > DAMPING_WINDOW_MS:
            self.faults.popleft()
        n = len(self.faults)
        if n <= 1:
            return 0.0
        return min(MAX_PENALTY_MS, float(self.t.failback_delay_ms) * ((1 << (n - 1)) - 1))

    def stable_ms(self, now: float) -> float:
        """How long this node has been stable, minus the flap penalty (never negative)."""
        if self._stable_since is None:
            return 0.0
        # A failed request restarts the count: a node whose requests still fail now and then
        # (a lossy link) is healthy enough to keep a VIP, not to take one back (no flapping).
        since = max(self._stable_since, self.health_failed_started_ms or self._stable_since)
        return max(0.0, now - since - self.penalty_ms(now))

    def _note_own(self, now: float, standby: bool) -> None:
        own = (self.healthy, standby)
        if self._own is not None and own != self._own:
            self._own_changed_ms = now
        if self.healthy and (self._own is None or not self._own[0]):
            self._healthy_since = now
        self._own = own

    def _fresh_health(self, now: float) -> bool:
        """Rule 9's evidence: whether this node may take from a live peer that is not
        eligible (see the module docstring)."""
        silence = self.membership.silence_ms(now)
        changed = self._own_changed_ms
        if changed is not None and (silence is None or now - silence <= changed):
            return False  # the peer's view predates this node's own change
        since = self._peer_unhealthy_since
        if since is None:
            return True
        if self.health_ok_started_ms is None or self.health_ok_started_ms < since:
            return False
        back = self._healthy_since
        return back is None or back <= since or now - back >= SHARED_FAULT_GRACE_MS

    def claimed(self, held: frozenset[str]) -> frozenset[str]:
        """What the peer is told this node holds: held and not being released, minus VIPs
        found at start that wait to be settled (they may be stale after a crash)."""
        return frozenset(
            v for v in held if self.wanted.get(v) is not False and v not in self.found_at_start
        )

    def wanted_set(self) -> frozenset[str]:
        """The VIPs this node wants now."""
        return frozenset(v for v, w in self.wanted.items() if w)

    # ------------------------------------------------------------------ the step
    def step(
        self,
        now: float,
        *,
        held: frozenset[str],
        pingable: bool,
        standby: bool,
        pingable_now: bool | None = None,
    ) -> Step:
        """Decide, at ``now``, given what this node holds (VIPs being released excluded),
        whether it reaches a ping node and whether it is in standby.

        ``pingable_now``: whether a ping node answered a request sent after the peer's next
        heartbeat was due. Once the peer is dead (possibly in this very step) it replaces
        ``pingable``: if the silence is this node's own link going down, a reply that crossed
        just before the cut must not let it take the peer's VIPs."""
        events: list[str] = []
        rejoined = False
        for tr in self.membership.poll(now):
            events.append(_transition_sentence(self.peer, tr))
            rejoined = rejoined or (tr.old is PeerState.DEAD and tr.new is PeerState.UP)
        state = self.membership.state(now)
        if state is PeerState.DEAD and self._probe_failures and not self.peer_serving(now):
            self._probe_failures = PROBE_FALL  # acted on: stands until the peer is heard
        if pingable_now is not None and state is PeerState.DEAD:
            pingable = pingable_now
        wishes: dict[str, bool] = {}
        moves: list[Move] = []
        if self.found_at_start and state is not PeerState.INIT:
            moves.extend(self._settle_found(state, wishes))
            held = frozenset(v for v in held if wishes.get(v) is not False)
        self._note_own(now, standby)
        hearing = state in (PeerState.UP, PeerState.WARN)
        own_ok = self.healthy and pingable and not standby
        if not own_ok:
            self._own_ok_since = None
        elif self._own_ok_since is None:
            self._own_ok_since = now
        stable = own_ok and hearing
        if not stable:
            self._stable_since = None
            if self._unstable_since is None:
                self._unstable_since = now
        else:
            self._unstable_since = None
            if self._stable_since is None:
                self._stable_since = now
        me = NodeFacts(
            name=self.node,
            healthy=self.healthy,
            answers=self.answers or self.healthy,
            pingable=pingable,
            standby=standby,
            stable_ms=self.stable_ms(now),
            held=held,
        )
        view = ClusterView(
            now_ms=now,
            me=me,
            peer_name=self.peer,
            peer_state=state,
            peer_view=self.membership.last(),
            peer_serving=self.peer_serving(now),
            peer_silence_ms=self.membership.silence_ms(now),
            vips=self.vips,
            auto_failback=self.t.auto_failback,
            failback_delay_ms=self.t.failback_delay_ms,
            min_move_interval_ms=self.t.min_move_interval_ms,
            wanted=self.wanted_set() if self.wanted else None,
            last_move_ms=MappingProxyType(dict(self.last_move)),
            fresh_health=self._fresh_health(now),
            unstable_ms=None if self._unstable_since is None else now - self._unstable_since,
            catchup_ms=self.t.deadtime_ms,
            recovered_ms=None if self._own_ok_since is None else now - self._own_ok_since,
        )
        decision = decide(view)
        announce: list[str] = []
        for d in decision.vips:
            if not d.want and self.wanted.get(d.vip) and self._resuming(now):
                continue  # decided again once the news is fresh
            self.reasons[d.vip] = d.reason
            prev = self.wanted.get(d.vip)
            if prev != d.want:
                self.wanted[d.vip] = d.want
                self.last_move[d.vip] = now
                wishes[d.vip] = d.want
                move = self._move(d.vip, d.want, d.reason, held, view, now)
                if move is not None:
                    moves.append(move)
                    own_fault = not (self.healthy and pingable)
                    if not d.want and d.vip in self._home_vips() and own_fault:
                        self._fault(now)
            settled = now - self.last_move.get(d.vip, -1e18) > self.t.min_move_interval_ms
            if d.announce and settled and d.vip not in self.announcing:
                announce.append(d.vip)
                events.append(f"announcing {d.vip} again: {self.peer} holds it too")
        if rejoined:
            # The peer was dead to this node: it may have taken and announced this node's VIPs
            # meanwhile (a partition) and let go of them before this node heard it again, so
            # the peer's heartbeats never show it holding them. Clients may still point at it.
            again = sorted(v for v in held if self.wanted.get(v) and v not in announce)
            if again:
                announce.extend(again)
                events.append(f"announcing {', '.join(again)} again: {self.peer} is back")
        self.announcing = frozenset(x.vip for x in decision.vips if x.announce)
        return Step(view, decision, wishes, tuple(moves), tuple(announce), tuple(events))

    def _home_vips(self) -> set[str]:
        return {v for v, h in self.vips if h == self.node}

    def _fault(self, now: float) -> None:
        if not self.faults or now - self.faults[-1] > 1000:
            self.faults.append(now)

    def _settle_found(self, state: PeerState, wishes: dict[str, bool]) -> list[Move]:
        """VIPs found configured at start: give back those the peer holds (a restart on a live
        host waits failback_delay like any return), keep the rest. Each release is a move
        labelled ``settle``."""
        peer = self.membership.last()
        moves = []
        for vip in sorted(self.found_at_start):
            if state is not PeerState.DEAD and peer is not None and vip in peer.held:
                reason = f"found configured at start: {self.peer} holds it"
                moves.append(Move(vip, False, reason, "settle", f"released {vip} {reason}"))
                self.wanted[vip] = False
                wishes[vip] = False
        self.found_at_start = set()
        return moves

    def _move(
        self, vip: str, want: bool, reason: str, held: frozenset[str], view: ClusterView, now: float
    ) -> Move | None:
        """The move a change of wish makes, or ``None`` when it changes nothing held (a first
        decision not to take, or a take of a VIP already held)."""
        last = self.membership.last()
        peer_held = last is not None and vip in last.held
        if want:
            verb = f"took {vip} from {self.peer}" if peer_held else f"took {vip}"
        else:
            verb = f"released {vip} to {self.peer}" if peer_held else f"released {vip}"
        if want == (vip in held):
            return None
        silence = self.membership.silence_ms(now)
        failover = (
            silence if want and view.peer_state is PeerState.DEAD and silence is not None else None
        )
        label = move_label(view, vip, want)
        return Move(vip, want, reason, label, f"{verb}: {reason}", failover)


def _transition_sentence(peer: str, tr: Transition) -> str:
    return f"peer {peer}: {tr.old} -> {tr.new} ({tr.reason})"
