"""Two loops of the N-node agent that need nothing of it but their arguments: a periodic
call that keeps its own timing, and the reconcile pass that reads back what each VIP's
address really is (the pair's daemon does the same inside its class)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from hapair.agent.actor import VipActor
from hapair.agent.metrics import Metrics
from hapair.errors import FatalError

logger = logging.getLogger(__name__)


async def every(
    period_s: float,
    fn: Callable[[], Any],
    name: str,
    unexpected: Callable[[str], None],
    metrics: Metrics,
) -> None:
    """Call ``fn`` (awaiting it if it returns a coroutine) every ``period_s``; an unexpected
    error goes to ``unexpected(name)`` and the loop carries on; a round that starts more than
    one period late is counted and the schedule restarts from now."""
    next_at = time.monotonic()
    while True:
        try:
            result = fn()
            if asyncio.iscoroutine(result):
                await result
        except (FatalError, asyncio.CancelledError):
            raise
        except Exception:
            unexpected(name)
        next_at += period_s
        delay = next_at - time.monotonic()
        if delay < -period_s:
            metrics.cycle_overruns.inc()
            next_at, delay = time.monotonic(), 0
        await asyncio.sleep(max(delay, 0))


async def reconcile(actors: Iterable[VipActor], timeout_s: float, metrics: Metrics) -> None:
    """Read back each VIP's address (skipping actors in the middle of an action, and readings
    taken across one) and hand it to the actor, which repairs any drift from its wish."""
    for actor in actors:
        if actor.busy:
            continue
        generation = actor.generation
        try:
            result = await asyncio.wait_for(actor.resource.monitor(), timeout_s)
        except (OSError, TimeoutError) as exc:
            logger.warning("monitor of %s failed: %s", actor.resource.name, exc)
            continue
        if actor.busy or actor.generation != generation:
            continue
        if actor.desired is not None and result.held != actor.desired:
            metrics.drift.labels(actor.resource.name).inc()
        actor.observed(result.held)
