"""The ping-node verdicts (no socket: the replies are recorded by hand)."""

from __future__ import annotations

import pytest

from hapair.agent import health
from hapair.agent.health import Pinger


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(health.time, "monotonic", lambda: now[0])
    return now


def test_a_reply_counts_for_one_window(clock: list[float]) -> None:
    p = Pinger(["198.18.0.1"])
    assert not p.reachable(window=1.0)
    p.last_reply["198.18.0.1"] = clock[0]
    assert p.reachable(window=1.0)
    clock[0] += 1.5
    assert not p.reachable(window=1.0)


def test_only_a_request_sent_after_since_proves_the_path(clock: list[float]) -> None:
    p = Pinger(["198.18.0.1"])
    p.last_reply["198.18.0.1"] = clock[0]
    p.last_reply_sent["198.18.0.1"] = clock[0] - 0.01
    assert p.reachable(window=1.0)
    assert not p.reachable(window=1.0, since=clock[0] - 0.005)  # crossed before the cut
    assert p.reachable(window=1.0, since=clock[0] - 0.02)


def test_a_stall_of_the_agent_is_not_the_ping_nodes_silence(clock: list[float]) -> None:
    p = Pinger(["198.18.0.1"])
    p.last_reply["198.18.0.1"] = clock[0]
    p.last_reply_sent["198.18.0.1"] = clock[0]
    clock[0] += 5.0  # SIGSTOP for 5 s
    assert not p.reachable(window=1.0)
    p.blind(5.0)
    assert p.reachable(window=1.0)
    # ... but it proves nothing about the present for a node judging a silent peer
    assert not p.reachable(window=1.0, since=clock[0] - 1.0)
    p.blind(60.0)
    assert p.last_reply["198.18.0.1"] == clock[0]  # never later than now


def test_no_ping_node_means_reachable(clock: list[float]) -> None:
    assert Pinger([]).reachable(window=1.0, since=clock[0])
