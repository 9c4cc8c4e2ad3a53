"""The per-VIP actor: serialised actions, newest wish wins, failures retried and reported."""

from __future__ import annotations

import asyncio

from hapair.agent.actor import VipActor
from hapair.agent.resources.base import FakeFloatingIP
from hapair.errors import ResourceError


def _run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_newest_wish_wins_and_actions_are_serialised() -> None:
    async def main() -> None:
        r = FakeFloatingIP("vip1", "198.19.255.1")
        log: list[tuple[str, str, bool]] = []
        actor = VipActor(r, 1.0, lambda v, a, ok, t, e: log.append((v, a, ok)))
        task = asyncio.create_task(actor.run())
        actor.want(True)
        actor.want(False)
        actor.want(True)  # only the newest matters
        await asyncio.sleep(0.05)
        assert r.held is True
        assert r.calls == ["start"]
        assert log == [("vip1", "start", True)]
        actor.want(False)
        await asyncio.sleep(0.05)
        assert r.held is False and actor.held is False
        task.cancel()

    _run(main())


def test_a_failed_action_is_retried_and_reported() -> None:
    async def main() -> None:
        r = FakeFloatingIP("vip1", "198.19.255.1")
        r.fail_next = ResourceError("netlink said no", code=1)
        log: list[tuple[str, bool, str]] = []
        actor = VipActor(r, 1.0, lambda v, a, ok, t, e: log.append((a, ok, e)))
        task = asyncio.create_task(actor.run())
        actor.want(True)
        await asyncio.sleep(0.3)
        assert log[0] == ("start", False, "netlink said no")
        assert log[1] == ("start", True, "")
        assert r.held is True and actor.failures == 1
        task.cancel()

    _run(main())


def test_announce_restarts_a_held_vip_and_drift_wakes_the_actor() -> None:
    async def main() -> None:
        r = FakeFloatingIP("vip1", "198.19.255.1")
        actor = VipActor(r, 1.0, lambda *a: None)
        task = asyncio.create_task(actor.run())
        actor.want(True)
        await asyncio.sleep(0.02)
        actor.want(True, announce=True)
        await asyncio.sleep(0.02)
        assert r.calls == ["start", "start"]
        r.held = False  # deleted behind our back
        actor.observed(False)
        await asyncio.sleep(0.02)
        assert r.held is True and r.calls[-1] == "start"
        task.cancel()

    _run(main())


def test_a_hung_action_times_out() -> None:
    class Hung(FakeFloatingIP):
        async def start(self) -> None:
            await asyncio.sleep(10)

    async def main() -> None:
        log: list[str] = []
        actor = VipActor(Hung("vip1", "x"), 0.05, lambda v, a, ok, t, e: log.append(e))
        task = asyncio.create_task(actor.run())
        actor.want(True)
        await asyncio.sleep(0.1)
        assert log and log[0] == "timed out"
        task.cancel()

    _run(main())
