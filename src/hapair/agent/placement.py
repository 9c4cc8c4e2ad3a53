"""Who should hold each floating IP (VIP). Pure: one immutable view in, one decision out.

The daemon builds a :class:`ClusterView` every cycle (its own facts, the peer's state and last
heartbeat, the side-channel probe, the previous decision) and calls :func:`decide`. Both nodes run
the same rules on the same facts, so they agree on one intended owner per VIP
(:func:`intended_owner`). For a VIP ``v`` with home node ``h`` and other node ``o``:

1. **Eligible.** ``eligible(n)`` = ``n`` is alive AND healthy AND not in standby AND (``n`` reaches
   a ping node OR the other node does not either). This node is always alive. The peer is alive
   when its state is ``up`` or ``warn``, or ``dead`` while ``peer_serving`` (rule 5). A dead peer's
   ``pingable`` is taken from its last heartbeat (``False`` if it never sent one), so a node that
   lost its ping nodes and its peer at once (its own link is down) does not grab the peer's VIPs.
2. **Home node.** ``h`` wants ``v`` iff ``eligible(h)`` AND (failback is due, i.e.
   ``auto_failback`` and ``h.stable_ms >= failback_delay_ms``; OR ``h`` already holds ``v``; OR
   ``o`` does not hold ``v``, so nobody serves it: take it at once; OR ``o`` is not eligible).
   With ``auto_failback`` off, failback is never due: ``h`` takes ``v`` back only when ``o`` is not
   eligible or does not hold it. ``failback_delay`` guards *taking* ``v`` from a serving ``o``; an
   eligible ``h`` that still holds ``v`` (both held it through a partition, or ``h``'s agent
   restarted with the address still configured) keeps it, and ``o`` releases it. That node is
   then told to :attr:`VipDecision.announce`, so clients follow it before ``o`` lets go.
3. **Other node.** ``o`` wants ``v`` iff ``eligible(o)`` AND (NOT ``eligible(h)`` OR (``o`` holds
   ``v`` AND ``h`` does not hold it yet)). So ``o`` takes ``v`` only when ``h`` cannot serve, and
   on failback keeps ``v`` until ``h`` reports holding it (make-before-break), then releases it.
4. **Not eligible.** A node that is not eligible itself takes nothing (but see rule 10). If the
   peer is eligible, it releases what it holds, except that a node whose HAProxy still answers
   (standby, no ping, or no backend) keeps a VIP until the peer reports holding it
   (make-before-break; a planned standby loses no request); a node whose HAProxy does not
   answer releases at once. If the peer is not eligible either, nobody can do better: the node
   keeps every VIP it holds, whatever made it ineligible (unhealthy, standby, no ping), because
   dropping turns a degraded service into none and a shared fault (all backends down, gateway
   down) must not move anything. If both hold the VIP, the home node keeps it.
5. **Heartbeat-only partition.** A peer that is ``dead`` by heartbeats while ``peer_serving`` (a
   real request through its HAProxy succeeded within deadtime) is presumed alive with its last
   view: it still holds what it held, and its VIPs are not taken. A udp/694-only partition causes
   no move. A ``dead`` peer that is not serving is not eligible.
6. **Warn** is treated like ``up``: a late heartbeat moves nothing.
7. **Anti-flap.** A VIP whose ``want`` changed less than ``min_move_interval_ms`` ago keeps its
   previous ``want``, unless the change is a failover: taking a VIP the peer cannot serve (it is
   not eligible, or does not hold it), or releasing one this node can no longer serve (it is not
   eligible). Failback and other voluntary moves are rate limited; failover never is.
8. **Agreement.** From the same facts both nodes compute the same :func:`intended_owner`, exactly
   one when at least one node is eligible or answers. Wants overlap only during make-before-break.

9. **Fresh evidence.** A node takes a VIP from a peer that is alive but unhealthy only once a
   health check of its own that began after it learnt of the peer's failure has succeeded:
   when every backend dies, both nodes fail within one check, and the one that noticed second
   must not grab VIPs it cannot serve either. A move that cannot restore service does not happen.
   Likewise a node takes nothing from a live peer that is not eligible (unhealthy, standby, cut
   off) on a heartbeat older than its own last change (back online, healthy again: the peer may
   have changed at the same moment), and a node healthy again after a fault its peer shared
   waits a grace period for the peer to recover too (``fresh_health`` carries all three).
10. **Someone always answers.** A VIP that nobody holds while nobody is eligible is taken by its
   home node if that node's HAProxy answers (an error page, not a connect timeout), else by the
   other node if its HAProxy answers; never by a node cut off from the ping nodes while the
   other is not.
11. **Make-before-break, always.** Whatever the path (failback, rate limit, standby, health), a
   node whose HAProxy answers never lets go of a VIP while the peer is alive and does not
   report holding it. Only a node whose HAProxy does not answer releases at once.
12. **News travels.** A node that became ineligible less than ``catchup_ms`` ago does not yet
   give a VIP back to a home node that holds it too: the home node's heartbeat may predate the
   news, and the home node may be letting go of it at this very moment for this node's sake.
   The same the other way round: a home node that just became ineligible keeps its VIP that
   the peer holds too, which may be handing it back at this very moment (a failback).
13. **A fault just ended is not a failback.** A home node that recovered from a fault of its
   own (unhealthy, cut off, standby) less than ``failback_delay`` ago, and holds its VIP while
   the peer, which took it meanwhile, holds it too, lets it go to the peer until it is due
   (stable for ``failback_delay``, as for any failback): a node that recovers a moment after
   its peer took its VIP does not get it back a second later. (A node that was only not heard,
   a partition, had no fault of its own: it keeps its VIP and announces it again.)

While the peer is ``init`` (never heard, ``initdead`` not over), its facts are unknown: this node
keeps what it holds and takes nothing. Every per-VIP decision carries a lowercase reason sentence;
nothing changes without one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING

from hapair.agent.membership import PeerState

if TYPE_CHECKING:
    from hapair.agent.protocol import Heartbeat


@dataclass(frozen=True, kw_only=True)
class NodeFacts:
    """What is known about one node.

    :ivar name: the node's name.
    :ivar alive: whether it is alive (always true for this node).
    :ivar healthy: its HAProxy answers on its stats socket and serves a real request.
    :ivar pingable: it reaches at least one ping node.
    :ivar standby: an operator put it in standby.
    :ivar stable_ms: how long it has been continuously healthy, pingable and hearing its peer.
    :ivar held: VIP names it holds now.
    :ivar answers: its HAProxy answers, if only with an error page (true when healthy).
    """

    name: str
    alive: bool = True
    healthy: bool = True
    answers: bool = True
    pingable: bool = True
    standby: bool = False
    stable_ms: float = 0
    held: frozenset[str] = frozenset()

    @classmethod
    def from_heartbeat(cls, hb: Heartbeat, *, alive: bool) -> NodeFacts:
        """The facts a peer's heartbeat reports.

        :param hb: the peer's last heartbeat.
        :param alive: whether the peer counts as alive now.
        """
        return cls(
            name=hb.node,
            alive=alive,
            healthy=hb.healthy,
            pingable=hb.pingable,
            standby=hb.standby,
            stable_ms=hb.stable_ms,
            held=hb.held,
            answers=hb.answers or hb.healthy,
        )


@dataclass(frozen=True, kw_only=True)
class ClusterView:
    """One cycle's snapshot, built by the daemon.

    :ivar now_ms: the current time (ms, the same clock as ``last_move_ms``).
    :ivar me: this node's own facts (``held`` read from the kernel or the cloud).
    :ivar peer_name: the peer's name.
    :ivar peer_state: the peer's state from :class:`~hapair.agent.membership.Membership`.
    :ivar peer_view: the peer's last accepted heartbeat, or ``None``.
    :ivar peer_serving: a real request through the peer's HAProxy succeeded within deadtime.
    :ivar peer_silence_ms: how long the peer has been silent (``None``: never heard).
    :ivar vips: ``(vip_name, home_node)`` pairs.
    :ivar auto_failback: a returning home node takes its VIP back.
    :ivar failback_delay_ms: ... after being stable this long.
    :ivar min_move_interval_ms: the smallest time between two voluntary moves of one VIP.
    :ivar wanted: what this node wanted last cycle (``None`` on the first cycle: what it holds).
    :ivar last_move_ms: per VIP, when this node's ``want`` last changed.
    :ivar fresh_health: this node's own health was confirmed by a check that began after it
        learnt that the peer is unhealthy (rule 9); ``True`` when the peer is not unhealthy.
    :ivar unstable_ms: how long this node has been unstable (``None``: it is stable).
    :ivar catchup_ms: how long the peer's view of this node may lag (a heartbeat in flight):
        a node that just became ineligible does not yet hand a VIP to a peer whose heartbeat
        may predate the news (rule 12).
    :ivar recovered_ms: how long ago this node's own last fault ended (unhealthy, cut off from
        the ping nodes, standby); ``None``: in one now, or never in one (rule 13).
    """

    now_ms: float
    me: NodeFacts
    peer_name: str
    peer_state: PeerState
    peer_view: Heartbeat | None
    peer_serving: bool
    peer_silence_ms: float | None = None
    vips: tuple[tuple[str, str], ...]
    auto_failback: bool = True
    failback_delay_ms: float = 3000
    min_move_interval_ms: float = 1000
    wanted: frozenset[str] | None = None
    last_move_ms: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    fresh_health: bool = True
    unstable_ms: float | None = None
    catchup_ms: float = 0.0
    recovered_ms: float | None = None


@dataclass(frozen=True)
class VipDecision:
    """What this node wants for one VIP, and why.

    :ivar vip: the VIP's name.
    :ivar home: its home node.
    :ivar want: whether this node should hold it.
    :ivar reason: a lowercase sentence.
    :ivar changed: ``want`` differs from last cycle's.
    :ivar owner: the intended owner (``None``: unknown or nobody).
    :ivar rate_limited: a move was held back by the anti-flap rule.
    :ivar announce: this node is the intended owner and holds the VIP while the peer reports
        holding it too (the peer is about to release it): announce it again (gratuitous ARP)
        so that clients follow this node, even though ``want`` did not change.
    """

    vip: str
    home: str
    want: bool
    reason: str
    changed: bool = False
    owner: str | None = None
    rate_limited: bool = False
    announce: bool = False


@dataclass(frozen=True)
class Decision:
    """The outcome of one :func:`decide` call, one entry per VIP in the view's order."""

    now_ms: float
    vips: tuple[VipDecision, ...]

    @property
    def wanted(self) -> frozenset[str]:
        """The VIPs this node should hold."""
        return frozenset(d.vip for d in self.vips if d.want)

    @property
    def want(self) -> dict[str, bool]:
        """``want`` per VIP name."""
        return {d.vip: d.want for d in self.vips}

    @property
    def reasons(self) -> dict[str, str]:
        """``reason`` per VIP name."""
        return {d.vip: d.reason for d in self.vips}

    @property
    def changes(self) -> tuple[VipDecision, ...]:
        """The VIPs whose ``want`` changed."""
        return tuple(d for d in self.vips if d.changed)

    def get(self, vip: str) -> VipDecision:
        """The decision for one VIP.

        :raises KeyError: no such VIP.
        """
        for d in self.vips:
            if d.vip == vip:
                return d
        raise KeyError(vip)

    def last_move_ms(self, before: Mapping[str, float]) -> dict[str, float]:
        """The move timestamps to pass in the next view.

        :param before: the previous view's ``last_move_ms``.
        """
        out = dict(before)
        out.update((d.vip, self.now_ms) for d in self.changes)
        return out


