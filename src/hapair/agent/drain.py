"""The failback drain: connections the old holder of a VIP accepted keep working after a move.

Make-before-break moves a VIP (failback, ``standby``/``online``) while both nodes serve. A
connection that completed its handshake with the releaser just before the taker's gratuitous
ARP sends its next packets to the taker, whose kernel has no socket for it and resets it. For
a short drain period (``ha.drain_ms``) after a move between two live nodes:

- **the taker forwards what it does not know to the releaser.** The LB's nftables table marks
  packets to a VIP in the set ``drain_vips`` that are not a SYN and that conntrack does not know
  (state new or invalid) with :data:`MARK`; an ``ip rule`` sends marked packets to table
  :data:`TABLE`, whose default route has the releaser's own VPC address as next hop. The kernel
  looks its ``local`` table up first, so the ``local`` rule moves behind ours
  (:data:`LOCAL_PREF`) while a drain runs. The set's elements carry a timeout: a stalled or
  dead agent stops forwarding by itself.
- **the releaser keeps the address on** ``lo`` instead of deleting it: its kernel still
  delivers those packets to HAProxy's established sockets, and, with ``arp_ignore=1``, it never
  answers ARP for it.

The node's kernel needs (the lab sets them, ``platforms/lab/network.py``): forwarding on the
VIPs' interface (the LB's nftables forward chain passes only the drain's mark),
``send_redirects=0``, ``arp_ignore=1`` (a VIP on ``lo`` is not answered for), and liberal
TCP conntrack (``nf_conntrack_tcp_be_liberal=1``: once a drain is over, the next packet of a
connection the taker handed back is answered with a reset, not dropped as out of window).

Nothing is done after a crash (a dead or unhealthy peer has nothing to serve). When the period
ends each side removes every rule, route, set element and address it added; the agent removes
leftovers of a killed predecessor when it starts (:meth:`Drainer.clean`) and ends drains when it
stops (:meth:`Drainer.close`).

The decisions and the commands are pure functions (:mod:`hapair.agent.drainplan`);
:class:`Drainer` runs them (``nft``, ``ip``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hapair.agent.actor import report_unexpected
from hapair.agent.drainplan import (
    EXPIRY_MARGIN_MS,
    LINGER_IF,
    TABLE,
    PeerView,
    nft_forward,
    nft_unforward,
    on_release,
    on_take,
    peer_view,
    route_line,
    rule_lines,
)
from hapair.agent.membership import PeerState
from hapair.errors import FatalError

if TYPE_CHECKING:
    from hapair.agent.config import AgentConfig
    from hapair.agent.membership import Membership

logger = logging.getLogger(__name__)

#: On shutdown, drains still running get at most this long before they are ended.
CLOSE_WAIT_S = 2.0
#: Bound on one ``nft`` or ``ip`` command, and on everything one hook of the actor does.
COMMAND_TIMEOUT_S = 1.0
HOOK_TIMEOUT_S = 2.0


# ---------------------------------------------------------------------- effects
#: Runs ``argv`` with ``stdin``; returns (exit status, stdout, stderr).
Runner = Callable[[Sequence[str], str], Awaitable[tuple[int, str, str]]]


async def run_command(argv: Sequence[str], stdin: str = "") -> tuple[int, str, str]:
    """Run ``argv`` (no shell), bounded by :data:`COMMAND_TIMEOUT_S`."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT_S):
            out, err = await proc.communicate(stdin.encode())
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return 124, "", f"{argv[0]} timed out after {COMMAND_TIMEOUT_S} s"
    return proc.returncode or 0, out.decode(), err.decode()


@dataclass(frozen=True)
class DrainVip:
    """One VIP the drain manages (an ``l2`` VIP): name, address, interface."""

    name: str
    address: str
    ifname: str


