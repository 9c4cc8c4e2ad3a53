"""The floating-IP resource-agent interface: start, stop, monitor; idempotent and bounded.

A resource agent owns the effects for one floating IP on this node. The daemon calls it from
the VIP's actor only (never concurrently for one VIP) and wraps every call in a timeout.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass


@dataclass(frozen=True)
class MonitorResult:
    """What ``monitor`` read back from the real world.

    :ivar held: this node really holds the address right now.
    :ivar detail: a short human sentence (where it is held, or what is wrong).
    """

    held: bool
    detail: str = ""


class FloatingIP(abc.ABC):
    """One floating IP as seen from one node.

    ``start`` makes this node hold the address (and announces it, even if it was already held);
    ``stop`` releases it if this node holds it; ``monitor`` says whether it is held here, compared
    exactly, never by substring. All three are idempotent and raise ``ResourceError`` on failure.
    """

    #: the VIP's name (vip1, vip2)
    name: str
    #: the address clients use
    address: str

    @abc.abstractmethod
    async def start(self) -> None:
        """Hold the address on this node and announce it."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Release the address if this node holds it."""

    @abc.abstractmethod
    async def monitor(self) -> MonitorResult:
        """Read back whether this node holds the address right now."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release sockets or clients; default does nothing."""


class FakeFloatingIP(FloatingIP):
    """An in-memory agent for unit tests and ``driver = "fake"``: records its calls."""

    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.address = address
        self.held = False
        self.calls: list[str] = []
        self.fail_next: Exception | None = None

    def _maybe_fail(self) -> None:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc

    async def start(self) -> None:
        self.calls.append("start")
        self._maybe_fail()
        self.held = True

    async def stop(self) -> None:
        self.calls.append("stop")
        self._maybe_fail()
        self.held = False

    async def monitor(self) -> MonitorResult:
        self.calls.append("monitor")
        self._maybe_fail()
        return MonitorResult(self.held, "fake")
