"""One actor per VIP: its resource-agent actions never run concurrently; the newest wish wins.

The daemon sets ``desired``; the actor compares it with what it last read back and calls
``start`` or ``stop``, each bounded by a timeout. A failed action is retried with backoff and
reported (log + metric), never forgotten: the actor keeps trying until the real state matches
the newest desired state. An error nobody expected (a bug) goes through the agent's safety net
(logged "please report" with its traceback, counted) and is retried the same way; only a
:class:`~hapair.errors.FatalError` ends the actor, and with it the agent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from hapair.agent.resources.base import FloatingIP
from hapair.errors import FatalError, HapairError

logger = logging.getLogger(__name__)

#: Called after every action: (vip, action "start"/"stop", ok, seconds taken, error or "").
OnAction = Callable[[str, str, bool, float, str], None]
#: The safety net's report of an unexpected error, called inside the ``except`` block with
#: where it happened (:meth:`hapair.agent.core.AgentCore.unexpected`).
OnUnexpected = Callable[[str], None]

#: The first and the longest wait before an action that failed is tried again (s).
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 2.0


def report_unexpected(where: str) -> None:
    """The safety net's sentence, for an actor built without an agent (tests, tools)."""
    logger.exception("unexpected error in %s, please report; carrying on", where)


class DrainHooks(Protocol):
    """The failback drain's side of a move (:class:`hapair.agent.drain.Drainer`); both hooks
    handle their own failures (a drain that cannot start never holds a move up)."""

    async def taking(self, vip: str, held_before: bool | None) -> None:
        """Just before ``vip`` is added and announced here."""

    async def releasing(self, vip: str, held_before: bool | None) -> None:
        """Just before ``vip`` is removed from this node's interface."""


class VipActor:
    """Serialises the actions on one floating IP.

    With ``drain``, a take first arranges for the connections the peer still serves to be
    handed to it, and a release keeps serving the ones the peer hands back (see
    :mod:`hapair.agent.drain`).
    """

    def __init__(
        self,
        resource: FloatingIP,
        timeout: float,
        on_action: OnAction,
        drain: DrainHooks | None = None,
        unexpected: OnUnexpected = report_unexpected,
    ) -> None:
        self.resource = resource
        self.timeout = timeout
        self.on_action = on_action
        self.drain = drain
        self.unexpected = unexpected
        self.desired: bool | None = None
        #: what this node really holds, as last read back (monitor) or just done
        self.held: bool | None = None
        self.failures = 0
        self._wake = asyncio.Event()
        self._announce = False
        self._acting = False
        #: counts actions begun; a monitor reading taken across a change of it is stale
        self.generation = 0

    @property
    def busy(self) -> bool:
        """An action runs or is pending: what ``monitor`` reads now may be mid-change."""
        return self._acting or self._wake.is_set()

    def want(self, desired: bool, announce: bool = False) -> None:
        """Ask for the VIP to be held (True) or not; ``announce`` re-sends a start even when
        the address is already held (to send gratuitous ARPs again)."""
        if desired != self.desired or announce:
            self.desired = desired
            self._announce = self._announce or (announce and desired)
            self._wake.set()

    def observed(self, held: bool) -> None:
        """Record what ``monitor`` read back; wakes the actor if it differs from the wish."""
        self.held = held
        if self.desired is not None and held != self.desired:
            self._wake.set()

    async def run(self) -> None:
        """The actor's loop; runs until cancelled. A failed action, expected or not, is tried
        again after a backoff (doubling up to :data:`BACKOFF_MAX_S`) against the newest wish;
        a :class:`~hapair.errors.FatalError` ends it."""
        backoff = BACKOFF_MIN_S
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                ok = await self._act()
            except FatalError:
                raise
            except Exception:
                self._acting = False
                self.failures += 1
                self.unexpected(f"actor-{self.resource.name}")
                ok = False
            if ok is None:
                continue
            if ok:
                backoff = BACKOFF_MIN_S
                continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            self._wake.set()  # retry against the newest wish

    async def _act(self) -> bool | None:
        """Carry out the newest wish once: None when there is nothing to do, else whether the
        action succeeded (an expected failure is reported through ``on_action``)."""
        desired = self.desired
        if desired is None or (desired == self.held and not self._announce):
            return None
        action = "start" if desired else "stop"
        self._announce = False
        t0 = time.monotonic()
        self._acting = True
        self.generation += 1
        try:
            async with asyncio.timeout(self.timeout):
                if desired:
                    if self.drain is not None:
                        await self.drain.taking(self.resource.name, self.held)
                    await self.resource.start()
                else:
                    if self.drain is not None:
                        await self.drain.releasing(self.resource.name, self.held)
                    await self.resource.stop()
        except FatalError:
            raise
        except (HapairError, OSError, TimeoutError) as exc:
            self._acting = False
            self.failures += 1
            err = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            self.on_action(self.resource.name, action, False, time.monotonic() - t0, err)
            return False
        self._acting = False
        self.held = desired
        self.on_action(self.resource.name, action, True, time.monotonic() - t0, "")
        return True
