"""The N-node decision (hapair.agent.nnode): pure, every rule with its reason, and a small
simulated cluster (hypothesis) whose takeovers go through compare-and-set like etcd's."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from hapair.agent.membership import PeerState
from hapair.agent.nnode import (
    EtcdView,
    Liveness,
    PeerView,
    Probe,
    SelfView,
    SetStability,
    Stability,
    Timings,
    View,
    decide,
    liveness,
)
from hapair.coord.etcd_store import Owner
from hapair.coord.placement import spread

LEASE = {f"lb{i}": 100 + i for i in range(1, 17)}
VIPS8 = tuple(f"vip{i}" for i in range(1, 9))
GOOD = SelfView(healthy=True, answers=True, pingable=True, standby=False, stable_ms=10_000)


def peer(
    name: str, live: Liveness = Liveness.UP, held: set[str] | None = None, **kw: object
) -> PeerView:
    fields = {"healthy": True, "answers": True, "pingable": True, **kw}
    return PeerView(name, live, held=frozenset(held or ()), **fields)  # type: ignore[arg-type]


def owners(**by_vip: str) -> dict[str, Owner]:
    return {v: Owner(n, LEASE[n], 10 + i) for i, (v, n) in enumerate(sorted(by_vip.items()))}


def view(me: str = "lb1", n: int = 4, vips: tuple[str, ...] = VIPS8, **kw: object) -> View:
    base = {
        "now_ms": 100_000.0,
        "me": me,
        "vips": vips,
        "own": GOOD,
        "peers": tuple(peer(f"lb{i}") for i in range(1, n + 1) if f"lb{i}" != me),
        "etcd": EtcdView(known=True, available=True, lease=LEASE[me], valid=True),
    }
    base.update(kw)
    return View(**base)  # type: ignore[arg-type]


def with_owners(v: View, o: dict[str, Owner], **kw: object) -> View:
    return dataclasses.replace(v, etcd=dataclasses.replace(v.etcd, owners=o, **kw))


def test_liveness_needs_silence_and_a_failed_probe() -> None:
    assert liveness(PeerState.INIT, None, None, 0, 300) is Liveness.INIT
    assert liveness(PeerState.WARN, 120, None, 1000, 300) is Liveness.UP
    # Dead by heartbeats, no probe since it went silent yet: silent, not dead (until grace).
    assert liveness(PeerState.DEAD, 160, Probe(100, False), 1000, 300) is Liveness.SILENT
    assert liveness(PeerState.DEAD, 160, Probe(900, False), 1000, 300) is Liveness.DEAD
    assert liveness(PeerState.DEAD, 160, Probe(900, True), 1000, 300) is Liveness.SILENT
    assert liveness(PeerState.DEAD, 400, None, 1000, 300) is Liveness.DEAD


FENCE = "fencing: lease 65 not renewed before its TTL; release every VIP and take none"


def test_fenced_drops_everything_and_takes_nothing() -> None:
    """Cut off from etcd while the peers it hears reach it: it is the one cut off."""
    peers = (peer("lb2", coordinated=True), peer("lb3"), peer("lb4"))
    v = view(held=frozenset({"vip1", "vip5"}), peers=peers)
    d = decide(with_owners(v, owners(vip1="lb1", vip5="lb1"), fenced=FENCE, valid=False))
    assert d.wishes == dict.fromkeys(VIPS8, False)
    assert d.acquire == ()
    assert d.summary == FENCE


def test_etcd_down_for_everyone_keeps_every_vip_where_it_is() -> None:
    """Quorum lost for all: a majority heard, none reaching etcd: nobody can be granted this
    node's VIPs, so it keeps serving them and moves nothing."""
    held = frozenset({"vip1", "vip5"})
    v = view(held=held, peers=(peer("lb2"), peer("lb3"), peer("lb4", Liveness.DEAD)))
    d = decide(with_owners(v, owners(vip1="lb1", vip5="lb1"), fenced=FENCE, valid=False))
    assert d.wishes == {x: x in held for x in VIPS8}
    assert d.acquire == ()
    assert "etcd unreachable from every node heard (3 of 4, a majority)" in d.summary