class Drainer:
    """Runs the drains of one node: forwarding after a take, ``lo`` after a release.

    :param vips: the VIPs held as addresses on an interface (``l2``); others are left alone.
    :param peer_address: the peer's own VPC address (the next hop of handed-back packets).
    :param drain_ms: read at each move (a reload takes effect).
    :param peer: this node's view of its peer, read at each move.
    :param event: logs a sentence once, at a level.
    :param unexpected: the agent's safety net, told where an error nobody expected happened
        (called inside the ``except`` block: it logs "please report" and counts it).
    """

    def __init__(
        self,
        vips: Sequence[DrainVip],
        peer_address: str,
        drain_ms: Callable[[], int],
        peer: Callable[[], PeerView],
        event: Callable[[str, int], None],
        runner: Runner = run_command,
        unexpected: Callable[[str], None] = report_unexpected,
    ) -> None:
        self.vips = {v.name: v for v in vips}
        self.peer_address = peer_address
        self.drain_ms = drain_ms
        self.peer = peer
        self.event = event
        self.runner = runner
        self.unexpected = unexpected
        #: running drains: (kind "forward"/"linger", vip) -> (ends at, monotonic s; its timer)
        self._ends: dict[tuple[str, str], tuple[float, asyncio.Task[None]]] = {}
        self._lock = asyncio.Lock()

    def active(self) -> dict[str, list[str]]:
        """The VIPs draining now, by kind ("forward": taken, "linger": released)."""
        out: dict[str, list[str]] = {"forward": [], "linger": []}
        for kind, vip in sorted(self._ends):
            out[kind].append(vip)
        return out

    # -------------------------------------------------------------- the actor's hooks
    async def taking(self, vip: str, held_before: bool | None) -> None:
        """Called by the actor just before it adds and announces ``vip``."""
        await self._bounded(vip, self._taking(vip, held_before))

    async def releasing(self, vip: str, held_before: bool | None) -> None:
        """Called by the actor just before it removes ``vip`` from its interface."""
        await self._bounded(vip, self._releasing(vip, held_before))

    async def _bounded(self, vip: str, hook: Awaitable[None]) -> None:
        """Run a hook within :data:`HOOK_TIMEOUT_S`; a failure is logged, never raised (the
        move goes on without a drain); an unexpected one goes through the safety net first."""
        try:
            async with asyncio.timeout(HOOK_TIMEOUT_S):
                await hook
        except FatalError:
            raise
        except (OSError, TimeoutError) as exc:
            why = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            self.event(f"drain of {vip} skipped: {why}", logging.WARNING)
        except Exception:
            self.unexpected(f"drain of {vip}")
            self.event(f"drain of {vip} skipped: unexpected error", logging.WARNING)

    async def _taking(self, vip: str, held_before: bool | None) -> None:
        v = self.vips.get(vip)
        if v is None:
            return
        async with self._lock:
            if ("linger", vip) in self._ends:
                await self._end("linger", vip, "taken back")
            verdict = on_take(vip, self.drain_ms(), held_before, self.peer())
            if not verdict.drain:
                logger.debug("no drain for %s: %s", vip, verdict.reason)
                return
            ms = self.drain_ms()
            lines = rule_lines(await self._rules(), True)
            ok = await self._ip([*lines, route_line(self.peer_address, v.ifname)])
            ok = ok and await self._nft(nft_forward(v.address, ms + EXPIRY_MARGIN_MS))
            if not ok:
                self.event(
                    f"drain of {vip} not started: its rules could not be installed", logging.WARNING
                )
                await self._remove_forwarding([vip])
                return
            self.event(f"draining {vip}: {verdict.reason}", logging.INFO)
            self._arm("forward", vip, ms)

    async def _releasing(self, vip: str, held_before: bool | None) -> None:
        v = self.vips.get(vip)
        if v is None:
            return
        async with self._lock:
            if ("forward", vip) in self._ends:
                await self._end("forward", vip, "released")
            verdict = on_release(vip, self.drain_ms(), held_before, self.peer())
            if not verdict.drain:
                logger.debug("no drain for %s: %s", vip, verdict.reason)
                return
            if not await self._ip([f"addr replace {v.address}/32 dev {LINGER_IF}"]):
                self.event(
                    f"drain of {vip} not started: cannot add it to {LINGER_IF}", logging.WARNING
                )
                return
            self.event(f"draining {vip}: {verdict.reason}", logging.INFO)
            self._arm("linger", vip, self.drain_ms())

    # -------------------------------------------------------------- lifecycle
    async def clean(self) -> None:
        """Remove whatever a drain of an earlier agent left behind (it was killed)."""
        async with self._lock:
            await self._remove_forwarding(list(self.vips))
            await self._remove_linger(list(self.vips))

    async def close(self) -> None:
        """Shutdown: let running drains finish (at most :data:`CLOSE_WAIT_S`), then remove
        everything."""
        if self._ends:
            left = max(end for end, _ in self._ends.values()) - time.monotonic()
            await asyncio.sleep(min(max(left, 0.0), CLOSE_WAIT_S))
        for _, task in list(self._ends.values()):
            task.cancel()
        self._ends.clear()
        await self.clean()

    # -------------------------------------------------------------- internals
    def _arm(self, kind: str, vip: str, ms: int) -> None:
        old = self._ends.get((kind, vip))
        if old is not None:
            old[1].cancel()
        task = asyncio.get_running_loop().create_task(
            self._expire(kind, vip, ms / 1000), name=f"drain-{kind}-{vip}"
        )
        self._ends[(kind, vip)] = (time.monotonic() + ms / 1000, task)

    async def _expire(self, kind: str, vip: str, after: float) -> None:
        await asyncio.sleep(after)
        async with self._lock:
            entry = self._ends.get((kind, vip))
            if entry is not None and entry[1] is asyncio.current_task():
                await self._end(kind, vip, "its period is over")

    async def _end(self, kind: str, vip: str, why: str) -> None:
        """End one drain now (lock held)."""
        entry = self._ends.pop((kind, vip), None)
        if entry is not None and entry[1] is not asyncio.current_task():
            entry[1].cancel()
        if kind == "forward":
            await self._remove_forwarding([vip])
        else:
            await self._remove_linger([vip])
        what = "its forwarding rule" if kind == "forward" else f"its address on {LINGER_IF}"
        self.event(f"drain of {vip} over ({why}): {what} removed", logging.INFO)

    async def _remove_forwarding(self, vips: Sequence[str]) -> None:
        addresses = [self.vips[v].address for v in vips]
        await self._nft(nft_unforward(addresses), quiet=True)
        if any(kind == "forward" for kind, _ in self._ends):
            return  # another VIP still forwards: the rules and the route stay
        await self._ip(rule_lines(await self._rules(), False), force=True)
        await self._ip([f"route flush table {TABLE}"], force=True, quiet=True)

    async def _remove_linger(self, vips: Sequence[str]) -> None:
        lines = [f"addr del {self.vips[v].address}/32 dev {LINGER_IF}" for v in vips]
        await self._ip(lines, force=True, quiet=True)

    async def _rules(self) -> list[dict[str, Any]]:
        rc, out, err = await self.runner(["ip", "-j", "-4", "rule", "show"], "")
        if rc != 0:
            logger.warning("cannot read the routing rules: %s", err.strip())
            return []
        try:
            rules: list[dict[str, Any]] = json.loads(out or "[]")
        except ValueError:
            return []
        return rules

    async def _ip(self, lines: Sequence[str], force: bool = False, quiet: bool = False) -> bool:
        if not lines:
            return True
        argv = ["ip", *(["-force"] if force else []), "-batch", "-"]
        rc, _, err = await self.runner(argv, "\n".join(lines) + "\n")
        if rc != 0 and not quiet:
            logger.warning("drain: ip %s failed: %s", "; ".join(lines), err.strip())
        return rc == 0

    async def _nft(self, script: str, quiet: bool = False) -> bool:
        rc, _, err = await self.runner(["nft", "-f", "-"], script)
        if rc != 0 and not quiet:
            logger.warning("drain: nft failed: %s", err.strip())
        return rc == 0


def make_drainer(
    config: Callable[[], AgentConfig],
    membership: Callable[[], Membership],
    unexpected: Callable[[str], None] = report_unexpected,
) -> Drainer:
    """The daemon's :class:`Drainer`: its ``l2`` VIPs, the peer's own address as next hop,
    ``drain_ms`` and the peer's liveness read at each move (a reload takes effect), errors
    nobody expected reported to ``unexpected`` (the agent's safety net)."""
    cfg = config()
    vips = [DrainVip(v.name, v.address, v.ifname) for v in cfg.vips if v.driver == "l2"]

    def peer() -> PeerView:
        m = membership()
        return peer_view(cfg.peer, m.current in (PeerState.UP, PeerState.WARN), m.last())

    return Drainer(
        vips, cfg.peer_probe_address, lambda: config().drain_ms, peer, _log, unexpected=unexpected
    )


def _log(sentence: str, level: int) -> None:
    """Drains are logged, not kept in ``/status``'s short list of events (moves are)."""
    logger.log(level, "%s", sentence)
