"""A pure two-node simulation: both agents' :class:`~hapair.agent.controller.Controller`\\ s,
the very objects the daemon runs, against one scripted world.

No sockets, threads or real time. :class:`World` steps a simulated clock by the heartbeat
interval; each step every running agent sends a heartbeat through the real :func:`encode`, the
network delivers it (or loses or delays it), the peer's real :class:`Decoder` checks it, and each
controller observes its health and probes, then steps; what it wants is applied at once (an
instantaneous resource agent). Faults are attributes flipped between steps:

- per node: its clock (:meth:`World.clock_jump`), ``link``, ``healthy`` (HAProxy sees a
  backend UP), ``answers`` (HAProxy answers at all), ``request_loss`` (the share of real
  requests through its HAProxy that fail: a lossy link to its backends), ``link_loss`` (the
  share of its frames lost each way on its own link, the lab's ``loss-N``: heartbeats in and
  out, the side-channel probe, its pings), ``pingable`` (its path to the ping nodes works),
  ``standby``, the agent (:meth:`World.kill`,
  :meth:`World.restart`), a stall (:meth:`World.stall`: the agent neither sends nor
  decides, datagrams queue for it);
- the network: ``heartbeat_path`` (udp/694 between the nodes), ``data_path`` (the side-channel
  probe), ``loss[(src, dst)]`` (the share of datagrams lost from ``src`` to ``dst``) and
  ``jitter_ms`` (each datagram is delayed by a random 0..jitter ms, in whole steps).

Each node's health goes through the daemon's own :class:`~hapair.agent.health.HealthGate`: every
health interval one stats reading (HAProxy answers; backends UP or none) and one real request
(failed when HAProxy does not answer, has no backend, or the request is lost), so the gate's
window and hysteresis are what the controllers see, as on a real node.

Each node's ping verdict is the daemon's own :class:`~hapair.agent.pingverdict.PingVerdict`, fed
as the daemon feeds it: a round of requests every :data:`PING_EVERY_INTERVALS` intervals, one
more when the peer's heartbeat is late and one after a stall; a reply is lost when the node's
``link`` is down (when the request leaves or when the reply comes back), when its path to the
ping nodes is cut (``pingable``), or by its link's loss share (``link_loss``, each way; the
``loss`` between the two nodes is their path to each other, not to the ping nodes), and delayed
by the jitter like a heartbeat. A reply counts for ``pingable_now`` only if its request left
after the peer's heartbeat was due, as on a real node.

Randomness comes from one seeded generator, so every run can be replayed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hapair.agent.controller import Controller, Step
from hapair.agent.health import HealthGate
from hapair.agent.pingverdict import PING_EVERY_INTERVALS, PingVerdict
from hapair.agent.placement import ClusterView, Decision
from hapair.agent.protocol import STABLE_CAP_MS, Decoder, Heartbeat, encode
from hapair.spec import HaSpec

KEY = b"simulated-cluster-key-32-bytes!!"
PING_NODES = ("198.18.0.1",)
"""The ping nodes when the spec names none (the lab's gateway)."""
PING_RTT_MS = 1.0
"""A ping's round trip: its reply is read at the next step at the earliest (a decision made
right after a round was sent has not seen its reply, as in the daemon)."""


@dataclass
class SimNode:
    """One simulated LB node: the facts the world controls and the agent's controller."""

    name: str
    boot_id: int
    controller: Controller
    decoder: Decoder
    #: the daemon's own ping verdict
    ping: PingVerdict
    agent: bool = True
    healthy: bool = True
    answers: bool = True
    request_loss: float = 0.0
    link_loss: float = 0.0
    gate: HealthGate = field(default_factory=HealthGate)
    #: when the node last sent its periodic round of pings, and for which heartbeat of the
    #: peer it sent the one a late heartbeat triggers (its own clock)
    pinged_at: float | None = None
    late_ping_for: float | None = None
    #: ping replies on their way: (due, ping node, round number)
    ping_inbox: list[tuple[float, str, int]] = field(default_factory=list)
    #: when the node last read its health (its own clock)
    checked_at: float | None = None
    pingable: bool = True
    standby: bool = False
    link: bool = True
    stalled_until: float = 0.0
    #: how far this node's monotonic clock is ahead of the world's (a clock that jumped)
    clock_ms: float = 0.0
    held: set[str] = field(default_factory=set)
    seq: int = 0
    inbox: list[tuple[float, bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class Record:
    """One node's decision in one step, with the view it was made on."""

    node: str
    view: ClusterView
    decision: Decision
    step: Step


class World:
    """Two nodes, a network between them and a simulated clock (ms).

    :param ha: timings and failback settings (the spec's defaults if omitted).
    :param vips: ``(vip, home)`` pairs.
    :param names: the two node names.
    :param cluster: the cluster name on the wire.
    :param seed: the seed of the network's randomness (loss, jitter).
    """

    def __init__(
        self,
        ha: HaSpec | None = None,
        vips: tuple[tuple[str, str], ...] = (("vip1", "lb1"), ("vip2", "lb2")),
        names: tuple[str, str] = ("lb1", "lb2"),
        cluster: str = "sim",
        seed: int = 0,
    ) -> None:
        self.ha = ha or HaSpec()
        self.vips = vips
        self.names = names
        self.cluster = cluster
        self.now: float = 0
        self.heartbeat_path = True
        self.data_path = True
        self.loss: dict[tuple[str, str], float] = {}
        self.jitter_ms: float = 0
        self.rng = random.Random(seed)
        self.records: list[Record] = []
        #: sentences of the controllers outside their steps: (time, node, sentence)
        self.notes: list[tuple[float, str, str]] = []
        self._boot_ids: dict[str, int] = {}
        self.nodes = {name: self._boot(name, set()) for name in names}

    def _boot(self, name: str, held: set[str], clock_ms: float = 0.0) -> SimNode:
        # The boot counter of hapair.agent.boot: the first boot from the clock, then +1.
        boot = self._boot_ids.get(name, 1_700_000_000_000_000_000 + int(self.now * 1e6)) + 1
        self._boot_ids[name] = boot
        peer = self.peer_name(name)
        controller = Controller(name, peer, self.vips, self.ha, start_ms=self.now + clock_ms)
        controller.found(held)
        return SimNode(
            name=name,
            boot_id=boot,
            controller=controller,
            decoder=Decoder(KEY, self.cluster, name, {peer}),
            ping=PingVerdict(self.ha.ping_nodes or PING_NODES, self.ha.interval_ms),
            held=held,
            clock_ms=clock_ms,
        )

    def peer_name(self, name: str) -> str:
        """The other node's name."""
        return self.names[1] if name == self.names[0] else self.names[0]

    def kill(self, name: str, *, haproxy: bool = True) -> None:
        """Stop a node's agent (and by default its HAProxy); what it holds stays configured."""
        node = self.nodes[name]
        node.agent = False
        if haproxy:
            node.healthy = node.answers = False

    def restart(self, name: str, *, keep_held: bool = True, healthy: bool = True) -> None:
        """Start a node's agent afresh (a new boot id); ``keep_held=False`` is a reboot."""
        old = self.nodes[name]
        new = self._boot(name, set(old.held) if keep_held else set(), old.clock_ms)
        new.healthy, new.answers = healthy, healthy or old.answers
        new.request_loss, new.link_loss = old.request_loss, old.link_loss
        new.pingable, new.standby, new.link = old.pingable, False, old.link
        self.nodes[name] = new

    def stall(self, name: str, ms: float) -> None:
        """Stop a node's agent for ``ms`` (SIGSTOP): it neither sends nor decides."""
        self.nodes[name].stalled_until = self.now + ms

    def clock_jump(self, name: str, ms: float) -> None:
        """Make a node's monotonic clock jump ahead by ``ms`` (a frozen then thawed VM whose
        clock caught up at once): to it, everything was silent for ``ms``."""
        self.nodes[name].clock_ms += ms

    def t(self, node: SimNode) -> float:
        """The time on ``node``'s own clock."""
        return self.now + node.clock_ms

    def holders(self, vip: str) -> set[str]:
        """The nodes whose kernel holds ``vip`` now."""
        return {n.name for n in self.nodes.values() if vip in n.held}

    def _heartbeat(self, node: SimNode) -> Heartbeat:
        node.seq += 1
        c = node.controller
        return Heartbeat(
            cluster=self.cluster,
            node=node.name,
            boot_id=node.boot_id,
            seq=node.seq,
            healthy=c.healthy,
            answers=c.answers,
            pingable=node.ping.pingable(self.t(node)),
            stable_ms=int(min(c.stable_ms(self.t(node)), STABLE_CAP_MS)),
            standby=node.standby,
            held=c.claimed(frozenset(node.held)),
            wanted=c.wanted_set(),
        )

    def _connected(self) -> bool:
        return all(n.link for n in self.nodes.values())

    def _running(self, node: SimNode) -> bool:
        return node.agent and self.now >= node.stalled_until

    def _send(self, node: SimNode) -> None:
        """One datagram to each of the peer's two addresses, as the daemon sends them."""
        peer = self.nodes[self.peer_name(node.name)]
        for _copy in range(2):
            data = encode(self._heartbeat(node), KEY)
            if not (self.heartbeat_path and self._connected()):
                continue
            if self.rng.random() < 1 - self._through(node, peer):
                continue
            delay = self.rng.uniform(0, self.jitter_ms) if self.jitter_ms else 0.0
            peer.inbox.append((self.now + delay, data))

    def _receive(self, node: SimNode) -> None:
        due = [d for d in node.inbox if d[0] <= self.now]
        node.inbox = [d for d in node.inbox if d[0] > self.now]
        if not node.agent:
            return  # a dead agent's socket is gone
        for _, data in sorted(due, key=lambda d: d[0]):
            hb = node.decoder.decode(data)
            if hb is not None:
                node.controller.observe_heartbeat(hb, self.t(node))
                node.ping.heard(self.t(node))
        self._read_pings(node)

    def _ping(self, node: SimNode) -> None:
        """One round of echo requests to every ping node; the replies that survive queue."""
        seq = node.ping.sent(self.t(node))
        for target in node.ping.targets:
            if not (node.link and node.pingable):
                continue
            if self.rng.random() >= (1 - node.link_loss) ** 2:
                continue
            delay = self.rng.uniform(0, self.jitter_ms) if self.jitter_ms else 0.0
            node.ping_inbox.append((self.now + PING_RTT_MS + delay, target, seq))

    def _read_pings(self, node: SimNode) -> None:
        """The ping replies due by now, read on the node's clock (lost if its link is down)."""
        due = sorted(d for d in node.ping_inbox if d[0] <= self.now)
        node.ping_inbox = [d for d in node.ping_inbox if d[0] > self.now]
        for _, target, seq in due:
            if node.link and node.pingable:
                node.ping.replied(target, seq, self.t(node))

    def _notice_stall(self, node: SimNode) -> None:
        """As the daemon's first loop after a gap: the controller and the verdict are told how
        long this node did not run, and a fresh ping round leaves."""
        c = node.controller
        note = c.loop_ran(self.t(node))
        if note is not None:
            self.notes.append((self.now, node.name, note))
            node.ping.blind(c.last_gap_ms, self.t(node))
            self._ping(node)

    def _ping_on_time(self, node: SimNode) -> None:
        """The daemon's ping loop: a round every :data:`PING_EVERY_INTERVALS` intervals. At its
        start the daemon waits for a first answer before its first heartbeat: so does this."""
        now = self.t(node)
        every = PING_EVERY_INTERVALS * self.ha.interval_ms
        if node.pinged_at is None:
            node.pinged_at = now
            self._ping(node)
            node.ping_inbox = [(self.now, t, seq) for _, t, seq in node.ping_inbox]
            self._read_pings(node)
        elif now - node.pinged_at >= every - 1e-9:
            node.pinged_at = now
            self._ping(node)

    def _ping_if_late(self, node: SimNode) -> None:
        """The daemon's timer: the peer's heartbeat is 1.5 intervals late, ping at once (is it
        the peer or this node's own link?), once per heartbeat heard."""
        heard = node.ping.heard_ms
        if heard is None or heard == node.late_ping_for:
            return
        if self.t(node) - heard >= 1.5 * self.ha.interval_ms:
            node.late_ping_for = heard
            self._ping(node)

    def _probe_ok(self, node: SimNode) -> bool:
        """A request through the peer's HAProxy: lost like any datagram on a lossy link."""
        peer = self.nodes[self.peer_name(node.name)]
        if not (self.data_path and self._connected() and peer.healthy):
            return False
        there = self._through(node, peer)
        back = self._through(peer, node)
        return self.rng.random() >= 1 - there * back

    def _through(self, src: SimNode, dst: SimNode) -> float:
        """The share of datagrams from ``src`` that reach ``dst``: both links and the path."""
        path = 1 - self.loss.get((src.name, dst.name), 0.0)
        return (1 - src.link_loss) * path * (1 - dst.link_loss)

    def _check_health(self, node: SimNode) -> None:
        """Every health interval: a stats reading and a real request into the node's gate;
        the controller observes what the gate makes of them."""
        now = self.t(node)
        if node.checked_at is not None and now - node.checked_at < self.ha.health_interval_ms:
            return
        node.checked_at = now
        g = node.gate
        g.stats(node.answers, 3 if node.healthy else 0, 3)
        # A request crosses the node's link about four times (to a web node and back, each
        # way a SYN and data): a lossy link fails requests too, as on a real node.
        through = (1 - node.request_loss) * (1 - node.link_loss) ** 4
        served = node.answers and node.healthy and self.rng.random() < through
        h = g.request(served, now)
        node.controller.observe_health(h.healthy, h.answers, g.ok_started_ms, g.failed_started_ms)

    def step(self) -> list[Record]:
        """Advance one interval: heartbeats, then every running agent decides, then acts."""
        self.now += self.ha.interval_ms
        running = [n for n in self.nodes.values() if self._running(n)]
        for node in running:
            self._read_pings(node)
            self._notice_stall(node)
            self._check_health(node)
            self._ping_on_time(node)
            self._send(node)
        out = []
        for node in list(self.nodes.values()):
            if not self._running(node):
                continue
            self._receive(node)
            self._ping_if_late(node)
            c = node.controller
            now = self.t(node)
            if c.should_probe(now):
                c.observe_probe(self._probe_ok(node), now)
            verdict = node.ping
            st = c.step(
                now,
                held=frozenset(v for v in node.held if c.wanted.get(v) is not False),
                pingable=verdict.pingable(now),
                pingable_now=verdict.pingable_now(now),
                standby=node.standby,
            )
            out.append(Record(node.name, st.view, st.decision, st))
        for rec in out:
            node = self.nodes[rec.node]
            node.held = {v for v, w in node.controller.wanted.items() if w}
        self.records.extend(out)
        return out

    def run(self, ms: float) -> list[Record]:
        """Step for ``ms`` milliseconds of simulated time."""
        out: list[Record] = []
        end = self.now + ms
        while self.now + self.ha.interval_ms <= end + 1e-9:
            out.extend(self.step())
        return out