def test_cut_off_from_etcd_and_most_peers_fences() -> None:
    """Hearing no majority, a node cannot tell etcd down from its own isolation: it fences."""
    held = frozenset({"vip1", "vip5"})
    peers = (peer("lb2"), peer("lb3", Liveness.DEAD), peer("lb4", Liveness.SILENT))
    v = view(held=held, peers=peers)
    d = decide(with_owners(v, owners(vip1="lb1", vip5="lb1"), fenced=FENCE, valid=False))
    assert d.wishes == dict.fromkeys(VIPS8, False)
    assert d.summary == FENCE


def test_silent_haproxy_releases_at_once() -> None:
    v = dataclasses.replace(
        view(held=frozenset({"vip1"})), own=dataclasses.replace(GOOD, healthy=False, answers=False)
    )
    d = decide(with_owners(v, owners(vip1="lb1")))
    assert d.wishes["vip1"] is False and d.acquire == ()
    assert d.summary == "haproxy does not answer: releasing at once"


def test_before_etcd_answers_keep_what_is_carried() -> None:
    v = view(
        held=frozenset({"vip3"}),
        etcd=EtcdView(known=False, available=False, lease=None, valid=False),
    )
    d = decide(v)
    assert d.wishes["vip3"] is True and sum(d.wishes.values()) == 1
    assert d.acquire == ()


def test_etcd_unavailable_keeps_and_makes_no_move() -> None:
    v = view(held=frozenset({"vip1"}), peers=(peer("lb2", Liveness.DEAD), peer("lb3"), peer("lb4")))
    d = decide(with_owners(v, owners(vip1="lb1", vip2="lb2"), available=False))
    assert d.wishes["vip1"] is True
    assert d.acquire == ()
    assert d.summary == "etcd unavailable: keeping what is carried, no new moves"


def test_start_each_node_takes_its_share_of_the_unheld() -> None:
    taken: dict[str, str] = {}
    for i in range(1, 5):
        d = decide(view(me=f"lb{i}"))
        for a in d.acquire:
            assert a.kind == "unheld" and a.expected is None
            assert a.vip not in taken, f"{a.vip} asked by {taken.get(a.vip)} and lb{i}"
            taken[a.vip] = f"lb{i}"
    assert sorted(taken) == sorted(VIPS8)
    assert spread(taken, [f"lb{i}" for i in range(1, 5)]) == 0


def test_a_dead_owner_is_taken_over_at_once_by_the_nodes_placement_picks() -> None:
    o = owners(
        vip1="lb1",
        vip2="lb2",
        vip3="lb3",
        vip4="lb4",
        vip5="lb1",
        vip6="lb2",
        vip7="lb3",
        vip8="lb4",
    )
    taken: dict[str, str] = {}
    for me in ("lb1", "lb2", "lb4"):
        peers = tuple(
            peer(n, Liveness.DEAD, silence_ms=180) if n == "lb3" else peer(n)
            for n in ("lb1", "lb2", "lb3", "lb4")
            if n != me
        )
        d = decide(with_owners(view(me=me, peers=peers), o))
        for a in d.acquire:
            assert a.kind == "failover" and a.expected == o[a.vip]
            assert (
                a.reason == f"took {a.vip} from lb3: lb3 dead (silent for 180 ms) and not serving"
            )
            taken[a.vip] = me
    assert sorted(taken) == ["vip3", "vip7"]
    assert len(set(taken.values())) == 2  # spread over two of the three survivors


