"""The agent's one safety net (:mod:`hapair.agent.core`): a bug in a loop, a VIP's actor, a
drain hook or the status API is logged "please report" with its traceback, counted, and the
agent carries on; only a FatalError ends it, with a non-zero exit status."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from hapair.agent.actor import VipActor
from hapair.agent.api import StatusApi
from hapair.agent.core import AgentCore, run_main
from hapair.agent.drain import Drainer, DrainVip
from hapair.agent.drainplan import PeerView
from hapair.agent.resources.base import FakeFloatingIP
from hapair.errors import FatalError

REPORT = "please report"


def _unexpected(core: AgentCore, where: str) -> float:
    value = core.metrics.registry.get_sample_value(
        "hapair_unexpected_errors_total", {"loop": where}
    )
    return value or 0.0


def _reports(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The net's lines, each of which must carry its traceback."""
    lines = [r for r in caplog.records if REPORT in r.getMessage()]
    assert all(r.exc_info is not None for r in lines)
    return lines


class Buggy(FakeFloatingIP):
    """A resource whose first ``bugs`` starts raise an error nobody expected."""

    def __init__(self, bugs: int, error: Exception) -> None:
        super().__init__("vip1", "198.19.255.1")
        self.bugs = bugs
        self.error = error
        self.done = asyncio.Event()

    async def start(self) -> None:
        self.calls.append("start")
        if self.bugs:
            self.bugs -= 1
            raise self.error
        self.held = True
        self.done.set()


def test_an_actor_whose_action_has_a_bug_retries_and_reports_each_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        core = AgentCore()
        r = Buggy(2, ValueError("a bug"))
        actions: list[tuple[str, bool]] = []
        actor = VipActor(
            r, 1.0, lambda v, a, ok, t, e: actions.append((a, ok)), unexpected=core.unexpected
        )
        core._spawn(actor.run(), "actor-vip1")
        actor.want(True)
        await asyncio.wait_for(r.done.wait(), 2.0)
        assert r.calls == ["start", "start", "start"]  # retried after each bug
        assert r.held is True and actor.held is True and actor.failures == 2
        assert actions == [("start", True)]
        assert len(core._tasks) == 1  # the actor still runs
        assert core.exit_code == 0 and not core._stop.is_set()
        assert _unexpected(core, "actor-vip1") == 2 and core.unexpected_errors == 2
        await core._end_tasks()

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    lines = _reports(caplog)
    assert [r.getMessage() for r in lines] == [
        "unexpected error in actor-vip1, please report; carrying on"
    ] * 2


def test_a_periodic_loop_with_a_bug_keeps_running(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        core = AgentCore()
        calls = 0
        third = asyncio.Event()

        def tick() -> None:
            nonlocal calls
            calls += 1
            if calls <= 3:
                raise KeyError("a bug")
            third.set()

        core._spawn_every(lambda: 1.0, tick, "decide")
        await asyncio.wait_for(third.wait(), 2.0)
        assert _unexpected(core, "decide") == 3
        assert len(core._tasks) == 1 and core.exit_code == 0
        await core._end_tasks()

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert len(_reports(caplog)) == 3


@pytest.mark.parametrize("fatal_in", ["actor", "loop"])
def test_a_fatal_error_ends_the_agent_with_exit_status_1(
    fatal_in: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> int:
        core = AgentCore()
        if fatal_in == "actor":
            actor = VipActor(
                Buggy(1, FatalError("the key is gone")),
                1.0,
                lambda *a: None,
                unexpected=core.unexpected,
            )
            core._spawn(actor.run(), "actor-vip1")
            actor.want(True)
        else:

            def tick() -> None:
                raise FatalError("the key is gone")

            core._spawn_every(lambda: 1.0, tick, "decide")
        await asyncio.wait_for(core._stop.wait(), 2.0)
        await core._end_tasks()
        assert core.unexpected_errors == 0
        return core.exit_code

    with caplog.at_level(logging.ERROR):
        assert run_main(main) == 1
    assert "fatal: the key is gone; exiting" in caplog.messages
    assert not _reports(caplog)


def test_a_bug_in_a_drain_hook_is_reported_and_the_move_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def buggy(argv: Sequence[str], stdin: str) -> tuple[int, str, str]:
        raise RuntimeError("a bug")

    async def main() -> None:
        core = AgentCore()
        events: list[str] = []
        live = PeerView("lb2", live=True, serving=True, holds=frozenset({"vip1"}))
        d = Drainer(
            [DrainVip("vip1", "198.19.255.1", "eth0")],
            "198.18.0.12",
            lambda: 50,
            lambda: live,
            lambda m, _: events.append(m),
            buggy,
            unexpected=core.unexpected,
        )
        done = asyncio.Event()
        actor = VipActor(
            FakeFloatingIP("vip1", "198.19.255.1"),
            1.0,
            lambda *a: done.set(),
            d,
            core.unexpected,
        )
        core._spawn(actor.run(), "actor-vip1")
        actor.want(True)
        await asyncio.wait_for(done.wait(), 2.0)
        assert actor.held is True and actor.failures == 0
        assert events == ["drain of vip1 skipped: unexpected error"]
        assert _unexpected(core, "drain of vip1") == 1
        assert _unexpected(core, "actor-vip1") == 0
        await core._end_tasks()

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert [r.getMessage() for r in _reports(caplog)] == [
        "unexpected error in drain of vip1, please report; carrying on"
    ]


class BuggyBackend(AgentCore):
    """An agent whose ``/status`` has a bug."""

    def status(self) -> dict[str, Any]:
        raise RuntimeError("a bug")

    async def set_standby(self, on: bool) -> str:
        return "ok"


def test_a_bug_behind_the_status_api_is_reported_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        backend = BuggyBackend()
        api = StatusApi(backend, "s3cret")
        await api.start("127.0.0.1", 0, None)
        port = api.servers[0].sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /status HTTP/1.1\r\n\r\n")
        await writer.drain()
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        assert data.startswith(b"HTTP/1.1 503 ")
        assert _unexpected(backend, "status API") == 1
        assert backend.metrics.registry.get_sample_value(
            "hapair_api_errors_total", {"reason": "internal"}
        )
        await api.close()

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert [r.getMessage() for r in _reports(caplog)] == [
        "unexpected error in status API, please report; carrying on"
    ]
