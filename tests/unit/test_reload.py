"""SIGHUP's reload of agent.toml (hapair.agent.pairops): applied as a whole, the loops take the
new timings, or refused as a whole (a bad value, a field that needs a restart) and nothing
changes. agent.toml is checked as the spec checks it (hapair.spec_timings, spec_checks)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from tests.unit.agentfix import Started, agent_config

from hapair.agent.config import VipConfig, dump_toml, load_agent_config
from hapair.agent.core import AgentCore
from hapair.agent.health import PING_EVERY_INTERVALS
from hapair.agent.pairops import fixed_changes
from hapair.errors import SpecError


def test_a_reload_gives_every_loop_the_new_interval(tmp_path: Path) -> None:
    s = Started(tmp_path)
    before = s.used()
    assert before["heartbeat"] == 50 and before["decide"] == 100
    assert before["ping"] == 50 * PING_EVERY_INTERVALS
    s.write(interval_ms="100", warntime_ms="250", deadtime_ms="400", failback_delay_ms="4000")
    assert s.agent.reload() is True
    after = s.used()
    assert after["heartbeat"] == 100 and after["decide"] == 200
    assert after["ping"] == 100 * PING_EVERY_INTERVALS
    assert after["reconcile"] == before["reconcile"]  # what did not change stays
    m = s.agent.controller.membership
    assert (m.interval_ms, m.warntime_ms, m.deadtime_ms) == (100, 250, 400)
    assert s.agent.status()["config"]["failback_delay_ms"] == 4000
    assert s.events()[-1] == "configuration reloaded: every loop uses the new timings"


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"interval_ms": "true"}, "interval_ms: must be an integer between 10 and 10000, not a"),
        ({"interval_ms": '"100"'}, "interval_ms: must be an integer between 10 and 10000, not a"),
        ({"auto_failback": "1"}, "auto_failback: must be true or false, not an integer (got 1)"),
        (
            {"interval_ms": "100", "warntime_ms": "150", "deadtime_ms": "150"},
            "deadtime_ms: must be at least twice interval_ms (200)",
        ),
        ({"check_path": '"/a b#c"'}, "check_path: must be an absolute URL path"),
        (
            {"log_format": '"json"'},
            "log_format cannot change while the agent runs; restart it to apply them",
        ),
        (
            {"admin_token_file": '"/etc/other"', "realtime": "false"},
            "admin_token_file, realtime cannot change while the agent runs; restart it",
        ),
        ({"aws_region": '"eu-west-1"'}, "aws_region cannot change while the agent runs"),
    ],
)
def test_a_reload_with_a_bad_or_fixed_value_is_refused_as_a_whole(
    tmp_path: Path, changes: dict[str, str], why: str
) -> None:
    s = Started(tmp_path)
    cfg, before = s.agent.cfg, s.used()
    # A valid change rides along: it is not taken either.
    s.write(failback_delay_ms="9000", **changes)
    assert s.agent.reload() is False
    assert s.agent.cfg is cfg and s.used() == before
    assert s.agent.status()["config"]["failback_delay_ms"] == 3000
    assert s.events()[-1].startswith("reload refused, keeping the old config: ")
    assert why in s.events()[-1]


def test_agent_toml_refuses_what_the_spec_refuses(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text(
        dump_toml(agent_config(tmp_path)).replace("realtime = true", 'realtime = "yes"')
    )
    with pytest.raises(SpecError, match="realtime: must be true or false, not a string"):
        load_agent_config(tmp_path / "agent.toml")


def test_the_deadline_of_an_aws_eip_is_fixed_too(tmp_path: Path) -> None:
    aws = [VipConfig(name="vip1", address="198.19.255.1", home="lb1", driver="aws_eip")]
    old = agent_config(tmp_path, vips=aws)
    assert fixed_changes(old, agent_config(tmp_path, vips=aws, action_timeout_ms=9000)) == [
        "action_timeout_ms"
    ]
    l2 = agent_config(tmp_path)
    assert fixed_changes(l2, agent_config(tmp_path, action_timeout_ms=9000)) == []


def test_the_periodic_loop_reads_its_period_before_every_round() -> None:
    """What makes a reload reach a running loop: the period is read again each round."""

    async def main() -> float:
        core = AgentCore()
        period = [10.0]
        calls: list[float] = []
        done = asyncio.Event()

        def tick() -> None:
            calls.append(time.monotonic())
            if len(calls) == 3:
                period[0] = 60.0  # a reload
            if len(calls) == 5:
                done.set()

        core._spawn_every(lambda: period[0], tick, "heartbeat")
        await asyncio.wait_for(done.wait(), 2.0)
        await core._end_tasks()
        return calls[4] - calls[0]

    # Rounds are due at 0, 10, 20, then 80 and 140 ms (never run early); with the period
    # read once, the fifth would be due at 40 ms.
    assert asyncio.run(main()) >= 0.135