def test_a_silent_peer_that_still_serves_keeps_its_vips() -> None:
    o = owners(
        vip1="lb1",
        vip2="lb2",
        vip3="lb3",
        vip4="lb4",
        vip5="lb1",
        vip6="lb2",
        vip7="lb3",
        vip8="lb4",
    )
    for me in ("lb1", "lb2", "lb4"):
        peers = tuple(
            peer(n, Liveness.SILENT) if n == "lb3" else peer(n)
            for n in ("lb1", "lb2", "lb3", "lb4")
            if n != me
        )
        assert decide(with_owners(view(me=me, peers=peers), o)).acquire == ()


def test_an_unhealthy_or_standby_owner_loses_its_vips() -> None:
    o = owners(vip1="lb1", vip2="lb2")
    v = view(n=2, vips=("vip1", "vip2"), peers=(peer("lb2", standby=True),))
    d = decide(with_owners(v, o))
    assert [(a.vip, a.kind, a.reason) for a in d.acquire] == [
        ("vip2", "failover", "took vip2 from lb2: lb2 in standby or without an etcd lease")
    ]


def test_failback_waits_then_goes_one_vip_at_a_time() -> None:
    # lb4 came back: the three others hold 3, 3, 2.
    o = owners(
        vip1="lb1",
        vip2="lb2",
        vip3="lb3",
        vip4="lb1",
        vip5="lb1",
        vip6="lb2",
        vip7="lb3",
        vip8="lb2",
    )
    young = view(me="lb4", own=dataclasses.replace(GOOD, stable_ms=1200))
    d = decide(with_owners(young, o))
    assert d.acquire == ()
    assert "not yet: stable for 1200 of 3000 ms" in d.summary
    d = decide(with_owners(view(me="lb4"), o))
    assert len(d.acquire) == 1 and d.acquire[0].kind == "balance"
    assert d.acquire[0].expected == o[d.acquire[0].vip]
    assert d.acquire[0].expected is not None and d.acquire[0].expected.node in ("lb1", "lb2")
    recent = view(me="lb4", last_move_ms=99_500.0)
    assert decide(with_owners(recent, o)).acquire == ()
    # The one just taken is still carried by its previous owner: wait for the hand-over.
    vip = d.acquire[0].vip
    o2 = {**o, vip: Owner("lb4", LEASE["lb4"], 99)}
    prev = d.acquire[0].expected.node
    peers = tuple(peer(n, held={vip} if n == prev else set()) for n in ("lb1", "lb2", "lb3"))
    busy = view(me="lb4", held=frozenset({vip}), peers=peers)
    assert decide(with_owners(busy, o2)).acquire == ()
    off = view(me="lb4", timings=Timings(auto_failback=False))
    assert decide(with_owners(off, o)).acquire == ()
    # A peer's passing hiccup changed the eligible nodes just now: no balancing yet.
    hiccup = decide(with_owners(view(me="lb4", eligible_stable_ms=400.0), o))
    assert hiccup.acquire == () and "the eligible nodes changed 400 ms ago" in hiccup.summary


def test_make_before_break_keeps_a_lost_vip_until_the_taker_carries_it() -> None:
    o = owners(vip1="lb2")
    v = view(n=2, vips=("vip1", "vip2"), held=frozenset({"vip1"}), lost_at={"vip1": 99_800.0})
    d = decide(with_owners(v, o))
    assert (
        d.wishes["vip1"] is True
        and d.reasons["vip1"] == "handing over to lb2: kept until it carries it"
    )
    carried = dataclasses.replace(v, peers=(peer("lb2", held={"vip1"}),))
    d = decide(with_owners(carried, o))
    assert (
        d.wishes["vip1"] is False and d.reasons["vip1"] == "lb2 carries it now (make-before-break)"
    )
    late = dataclasses.replace(v, now_ms=101_000.0)
    assert decide(with_owners(late, o)).wishes["vip1"] is False
    found = dataclasses.replace(v, lost_at={})  # configured at start, etcd says lb2's
    d = decide(with_owners(found, o))
    assert d.wishes["vip1"] is False and d.reasons["vip1"] == "it belongs to lb2 in etcd"