def _ms(value: float) -> int:
    return round(value)


def _why_not(node: NodeFacts, other: NodeFacts) -> str | None:
    """Why an alive node is not eligible, in words, or ``None`` if it is."""
    if not node.healthy:
        return "unhealthy"
    if node.standby:
        return "in standby"
    if not node.pingable and other.pingable:
        return f"cannot reach any ping node while {other.name} can"
    return None


def eligible(node: NodeFacts, other: NodeFacts) -> bool:
    """Rule 1: whether ``node`` may hold VIPs, given the ``other`` node's facts.

    :param node: the node in question.
    :param other: the other node of the pair.
    """
    return node.alive and _why_not(node, other) is None


def _failback_due(h: NodeFacts, auto_failback: bool, delay_ms: float) -> bool:
    return auto_failback and h.stable_ms >= delay_ms


def _home_wants(vip: str, h: NodeFacts, o: NodeFacts, due: bool) -> bool:
    return eligible(h, o) and (due or vip in h.held or vip not in o.held or not eligible(o, h))


def _other_wants(vip: str, h: NodeFacts, o: NodeFacts) -> bool:
    return eligible(o, h) and (not eligible(h, o) or (vip in o.held and vip not in h.held))


def _orphan_owner(vip: str, home: str, a: NodeFacts, b: NodeFacts) -> str | None:
    """Rule 10: nobody holds ``vip`` and nobody is eligible: the home node takes it if its
    HAProxy answers (an error page beats a connect timeout), else the other node if its does;
    a node cut off from the ping nodes while the other is not takes nothing."""
    if any(n.alive and vip in n.held for n in (a, b)):
        return None
    h, o = (a, b) if a.name == home else (b, a)
    for node, other in ((h, o), (o, h)):
        cut_off = not node.pingable and other.pingable
        if node.alive and node.answers and not cut_off:
            return node.name
    return None


