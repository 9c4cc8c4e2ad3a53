"""A pure two-node simulation: both agents' :class:`~hapair.agent.controller.Controller`\\ s,
the very objects the daemon runs, against one scripted world.

No sockets, threads or real time. :class:`World` steps a simulated clock by the heartbeat
interval; each step every running agent sends a heartbeat through the real :func:`encode`, the
network delivers it (or loses or delays it), the peer's real :class:`Decoder` checks it, and each
controller observes its health and probes, then steps; what it wants is applied at once (an
instantaneous resource agent). Faults are attributes flipped between steps:

- per node: its clock (:meth:`World.clock_jump`), ``link``, ``healthy`` (HAProxy sees a
  backend UP), ``answers`` (HAProxy answers at all), ``request_loss`` (the share of real
  requests through its HAProxy that fail: a lossy link to its backends), ``pingable``,
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

Randomness comes from one seeded generator, so every run can be replayed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hapair.agent.controller import Controller, Step
from hapair.agent.health import HealthGate
from hapair.agent.placement import ClusterView, Decision
from hapair.agent.protocol import STABLE_CAP_MS, Decoder, Heartbeat, encode
from hapair.spec import HaSpec

KEY = b"simulated-cluster-key-32-bytes!!"


@dataclass
class SimNode:
    """One simulated LB node: the facts the world controls and the agent's controller."""

    name: str
    boot_id: int
    controller: Controller
    decoder: Decoder
    agent: bool = True
    healthy: bool = True
    answers: bool = True
    request_loss: float = 0.0
    gate: HealthGate = field(default_factory=HealthGate)
    #: when the node last read its health (its own clock)
    checked_at: float | None = None
    pingable: bool = True
    standby: bool = False
    link: bool = True
    #: when the world first saw ``link`` down: for a second after, the last ping reply still
    #: counts in the plain one-second window, as on a real node
    unlinked_at: float | None = None
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
        new.request_loss = old.request_loss
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
            pingable=node.pingable and node.link,
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
            if self.rng.random() < self.loss.get((node.name, peer.name), 0.0):
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

    def _probe_ok(self, node: SimNode) -> bool:
        """A request through the peer's HAProxy: lost like any datagram on a lossy link."""
        peer = self.nodes[self.peer_name(node.name)]
        if not (self.data_path and self._connected() and peer.healthy):
            return False
        there = self.loss.get((node.name, peer.name), 0.0)
        back = self.loss.get((peer.name, node.name), 0.0)
        return self.rng.random() >= 1 - (1 - there) * (1 - back)

    def _check_health(self, node: SimNode) -> None:
        """Every health interval: a stats reading and a real request into the node's gate;
        the controller observes what the gate makes of them."""
        now = self.t(node)
        if node.checked_at is not None and now - node.checked_at < self.ha.health_interval_ms:
            return
        node.checked_at = now
        g = node.gate
        g.stats(node.answers, 3 if node.healthy else 0, 3)
        served = node.answers and node.healthy and self.rng.random() >= node.request_loss
        h = g.request(served, now)
        node.controller.observe_health(h.healthy, h.answers, g.ok_started_ms, g.failed_started_ms)

    def step(self) -> list[Record]:
        """Advance one interval: heartbeats, then every running agent decides, then acts."""
        self.now += self.ha.interval_ms
        running = [n for n in self.nodes.values() if self._running(n)]
        for node in running:
            self._check_health(node)
            self._send(node)
        out = []
        for node in list(self.nodes.values()):
            if not self._running(node):
                continue
            self._receive(node)
            c = node.controller
            now = self.t(node)
            note = c.loop_ran(now)
            if note is not None:
                self.notes.append((self.now, node.name, note))
            if c.should_probe(now):
                c.observe_probe(self._probe_ok(node), now)
            if node.link:
                node.unlinked_at = None
            elif node.unlinked_at is None:
                node.unlinked_at = self.now
            recent = node.unlinked_at is None or self.now - node.unlinked_at < 1000
            st = c.step(
                now,
                held=frozenset(v for v in node.held if c.wanted.get(v) is not False),
                pingable=node.pingable and recent,
                pingable_now=node.pingable and node.link,
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
