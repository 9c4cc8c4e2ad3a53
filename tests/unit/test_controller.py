"""The controller in the simulated world: loss, jitter, stalls, shared faults, flapping health.

These drive the very Controller the daemon runs (hapair.agent.simulate), so a rule that holds
here holds in the agent; the lab chaos suite (tests/chaos) checks the same faults for real.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hapair.agent.controller import Controller
from hapair.agent.membership import FALSE_DEATH_TARGET, MAX_STRETCH, Membership
from hapair.agent.protocol import Heartbeat
from hapair.agent.simulate import World
from hapair.spec import HaSpec

Moves = list[tuple[float, str, str, bool, str]]


def moves(w: World, mark: int = 0) -> Moves:
    return [
        (r.view.now_ms, r.node, m.vip, m.take, m.reason)
        for r in w.records[mark:]
        for m in r.step.moves
    ]


def settled(w: World) -> World:
    w.run(3000)
    assert (w.holders("vip1"), w.holders("vip2")) == ({"lb1"}, {"lb2"})
    return w


def lossy(w: World, p: float) -> None:
    w.loss = {("lb1", "lb2"): p, ("lb2", "lb1"): p}


def test_loss_up_to_40_percent_for_30_s_moves_nothing() -> None:
    for p in (0.2, 0.3, 0.4):
        for seed in range(5):
            w = settled(World(seed=seed))
            mark = len(w.records)
            lossy(w, p)
            w.run(30_000)
            w.loss = {}
            w.run(5000)
            assert moves(w, mark) == [], (p, seed)


def test_loss_stretches_deadtime_and_a_crash_is_still_detected() -> None:
    w = settled(World(seed=1))
    lossy(w, 0.4)
    w.run(5000)
    m = w.nodes["lb2"].controller.membership
    stretched = m.effective_deadtime_ms(w.now)
    assert w.ha.deadtime_ms < stretched <= MAX_STRETCH * w.ha.deadtime_ms
    t_kill = w.now
    w.kill("lb1")
    while "lb2" not in w.holders("vip1"):
        w.step()
        assert w.now - t_kill <= MAX_STRETCH * w.ha.deadtime_ms + w.ha.interval_ms


def test_on_a_clean_link_deadtime_is_not_stretched() -> None:
    w = settled(World())
    m = w.nodes["lb2"].controller.membership
    assert m.loss(w.now) == 0
    assert m.effective_deadtime_ms(w.now) == w.ha.deadtime_ms
    t_kill = w.now
    w.kill("lb1")
    while "lb2" not in w.holders("vip1"):
        w.step()
    assert w.now - t_kill <= w.ha.deadtime_ms + w.ha.interval_ms


def test_the_stretch_follows_the_false_death_target() -> None:
    m = Membership(
        "lb2", interval_ms=50, warntime_ms=100, deadtime_ms=150, initdead_ms=0, start_ms=0
    )
    hb = Heartbeat(
        cluster="c", node="lb2", boot_id=1, seq=0, healthy=True, pingable=True, stable_ms=0
    )
    t = 0.0
    for i in range(200):  # every other interval silent: q = 0.5
        m.observe(hb, t)
        t += 100 if i % 2 else 50
    q = m.loss(t)
    assert 0.3 < q < 0.7
    eff = m.effective_deadtime_ms(t)
    k = round(eff / 50) - 1
    assert q**k <= FALSE_DEATH_TARGET * 1.0001 or eff == MAX_STRETCH * 150


def test_jitter_up_to_150_ms_moves_nothing() -> None:
    w = settled(World(seed=3))
    mark = len(w.records)
    w.jitter_ms = 150
    w.run(30_000)
    assert moves(w, mark) == []


def test_a_stalled_agent_whose_haproxy_serves_moves_nothing() -> None:
    for stall_ms in (500, 3000, 10_000):
        w = settled(World())
        mark = len(w.records)
        w.stall("lb1", stall_ms)
        w.run(stall_ms + 5000)
        assert moves(w, mark) == [], stall_ms
        notes = [n for _, node, n in w.notes if node == "lb1"]
        assert notes and notes[-1].startswith(f"this node did not run for {stall_ms} ms")


def test_a_clock_jump_on_one_node_moves_nothing() -> None:
    """A node whose monotonic clock jumps 5 s ahead (a VM frozen, then thawed with its clock
    caught up) sees 5 s of silence it did not witness: it does not judge its peer on it."""
    for name in ("lb1", "lb2"):
        w = settled(World())
        mark = len(w.records)
        w.clock_jump(name, 5000)
        w.run(5000)
        assert moves(w, mark) == [], name
        assert any(n == name and s.startswith("this node did not run for") for _, n, s in w.notes)


def test_every_backend_lost_on_both_moves_nothing_and_someone_keeps_answering() -> None:
    w = settled(World())
    mark = len(w.records)
    for n in w.nodes.values():
        n.healthy = False  # HAProxy answers (503), no backend
    for _ in range(60):
        w.step()
        assert w.holders("vip1") and w.holders("vip2")
    for n in w.nodes.values():
        n.healthy = True
    w.run(6000)
    assert moves(w, mark) == []


def test_backends_lost_on_one_lb_move_its_vip_once_and_back_once() -> None:
    w = settled(World())
    mark = len(w.records)
    w.nodes["lb1"].healthy = False
    w.run(3000)
    assert w.holders("vip1") == {"lb2"}
    w.nodes["lb1"].healthy = True
    w.run(6000)
    assert w.holders("vip1") == {"lb1"}
    got = [(node, vip, take) for _, node, vip, take, _ in moves(w, mark)]
    assert got == [
        ("lb2", "vip1", True),
        ("lb1", "vip1", False),
        ("lb1", "vip1", True),
        ("lb2", "vip1", False),
    ]


def test_a_flapping_node_is_damped() -> None:
    """lb1's health fails for 300 ms every 4 s for two minutes: each failure moves vip1 away
    at once, but the stability a failback needs doubles with every fault, so vip1 stops
    coming back while lb1 keeps failing."""
    w = settled(World())
    mark = len(w.records)
    for _ in range(30):
        w.nodes["lb1"].healthy = False
        w.run(300)
        w.nodes["lb1"].healthy = True
        w.run(3700)
    back = [m for m in moves(w, mark) if m[1] == "lb1" and m[2] == "vip1" and m[3]]
    assert 1 <= len(back) <= 3, back
    assert w.nodes["lb1"].controller.penalty_ms(w.now) > 0
    w.run(200_000)
    assert w.holders("vip1") == {"lb1"}  # the penalty fades once the node stays healthy


def test_haproxy_death_releases_at_once_and_nobody_is_left_without_an_answer() -> None:
    w = settled(World())
    w.nodes["lb1"].healthy = w.nodes["lb1"].answers = False
    w.step()
    w.step()
    assert w.holders("vip1") == {"lb2"}


def test_orphan_vip_is_taken_by_its_home_node_when_nobody_can_serve() -> None:
    w = settled(World())
    w.kill("lb2", haproxy=True)  # lb2 dead; vip2 stays configured on its dead kernel
    w.nodes["lb2"].held = set()  # ... and then gone (a reboot that did not come back)
    w.nodes["lb1"].healthy = False  # lb1 answers with 503s only
    w.run(2000)
    assert w.holders("vip2") == {"lb1"}
    reasons = [m[4] for m in moves(w) if m[2] == "vip2" and m[1] == "lb1"]
    assert reasons, moves(w)
    assert "nobody holds vip2" in reasons[-1] or "dead" in reasons[-1], reasons


def test_both_die_and_return_together_hand_back_make_before_break() -> None:
    w = settled(World())
    w.kill("lb1")
    w.kill("lb2")
    w.run(1000)
    w.restart("lb2", keep_held=True)
    w.step()
    w.restart("lb1", keep_held=True)
    for _ in range(200):
        w.step()
        assert w.holders("vip1") and w.holders("vip2")
    assert (w.holders("vip1"), w.holders("vip2")) == ({"lb1"}, {"lb2"})


def test_a_first_decision_not_to_take_is_not_a_move() -> None:
    c = Controller("lb1", "lb2", [("vip1", "lb1"), ("vip2", "lb2")], HaSpec(), start_ms=0)
    c.observe_health(True, True, 0)
    step = c.step(10, held=frozenset(), pingable=True, standby=False)
    assert step.moves == ()  # peer in initdead: nothing taken, nothing released
    assert step.wishes == {"vip1": False, "vip2": False}


FAULTS = [
    "healthy",
    "answers",
    "pingable",
    "standby",
    "link",
    "agent",
    "hb",
    "data",
    "stall",
    "clock_jump",
    "request_loss",
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(1, 40), st.sampled_from(["lb1", "lb2"]), st.sampled_from(FAULTS)),
        max_size=12,
    ),
    st.sampled_from([0.0, 0.1, 0.3]),
    st.sampled_from([0.0, 60.0]),
    st.integers(0, 1000),
)
def test_make_before_break_and_someone_answers_under_random_faults(
    script: list[tuple[int, str, str]], loss: float, jitter: float, seed: int
) -> None:
    """Whatever happens, a node whose HAProxy answers never lets go of a VIP that then
    nobody holds while its peer's agent runs and hears it; after the faults end, the pair
    converges to one holder per VIP."""
    w = settled(World(seed=seed))
    lossy(w, loss)
    w.jitter_ms = jitter

    def check_step() -> None:
        before = {v: w.holders(v) for v, _ in w.vips}
        w.step()
        for vip, _ in w.vips:
            after = w.holders(vip)
            for name in before[vip] - after:
                node, peer = w.nodes[name], w.nodes[w.peer_name(name)]
                connected = w.heartbeat_path and node.link and peer.link and peer.agent
                if node.answers and node.agent and connected and loss == 0 and not after:
                    raise AssertionError(f"{name} let {vip} go before anyone held it")

    for steps, name, what in script:
        for _ in range(steps):
            check_step()
        node = w.nodes[name]
        flip: dict[str, Any] = {}
        if what == "agent":
            if node.agent:
                w.kill(name, haproxy=False)
            else:
                w.restart(name, healthy=node.healthy)
        elif what == "hb":
            w.heartbeat_path = not w.heartbeat_path
        elif what == "data":
            w.data_path = not w.data_path
        elif what == "stall":
            w.stall(name, 2000)
        elif what == "clock_jump":
            w.clock_jump(name, 2000)
        elif what == "request_loss":
            node.request_loss = 0.0 if node.request_loss else 0.5
        else:
            flip[what] = not getattr(node, what)
            setattr(node, what, flip[what])
    # Quiet: the network heals, every agent runs, every node is healthy again.
    w.loss, w.jitter_ms = {}, 0
    w.heartbeat_path = w.data_path = True
    for name, node in list(w.nodes.items()):
        node.link = node.healthy = node.answers = node.pingable = True
        node.standby, node.request_loss = False, 0.0
        if not node.agent:
            w.restart(name)
    w.run(15_000)
    # One holder per VIP (the flap penalty may keep a VIP away from its home for a while).
    assert len(w.holders("vip1")) == 1 and len(w.holders("vip2")) == 1


def test_both_in_standby_then_online_one_after_the_other_moves_only_vip1() -> None:
    """An operator puts lb1, then lb2 in standby, then both online, lb2 a moment before lb1:
    lb1 must not take vip2 on a heartbeat that still says lb2 is in standby."""
    for gap, seed in ((0, 1), (0, 2), (20, 3), (49, 4)):
        w = settled(World(seed=seed))
        w.jitter_ms = 45  # heartbeats take up to one interval: views lag
        mark = len(w.records)
        w.nodes["lb1"].standby = True
        w.run(1000)
        w.nodes["lb2"].standby = True
        w.run(2000)
        w.nodes["lb2"].standby = False
        w.run(gap)
        w.nodes["lb1"].standby = False
        w.run(8000)
        assert [(n, v, take) for _, n, v, take, _ in moves(w, mark)] == [
            ("lb2", "vip1", True),
            ("lb1", "vip1", False),
            ("lb1", "vip1", True),
            ("lb2", "vip1", False),
        ], gap


def test_both_lose_their_backends_and_recover_apart_moves_nothing() -> None:
    """Every backend lost on both LBs; lb1's checks see them back up to a second before
    lb2's: no VIP moves (lb2 is recovering from the same fault)."""
    for lag in (0, 50, 300, 1000):
        w = settled(World())
        mark = len(w.records)
        for n in w.nodes.values():
            n.healthy = False
        w.run(3000)
        w.nodes["lb1"].healthy = True
        w.run(lag)
        w.nodes["lb2"].healthy = True
        w.run(6000)
        assert moves(w, mark) == [], lag
        assert (w.holders("vip1"), w.holders("vip2")) == ({"lb1"}, {"lb2"})