def intended_owner(
    vip: str,
    home: str,
    a: NodeFacts,
    b: NodeFacts,
    *,
    auto_failback: bool = True,
    failback_delay_ms: float = 3000,
) -> str | None:
    """The node that should end up holding ``vip`` (rules 1-4), the same from either side.

    :param vip: the VIP's name.
    :param home: its home node (``a.name`` or ``b.name``).
    :param a: one node's facts.
    :param b: the other node's facts.
    :param auto_failback: whether a stable home node takes its VIP back.
    :param failback_delay_ms: how long the home node must be stable first.
    :returns: the owner's name; ``None`` when nobody is eligible and no alive node holds it.
    :raises ValueError: ``home`` is neither node.
    """
    if home not in (a.name, b.name):
        raise ValueError(f"{vip}: home node {home!r} is neither {a.name!r} nor {b.name!r}")
    h, o = (a, b) if a.name == home else (b, a)
    due = _failback_due(h, auto_failback, failback_delay_ms)
    if _home_wants(vip, h, o, due):
        return h.name
    if _other_wants(vip, h, o):
        return o.name
    for node in (h, o):
        if node.alive and vip in node.held:
            return node.name
    return _orphan_owner(vip, home, h, o)


def peer_facts(view: ClusterView) -> NodeFacts | None:
    """The peer's facts as placement sees them (rules 5 and 6), ``None`` when unknown (init).

    :param view: the cycle's view.
    """
    hb = view.peer_view
    if view.peer_state in (PeerState.UP, PeerState.WARN):
        return None if hb is None else NodeFacts.from_heartbeat(hb, alive=True)
    if view.peer_state is PeerState.DEAD:
        alive = view.peer_serving
        if hb is not None:
            return NodeFacts.from_heartbeat(hb, alive=alive)
        # Never heard: presumed healthy if serving, else gone (and not reaching ping nodes).
        return NodeFacts(name=view.peer_name, alive=alive, healthy=alive, pingable=alive)
    return None


