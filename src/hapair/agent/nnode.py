"""The N-node agent's decision (``ha.coordinator = "etcd"``): pure, one snapshot in, one
:class:`Decision` out, every choice with its reason.

Inputs (:class:`View`): each peer's liveness from its heartbeats (and, when they are late, from
a probe of its HAProxy), this node's health, what etcd says about each VIP's owner, and what
this node's interface carries. Outputs: which VIP addresses this node should carry (``wishes``)
and which VIPs it should ask etcd for (``acquire``, each a transaction conditioned on the owner
read). Who holds a VIP is only ever what etcd granted; heartbeats decide *when* to ask.

The rules:

- **Fenced** (the lease could not be renewed): carry nothing, take nothing; unless etcd is
  down for everyone: when this node hears a majority of the cluster (itself included) and
  none of the nodes it hears reaches etcd either, nobody can be granted its VIPs, so it keeps
  what it carries and moves nothing (clients keep being served through an etcd outage).
- **Granted here** (the VIP's key names this node under its current lease): carry it.
- **Make-before-break**: a VIP this node carried whose key now names another node is kept
  until that node's heartbeat says it carries it, at most ``handover_ms``; a VIP found
  configured that etcd gives to another node is dropped at once. A node whose HAProxy does not
  answer at all drops everything at once.
- **Placement** (:func:`hapair.coord.placement.place`) over the *eligible* nodes (alive,
  healthy, not in standby, reaching a ping node unless nobody does), with the owners etcd
  reports. VIPs of peers that are silent but not yet confirmed dead (or still serving), or not
  heard yet, stay where they are.
- **Acquire** what placement gives this node: an unheld VIP, one of a dead peer (silent for
  deadtime *and* a probe of its HAProxy failed), of a live but ineligible peer, or this node's
  own key from a previous lease: at once, all of them. One of a live, eligible peer (balance or
  failback): only after ``failback_delay_ms`` of this node's stability, ``min_move_interval_ms``
  after the last such move, one VIP at a time, and only when no hand-over is under way.
- **etcd unavailable** (the lease still valid): keep what is carried, make no new moves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from hapair.agent.membership import PeerState
from hapair.coord.etcd_store import Owner
from hapair.coord.placement import place


class Liveness(StrEnum):
    """How alive a peer is, from its heartbeats and probes."""

    INIT = "init"  # never heard yet, within initdead
    UP = "up"  # heartbeats arrive (up or warn)
    SILENT = "silent"  # heartbeats stopped, but not confirmed dead (or its HAProxy serves)
    DEAD = "dead"  # silent for deadtime and not serving


@dataclass(frozen=True)
class Probe:
    """A request through a peer's HAProxy: when it started (ms) and whether it succeeded."""

    started_ms: float
    ok: bool


def liveness(
    state: PeerState, silence_ms: float | None, probe: Probe | None, now_ms: float, grace_ms: float
) -> Liveness:
    """A peer's :class:`Liveness`.

    :param state: its membership state (now).
    :param silence_ms: how long it has been silent (None: never heard).
    :param probe: the latest completed probe of its HAProxy, if any.
    :param now_ms: the current time.
    :param grace_ms: how long past death a peer counts as dead without a probe's verdict.
    """
    if state is PeerState.INIT:
        return Liveness.INIT
    if state in (PeerState.UP, PeerState.WARN):
        return Liveness.UP
    heard = None if silence_ms is None else now_ms - silence_ms
    if probe is not None and (heard is None or probe.started_ms >= heard):
        return Liveness.SILENT if probe.ok else Liveness.DEAD
    if silence_ms is None or silence_ms >= grace_ms:
        return Liveness.DEAD
    return Liveness.SILENT


