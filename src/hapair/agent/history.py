"""What the dashboard remembers: each VIP's moves (this node's own, and the peer's as its
heartbeats report them), the failovers among them, and what the agent process costs.

The daemon feeds a :class:`History` two things: every move it makes (:meth:`History.record_move`,
with the controller's reason) and every accepted heartbeat next to the one before it
(:meth:`History.observe_peer`), from which a change of what the peer holds is recorded as the
peer's move. A move of the peer while this node did not run (or did not hear it) is not seen.
Bounded: at most :data:`MAX_MOVES` moves are kept. Pure bookkeeping, no I/O but the clock, until
:meth:`History.attach` gives it a :class:`~hapair.agent.historyfile.HistoryFile`: then what was
kept before the agent's restart is loaded and every new record appended to it.
"""

from __future__ import annotations

import collections
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from hapair.agent.controller import Move
    from hapair.agent.historyfile import HistoryFile
    from hapair.agent.protocol import Heartbeat

MAX_MOVES: Final = 200
"""Moves kept (both nodes, every VIP); the oldest go first."""
NOT_FAILOVERS: Final = frozenset({"failback", "startup", "settle", "orphan", "holds"})
"""Labels of takes that are not a failover (the home node taking its own VIP, nobody held it,
or a holder first heard of)."""


def stamp(t: float) -> str:
    """``HH:MM:SS.mmm`` in local time, as the agent's events are stamped."""
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


@dataclass(frozen=True)
class MoveRecord:
    """One change of who holds a VIP.

    :ivar t: when (seconds since the epoch).
    :ivar time: the same as ``HH:MM:SS.mmm``.
    :ivar vip: the VIP.
    :ivar node: the node that took or released it.
    :ivar take: True when ``node`` started to hold it.
    :ivar label: the move's reason label (``failover``, ``failback``, ...), or ``seen`` for a
        move of the peer read from its heartbeats, ``holds`` for what the peer held when first
        heard of.
    :ivar reason: the decision's reason in words.
    :ivar gap_ms: for a failover, how long the previous holder had been silent when the VIP
        was taken (the time clients could not reach it); None when nothing was missed
        (make-before-break) or not known.
    """

    t: float
    time: str
    vip: str
    node: str
    take: bool
    label: str
    reason: str
    gap_ms: float | None = None


class History:
    """The moves one agent made or saw (see the module docstring).

    :param node: this node's name.
    :param peer: the peer's name.
    :param homes: each VIP's home node.
    """

    def __init__(self, node: str, peer: str, homes: dict[str, str]) -> None:
        self.node = node
        self.peer = peer
        self.homes = dict(homes)
        self.moves: collections.deque[MoveRecord] = collections.deque(maxlen=MAX_MOVES)
        self.store: HistoryFile | None = None

    def attach(self, store: HistoryFile) -> int:
        """Keep the history in ``store`` from now on: its records (those of earlier runs) go
        before the ones kept so far, and every new record is appended to it.

        :returns: how many records were loaded.
        """
        loaded = store.load()
        self.moves = collections.deque([*loaded, *self.moves], maxlen=MAX_MOVES)
        self.store = store
        return len(loaded)

    def _add(
        self, vip: str, node: str, take: bool, label: str, reason: str, gap: float | None
    ) -> None:
        t = time.time()
        rec = MoveRecord(t, stamp(t), vip, node, take, label, reason, gap)
        self.moves.append(rec)
        if self.store is not None:
            self.store.add(rec, self.moves)

    def record_move(self, move: Move) -> None:
        """A move this node makes (a take or a release), with the controller's reason."""
        gap = None if move.failover_ms is None else round(move.failover_ms, 1)
        self._add(move.vip, self.node, move.take, move.label, move.reason, gap)

    def observe_peer(self, before: Heartbeat | None, hb: Heartbeat) -> None:
        """An accepted heartbeat of the peer, next to the previous one (None: the first this
        process heard): records each VIP it took or released in between (label ``seen``), or,
        from a first heartbeat or one of a restarted peer, what it holds (label ``holds``)."""
        fresh = before is None or before.boot_id != hb.boot_id
        if not fresh and before is not None and before.held == hb.held:
            return  # the common case, every interval: nothing changed
        if fresh:
            why = "first heartbeat heard" if before is None else "it restarted"
            for vip in sorted(hb.held):
                self._add(vip, hb.node, True, "holds", f"{why}: {hb.node} reports holding it", None)
            return
        assert before is not None
        said = f"{hb.node}'s heartbeat reports"
        for vip in sorted(hb.held - before.held):
            self._add(vip, hb.node, True, "seen", f"{said} holding it", None)
        for vip in sorted(before.held - hb.held):
            self._add(vip, hb.node, False, "seen", f"{said} it let go", None)

    def is_failover(self, m: MoveRecord) -> bool:
        """A take of a VIP away from its home node (a failover or a planned move)."""
        return m.take and m.label not in NOT_FAILOVERS and self.homes.get(m.vip) != m.node

    def timeline(self, vip: str) -> list[dict[str, Any]]:
        """The moves of ``vip``, oldest first, as JSON-ready dicts."""
        return [asdict(m) for m in self.moves if m.vip == vip]

    def failovers(self) -> list[dict[str, Any]]:
        """The takes of a VIP away from its home node, oldest first."""
        return [asdict(m) for m in self.moves if self.is_failover(m)]