def _peer_why(view: ClusterView, peer: NodeFacts, me: NodeFacts) -> str | None:
    if not peer.alive:
        silence = view.peer_silence_ms
        if silence is None:
            return f"peer {peer.name} never heard and not serving"
        return f"peer {peer.name} dead for {_ms(silence)} ms and not serving"
    why = _why_not(peer, me)
    return None if why is None else f"peer {peer.name} {why}"


_FRESH_WAIT = "waiting for fresh evidence (my own health since, its next heartbeat)"


def _needs_fresh(view: ClusterView, vip: str, peer: NodeFacts, me: NodeFacts) -> bool:
    """Rule 9: the peer holds ``vip`` and is alive but not eligible, and this node's evidence
    is not fresh (its own health unconfirmed since it learnt of the peer's fault, the peer's
    last heartbeat older than this node's own last change, or a shared fault not yet over):
    whatever broke the peer may have broken it too, or the peer may be back already."""
    return (
        peer.alive
        and _why_not(peer, me) is not None
        and vip in peer.held
        and not (view.fresh_health)
    )


def _stable(view: ClusterView, h: NodeFacts) -> str:
    return f"{h.name} stable for {_ms(h.stable_ms)} of {_ms(view.failback_delay_ms)} ms"


def _as_home(view: ClusterView, vip: str, me: NodeFacts, peer: NodeFacts) -> tuple[bool, str]:
    due = _failback_due(me, view.auto_failback, view.failback_delay_ms)
    peer_why = _peer_why(view, peer, me)
    if vip in me.held:
        recent = view.recovered_ms is not None and view.recovered_ms < view.failback_delay_ms
        if peer_why is None and vip in peer.held and recent and not due:
            # Rule 13: the peer took it while this node was not eligible, and this node
            # recovered before it let go: a failback it has not earned yet.
            return False, f"{peer.name} holds {vip} too; failback waits: {_stable(view, me)}"
        return True, "home node, healthy"
    if peer_why is not None:
        if _needs_fresh(view, vip, peer, me):
            return False, f"home node; {peer_why}: {_FRESH_WAIT}"
        return True, f"home node, healthy; {peer_why}"
    if vip not in peer.held:
        return True, f"home node, healthy; nobody holds {vip}"
    if due:
        return True, f"failback: {me.name} stable for {_ms(me.stable_ms)} ms"
    if not view.auto_failback:
        return False, f"auto_failback is off and {peer.name} holds {vip}"
    return False, f"failback waits: {_stable(view, me)}"