@dataclass(frozen=True)
class PeerView:
    """One peer as this node sees it (the fields of its last heartbeat)."""

    name: str
    liveness: Liveness
    healthy: bool = False
    answers: bool = False
    pingable: bool = False
    #: not taking VIPs: an operator's standby, or no valid etcd lease
    standby: bool = False
    held: frozenset[str] = frozenset()
    silence_ms: float | None = None
    #: its last etcd call answered (its heartbeat's ``coordinated`` bit)
    coordinated: bool = False


@dataclass(frozen=True)
class SelfView:
    """This node: its HAProxy, its reach of the ping nodes, standby, and how long stable."""

    healthy: bool
    answers: bool
    pingable: bool
    standby: bool
    stable_ms: float


@dataclass(frozen=True)
class EtcdView:
    """What this node knows from etcd.

    :ivar known: the owners were read at least once.
    :ivar available: the last etcd call answered.
    :ivar lease: this node's current lease (None: none granted).
    :ivar valid: the lease cannot have expired (the keeper's view).
    :ivar fenced: the keeper's fence sentence, empty when not fenced.
    :ivar owners: each VIP's owner (absent: nobody).
    """

    known: bool
    available: bool
    lease: int | None
    valid: bool
    fenced: str = ""
    owners: Mapping[str, Owner] = field(default_factory=dict)


@dataclass(frozen=True)
class Timings:
    """The decision's timings (ms)."""

    auto_failback: bool = True
    failback_delay_ms: float = 3000
    min_move_interval_ms: float = 1000
    handover_ms: float = 1000


@dataclass(frozen=True)
class View:
    """One consistent snapshot for :func:`decide`.

    :ivar held: VIPs this node's interface carries.
    :ivar lost_at: VIPs granted here earlier whose key now names another node, with when
        this node saw that (ms).
    :ivar pending: VIPs with an acquire under way.
    :ivar last_move_ms: when this node last took a VIP from a live, eligible peer.
    :ivar eligible_stable_ms: how long the set of eligible nodes has not changed (a balancing
        move waits for ``failback_delay_ms`` of it: a peer's passing hiccup moves nothing).
    """

    now_ms: float
    me: str
    vips: tuple[str, ...]
    own: SelfView
    peers: tuple[PeerView, ...]
    etcd: EtcdView
    held: frozenset[str] = frozenset()
    lost_at: Mapping[str, float] = field(default_factory=dict)
    pending: frozenset[str] = frozenset()
    last_move_ms: float | None = None
    eligible_stable_ms: float = float("inf")
    timings: Timings = Timings()


@dataclass(frozen=True)
class Acquire:
    """Ask etcd for ``vip``, conditioned on ``expected`` still owning it (None: nobody).

    ``kind``: ``unheld``, ``failover``, ``reclaim`` or ``balance`` (only ``balance`` is rate
    limited)."""

    vip: str
    expected: Owner | None
    kind: str
    reason: str


@dataclass(frozen=True)
class Decision:
    """What to carry, what to ask etcd for, why (per VIP) and one sentence for the tick."""

    wishes: dict[str, bool]
    acquire: tuple[Acquire, ...]
    reasons: dict[str, str]
    summary: str


def _heard(v: View) -> int:
    """The nodes this node hears, itself included."""
    return 1 + sum(p.liveness is Liveness.UP for p in v.peers)


def etcd_down_for_all(v: View) -> bool:
    """Whether etcd is down for the whole cluster as far as this node can tell: it hears a
    majority of the nodes (itself included) and none of those peers reaches etcd. A node cut
    off from etcd alone hears a peer that does; one cut off from everything hears no majority:
    both fence."""
    heard = [p for p in v.peers if p.liveness is Liveness.UP]
    majority = 2 * (len(heard) + 1) > len(v.peers) + 1
    return majority and not any(p.coordinated for p in heard)


def _mine(o: Owner | None, me: str, lease: int | None) -> bool:
    return o is not None and lease is not None and o.node == me and o.lease == lease


