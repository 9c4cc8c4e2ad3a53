"""A flood of bad datagrams on the heartbeat port (hapair.agent.pairbeats): every one is
counted by reason, but the log gets at most one warning per reason per 10 s window."""

from __future__ import annotations

import logging
import os
import types
from pathlib import Path

import pytest
from tests.unit.agentfix import Started

from hapair.agent import pairbeats
from hapair.agent.protocol import encode


def test_a_flood_is_counted_in_full_and_logged_once_per_reason_per_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(pairbeats, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    agent = Started(tmp_path).agent
    forged = encode(agent._heartbeat(), os.urandom(32))  # signed with another key

    def flood(seconds: int, per_second: int) -> None:
        start = clock[0]
        for i in range(seconds * per_second):
            clock[0] = start + i / per_second  # no drift from adding up 0.01s
            agent.on_datagram(b"garbage")
            agent.on_datagram(forged)

    def dropped(reason: str) -> float:
        value = agent.metrics.registry.get_sample_value(
            "hapair_heartbeats_dropped_total", {"reason": reason}
        )
        return value or 0.0

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    with caplog.at_level(logging.WARNING):
        flood(25, 100)  # 25 s at 100 datagrams a second of each kind
    assert dropped("malformed") == 2500 and dropped("bad_mac") == 2500
    # The first of each at once, then one summary per reason at 10 s and at 20 s.
    assert warnings() == [
        "dropped 1 heartbeat datagram(s): malformed (1 so far)",
        "dropped 1 heartbeat datagram(s): bad_mac (1 so far)",
        "dropped 1000 heartbeat datagram(s): malformed (1001 so far)",
        "dropped 1000 heartbeat datagram(s): bad_mac (1001 so far)",
        "dropped 1000 heartbeat datagram(s): malformed (2001 so far)",
        "dropped 1000 heartbeat datagram(s): bad_mac (2001 so far)",
    ]
    assert [e["message"] for e in agent.events][-6:] == warnings()