def _as_other(view: ClusterView, vip: str, me: NodeFacts, peer: NodeFacts) -> tuple[bool, str]:
    peer_why = _peer_why(view, peer, me)
    if peer_why is not None:
        if vip not in me.held and _needs_fresh(view, vip, peer, me):
            return False, f"{peer_why}: {_FRESH_WAIT}"
        return True, peer_why
    due = _failback_due(peer, view.auto_failback, view.failback_delay_ms)
    if vip in me.held and vip not in peer.held:
        if due:
            return True, f"keeping {vip} until {peer.name} holds it (make-before-break)"
        if not view.auto_failback:
            return True, f"keeping {vip}: auto_failback is off"
        return True, f"keeping {vip}: failback to {peer.name} waits ({_stable(view, peer)})"
    if vip in peer.held:
        return False, f"home node {peer.name} holds it"
    return False, f"home node {peer.name} is eligible"


def _news_in_flight(view: ClusterView) -> bool:
    """This node became ineligible less than ``catchup_ms`` ago: its peer may not know yet."""
    return view.unstable_ms is not None and view.unstable_ms < view.catchup_ms


def _not_eligible(
    view: ClusterView, vip: str, home: str, me: NodeFacts, peer: NodeFacts, my_why: str
) -> tuple[bool, str]:
    peer_why = _peer_why(view, peer, me)
    if peer_why is None:
        if vip in me.held and me.answers and vip not in peer.held:
            return True, f"{my_why}: keeping {vip} until {peer.name} holds it (make-before-break)"
        if vip in me.held and me.answers and home == me.name and _news_in_flight(view):
            # Rule 12, the other way round: the peer may be handing this home VIP back right
            # now (a failback on a heartbeat that predates this node's fault).
            return True, f"{my_why}: keeping {vip} until {peer.name} has heard"
        return False, my_why
    if vip not in me.held:
        if _orphan_owner(vip, home, me, peer) == me.name:
            return True, (
                f"{my_why}; {peer_why}: nobody holds {vip}, taking it so that clients get an answer"
            )
        return False, f"{my_why}; {peer_why}: not taking {vip}"
    if home == peer.name and peer.alive and vip in peer.held:
        if _news_in_flight(view):
            # Rule 12: the peer's heartbeat may predate this node's fault; it may be letting
            # go of the VIP right now, counting on this node to keep it.
            return True, f"{my_why}; {peer_why}: keeping {vip} until {peer.name} has heard"
        return False, f"{my_why}; {peer_why}: home node {peer.name} keeps {vip}"
    return True, f"{my_why}; {peer_why}: keeping {vip}, nobody else can serve it"


