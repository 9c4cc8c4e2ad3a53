"""A pure two-node simulation: both agents' decision cores run against one scripted world.

No sockets, threads or real time. :class:`World` steps a simulated clock by the heartbeat
interval; each step every running agent sends a heartbeat through the real :func:`encode` and
:class:`Decoder`, advances its :class:`Membership`, builds its :class:`ClusterView`, calls
:func:`decide`, and the wanted set is applied at once (an instantaneous resource agent). Faults
are attributes flipped between steps: a node's ``link``, ``healthy``, ``pingable``, ``standby``,
its agent (:meth:`World.kill`, :meth:`World.restart`), and the world's ``heartbeat_path`` (udp/694
between the nodes) and ``data_path`` (the peer-serving probe). Tests use it to check invariants.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hapair.agent.membership import Membership, PeerState
from hapair.agent.placement import ClusterView, Decision, NodeFacts, decide
from hapair.agent.protocol import STABLE_CAP_MS, Decoder, Heartbeat, encode
from hapair.spec import HaSpec

KEY = b"simulated-cluster-key-32-bytes!!"


@dataclass
class SimNode:
    """One simulated LB node: the facts the world controls and the agent's own state."""

    name: str
    boot_id: int
    membership: Membership
    decoder: Decoder
    agent: bool = True
    healthy: bool = True
    pingable: bool = True
    standby: bool = False
    link: bool = True
    held: set[str] = field(default_factory=set)
    seq: int = 0
    wanted: frozenset[str] | None = None
    last_move: dict[str, float] = field(default_factory=dict)
    stable_since: float | None = None
    stable_ms: float = 0


@dataclass(frozen=True)
class Record:
    """One node's decision in one step, with the view it was made on."""

    node: str
    view: ClusterView
    decision: Decision


class World:
    """Two nodes, a network between them and a simulated clock (ms).

    :param ha: timings and failback settings (the spec's defaults if omitted).
    :param vips: ``(vip, home)`` pairs.
    :param names: the two node names.
    :param cluster: the cluster name on the wire.
    """

    def __init__(
        self,
        ha: HaSpec | None = None,
        vips: tuple[tuple[str, str], ...] = (("vip1", "lb1"), ("vip2", "lb2")),
        names: tuple[str, str] = ("lb1", "lb2"),
        cluster: str = "sim",
    ) -> None:
        self.ha = ha or HaSpec()
        self.vips = vips
        self.names = names
        self.cluster = cluster
        self.now: float = 0
        self.heartbeat_path = True
        self.data_path = True
        self.records: list[Record] = []
        self._boots = 0
        self.nodes = {name: self._boot(name, set()) for name in names}

    def _boot(self, name: str, held: set[str]) -> SimNode:
        self._boots += 1
        peer = self.peer_name(name)
        return SimNode(
            name=name,
            boot_id=int(self.now * 1_000_000) + self._boots,
            membership=Membership.from_spec(peer, self.ha, start_ms=self.now),
            decoder=Decoder(KEY, self.cluster, name, {peer}),
            held=held,
        )

    def peer_name(self, name: str) -> str:
        """The other node's name."""
        return self.names[1] if name == self.names[0] else self.names[0]

    def kill(self, name: str, *, haproxy: bool = True) -> None:
        """Stop a node's agent (and by default its HAProxy); what it holds stays configured."""
        node = self.nodes[name]
        node.agent = False
        node.healthy = node.healthy and not haproxy

    def restart(self, name: str, *, keep_held: bool = True, healthy: bool = True) -> None:
        """Start a node's agent afresh (new boot id); ``keep_held=False`` is a reboot."""
        old = self.nodes[name]
        new = self._boot(name, set(old.held) if keep_held else set())
        new.healthy, new.pingable, new.standby, new.link = healthy, old.pingable, False, old.link
        self.nodes[name] = new

    def holders(self, vip: str) -> set[str]:
        """The nodes whose kernel holds ``vip`` now."""
        return {n.name for n in self.nodes.values() if vip in n.held}

    def _heartbeat(self, node: SimNode) -> Heartbeat:
        node.seq += 1
        return Heartbeat(
            cluster=self.cluster,
            node=node.name,
            boot_id=node.boot_id,
            seq=node.seq,
            healthy=node.healthy,
            pingable=node.pingable and node.link,
            stable_ms=int(node.stable_ms),
            standby=node.standby,
            held=frozenset(node.held),
            wanted=node.wanted or frozenset(),
        )

    def _connected(self) -> bool:
        return all(n.link for n in self.nodes.values())

    def _view(self, node: SimNode) -> ClusterView:
        peer = self.nodes[self.peer_name(node.name)]
        state = node.membership.state(self.now)
        pingable = node.pingable and node.link
        if node.healthy and pingable and state in (PeerState.UP, PeerState.WARN):
            if node.stable_since is None:
                node.stable_since = self.now
            node.stable_ms = min(self.now - node.stable_since, STABLE_CAP_MS)
        else:
            node.stable_since, node.stable_ms = None, 0
        return ClusterView(
            now_ms=self.now,
            me=NodeFacts(
                name=node.name,
                healthy=node.healthy,
                pingable=pingable,
                standby=node.standby,
                stable_ms=node.stable_ms,
                held=frozenset(node.held),
            ),
            peer_name=peer.name,
            peer_state=state,
            peer_view=node.membership.last(),
            peer_serving=self.data_path and self._connected() and peer.healthy,
            peer_silence_ms=node.membership.silence_ms(self.now),
            vips=self.vips,
            auto_failback=self.ha.auto_failback,
            failback_delay_ms=self.ha.failback_delay_ms,
            min_move_interval_ms=self.ha.min_move_interval_ms,
            wanted=node.wanted,
            last_move_ms=dict(node.last_move),
        )

    def step(self) -> list[Record]:
        """Advance one interval: heartbeats, then every running agent decides, then acts."""
        self.now += self.ha.interval_ms
        running = [n for n in self.nodes.values() if n.agent]
        for node in running:
            data = encode(self._heartbeat(node), KEY)
            peer = self.nodes[self.peer_name(node.name)]
            if peer.agent and self.heartbeat_path and self._connected():
                hb = peer.decoder.decode(data)
                if hb is not None:
                    peer.membership.observe(hb, self.now)
        out = []
        for node in running:
            node.membership.poll(self.now)
            view = self._view(node)
            out.append(Record(node.name, view, decide(view)))
        for rec in out:
            node = self.nodes[rec.node]
            node.held = set(rec.decision.wanted)
            node.wanted = rec.decision.wanted
            node.last_move = rec.decision.last_move_ms(node.last_move)
        self.records.extend(out)
        return out

    def run(self, ms: float) -> list[Record]:
        """Step for ``ms`` milliseconds of simulated time."""
        out: list[Record] = []
        end = self.now + ms
        while self.now + self.ha.interval_ms <= end + 1e-9:
            out.extend(self.step())
        return out
