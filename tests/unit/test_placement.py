"""Placement: every rule with its reason word for word, properties over random facts, and
two-node simulations (hapair.agent.simulate) with a stepped clock."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hapair.agent.membership import PeerState
from hapair.agent.placement import (
    ClusterView,
    NodeFacts,
    VipDecision,
    decide,
    eligible,
    intended_owner,
    peer_facts,
)
from hapair.agent.protocol import Heartbeat
from hapair.agent.simulate import Record, World
from hapair.spec import HaSpec

UP, WARN, DEAD, INIT = PeerState.UP, PeerState.WARN, PeerState.DEAD, PeerState.INIT
VIPS = (("vip1", "lb1"), ("vip2", "lb2"))
NOW = 100_000.0


def H(*vips: str) -> frozenset[str]:
    return frozenset(vips)


def A(**kw: Any) -> NodeFacts:
    return NodeFacts(name="lb1", **kw)


def B(**kw: Any) -> NodeFacts:
    return NodeFacts(name="lb2", **kw)


def hb_of(f: NodeFacts, wanted: frozenset[str] = frozenset()) -> Heartbeat:
    return Heartbeat(
        cluster="demo",
        node=f.name,
        boot_id=1,
        seq=1,
        healthy=f.healthy,
        pingable=f.pingable,
        stable_ms=int(f.stable_ms),
        standby=f.standby,
        held=f.held,
        answers=f.answers,
        wanted=wanted,
    )


def view(
    me: NodeFacts,
    peer: NodeFacts | None,
    state: PeerState = UP,
    serving: bool = False,
    silence: float | None = None,
    **kw: Any,
) -> ClusterView:
    return ClusterView(
        now_ms=NOW,
        me=me,
        peer_name="lb2" if me.name == "lb1" else "lb1",
        peer_state=state,
        peer_view=None if peer is None else hb_of(peer),
        peer_serving=serving,
        peer_silence_ms=silence,
        vips=VIPS,
        **kw,
    )


STABLE = 5000
DEAD412: dict[str, Any] = {"state": DEAD, "silence": 412}

# (me, peer, view options, vip, want, reason)
CASES = [
    # Steady state and startup.
    ("steady-home", A(held=H("vip1")), B(held=H("vip2")), {}, "vip1", True, "home node, healthy"),
    (
        "steady-other",
        A(held=H("vip1")),
        B(held=H("vip2")),
        {},
        "vip2",
        False,
        "home node lb2 holds it",
    ),
    ("startup-home", A(), B(), {}, "vip1", True, "home node, healthy; nobody holds vip1"),
    ("startup-other", A(), B(), {}, "vip2", False, "home node lb2 is eligible"),
    # Rule 6: warn is up.
    (
        "warn-like-up",
        A(held=H("vip1")),
        B(held=H("vip2")),
        {"state": WARN},
        "vip2",
        False,
        "home node lb2 holds it",
    ),
    # Rules 1 and 3: failover when the home node is not eligible.
    (
        "peer-dead",
        A(held=H("vip1")),
        B(held=H("vip2")),
        DEAD412,
        "vip2",
        True,
        "peer lb2 dead for 412 ms and not serving",
    ),
    (
        "peer-dead-own-vip",
        A(),
        B(held=H("vip1", "vip2")),
        DEAD412,
        "vip1",
        True,
        "home node, healthy; peer lb2 dead for 412 ms and not serving",
    ),
    (
        "peer-never-heard",
        A(),
        None,
        {"state": DEAD},
        "vip2",
        True,
        "peer lb2 never heard and not serving",
    ),
    (
        "peer-unhealthy",
        A(held=H("vip1")),
        B(healthy=False, held=H("vip2")),
        {},
        "vip2",
        True,
        "peer lb2 unhealthy",
    ),
    (
        "peer-standby",
        A(held=H("vip1")),
        B(standby=True, held=H("vip2")),
        {},
        "vip2",
        True,
        "peer lb2 in standby",
    ),
    (
        "peer-no-ping",
        A(held=H("vip1")),
        B(pingable=False, held=H("vip2")),
        {},
        "vip2",
        True,
        "peer lb2 cannot reach any ping node while lb1 can",
    ),
    (
        "both-no-ping",
        A(pingable=False, held=H("vip1")),
        B(pingable=False, held=H("vip2")),
        {},
        "vip2",
        False,
        "home node lb2 holds it",
    ),
    # Rule 2 and auto_failback: the home node returns.
    (
        "failback-waits",
        A(stable_ms=1200),
        B(held=H("vip1", "vip2")),
        {},
        "vip1",
        False,
        "failback waits: lb1 stable for 1200 of 3000 ms",
    ),
    (
        "failback-due",
        A(stable_ms=3000),
        B(held=H("vip1", "vip2")),
        {},
        "vip1",
        True,
        "failback: lb1 stable for 3000 ms",
    ),
    (
        "failback-off",
        A(stable_ms=STABLE),
        B(held=H("vip1", "vip2")),
        {"auto_failback": False},
        "vip1",
        False,
        "auto_failback is off and lb2 holds vip1",
    ),
    (
        "failback-off-peer-fails",
        A(),
        B(healthy=False, held=H("vip1")),
        {"auto_failback": False},
        "vip1",
        True,
        "home node, healthy; peer lb2 unhealthy",
    ),
    (
        "both-hold-home-keeps",
        A(stable_ms=200, held=H("vip1")),
        B(held=H("vip1", "vip2")),
        {},
        "vip1",
        True,
        "home node, healthy",
    ),
    (
        "both-hold-home-stable",
        A(stable_ms=STABLE, held=H("vip1")),
        B(held=H("vip1", "vip2")),
        {},
        "vip1",
        True,
        "home node, healthy",
    ),
    # Rule 3 from the other node: make-before-break.
    (
        "mbb-keep",
        B(held=H("vip1", "vip2")),
        A(stable_ms=3000),
        {},
        "vip1",
        True,
        "keeping vip1 until lb1 holds it (make-before-break)",
    ),
    (
        "mbb-release",
        B(held=H("vip1", "vip2")),
        A(stable_ms=3000, held=H("vip1")),
        {},
        "vip1",
        False,
        "home node lb1 holds it",
    ),
    (
        "other-keeps-while-failback-waits",
        B(held=H("vip1", "vip2")),
        A(stable_ms=1200),
        {},
        "vip1",
        True,
        "keeping vip1: failback to lb1 waits (lb1 stable for 1200 of 3000 ms)",
    ),
    (
        "other-releases-after-partition",
        B(held=H("vip1", "vip2")),
        A(stable_ms=0, held=H("vip1")),
        {},
        "vip1",
        False,
        "home node lb1 holds it",
    ),
    (
        "other-keeps-failback-off",
        B(held=H("vip1", "vip2")),
        A(stable_ms=STABLE),
        {"auto_failback": False},
        "vip1",
        True,
        "keeping vip1: auto_failback is off",
    ),
    # Rule 4: not eligible itself.
    (
        "haproxy-dead-releases-at-once",
        A(healthy=False, answers=False, held=H("vip1")),
        B(held=H("vip2")),
        {},
        "vip1",
        False,
        "unhealthy",
    ),
    (
        "unhealthy-but-answering-keeps-until-peer-holds",
        A(healthy=False, held=H("vip1")),
        B(held=H("vip2")),
        {},
        "vip1",
        True,
        "unhealthy: keeping vip1 until lb2 holds it (make-before-break)",
    ),
    (
        "unhealthy-releases-once-peer-holds",
        A(healthy=False, held=H("vip1")),
        B(held=H("vip1", "vip2")),
        {},
        "vip1",
        False,
        "unhealthy",
    ),
    (
        "orphan-taken-by-home-that-answers",
        A(healthy=False),
        B(healthy=False, held=H("vip2")),
        {},
        "vip1",
        True,
        "unhealthy; peer lb2 unhealthy: nobody holds vip1, taking it so that clients get an answer",
    ),
    (
        "orphan-left-to-its-home",
        A(healthy=False, held=H("vip1")),
        B(healthy=False),
        {},
        "vip2",
        False,
        "unhealthy; peer lb2 unhealthy: not taking vip2",
    ),
    (
        "orphan-taken-when-home-does-not-answer",
        A(healthy=False, held=H("vip1")),
        B(healthy=False, answers=False),
        {},
        "vip2",
        True,
        "unhealthy; peer lb2 unhealthy: nobody holds vip2, taking it so that clients get an answer",
    ),
    (
        "no-fresh-health-no-takeover-from-unhealthy-peer",
        A(held=H("vip1")),
        B(healthy=False, held=H("vip2")),
        {"fresh_health": False},
        "vip2",
        False,
        "peer lb2 unhealthy: waiting for fresh evidence (my own health since, its next heartbeat)",
    ),
    (
        "fresh-health-takes-over-from-unhealthy-peer",
        A(held=H("vip1")),
        B(healthy=False, held=H("vip2")),
        {"fresh_health": True},
        "vip2",
        True,
        "peer lb2 unhealthy",
    ),
    (
        "standby-hands-over",
        A(standby=True, held=H("vip1")),
        B(held=H("vip2")),
        {},
        "vip1",
        True,
        "in standby: keeping vip1 until lb2 holds it (make-before-break)",
    ),
    (
        "standby-handed-over",
        A(standby=True, held=H("vip1")),
        B(held=H("vip1", "vip2")),
        {},
        "vip1",
        False,
        "in standby",
    ),
    (
        "no-ping-hands-over",
        A(pingable=False, held=H("vip1")),
        B(held=H("vip2")),
        {},
        "vip1",
        True,
        "cannot reach any ping node while lb2 can: keeping vip1 until lb2 holds it "
        "(make-before-break)",
    ),
    (
        "nobody-eligible-keeps",
        A(healthy=False, held=H("vip1")),
        B(healthy=False),
        {},
        "vip1",
        True,
        "unhealthy; peer lb2 unhealthy: keeping vip1, nobody else can serve it",
    ),
    (
        "nobody-eligible-takes-nothing",
        A(healthy=False, held=H("vip1")),
        B(healthy=False),
        {},
        "vip2",
        False,
        "unhealthy; peer lb2 unhealthy: not taking vip2",
    ),
    (
        "nobody-eligible-both-hold",
        A(healthy=False, held=H("vip2")),
        B(healthy=False, held=H("vip2")),
        {},
        "vip2",
        False,
        "unhealthy; peer lb2 unhealthy: home node lb2 keeps vip2",
    ),
    (
        "unhealthy-and-peer-dead",
        A(healthy=False, held=H("vip1", "vip2")),
        B(held=H("vip2")),
        DEAD412,
        "vip2",
        True,
        "unhealthy; peer lb2 dead for 412 ms and not serving: "
        "keeping vip2, nobody else can serve it",
    ),
    (
        "isolated-keeps-own",
        A(pingable=False, held=H("vip1")),
        B(held=H("vip2")),
        DEAD412,
        "vip1",
        True,
        "cannot reach any ping node while lb2 can; peer lb2 dead for 412 ms and not serving: "
        "keeping vip1, nobody else can serve it",
    ),
    (
        "isolated-takes-nothing",
        A(pingable=False, held=H("vip1")),
        B(held=H("vip2")),
        DEAD412,
        "vip2",
        False,
        "cannot reach any ping node while lb2 can; peer lb2 dead for 412 ms and not serving: "
        "not taking vip2",
    ),
    # Rule 5: dead by heartbeats but serving = alive with its last view.
    (
        "partition-keeps-own",
        A(held=H("vip1")),
        B(held=H("vip2")),
        {**DEAD412, "serving": True},
        "vip1",
        True,
        "home node, healthy",
    ),
    (
        "partition-no-take",
        A(held=H("vip1")),
        B(held=H("vip2")),
        {**DEAD412, "serving": True},
        "vip2",
        False,
        "home node lb2 holds it",
    ),
    (
        "partition-never-heard",
        A(),
        None,
        {"state": DEAD, "serving": True},
        "vip2",
        False,
        "home node lb2 is eligible",
    ),
    (
        "partition-never-heard-own",
        A(),
        None,
        {"state": DEAD, "serving": True},
        "vip1",
        True,
        "home node, healthy; nobody holds vip1",
    ),
    # Peer not heard yet (init).
    (
        "init-keeps",
        A(held=H("vip1")),
        None,
        {"state": INIT},
        "vip1",
        True,
        "keeping vip1 until peer lb2 is heard from (initdead)",
    ),
    (
        "init-waits",
        A(held=H("vip1")),
        None,
        {"state": INIT},
        "vip2",
        False,
        "waiting for peer lb2 (initdead) before taking vip2",
    ),
]


@pytest.mark.parametrize(
    ("me", "peer", "opts", "vip", "want", "reason"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_rule(
    me: NodeFacts, peer: NodeFacts | None, opts: dict[str, Any], vip: str, want: bool, reason: str
) -> None:
    got = decide(view(me, peer, **opts)).get(vip)
    assert (got.want, got.reason) == (want, reason)
    assert not got.rate_limited


def test_decision_helpers() -> None:
    d = decide(view(A(), B(held=H("vip2")), wanted=H()))
    assert d.wanted == H("vip1")
    assert d.want == {"vip1": True, "vip2": False}
    assert d.reasons["vip2"] == "home node lb2 holds it"
    assert [c.vip for c in d.changes] == ["vip1"]
    assert d.last_move_ms({"vip2": 5.0}) == {"vip1": NOW, "vip2": 5.0}
    with pytest.raises(KeyError):
        d.get("vip9")


def test_first_cycle_compares_with_what_is_held() -> None:
    d = decide(view(A(held=H("vip1")), B(held=H("vip2"))))
    assert d.changes == ()


def test_unknown_home_is_refused() -> None:
    with pytest.raises(ValueError, match="home node 'lb7'"):
        decide(ClusterView(**{**view(A(), B()).__dict__, "vips": (("vip1", "lb7"),)}))


# Rule 7: anti-flap.


def test_failback_is_rate_limited() -> None:
    v = view(
        A(stable_ms=STABLE), B(held=H("vip1", "vip2")), wanted=H(), last_move_ms={"vip1": NOW - 400}
    )
    got = decide(v).get("vip1")
    assert got == VipDecision(
        "vip1",
        "lb1",
        False,
        "rate limited: vip1 moved 400 ms ago, min 1000 ms; "
        "pending: failback: lb1 stable for 5000 ms",
        changed=False,
        owner="lb1",
        rate_limited=True,
    )
    later = decide(ClusterView(**{**v.__dict__, "now_ms": NOW + 600})).get("vip1")
    assert later.want and later.changed and not later.rate_limited


def test_voluntary_release_is_rate_limited() -> None:
    v = view(
        B(held=H("vip1", "vip2")),
        A(stable_ms=STABLE, held=H("vip1")),
        wanted=H("vip1", "vip2"),
        last_move_ms={"vip1": NOW - 300},
    )
    got = decide(v).get("vip1")
    assert (got.want, got.rate_limited, got.reason) == (
        True,
        True,
        "rate limited: vip1 moved 300 ms ago, min 1000 ms; pending: home node lb1 holds it",
    )


def test_failover_is_never_rate_limited() -> None:
    moved = {"vip1": NOW - 10, "vip2": NOW - 10}
    take = decide(
        view(A(held=H("vip1")), B(held=H("vip2")), **DEAD412, wanted=H("vip1"), last_move_ms=moved)
    ).get("vip2")
    assert (take.want, take.changed, take.rate_limited) == (True, True, False)
    release = decide(
        view(
            A(healthy=False, answers=False, held=H("vip1")),
            B(held=H("vip2")),
            wanted=H("vip1"),
            last_move_ms=moved,
        )
    ).get("vip1")
    assert (release.want, release.changed, release.rate_limited) == (False, True, False)
    unserved = decide(view(A(stable_ms=0), B(), wanted=H(), last_move_ms=moved)).get("vip1")
    assert (unserved.want, unserved.changed, unserved.rate_limited) == (True, True, False)


# Properties over random facts.

vip_sets = st.frozensets(st.sampled_from(["vip1", "vip2"]))


@st.composite
def node_facts(draw: st.DrawFn, name: str, alive: bool | None = None) -> NodeFacts:
    return NodeFacts(
        name=name,
        alive=draw(st.booleans()) if alive is None else alive,
        healthy=draw(st.booleans()),
        pingable=draw(st.booleans()),
        standby=draw(st.booleans()),
        stable_ms=draw(st.sampled_from([0, 1000, 2999, 3000, 60_000])),
        held=draw(vip_sets),
    )


def perspective(me: NodeFacts, peer: NodeFacts, auto_failback: bool) -> ClusterView:
    return ClusterView(
        now_ms=NOW,
        me=me,
        peer_name=peer.name,
        peer_state=UP if peer.alive else DEAD,
        peer_view=hb_of(peer),
        peer_serving=False,
        peer_silence_ms=None if peer.alive else 500,
        vips=VIPS,
        auto_failback=auto_failback,
    )


@settings(max_examples=1000)
@given(node_facts("lb1", alive=True), node_facts("lb2"), st.booleans())
def test_both_sides_agree_on_exactly_one_owner(a: NodeFacts, b: NodeFacts, fb: bool) -> None:
    anyone = eligible(a, b) or eligible(b, a)
    alive = [n for n in (a, b) if n.alive]
    decisions = {n.name: decide(perspective(n, b if n is a else a, fb)) for n in alive}
    for vip, home in VIPS:
        owner = intended_owner(vip, home, a, b, auto_failback=fb)
        assert owner == intended_owner(vip, home, b, a, auto_failback=fb)
        if anyone:
            assert owner is not None
            assert eligible(*((a, b) if owner == "lb1" else (b, a)))
        wanting = {name for name, d in decisions.items() if d.get(vip).want}
        for d in decisions.values():
            got = d.get(vip)
            assert got.owner == owner
            assert got.reason and got.reason == got.reason.lower()
        if owner in decisions:
            assert owner in wanting
        for name in wanting - {owner}:
            # A second wanter only keeps what it holds until the owner holds it (or nobody can).
            me = a if name == "lb1" else b
            assert vip in me.held
            assert owner is None or owner not in decisions or vip not in (b if me is a else a).held
        if not anyone:
            assert len(wanting) <= 1


@settings(max_examples=300)
@given(node_facts("lb1", alive=True), node_facts("lb2", alive=True), st.booleans())
def test_shared_facts_converge_without_a_gap(a: NodeFacts, b: NodeFacts, fb: bool) -> None:
    """Apply both nodes' wants round after round: no VIP held by a healthy node is ever dropped
    by everyone, and the fixed point gives each VIP exactly its intended owner."""
    nodes = {"lb1": a, "lb2": b}
    for _ in range(5):
        before = {n: f.held for n, f in nodes.items()}
        wants = {
            n: decide(perspective(f, nodes["lb2" if n == "lb1" else "lb1"], fb)).wanted
            for n, f in nodes.items()
        }
        nodes = {n: NodeFacts(**{**f.__dict__, "held": wants[n]}) for n, f in nodes.items()}
        for vip, _home in VIPS:
            if any(vip in before[n] and nodes[n].healthy for n in nodes):
                assert any(vip in f.held for f in nodes.values()), vip
    x, y = nodes["lb1"], nodes["lb2"]
    if eligible(x, y) or eligible(y, x):
        for vip, home in VIPS:
            owner = intended_owner(vip, home, x, y, auto_failback=fb)
            assert {n for n, f in nodes.items() if vip in f.held} == {owner}


@settings(max_examples=300)
@given(
    st.sampled_from([UP, WARN, DEAD, INIT]),
    st.booleans(),
    st.one_of(st.none(), node_facts("lb2", alive=True)),
    node_facts("lb1", alive=True),
    st.one_of(st.none(), vip_sets),
    st.dictionaries(st.sampled_from(["vip1", "vip2"]), st.floats(NOW - 5000, NOW)),
)
def test_nothing_changes_without_a_reason(
    state: PeerState,
    serving: bool,
    peer: NodeFacts | None,
    me: NodeFacts,
    wanted: frozenset[str] | None,
    moved: dict[str, float],
) -> None:
    d = decide(
        view(me, peer, state=state, serving=serving, silence=200, wanted=wanted, last_move_ms=moved)
    )
    before = me.held if wanted is None else wanted
    for got in d.vips:
        assert got.reason and got.reason == got.reason.lower()
        assert got.changed == (got.want != (got.vip in before))
        if got.rate_limited:
            assert not got.changed and got.reason.startswith("rate limited: ")
    if state is INIT or (state in (UP, WARN) and peer is None):
        assert peer_facts(view(me, peer, state=state)) is None
        assert d.wanted == me.held


# Two-node simulations with a stepped clock (interval 50 ms, deadtime 150 ms).


def changes(records: list[Record], node: str | None = None) -> list[tuple[float, str, str, bool]]:
    return [
        (r.view.now_ms, r.node, c.vip, c.want)
        for r in records
        for c in r.decision.changes
        if node is None or r.node == node
    ]


def started() -> World:
    w = World()
    w.run(200)
    assert (w.holders("vip1"), w.holders("vip2")) == ({"lb1"}, {"lb2"})
    return w


def test_cold_start_places_each_vip_at_home_at_once() -> None:
    w = World()
    w.step()
    assert (w.holders("vip1"), w.holders("vip2")) == ({"lb1"}, {"lb2"})
    assert w.records[0].decision.get("vip1").reason == "home node, healthy; nobody holds vip1"


def test_lone_node_waits_for_initdead_then_takes_both() -> None:
    w = World()
    w.kill("lb2")
    w.run(1450)
    assert w.holders("vip1") == set() and w.holders("vip2") == set()
    w.run(100)
    assert w.holders("vip1") == {"lb1"} and w.holders("vip2") == {"lb1"}


def test_kill_failover_then_restart_still_holding_settles_then_fails_back() -> None:
    w = started()
    t_kill = w.now
    w.kill("lb1")  # agent and haproxy die; vip1 stays configured on lb1
    while "lb2" not in w.holders("vip1"):
        w.step()
    assert w.now - t_kill <= w.ha.deadtime_ms + w.ha.interval_ms
    take = [r for r in w.records if r.node == "lb2" and r.decision.get("vip1").changed][-1]
    assert take.decision.get("vip1").reason == (
        f"peer lb1 dead for {round(take.view.peer_silence_ms or 0)} ms and not serving"
    )
    w.run(3000)
    w.restart("lb1", keep_held=True)  # haproxy is healthy again, the address never left
    first = w.step()
    lb1 = next(r for r in first if r.node == "lb1").step
    # The copy found at start may be stale: lb2 holds vip1, so lb1 lets its copy go and
    # waits failback_delay like any returning node (the daemon's behaviour, now simulated).
    settle = [(m.sentence, m.label, m.take) for m in lb1.moves]
    assert settle == [("released vip1 found configured at start: lb2 holds it", "settle", False)]
    assert w.holders("vip1") == {"lb2"}
    t_back = w.now
    while w.holders("vip1") != {"lb1"}:
        w.step()
        assert w.holders("vip1"), "vip1 was held by nobody during failback"
        assert w.now - t_back < 10_000
    assert w.now - t_back >= w.ha.failback_delay_ms
    assert (w.holders("vip1"), w.holders("vip2")) == ({"lb1"}, {"lb2"})


def test_failback_after_delay_is_make_before_break() -> None:
    w = started()
    w.kill("lb1")
    w.run(1000)
    w.restart("lb1", keep_held=False)  # a reboot: the address is gone
    t_restore = w.now
    mark = len(w.records)
    overlap = False
    while w.holders("vip1") != {"lb1"}:
        w.step()
        assert w.holders("vip1"), "vip1 was held by nobody during failback"
        overlap = overlap or w.holders("vip1") == {"lb1", "lb2"}
        assert w.now - t_restore < 10_000
    assert overlap  # lb2 let go only once lb1 held it
    after = w.records[mark:]
    lb1_takes = [r for r in after if r.node == "lb1" and r.decision.get("vip1").changed]
    assert lb1_takes[0].view.me.stable_ms >= w.ha.failback_delay_ms
    assert lb1_takes[0].decision.get("vip1").reason == "failback: lb1 stable for 3000 ms"
    lb2_last = [r.decision.get("vip1") for r in after if r.node == "lb2"][-1]
    assert (lb2_last.want, lb2_last.reason) == (False, "home node lb1 holds it")
    assert w.holders("vip2") == {"lb2"}


def test_reboot_failback_waits_for_stability() -> None:
    w = started()
    w.kill("lb1")
    w.run(1000)
    w.restart("lb1", keep_held=False)
    records = w.run(5000)
    for r in records:
        if r.node == "lb1" and r.decision.get("vip1").want:
            assert r.view.me.stable_ms >= w.ha.failback_delay_ms
    assert w.holders("vip1") == {"lb1"}


def test_link_down_isolated_node_takes_nothing_and_fails_back_later() -> None:
    w = started()
    w.nodes["lb1"].link = False
    w.run(1000)
    assert w.holders("vip1") == {"lb1", "lb2"}  # lb1's copy is on a dead link
    assert w.holders("vip2") == {"lb2"}
    assert not any(vip == "vip2" and want for _, _, vip, want in changes(w.records, "lb1"))
    w.nodes["lb1"].link = True
    w.step()
    # On the heal lb1 hears lb2 before the first fresh ping reply (the daemon's race: a
    # heartbeat every interval, a ping round every two): its own ping verdict is still the
    # outage's, so it lets its copy of vip1 go to lb2, which holds it (make-before-break),
    # instead of announcing it again; it takes it back once its ping node has answered for a
    # whole window (the verdict's hysteresis, 1 s) and it has been stable for failback_delay.
    heal = w.records[-2]
    assert heal.node == "lb1" and heal.view.peer_state.name == "UP"
    assert not heal.view.me.pingable and heal.view.peer_view.pingable
    assert not heal.decision.get("vip1").want and w.holders("vip1") == {"lb2"}
    w.run(1000 + w.ha.failback_delay_ms + 1000)
    assert (w.holders("vip1"), w.holders("vip2")) == ({"lb1"}, {"lb2"})


def test_heartbeat_only_partition_moves_nothing() -> None:
    w = started()
    mark = len(w.records)
    w.heartbeat_path = False
    w.run(10_000)
    w.heartbeat_path = True
    w.run(5000)
    assert changes(w.records[mark:]) == []
    assert (w.holders("vip1"), w.holders("vip2")) == ({"lb1"}, {"lb2"})


def test_haproxy_death_moves_at_once_and_standby_is_make_before_break() -> None:
    w = started()
    w.nodes["lb1"].healthy = False
    w.step()
    w.step()
    assert "lb2" in w.holders("vip1")  # taken at once
    # lb1 lets go once lb2 can have heard of its fault (rule 12: lb2 might be handing it back)
    w.run(w.ha.deadtime_ms + w.ha.interval_ms)
    assert w.holders("vip1") == {"lb2"}
    w.nodes["lb1"].healthy = True
    w.run(3500)
    assert w.holders("vip1") == {"lb1"}
    w.nodes["lb1"].standby = True
    for _ in range(10):
        w.step()
        assert w.holders("vip1")
    assert w.holders("vip1") == {"lb2"}


def test_gateway_loss_on_both_moves_nothing() -> None:
    w = started()
    mark = len(w.records)
    for n in w.nodes.values():
        n.pingable = False
    w.run(5000)
    assert changes(w.records[mark:]) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(delay=st.integers(0, 5000), outage=st.integers(300, 3000))
def test_failback_never_before_failback_delay(delay: int, outage: int) -> None:
    """(An outage of at least 300 ms: lb1 keeps its VIP for ``deadtime`` after its fault while
    lb2 holds it too, rule 12.)"""
    w = World(HaSpec(failback_delay_ms=delay))
    w.run(200)
    w.nodes["lb1"].healthy = False
    w.run(outage)
    assert w.holders("vip1") == {"lb2"}
    w.nodes["lb1"].healthy = True
    t_back = w.now
    # The voluntary moves after the failover are rate limited (min_move_interval_ms).
    records = w.run(delay + 1000 + w.ha.min_move_interval_ms)
    for r in records:
        if r.node == "lb1" and r.decision.get("vip1").want:
            assert r.view.me.stable_ms >= delay
            assert r.view.now_ms - t_back >= delay
    assert w.holders("vip1") == {"lb1"}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(period=st.integers(100, 600), serving=st.booleans(), min_move=st.sampled_from([500, 1000]))
def test_flapping_peer_is_bounded_by_the_rate_limit(
    period: int, serving: bool, min_move: int
) -> None:
    w = World(HaSpec(min_move_interval_ms=min_move))
    w.run(200)
    mark = len(w.records)
    duration = 20_000
    while w.now < 200 + duration:
        w.heartbeat_path = not w.heartbeat_path
        w.data_path = serving or w.heartbeat_path
        w.run(period)
    moves = changes(w.records[mark:])
    if serving:
        assert moves == []
    for node in ("lb1", "lb2"):
        for vip, _home in VIPS:
            times = [t for t, n, v, _ in moves if n == node and v == vip]
            assert len(times) <= 2 * duration / min_move + 2
    for r in w.records[mark:]:
        for got in r.decision.vips:
            assert got.reason


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.integers(1, 40),
            st.sampled_from(["lb1", "lb2"]),
            st.sampled_from(["healthy", "pingable", "standby", "link", "agent", "hb", "data"]),
        ),
        max_size=12,
    ),
    st.booleans(),
)
def test_random_faults_then_quiet_converge_to_the_intended_owner(
    script: list[tuple[int, str, str]], keep_held: bool
) -> None:
    w = World()
    w.run(200)
    for steps, name, what in script:
        for _ in range(steps):
            w.step()
        node = w.nodes[name]
        if what == "agent":
            if node.agent:
                w.kill(name)
            else:
                w.restart(name, keep_held=keep_held)
        elif what == "hb":
            w.heartbeat_path = not w.heartbeat_path
        elif what == "data":
            w.data_path = not w.data_path
        else:
            setattr(node, what, not getattr(node, what))
    # Quiet: the network heals and every agent runs; node facts stay as the script left them.
    w.heartbeat_path = w.data_path = True
    for name, node in list(w.nodes.items()):
        node.link = True
        if not node.agent:
            w.restart(name, keep_held=keep_held, healthy=node.healthy)
    w.run(w.ha.failback_delay_ms + 2000)
    for r in w.records:
        for got in r.decision.vips:
            assert got.reason
            if got.changed and got.want and got.home == r.node:
                peer = peer_facts(r.view)
                if peer is not None and eligible(peer, r.view.me) and got.vip in peer.held:
                    assert r.view.me.stable_ms >= w.ha.failback_delay_ms  # failback
    last = {r.node: r.view.me for r in w.records[-2:]}
    a, b = last["lb1"], last["lb2"]
    if eligible(a, b) or eligible(b, a):
        for vip, home in VIPS:
            assert w.holders(vip) == {intended_owner(vip, home, a, b)}, vip