SAME_MOVE_S: Final = 5.0
"""A move the peer recorded and one this node saw from its heartbeats are the same when they
are this close in time (the clocks of the two nodes may differ a little)."""


def merge_failovers(
    mine: list[dict[str, Any]], theirs: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """This node's failovers and those its peer made itself, oldest first, each move once.

    A node's history misses what its peer did while it was down; the peer's own records fill
    that in. A move of the peer this node saw (label ``seen``) is shown as the peer recorded
    it (with its reason and gap); the peer's ``seen`` records (of this node's moves) are left
    out, this node has its own.
    """

    def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
        return (a["vip"], a["node"]) == (b["vip"], b["node"]) and abs(a["t"] - b["t"]) <= (
            SAME_MOVE_S
        )

    made = [p for p in theirs if p["label"] != "seen"]
    kept = [m for m in mine if m["label"] != "seen" or not any(same(m, p) for p in made)]
    return sorted(kept + made, key=lambda m: float(m["t"]))


def process_usage() -> dict[str, Any]:
    """This process: pid, CPU seconds used so far (user + system) and resident memory."""
    t = os.times()
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        rss: int | None = pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        rss = None
    return {"pid": os.getpid(), "cpu_seconds": round(t.user + t.system, 3), "rss_bytes": rss}


class CpuMeter:
    """CPU use in percent of one core, from successive readings of a CPU-seconds counter
    (this process's, or the peer's as its ``/status`` reports it).

    :param window_s: the percentage is measured over at least this long.
    """

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self.samples: collections.deque[tuple[float, float]] = collections.deque(maxlen=64)
        self.percent: float | None = None

    def add(self, cpu_seconds: float, now: float | None = None) -> float | None:
        """Add a reading; returns the CPU percentage over the last window (None: too few
        readings yet). A counter that went back (a restart) starts over."""
        now = time.monotonic() if now is None else now
        if self.samples and cpu_seconds < self.samples[-1][1]:
            self.samples.clear()
            self.percent = None
        self.samples.append((now, cpu_seconds))
        old = [s for s in self.samples if now - s[0] >= self.window_s]
        if old:
            t0, c0 = old[-1]
            self.percent = round(100.0 * (cpu_seconds - c0) / (now - t0), 2)
            while self.samples and self.samples[0] != old[-1]:
                self.samples.popleft()
        return self.percent
