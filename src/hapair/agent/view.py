"""Builds the immutable :class:`~hapair.agent.placement.ClusterView` the daemon decides on.

Keeps the little state that decisions need across cycles: since when this node has been stable
(healthy, pingable, hearing its peer, not in standby), what it wanted last cycle, and when each
VIP's wish last changed (for the anti-flap rule).
"""

from __future__ import annotations

from types import MappingProxyType

from hapair.agent.config import AgentConfig
from hapair.agent.membership import Membership, PeerState
from hapair.agent.placement import ClusterView, NodeFacts


class ViewBuilder:
    """One per agent."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.stable_since: float | None = None
        self.last_move: dict[str, float] = {}
        self.wanted: frozenset[str] | None = None

    def stable_ms(self, now: float) -> float:
        """How long this node has been stable (0 when it is not)."""
        return 0.0 if self.stable_since is None else now - self.stable_since

    def _update_stability(self, now: float, stable: bool) -> None:
        if not stable:
            self.stable_since = None
        elif self.stable_since is None:
            self.stable_since = now

    def moved(self, vip: str, now: float) -> None:
        """Record that this node's wish for ``vip`` changed at ``now``."""
        self.last_move[vip] = now

    def build(
        self,
        *,
        now_ms: float,
        membership: Membership,
        healthy: bool,
        pingable: bool,
        standby: bool,
        held: frozenset[str],
        peer_serving: bool,
    ) -> ClusterView:
        """The snapshot of this cycle."""
        state = membership.state(now_ms)
        hearing = state in (PeerState.UP, PeerState.WARN)
        self._update_stability(now_ms, healthy and pingable and hearing and not standby)
        c = self.cfg
        me = NodeFacts(
            name=c.node,
            alive=True,
            healthy=healthy,
            pingable=pingable,
            standby=standby,
            stable_ms=self.stable_ms(now_ms),
            held=held,
        )
        return ClusterView(
            now_ms=now_ms,
            me=me,
            peer_name=c.peer,
            peer_state=state,
            peer_view=membership.last(),
            peer_serving=peer_serving,
            peer_silence_ms=membership.silence_ms(now_ms),
            vips=tuple((v.name, v.home) for v in c.vips),
            auto_failback=c.auto_failback,
            failback_delay_ms=c.failback_delay_ms,
            min_move_interval_ms=c.min_move_interval_ms,
            wanted=self.wanted,
            last_move_ms=MappingProxyType(dict(self.last_move)),
        )