def eligible(v: View) -> tuple[bool, frozenset[str]]:
    """Whether this node may take VIPs, and every node that may (itself included)."""
    alive = [p for p in v.peers if p.liveness is Liveness.UP]
    any_ping = v.own.pingable or any(p.pingable for p in alive)
    me_ok = (
        v.own.healthy
        and not v.own.standby
        and (v.own.pingable or not any_ping)
        and v.etcd.valid
        and not v.etcd.fenced
    )
    names = {p.name for p in alive if p.healthy and not p.standby and (p.pingable or not any_ping)}
    if me_ok:
        names.add(v.me)
    return me_ok, frozenset(names)


def _wish(v: View, vip: str, peers: Mapping[str, PeerView]) -> tuple[bool, str]:
    """Whether to carry ``vip`` (fences and a silent HAProxy are handled by the caller)."""
    e = v.etcd
    o = e.owners.get(vip)
    if _mine(o, v.me, e.lease):
        return True, f"granted to {v.me} in etcd"
    if vip not in v.held:
        return False, f"held by {o.node if o else 'nobody'}"
    if o is None or o.node == v.me:  # unheld, or this node's key from a previous lease
        claim = [p.name for p in peers.values() if p.liveness is Liveness.UP and vip in p.held]
        if claim:
            return False, f"{claim[0]} carries it"
        return True, "kept: nobody else carries it"
    taker = peers.get(o.node)
    if taker is not None and taker.liveness is Liveness.UP and vip in taker.held:
        return False, f"{o.node} carries it now (make-before-break)"
    since = v.lost_at.get(vip)
    if since is None:
        return False, f"it belongs to {o.node} in etcd"
    waited = v.now_ms - since
    if waited >= v.timings.handover_ms:
        return False, f"granted to {o.node}, not seen carrying it after {waited:.0f} ms"
    return True, f"handing over to {o.node}: kept until it carries it"


def _why_owner_goes(p: PeerView | None, owner: str) -> str | None:
    """Why ``owner``'s VIP may be taken at once (None: it is alive and eligible)."""
    if p is None:
        return f"{owner} is not a known peer"
    if p.liveness is Liveness.DEAD:
        silent = "" if p.silence_ms is None else f" (silent for {p.silence_ms:.0f} ms)"
        return f"{owner} dead{silent} and not serving"
    if not p.healthy:
        return f"{owner} unhealthy"
    if p.standby:
        return f"{owner} in standby or without an etcd lease"
    return None


