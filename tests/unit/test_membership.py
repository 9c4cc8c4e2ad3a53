"""Peer liveness with a simulated clock."""

from __future__ import annotations

import itertools
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hapair.agent.membership import TRANSITIONS, Membership, PeerState, Transition
from hapair.agent.protocol import Heartbeat
from hapair.spec import HaSpec

UP, WARN, DEAD, INIT = PeerState.UP, PeerState.WARN, PeerState.DEAD, PeerState.INIT


def beat(seq: int, boot_id: int = 1) -> Heartbeat:
    return Heartbeat("demo", "lb2", boot_id, seq, True, True, 0)


def membership(start: float = 0) -> Membership:
    # The spec's defaults: interval 50, warntime 100, deadtime 150, initdead 1500.
    return Membership.from_spec("lb2", HaSpec(), start_ms=start)


def test_init_until_initdead_then_dead() -> None:
    m = membership(start=1000)
    assert m.state(1000) is INIT
    assert m.poll(2499) == []
    assert m.current is INIT and m.last() is None and m.silence_ms(2499) is None
    assert m.poll(2500) == [Transition(INIT, DEAD, "never heard within initdead 1500 ms")]
    assert m.current is DEAD


def test_up_warn_dead_at_the_right_times(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hapair.agent.membership")
    m = membership()
    m.observe(beat(1), 10)
    assert m.poll(10) == [Transition(INIT, UP, "heartbeat received")]
    assert m.last() == beat(1)
    seen: list[tuple[float, Transition]] = []
    for now in range(10, 400):
        seen.extend((now, t) for t in m.poll(now))
    assert seen == [
        (110, Transition(UP, WARN, "silent for 100 ms")),
        (160, Transition(WARN, DEAD, "silent for 150 ms")),
    ]
    assert m.silence_ms(172) == 162
    assert "peer lb2: up -> warn (silent for 100 ms)" in caplog.messages
    assert "peer lb2: warn -> dead (silent for 150 ms)" in caplog.messages


def test_regular_heartbeats_stay_up() -> None:
    m = membership()
    transitions = []
    for seq, now in enumerate(range(0, 5000, 50), start=1):
        m.observe(beat(seq), now + (seq % 3) * 10)  # jitter below warntime
        transitions += m.poll(now + 40)
    assert transitions == [Transition(INIT, UP, "heartbeat received")]


def test_late_heartbeat_recovers_from_warn_without_dead() -> None:
    m = membership()
    m.observe(beat(1), 0)
    m.poll(0)
    assert m.poll(120) == [Transition(UP, WARN, "silent for 120 ms")]
    m.observe(beat(2), 130)
    assert m.poll(131) == [Transition(WARN, UP, "heartbeat received")]


def test_sparse_polls_go_up_to_dead_directly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hapair.agent.membership")
    m = membership()
    m.observe(beat(1), 0)
    m.poll(0)
    assert m.poll(162) == [Transition(UP, DEAD, "silent for 162 ms")]
    assert "peer lb2: up -> dead (silent for 162 ms)" in caplog.messages


def test_recovery_dead_to_up() -> None:
    m = membership()
    m.observe(beat(1), 0)
    m.poll(500)
    assert m.current is DEAD
    m.observe(beat(2), 510)
    assert m.current is UP
    assert m.poll(511) == [Transition(DEAD, UP, "heartbeat received")]
    assert m.state(560) is UP


def test_restart_is_detected_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hapair.agent.membership")
    m = membership()
    assert m.observe(beat(1, boot_id=1), 0) is False
    assert m.observe(beat(2, boot_id=1), 50) is False
    m.poll(50)
    m.poll(400)
    assert m.observe(beat(1, boot_id=2), 450) is True
    assert m.restarts == 1
    assert "peer lb2 restarted" in caplog.messages
    assert m.last() == beat(1, boot_id=2)


def test_transition_table_is_enforced() -> None:
    assert UP not in TRANSITIONS[UP]
    assert set(TRANSITIONS) == set(PeerState)
    assert all(INIT not in targets for targets in TRANSITIONS.values())
    m = membership()
    with pytest.raises(RuntimeError, match="illegal transition init -> warn"):
        m._set(WARN, "test")


def test_bad_timings_are_refused() -> None:
    with pytest.raises(ValueError, match="interval_ms < warntime_ms <= deadtime_ms"):
        Membership(
            "lb2", interval_ms=100, warntime_ms=100, deadtime_ms=150, initdead_ms=0, start_ms=0
        )


def _loss_by_definition(arrivals: list[float], now: float, interval: float) -> float:
    """The share of silent intervals, counted gap by gap over each window (the slow way)."""
    from hapair.agent.membership import LOSS_WINDOW_MS, MIN_INTERVALS, SHORT_WINDOW_MS

    def since(start: float) -> float:
        times = [t for t in arrivals if t >= start and now - t <= LOSS_WINDOW_MS]
        if len(times) < 2 or times[-1] - times[0] < MIN_INTERVALS * interval:
            return 0.0
        missed = sum(max(0, round((b - a) / interval) - 1) for a, b in itertools.pairwise(times))
        return min(1.0, missed / ((times[-1] - times[0]) / interval))

    return max(since(now - LOSS_WINDOW_MS), since(now - SHORT_WINDOW_MS))


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=1, max_value=700), min_size=0, max_size=400),
    probe=st.floats(min_value=0, max_value=3000),
)
def test_loss_kept_as_a_running_count_equals_the_definition(
    gaps: list[float], probe: float
) -> None:
    m = membership()
    t, arrivals = 0.0, []
    for i, gap in enumerate(gaps):
        t += gap
        m.observe(beat(i + 1), t)
        arrivals.append(t)
        if i % 37 == 0:  # also while the windows slide
            assert m.loss(t) == pytest.approx(_loss_by_definition(arrivals, t, 50))
    now = t + probe
    assert m.loss(now) == pytest.approx(_loss_by_definition(arrivals, now, 50))


def test_loss_counts_every_lost_interval_and_a_retime_recounts() -> None:
    m = membership()
    # 40 intervals of 50 ms: every other heartbeat lost -> 20 arrivals 100 ms apart
    for i in range(21):
        m.observe(beat(i + 1), i * 100.0)
    assert m.loss(2000) == pytest.approx(0.5)
    m.retime(HaSpec(interval_ms=100, warntime_ms=200, deadtime_ms=300))
    assert m.loss(2000) == 0.0  # at 100 ms, nothing was lost