def test_after_a_full_partition_each_node_announces_what_it_kept() -> None:
    """Both nodes took the other's VIP during a full partition; on heal the peer lets go of
    them before this node even hears it, so its heartbeats never show it holding them: each
    node announces its own VIPs again on hearing its peer back (clients may point at it)."""
    w = settled(World())
    w.heartbeat_path = w.data_path = False
    w.run(3000)
    assert w.holders("vip1") == w.holders("vip2") == {"lb1", "lb2"}
    mark = len(w.records)
    w.heartbeat_path = w.data_path = True
    w.loss = {("lb1", "lb2"): 1.0}  # lb1 hears lb2 first and lets vip2 go at once
    w.run(300)
    assert w.holders("vip2") == {"lb2"}
    w.loss = {}
    w.run(2000)
    announced = {(r.node, v) for r in w.records[mark:] for v in r.step.announce}
    assert {("lb1", "vip1"), ("lb2", "vip2")} <= announced
    assert (w.holders("vip1"), w.holders("vip2")) == ({"lb1"}, {"lb2"})


def _silent_peer() -> tuple[Controller, float]:
    """A controller that heard lb2 until t=1000 and nothing since."""
    c = Controller("lb1", "lb2", [("vip1", "lb1"), ("vip2", "lb2")], HaSpec(), start_ms=0)
    c.observe_health(True, True, 0)
    for i, t in enumerate(range(0, 1001, 50)):
        hb = Heartbeat(
            cluster="c",
            node="lb2",
            boot_id=1,
            seq=i,
            healthy=True,
            pingable=True,
            stable_ms=t,
            held=frozenset({"vip2"}),
        )
        c.observe_heartbeat(hb, float(t))
        c.step(float(t), held=frozenset({"vip1"}), pingable=True, standby=False)
    return c, 1000.0


def test_one_probe_lost_to_load_does_not_kill_a_serving_peer() -> None:
    c, t = _silent_peer()
    c.observe_probe(False, t + 75)  # timed out on a loaded machine
    c.observe_probe(True, t + 100)  # began later, answered
    assert c.peer_serving(t + 180)
    step = c.step(t + 180, held=frozenset({"vip1"}), pingable=True, standby=False)
    assert "vip2" not in {m.vip for m in step.moves if m.take}


def test_a_peer_whose_probes_fail_is_not_serving_and_stays_so_once_acted_on() -> None:
    c, t = _silent_peer()
    c.observe_probe(False, t + 75)
    assert not c.peer_serving(t + 160)  # one failure and no later success: dead now
    step = c.step(t + 160, held=frozenset({"vip1"}), pingable=True, standby=False)
    assert [(m.vip, m.take) for m in step.moves] == [("vip2", True)]
    # Its HAProxy comes back before its agent: a success does not revive the verdict.
    c.observe_probe(True, t + 200)
    assert not c.peer_serving(t + 210)
