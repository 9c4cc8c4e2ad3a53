"""The ``reason`` label of a VIP move (the moves metric and the dashboard's timeline). Pure.

Placement (:mod:`hapair.agent.placement`) says in a sentence why it wants what it wants; the
metric needs one word from a closed set. The word is read from the same facts the decision
was made on, never from the sentence's wording:

- a **take** from a peer that is dead (``failover``, also by a node that is not eligible
  itself, when the dead peer held the VIP); by a node that is not eligible, of a VIP nobody
  holds (``orphan``, rule 10: an error page beats a connect timeout); from a live peer that is
  unhealthy (``failover``), in standby (``standby``) or cut off from the ping nodes
  (``isolated``); from an eligible peer that does not hold the VIP (``startup``: the pair
  starting, nobody holds it yet); from an eligible peer that holds it, by its home node
  (``failback``);
- a **release** by a node that is not eligible says why (``unhealthy``, ``standby``,
  ``isolated``); by an eligible node, to the VIP's home node (``failback``);
- ``settle`` is a VIP found configured at start and let go because the peer holds it, or a
  home VIP held by both that a node whose fault just ended lets go (placement rule 13)
  (:class:`~hapair.agent.controller.Controller` decides that, before placement);
- anything else is ``other`` (no rule leads there today; a test says so).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final, Literal, get_args

from hapair.agent.placement import ClusterView, NodeFacts, peer_facts

MoveLabel = Literal[
    "failover",
    "failback",
    "startup",
    "standby",
    "unhealthy",
    "isolated",
    "orphan",
    "settle",
    "other",
]
"""The closed set of ``reason`` labels of the moves metric."""

MOVE_LABELS: Final[tuple[MoveLabel, ...]] = get_args(MoveLabel)
"""Every :data:`MoveLabel`, in order."""


def _fault(node: NodeFacts, other: NodeFacts) -> MoveLabel | None:
    """Why an alive node is not eligible (placement's rule 1, in its order), or ``None``."""
    if not node.healthy:
        return "unhealthy"
    if node.standby:
        return "standby"
    if not node.pingable and other.pingable:
        return "isolated"
    return None


def move_label(view: ClusterView, vip: str, take: bool) -> MoveLabel:
    """The label of this node taking (``take``) or letting go of ``vip``, decided on ``view``.

    :param view: the snapshot placement decided on.
    :param vip: the VIP that moves.
    :param take: True for a take, False for a release.
    :raises KeyError: ``vip`` is not one of the view's VIPs.
    """
    home = dict(view.vips)[vip]
    me = replace(view.me, alive=True)
    peer = peer_facts(view)
    if peer is None:
        return "startup"  # the peer not heard yet: this node only keeps what it holds
    mine = _fault(me, peer)
    if take:
        if not peer.alive and (mine is None or vip in peer.held):
            return "failover"
        if mine is not None:
            return "orphan"
        theirs = _fault(peer, me)
        if theirs is not None:
            return "failover" if theirs == "unhealthy" else theirs
        if vip not in peer.held:
            return "startup"
        return "failback" if home == me.name else "other"
    if mine is not None:
        return mine
    if home == peer.name:
        return "failback"
    # Placement rule 13: this home node's fault just ended, and its peer holds the VIP too.
    return "settle" if vip in peer.held else "other"