def test_own_key_from_a_previous_lease_is_reclaimed() -> None:
    o = {"vip1": Owner("lb1", 7, 3), "vip2": Owner("lb2", LEASE["lb2"], 4)}
    d = decide(with_owners(view(n=2, vips=("vip1", "vip2"), held=frozenset({"vip1"})), o))
    assert [(a.vip, a.kind, a.reason) for a in d.acquire] == [
        ("vip1", "reclaim", "took vip1: its key from my last lease")
    ]
    assert d.wishes == {"vip1": True, "vip2": False}


def test_set_stability_counts_from_the_last_change() -> None:
    s = SetStability()
    assert s.update(frozenset({"lb1"}), 0) == 0 and s.update(frozenset({"lb1"}), 700) == 700
    assert s.update(frozenset({"lb1", "lb2"}), 800) == 0


def test_stability_resets_on_any_fault() -> None:
    s = Stability()
    assert s.update(True, 0) == 0 and s.update(True, 500) == 500
    assert s.update(False, 600) == 0 and s.update(True, 700) == 0 and s.update(True, 900) == 200


# ----------------------------------------------------------------------------- simulation
def _round(
    nodes: list[str],
    alive: set[str],
    vips: tuple[str, ...],
    store: dict[str, Owner],
    now: float,
    last: dict[str, float],
) -> int:
    """Every alive node decides on the same snapshot; acquisitions are compare-and-set on the
    revision each node read, like etcd's transaction. Returns how many were granted."""
    rev = max((o.mod_revision for o in store.values()), default=0)
    snapshot = dict(store)
    granted = 0
    for me in nodes:
        if me not in alive:
            continue
        peers = tuple(
            peer(
                n,
                Liveness.UP if n in alive else Liveness.DEAD,
                held={v for v, o in snapshot.items() if o.node == n},
            )
            for n in nodes
            if n != me
        )
        held = frozenset(v for v, o in snapshot.items() if o.node == me)
        v = view(me=me, vips=vips, peers=peers, now_ms=now, last_move_ms=last.get(me), held=held)
        v = with_owners(v, snapshot, lease=LEASE[me])
        for a in decide(v).acquire:
            if store.get(a.vip) != a.expected:
                continue  # refused: the owner changed since this node read it
            rev += 1
            store[a.vip] = Owner(me, LEASE[me], rev)
            granted += 1
            if a.kind == "balance":
                last[me] = now
    return granted


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 8),
    extra=st.integers(0, 8),
    dead=st.sets(st.integers(0, 7), max_size=3),
)
def test_simulated_cluster_converges_balanced_and_fails_back(
    n: int, extra: int, dead: set[int]
) -> None:
    nodes = [f"lb{i}" for i in range(1, n + 1)]
    vips = tuple(f"vip{i}" for i in range(1, n + extra + 1))
    store: dict[str, Owner] = {}
    alive = set(nodes)
    now, last = 100_000.0, {}
    for _ in range(3):
        _round(nodes, alive, vips, store, now, last)
    assert sorted(store) == sorted(vips)
    assert spread({v: o.node for v, o in store.items()}, nodes) <= 1
    # Some nodes die: only their VIPs move, at once, to the survivors, balanced.
    gone = {nodes[i] for i in dead if i < n - 1}
    before = {v: o.node for v, o in store.items()}
    alive = set(nodes) - gone
    for _ in range(3):
        _round(nodes, alive, vips, store, now, last)
    after = {v: o.node for v, o in store.items()}
    assert all(o in alive for o in after.values())
    assert all(after[v] == before[v] for v in vips if before[v] not in gone)
    assert spread(after, sorted(alive)) <= 1
    # They return: balance comes back, one VIP per node per min_move_interval.
    alive = set(nodes)
    for _ in range(2 * len(vips) + 2):
        now += 1000
        _round(nodes, alive, vips, store, now, last)
    assert spread({v: o.node for v, o in store.items()}, nodes) <= 1