def decide(v: View) -> Decision:
    """The decision for snapshot ``v`` (see the module docstring)."""
    e = v.etcd
    if e.fenced:
        if etcd_down_for_all(v):
            why = (
                f"etcd unreachable from every node heard ({_heard(v)} of {len(v.peers) + 1}, "
                "a majority): keeping what is carried, no moves"
            )
            return Decision({x: x in v.held for x in v.vips}, (), dict.fromkeys(v.vips, why), why)
        return Decision(dict.fromkeys(v.vips, False), (), dict.fromkeys(v.vips, e.fenced), e.fenced)
    if not v.own.answers:
        why = "haproxy does not answer: releasing at once"
        return Decision(dict.fromkeys(v.vips, False), (), dict.fromkeys(v.vips, why), why)
    peers = {p.name: p for p in v.peers}
    if not e.known or e.lease is None:
        # Nothing is known to be ours: keep what is carried, unless a live peer carries it.
        claimed = {x for p in v.peers if p.liveness is Liveness.UP for x in p.held}
        wishes = {x: x in v.held and x not in claimed for x in v.vips}
        why = "waiting for etcd (lease and owners): keeping what is carried, taking nothing"
        return Decision(wishes, (), dict.fromkeys(v.vips, why), why)
    wishes, reasons = {}, {}
    for vip in v.vips:
        wishes[vip], reasons[vip] = _wish(v, vip, peers)
    if not e.available or not e.valid:
        why = "etcd unavailable: keeping what is carried, no new moves"
        return Decision(wishes, (), reasons, why)
    me_ok, nodes = eligible(v)
    if not me_ok:
        return Decision(wishes, (), reasons, f"{v.me} not eligible: taking nothing")
    # A peer not heard yet (within initdead) keeps its share of the placement, so that a
    # cluster starting together does not pile every VIP on the first node up.
    starting = {p.name for p in v.peers if p.liveness is Liveness.INIT}
    nodes = nodes | starting
    frozen = starting | {p.name for p in v.peers if p.liveness is Liveness.SILENT}
    current = {x: o.node for x, o in e.owners.items() if x in v.vips}
    in_play = [x for x in v.vips if current.get(x) not in frozen]
    target = place(in_play, nodes, current)
    acquires: list[Acquire] = []
    balance: list[Acquire] = []
    for vip in sorted(in_play):
        o = e.owners.get(vip)
        if target.get(vip) != v.me or _mine(o, v.me, e.lease) or vip in v.pending:
            continue
        if o is None:
            acquires.append(Acquire(vip, None, "unheld", f"took {vip}: nobody held it"))
        elif o.node == v.me:
            acquires.append(Acquire(vip, o, "reclaim", f"took {vip}: its key from my last lease"))
        elif (goes := _why_owner_goes(peers.get(o.node), o.node)) is not None:
            acquires.append(Acquire(vip, o, "failover", f"took {vip} from {o.node}: {goes}"))
        else:
            why = f"took {vip} from {o.node}: balancing, {v.me} stable for {v.own.stable_ms:.0f} ms"
            balance.append(Acquire(vip, o, "balance", why))
    summary = "; ".join(a.reason for a in acquires) or "steady"
    blocked = _balance_blocked(v, peers)
    if balance and blocked is None:
        acquires.append(balance[0])
        summary = balance[0].reason
    elif balance and not acquires:
        summary = f"{balance[0].vip} belongs here by placement, not yet: {blocked or ''}"
    return Decision(wishes, tuple(acquires), reasons, summary)


def _balance_blocked(v: View, peers: Mapping[str, PeerView]) -> str | None:
    """Why a balancing move must wait (None: it may go now)."""
    t = v.timings
    if not t.auto_failback:
        return "auto_failback is off"
    if v.own.stable_ms < t.failback_delay_ms:
        return f"stable for {v.own.stable_ms:.0f} of {t.failback_delay_ms:.0f} ms"
    if v.eligible_stable_ms < t.failback_delay_ms:
        return f"the eligible nodes changed {v.eligible_stable_ms:.0f} ms ago"
    if v.last_move_ms is not None and v.now_ms - v.last_move_ms < t.min_move_interval_ms:
        return f"last move {v.now_ms - v.last_move_ms:.0f} ms ago"
    if v.pending:
        return "an acquire is under way"
    for vip, o in v.etcd.owners.items():
        if not _mine(o, v.me, v.etcd.lease):
            continue
        if vip not in v.held:
            return f"{vip} is granted but not carried yet"
        if any(p.liveness is Liveness.UP and vip in p.held for p in peers.values()):
            return f"{vip} is still carried by its previous owner"
    return None


class SetStability:
    """How long a set (the eligible nodes) has stayed the same."""

    def __init__(self) -> None:
        self.current: frozenset[str] | None = None
        self.since = 0.0

    def update(self, names: frozenset[str], now_ms: float) -> float:
        """Record the set seen now; returns how long it has been unchanged (ms)."""
        if names != self.current:
            self.current, self.since = names, now_ms
        return now_ms - self.since


class Stability:
    """How long this node has been continuously eligible (the failback clock)."""

    def __init__(self) -> None:
        self.since: float | None = None

    def update(self, ok: bool, now_ms: float) -> float:
        """Record whether the node is eligible now; returns how long it has been (ms)."""
        if not ok:
            self.since = None
            return 0.0
        if self.since is None:
            self.since = now_ms
        return now_ms - self.since
