"""The moves metric's ``reason`` label (hapair.agent.movelabel), read from the facts
placement decided on: each of placement's real decisions, made by the controllers of a
simulated pair, gets the label that says why, and no move is ever ``other``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hapair.agent.movelabel import MOVE_LABELS, move_label
from hapair.agent.placement import eligible, peer_facts
from hapair.agent.simulate import World

#: (node, vip, take, label), in the order the moves happen
Moves = list[tuple[str, str, bool, str]]


def _moves(w: World, mark: int) -> Moves:
    return [(r.node, m.vip, m.take, m.label) for r in w.records[mark:] for m in r.step.moves]


def _started() -> World:
    w = World()
    w.run(200)
    assert (w.holders("vip1"), w.holders("vip2")) == ({"lb1"}, {"lb2"})
    return w


def _crashed() -> World:
    w = _started()
    w.kill("lb1")
    w.run(1500)
    return w


def _all_unhealthy() -> World:
    w = World()
    for node in w.nodes.values():
        node.healthy = False  # HAProxy answers, with 503s: every backend is gone
    return w


def _fault(what: str) -> Callable[[World], None]:
    def apply(w: World) -> None:
        setattr(w.nodes["lb1"], what, what == "standby")

    return apply


def _lb2_recovers(w: World) -> None:
    w.run(3000)
    w.nodes["lb2"].healthy = True


#: name -> (the world before, what happens, the moves it makes)
SCENARIOS: dict[str, tuple[Callable[[], World], Callable[[World], None], Moves]] = {
    # "home node, healthy; nobody holds vip1": the pair starting
    "cold start": (
        World,
        lambda w: None,
        [("lb1", "vip1", True, "startup"), ("lb2", "vip2", True, "startup")],
    ),
    "crash": (_started, lambda w: w.kill("lb1"), [("lb2", "vip1", True, "failover")]),
    # "failback: lb1 stable ..." and "home node lb1 holds it"
    "failback after a reboot": (
        _crashed,
        lambda w: w.restart("lb1", keep_held=False),
        [("lb1", "vip1", True, "failback"), ("lb2", "vip1", False, "failback")],
    ),
    # "found configured at start: lb2 holds it", then the failback
    "restart still holding the address": (
        _crashed,
        lambda w: w.restart("lb1", keep_held=True),
        [
            ("lb1", "vip1", False, "settle"),
            ("lb1", "vip1", True, "failback"),
            ("lb2", "vip1", False, "failback"),
        ],
    ),
    "unhealthy": (
        _started,
        _fault("healthy"),
        [("lb2", "vip1", True, "failover"), ("lb1", "vip1", False, "unhealthy")],
    ),
    "standby": (
        _started,
        _fault("standby"),
        [("lb2", "vip1", True, "standby"), ("lb1", "vip1", False, "standby")],
    ),
    "cut off from the ping nodes": (
        _started,
        _fault("pingable"),
        [("lb2", "vip1", True, "isolated"), ("lb1", "vip1", False, "isolated")],
    ),
    # "unhealthy; peer lb2 unhealthy: nobody holds vip1, taking it so that clients get ..."
    "nobody eligible, nobody holds": (
        _all_unhealthy,
        lambda w: None,
        [("lb1", "vip1", True, "orphan"), ("lb2", "vip2", True, "orphan")],
    ),
    "one node healthy again after a shared fault": (
        _all_unhealthy,
        _lb2_recovers,
        [
            ("lb1", "vip1", True, "orphan"),
            ("lb2", "vip2", True, "orphan"),
            ("lb2", "vip1", True, "failover"),
            ("lb1", "vip1", False, "unhealthy"),
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_each_decision_gets_the_label_that_says_why(name: str) -> None:
    before, happen, expected = SCENARIOS[name]
    w = before()
    mark = len(w.records)
    happen(w)
    w.run(8000)
    assert _moves(w, mark) == expected


FAULTS = ["healthy", "answers", "pingable", "standby", "link", "agent", "hb", "stall"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(1, 40), st.sampled_from(["lb1", "lb2"]), st.sampled_from(FAULTS)),
        max_size=10,
    ),
    st.integers(0, 1000),
)
def test_no_move_is_other_and_each_label_agrees_with_its_view(
    script: list[tuple[int, str, str]], seed: int
) -> None:
    """Under random faults every move has a label of the closed set other than ``other``,
    and the label agrees with the facts of the view it was decided on."""
    w = World(seed=seed)
    w.run(200)
    for steps, name, what in script:
        w.run(steps * w.ha.interval_ms)
        node = w.nodes[name]
        if what == "agent":
            if node.agent:
                w.kill(name, haproxy=False)
            else:
                w.restart(name, healthy=node.healthy)
        elif what == "hb":
            w.heartbeat_path = not w.heartbeat_path
        elif what == "stall":
            w.stall(name, 2000)
        else:
            setattr(node, what, not getattr(node, what))
    w.run(5000)
    for r in w.records:
        for m in r.step.moves:
            assert m.label in MOVE_LABELS and m.label != "other", (r.node, m)
            if m.label == "settle":
                assert not m.take
                continue
            assert m.label == move_label(r.view, m.vip, m.take)
            me, peer = r.view.me, peer_facts(r.view)
            home = dict(r.view.vips)[m.vip]
            if m.label == "unhealthy":
                assert not m.take and not me.healthy
            if m.label == "orphan":
                assert m.take and peer is not None and m.vip not in peer.held
                assert not eligible(me, peer)
            if m.label == "failover":
                assert m.take and peer is not None and not (peer.alive and peer.healthy)
            if m.label == "failback" and not m.take:
                assert home != r.node


def test_move_labels_are_a_closed_set_in_the_metric_help() -> None:
    from hapair.agent.metrics import Metrics

    help_text = Metrics().moves._documentation
    assert all(label in help_text for label in MOVE_LABELS)