def _want(
    view: ClusterView, vip: str, home: str, me: NodeFacts, peer: NodeFacts
) -> tuple[bool, str]:
    my_why = _why_not(me, peer)
    if my_why is not None:
        return _not_eligible(view, vip, home, me, peer, my_why)
    if home == me.name:
        return _as_home(view, vip, me, peer)
    return _as_other(view, vip, me, peer)


def _is_failover(vip: str, want: bool, me: NodeFacts, peer: NodeFacts | None) -> bool:
    """Rule 7: a change that is never rate limited."""
    if peer is None:
        return True
    if want:
        return not eligible(peer, me) or vip not in peer.held
    return not eligible(me, peer)


def decide(view: ClusterView) -> Decision:
    """Decide, for every VIP, whether this node should hold it (rules 1-8 above).

    :param view: the cycle's snapshot.
    :returns: one :class:`VipDecision` per VIP, each with its reason.
    :raises ValueError: a VIP's home is neither this node nor the peer.
    """
    me = replace(view.me, alive=True)
    peer = peer_facts(view)
    before = view.wanted if view.wanted is not None else me.held
    out: list[VipDecision] = []
    for vip, home in view.vips:
        if home not in (me.name, view.peer_name):
            raise ValueError(f"{vip}: home node {home!r} is neither {me.name!r} nor the peer")
        owner: str | None = None
        if peer is None:
            want = vip in me.held
            if want:
                reason = f"keeping {vip} until peer {view.peer_name} is heard from (initdead)"
            else:
                reason = f"waiting for peer {view.peer_name} (initdead) before taking {vip}"
        else:
            want, reason = _want(view, vip, home, me, peer)
            owner = intended_owner(
                vip,
                home,
                me,
                peer,
                auto_failback=view.auto_failback,
                failback_delay_ms=view.failback_delay_ms,
            )
        was = vip in before
        limited = False
        moved = view.last_move_ms.get(vip)
        if want != was and moved is not None and not _is_failover(vip, want, me, peer):
            age = view.now_ms - moved
            if age < view.min_move_interval_ms:
                limited = True
                reason = (
                    f"rate limited: {vip} moved {_ms(age)} ms ago, "
                    f"min {_ms(view.min_move_interval_ms)} ms; pending: {reason}"
                )
                want = was
        if (
            not want
            and vip in me.held
            and me.answers
            and peer is not None
            and peer.alive
            and vip not in peer.held
        ):
            # Rule 11, whatever path led here: never let go before the peer holds it.
            want = True
            reason = f"keeping {vip} until {peer.name} holds it (make-before-break); then: {reason}"
        announce = (
            want
            and owner == me.name
            and vip in me.held
            and peer is not None
            and peer.alive
            and vip in peer.held
        )
        out.append(VipDecision(vip, home, want, reason, want != was, owner, limited, announce))
    return Decision(view.now_ms, tuple(out))
