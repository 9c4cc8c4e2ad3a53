"""Where each floating IP should live over N healthy load balancers; pure and deterministic.

Rendezvous (highest-random-weight) hashing ranks the nodes for every VIP by
``sha256(vip | node)``; a *balance correction* then caps every node at its quota, so that loads
differ by at most one VIP (``max - min <= 1``). The current owners are an input: a VIP stays
where it is while its owner is healthy and not above its quota, so

- a node that leaves moves only its own VIPs (the others absorb them, least loaded first, each
  VIP going to its best-ranked node that still has room);
- a node that returns takes back its share, from the nodes above their quota only, starting
  with the VIPs placed away from their first choice (often the ones it held before);
- with nothing changed, nothing moves (a balanced placement is a fixed point).

:func:`place` computes the target; :func:`moves` lists the steps to reach it, which the agent
carries out one VIP at a time, make-before-break. Who actually holds a VIP is granted by etcd
(:mod:`hapair.coord.etcd_store`), never by this module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def score(vip: str, node: str) -> int:
    """The rendezvous weight of ``node`` for ``vip`` (higher wins); stable across processes."""
    digest = hashlib.sha256(f"{vip}|{node}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def ranking(vip: str, nodes: Iterable[str]) -> list[str]:
    """``nodes`` in ``vip``'s order of preference (highest weight first, then name)."""
    return sorted(nodes, key=lambda n: (-score(vip, n), n))


def quotas(vips: int, nodes: Iterable[str], load: Mapping[str, int]) -> dict[str, int]:
    """How many VIPs each node should hold: ``vips // len(nodes)``, one more for the
    ``vips % len(nodes)`` nodes that hold the most now (ties by name), so that reaching the
    quotas moves as few VIPs as possible."""
    names = sorted(set(nodes))
    if not names:
        return {}
    base, extra = divmod(vips, len(names))
    by_load = sorted(names, key=lambda n: (-load.get(n, 0), n))
    return {n: base + (1 if i < extra else 0) for i, n in enumerate(by_load)}


def place(
    vips: Iterable[str], healthy: Iterable[str], current: Mapping[str, str | None] | None = None
) -> dict[str, str | None]:
    """The target owner of every VIP.

    :param vips: the VIP names (or addresses); order does not matter.
    :param healthy: the nodes allowed to hold VIPs now (healthy, eligible, not in standby).
    :param current: who holds each VIP now (missing or ``None``: nobody); owners that are not
        healthy are ignored.
    :returns: ``{vip: node}``, every VIP on a healthy node with loads within one of each other;
        ``{vip: None}`` for all when no node is healthy.
    """
    names = sorted(set(vips))
    nodes = sorted(set(healthy))
    if not nodes:
        return dict.fromkeys(names)
    current = current or {}
    kept: dict[str, list[str]] = {n: [] for n in nodes}
    for v in names:
        owner = current.get(v)
        if owner in kept:
            kept[owner].append(v)
    quota = quotas(len(names), nodes, {n: len(held) for n, held in kept.items()})
    target: dict[str, str | None] = dict.fromkeys(names)
    for node, held in kept.items():
        # Above quota: keep the VIPs that rank this node best among the healthy (misplaced
        # ones go first), so a returning node gets back the VIPs that prefer it.
        first = {v: ranking(v, nodes)[0] for v in held}
        held.sort(key=lambda v: (first[v] != node, -score(v, node), v))
        for v in held[: quota[node]]:
            target[v] = node
    load = {n: min(len(kept[n]), quota[n]) for n in nodes}
    free = [v for v in names if target[v] is None]
    # The VIPs with the strongest preference choose first; each takes its best node with room.
    free.sort(key=lambda v: (-score(v, ranking(v, nodes)[0]), v))
    for v in free:
        for n in ranking(v, nodes):
            if load[n] < quota[n]:
                target[v] = n
                load[n] += 1
                break
    return target


@dataclass(frozen=True)
class Move:
    """One VIP to move: ``source`` (None: nobody holds it) to ``target`` (None: release it)."""

    vip: str
    source: str | None
    target: str | None

    @property
    def reason(self) -> str:
        """A lowercase sentence for the log."""
        if self.source is None:
            return f"{self.vip}: unheld, {self.target} takes it"
        if self.target is None:
            return f"{self.vip}: no healthy node, {self.source} releases it"
        return f"{self.vip}: {self.source} -> {self.target} to balance the healthy nodes"


def moves(current: Mapping[str, str | None], target: Mapping[str, str | None]) -> list[Move]:
    """The moves from ``current`` to ``target``: unheld VIPs first (they serve nobody), then
    the others by VIP name; the agent makes them one at a time, make-before-break."""
    out = [Move(v, current.get(v), t) for v, t in sorted(target.items()) if current.get(v) != t]
    return sorted(out, key=lambda m: (m.source is not None, m.vip))


def spread(target: Mapping[str, str | None], nodes: Iterable[str]) -> int:
    """``max - min`` of the number of VIPs per node (0 when there are no nodes)."""
    counts = dict.fromkeys(nodes, 0)
    for owner in target.values():
        if owner is not None:
            counts[owner] = counts.get(owner, 0) + 1
    return max(counts.values()) - min(counts.values()) if counts else 0
