"""The HA agent daemon: asyncio wiring of heartbeats, health, placement and resource agents.

The loop is a thin shell: every tick it builds an immutable view, calls the pure
:func:`hapair.agent.placement.decide`, hands each VIP's wish to that VIP's actor, and logs each
change of wish once, as a sentence with its reason.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from hapair.agent.actor import VipActor
from hapair.agent.api import StatusApi
from hapair.agent.config import AgentConfig, load_agent_config
from hapair.agent.health import Health, HealthGate, Pinger, check_haproxy, http_ok
from hapair.agent.logs import setup_logging
from hapair.agent.membership import Membership, PeerState
from hapair.agent.metrics import Metrics
from hapair.agent.placement import decide
from hapair.agent.protocol import Decoder, Heartbeat, encode, load_key
from hapair.agent.resources.base import FakeFloatingIP, FloatingIP
from hapair.agent.view import ViewBuilder
from hapair.errors import FatalError, HapairError, SpecError

logger = logging.getLogger("hapair.agent")


def make_resource(cfg: AgentConfig, index: int) -> FloatingIP:
    """The resource agent of VIP number ``index`` for this node."""
    v = cfg.vips[index]
    if v.driver == "l2":
        from hapair.agent.resources.l2 import L2FloatingIP

        return L2FloatingIP(v.name, v.address, v.ifname)
    if v.driver == "aws_eip":
        from hapair.agent.resources.aws_eip import make_aws_eip

        return make_aws_eip(cfg, v)
    return FakeFloatingIP(v.name, v.address)


class _Heartbeats(asyncio.DatagramProtocol):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.agent.on_datagram(data)


class Agent:
    """One node's agent. Use ``await agent.run()``; stops on SIGTERM/SIGINT."""

    def __init__(self, cfg: AgentConfig, config_path: Path | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.key = load_key(Path(cfg.key_file))
        self.token = Path(cfg.admin_token_file).read_text().strip()
        self.metrics = Metrics()
        self.boot_id = time.time_ns()
        self.seq = 0
        self.t0 = time.monotonic()
        self.decoder = Decoder(self.key, cfg.cluster, cfg.node, {cfg.peer})
        self.membership = self._membership()
        self.resources = [make_resource(cfg, i) for i in range(len(cfg.vips))]
        self.actors = {
            r.name: VipActor(r, cfg.action_timeout_ms / 1000, self._on_action)
            for r in self.resources
        }
        self.health = Health(False, "not checked yet")
        self.health_gate = HealthGate(rise=2, fall=2)
        self.pinger = Pinger(list(cfg.ping_nodes))
        self.peer_served_at: float | None = None
        self.views = ViewBuilder(cfg)
        self.wanted: dict[str, bool] = {}
        self.reasons: dict[str, str] = {}
        self.standby = False
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)
        self.transport: asyncio.DatagramTransport | None = None
        self.api = StatusApi(self, self.token)
        self._stop = asyncio.Event()
        self._reload = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._dropped_seen: collections.Counter[str] = collections.Counter()
        self._found_at_start: set[str] = set()
        self._ready = False
        self._timers: list[asyncio.TimerHandle] = []
        self._heard_at: float | None = None
        #: a probe of the peer's HAProxy failed since its last heartbeat arrived
        self.probe_failed_since_hb = False
        self._announcing: set[str] = set()

    def _membership(self) -> Membership:
        c = self.cfg
        return Membership(
            c.peer,
            interval_ms=c.interval_ms,
            warntime_ms=c.warntime_ms,
            deadtime_ms=c.deadtime_ms,
            initdead_ms=c.initdead_ms,
            start_ms=self.now_ms(),
        )

    # ------------------------------------------------------------------ clock
    def now_ms(self) -> float:
        """Milliseconds on the monotonic clock since the agent started."""
        return (time.monotonic() - self.t0) * 1000.0

    # ------------------------------------------------------------------ events
    def event(self, message: str, level: int = logging.INFO) -> None:
        """Log a sentence once and keep it in the recent-events list of ``/status``."""
        logger.log(level, "%s", message)
        self.events.append(
            {
                "time": time.strftime("%H:%M:%S", time.localtime())
                + f".{int(time.time() * 1000) % 1000:03d}",
                "message": message,
            }
        )

    def _on_action(self, vip: str, action: str, ok: bool, took: float, err: str) -> None:
        if ok:
            held = action == "start"
            self.metrics.held.labels(vip).set(1 if held else 0)
            logger.debug("%s %s done in %.1f ms", vip, action, took * 1000)
        else:
            self.metrics.action_failures.labels(vip, action).inc()
            self.event(
                f"{action} of {vip} failed after {took * 1000:.0f} ms: {err}; retrying",
                logging.WARNING,
            )

    # ------------------------------------------------------------------ heartbeats
    def on_datagram(self, data: bytes) -> None:
        """A datagram on the heartbeat port: decoded, checked, counted, or dropped."""
        hb = self.decoder.decode(data)
        if hb is None:
            for reason, n in self.decoder.dropped.items():
                delta = n - self._dropped_seen[reason]
                if delta:
                    self.metrics.hb_dropped.labels(reason).inc(delta)
                    self._dropped_seen[reason] = n
                    if n == 1 or n % 100 == 0:
                        self.event(
                            f"dropped heartbeat datagram: {reason} ({n} so far)", logging.WARNING
                        )
            return
        self.metrics.hb_received.inc()
        before = self.membership.last()
        was = self.membership.current
        self.membership.observe(hb, self.now_ms())
        self.probe_failed_since_hb = False
        self._heard_at = time.monotonic()
        # If the next heartbeat is late, ping at once (is it the peer or this node's own link?),
        # and decide again the moment the peer would turn dead, not at the next periodic tick.
        for timer in self._timers:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._timers = [
            loop.call_later(1.5 * self.cfg.interval_ms / 1000, self.pinger.send),
            loop.call_later(self.cfg.deadtime_ms / 1000 + 0.001, self._tick),
        ]
        self._announce_if_released(before, hb)
        if self._ready and (was is not PeerState.UP or _view_changed(before, hb, self.cfg)):
            self._tick()  # react at once: a peer's change of view matters now

    def _announce_if_released(self, before: Heartbeat | None, hb: Heartbeat) -> None:
        """The peer just stopped holding a VIP this node holds and wants: announce it again, so
        that no late gratuitous ARP of the peer's leaves clients pointing at it."""
        if before is None or before.boot_id != hb.boot_id:
            return
        for vip in sorted(before.held - hb.held):
            actor = self.actors.get(vip)
            if actor is not None and actor.held and actor.desired:
                self.event(f"announcing {vip} again: {self.cfg.peer} released it")
                actor.want(True, announce=True)

    def _heartbeat(self) -> Heartbeat:
        self.seq += 1
        now = self.now_ms()
        return Heartbeat(
            cluster=self.cfg.cluster,
            node=self.cfg.node,
            boot_id=self.boot_id,
            seq=self.seq,
            healthy=self.health.healthy,
            pingable=self._pingable(),
            stable_ms=int(self.views.stable_ms(now)),
            standby=self.standby,
            held=self._claimed(),
            wanted=frozenset(n for n, w in self.wanted.items() if w),
        )

    def _claimed(self) -> frozenset[str]:
        """What the peer is told this node holds: held, not being released, and not an address
        found at start that waits to be settled (it may be stale after a crash)."""
        return frozenset(
            n
            for n, a in self.actors.items()
            if a.held and a.desired is not False and n not in self._found_at_start
        )

    def _send(self) -> None:
        if self.transport is None:
            return
        for addr in self.cfg.peer_addresses:
            # One sequence number per datagram: the copy sent to the peer's second address
            # is not a replay of the first.
            data = encode(self._heartbeat(), self.key)
            with contextlib.suppress(OSError):
                self.transport.sendto(data, (addr, self.cfg.port))
            self.metrics.hb_sent.inc()

    def _pingable(self) -> bool:
        """Whether this node reaches a ping node. Once the peer is late, only a reply that came
        after its last heartbeat counts: if the silence is this node's own link going down, it
        must not take the peer's VIPs on the strength of an older reply."""
        since = None
        if self.membership.current in (PeerState.WARN, PeerState.DEAD) and self._heard_at:
            # Only a reply after the next heartbeat was due counts: one that came between the
            # last heartbeat and a cut of this node's own link proves nothing.
            since = self._heard_at + self.cfg.interval_ms / 1000
        return self.pinger.reachable(window=1.0, since=since)

    # ------------------------------------------------------------------ decisions
    def _tick(self) -> None:
        now = self.now_ms()
        for old, new, why in self.membership.poll(now):
            self.event(f"peer {self.cfg.peer}: {old} -> {new} ({why})")
            if new is PeerState.WARN:
                self.pinger.send()  # is it the peer or this node's own link?
            self.metrics.peer_up.set(1 if new in (PeerState.UP, PeerState.WARN) else 0)
        state = self.membership.state(now)
        if self._found_at_start and state is not PeerState.INIT:
            self._settle_found(state)
        # "Serving" vouches for a silent peer only while it has served without a break since
        # its last heartbeat (a heartbeat-only partition): a crashed peer whose HAProxy came
        # back before its agent is not presumed to hold what it held before the crash.
        peer_serving = (
            self.peer_served_at is not None
            and not self.probe_failed_since_hb
            and (time.monotonic() - self.peer_served_at) * 1000 < self.cfg.deadtime_ms
        )
        view = self.views.build(
            now_ms=now,
            membership=self.membership,
            healthy=self.health.healthy,
            pingable=self._pingable(),
            standby=self.standby,
            # A VIP being released counts as gone for this node's own decisions.
            held=frozenset(n for n, a in self.actors.items() if a.held and a.desired is not False),
            peer_serving=peer_serving,
        )
        decision = decide(view)
        for d in decision.vips:
            actor = self.actors[d.vip]
            prev = self.wanted.get(d.vip)
            self.reasons[d.vip] = d.reason
            if prev != d.want:
                self.wanted[d.vip] = d.want
                self.views.moved(d.vip, now)
                self._log_move(d.vip, d.want, d.reason, prev)
                actor.want(d.want, announce=d.want)
            settled = now - self.views.last_move.get(d.vip, -1e9) > self.cfg.min_move_interval_ms
            if d.announce and settled and d.vip not in self._announcing:
                # Both hold it and this node is the owner: make clients follow it now.
                self.event(f"announcing {d.vip} again: {self.cfg.peer} holds it too")
                actor.want(True, announce=True)
        self._announcing = {x.vip for x in decision.vips if x.announce}
        self.views.wanted = frozenset(n for n, w in self.wanted.items() if w)

    def _settle_found(self, state: PeerState) -> None:
        """VIPs found configured at start: give back those the peer holds (a restart on a live
        host must wait failback_delay like any return), keep the rest."""
        peer = self.membership.last()
        for vip in sorted(self._found_at_start):
            actor = self.actors[vip]
            if state is not PeerState.DEAD and peer is not None and vip in peer.held:
                self.event(f"released {vip} found configured at start: {self.cfg.peer} holds it")
                actor.want(False)
                self.wanted[vip] = False
        self._found_at_start = set()

    def _log_move(self, vip: str, want: bool, reason: str, prev: bool | None) -> None:
        peer = self.cfg.peer
        last = self.membership.last()
        peer_held = last is not None and vip in last.held
        if want:
            verb = f"took {vip} from {peer}" if peer_held else f"took {vip}"
        elif prev:
            verb = f"released {vip} to {peer}" if peer_held else f"released {vip}"
        else:
            verb = f"does not take {vip}"
        self.event(f"{verb}: {reason}")
        kind = reason.split(":")[0].split(" ")[0] or "other"
        self.metrics.moves.labels(vip, "take" if want else "release", kind).inc()
        if want and prev is False:
            silence = self.membership.silence_ms(self.now_ms())
            state = self.membership.state(self.now_ms())
            if state is PeerState.DEAD and silence is not None:
                self.metrics.failover.observe(silence / 1000)

    # ------------------------------------------------------------------ loops
    def _spawn(self, coro: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("task %s died: %r", task.get_name(), task.exception())
            self._stop.set()

    async def _every(self, period_ms: float, fn: Any, name: str) -> None:
        period = period_ms / 1000
        next_at = time.monotonic()
        while True:
            try:
                result = fn()
                if asyncio.iscoroutine(result):
                    await result
            except HapairError as exc:
                logger.warning("%s: %s", name, exc)
            next_at += period
            delay = next_at - time.monotonic()
            if delay < -period:
                self.metrics.cycle_overruns.inc()
                next_at = time.monotonic()
                delay = 0
            await asyncio.sleep(max(delay, 0))

    async def _check_health(self) -> None:
        reading = await check_haproxy(
            self.cfg.stats_socket,
            self.cfg.http_port,
            self.cfg.check_path,
            timeout=min(0.5, self.cfg.health_interval_ms / 1000 * 5),
        )
        h = self.health_gate.update(reading)
        changed = h.healthy != self.health.healthy
        if changed:
            self.event(f"health: {h.summary}")
            self.metrics.healthy.set(1 if h.healthy else 0)
        self.health = h
        if self._ready and changed:
            self._tick()

    async def _probe_peer(self) -> None:
        """The side channel: a real request through the peer's HAProxy, made only while its
        heartbeats are late (in steady state the heartbeats say everything)."""
        silence = self.membership.silence_ms(self.now_ms())
        if silence is None or silence < 1.5 * self.cfg.interval_ms:
            return
        ok = await http_ok(
            self.cfg.peer_probe_address,
            self.cfg.http_port,
            self.cfg.check_path,
            timeout=self.cfg.deadtime_ms / 1000,
        )
        if ok:
            self.peer_served_at = time.monotonic()
        else:
            self.probe_failed_since_hb = True

    async def _reconcile(self) -> None:
        for actor in self.actors.values():
            if actor.busy:
                continue  # an action is under way; read back next round
            name = actor.resource.name
            generation = actor.generation
            try:
                result = await asyncio.wait_for(
                    actor.resource.monitor(), self.cfg.action_timeout_ms / 1000
                )
            except (HapairError, TimeoutError) as exc:
                logger.warning("monitor of %s failed: %s", name, exc)
                continue
            if actor.busy or actor.generation != generation:
                continue  # it acted while we read: the reading may be stale
            if actor.desired is not None and result.held != actor.desired:
                what = "missing here" if actor.desired else "held here but not wanted"
                self.event(f"repairing drift: {name} was {what} ({result.detail})", logging.WARNING)
                self.metrics.drift.labels(name).inc()
            actor.observed(result.held)
            self.metrics.held.labels(name).set(1 if result.held else 0)

    # ------------------------------------------------------------------ API backend
    def status(self) -> dict[str, Any]:
        """The ``/status`` document."""
        now = self.now_ms()
        last = self.membership.last()
        silence = self.membership.silence_ms(now)
        return {
            "self": self.cfg.node,
            "cluster": self.cfg.cluster,
            "boot_id": self.boot_id,
            "uptime_s": round(now / 1000, 1),
            "standby": self.standby,
            "health": {
                "healthy": self.health.healthy,
                "summary": self.health.summary,
                "backends_up": self.health.backends_up,
                "backends_total": self.health.backends_total,
                "pingable": self._pingable(),
                "stable_ms": int(self.views.stable_ms(now)),
            },
            "peer": {
                "name": self.cfg.peer,
                "state": str(self.membership.state(now)),
                "last_heartbeat_ms": None if silence is None else int(silence),
                "serving": self.peer_served_at is not None
                and time.monotonic() - self.peer_served_at < 1.0,
                "view": None
                if last is None
                else {
                    "healthy": last.healthy,
                    "pingable": last.pingable,
                    "standby": last.standby,
                    "held": sorted(last.held),
                    "wanted": sorted(last.wanted),
                    "stable_ms": last.stable_ms,
                },
            },
            "held": sorted(n for n, a in self.actors.items() if a.held),
            "wanted": sorted(n for n, w in self.wanted.items() if w),
            "reasons": dict(self.reasons),
            "config": {
                k: getattr(self.cfg, k)
                for k in (
                    "interval_ms",
                    "warntime_ms",
                    "deadtime_ms",
                    "initdead_ms",
                    "auto_failback",
                    "failback_delay_ms",
                    "health_interval_ms",
                    "min_move_interval_ms",
                    "ping_nodes",
                )
            },
            "counters": {
                "heartbeats_sent": self.seq,
                "dropped": dict(self.decoder.dropped),
                "action_failures": {n: a.failures for n, a in self.actors.items()},
            },
            "events": list(self.events)[-30:],
        }

    def metrics_text(self) -> bytes:
        """Prometheus exposition."""
        return self.metrics.render()

    def is_healthy(self) -> bool:
        """For HAProxy-style checks of the agent itself."""
        return self.health.healthy

    def count_api_error(self, reason: str) -> None:
        """Count a refused or failed API request."""
        self.metrics.api_errors.labels(reason).inc()

    async def set_standby(self, on: bool) -> str:
        """Planned operation: standby hands this node's VIPs to the peer (make-before-break)."""
        if on == self.standby:
            return f"{self.cfg.node} is already {'in standby' if on else 'online'}"
        self.standby = on
        self.event(f"operator: {self.cfg.node} {'standby' if on else 'online'}")
        self._tick()
        if on:
            return (
                f"{self.cfg.node} in standby: its VIPs move to {self.cfg.peer} once it holds them"
            )
        delay = self.cfg.failback_delay_ms
        return f"{self.cfg.node} online: it takes its VIPs back after {delay} ms of stable health"

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit status."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._ask_reload)
        _realtime(self.cfg.realtime)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Heartbeats(self), local_addr=(self.cfg.bind, self.cfg.port), reuse_port=False
        )
        self.transport = transport
        await self.api.start(self.cfg.api_bind, self.cfg.api_port, self.cfg.api_socket or None)
        try:
            self.pinger.open()
        except OSError as exc:
            logger.warning("ping nodes disabled: %s", exc)
        else:
            # Learn whether a ping node answers before the first heartbeat says so.
            for _ in range(10):
                self.pinger.send()
                await asyncio.sleep(0.05)
                if self._pingable():
                    break
        self.event(
            f"{self.cfg.node} starting (boot {self.boot_id}); peer {self.cfg.peer} at "
            f"{', '.join(self.cfg.peer_addresses)}; VIPs "
            + ", ".join(f"{v.name} {v.address} (home {v.home})" for v in self.cfg.vips)
        )
        # What do we hold right now? (a restart on a live host may find a VIP still configured)
        await self._reconcile()
        for actor in self.actors.values():
            if actor.held:
                self.event(f"found {actor.resource.name} configured here at start")
                self._found_at_start.add(actor.resource.name)
        await self._check_health()  # so the first heartbeat tells the truth
        self._ready = True
        self._tick()
        for actor in self.actors.values():
            self._spawn(actor.run(), f"actor-{actor.resource.name}")
        c = self.cfg
        self._spawn(self._every(c.interval_ms, self._send, "heartbeat"), "heartbeat")
        self._spawn(self._every(c.health_interval_ms, self._check_health, "health"), "health")
        self._spawn(self._every(c.interval_ms / 2, self._probe_peer, "peer-probe"), "peer-probe")
        self._spawn(self._every(c.interval_ms * 2, self.pinger.send, "ping"), "ping")
        self._spawn(self._every(c.reconcile_interval_ms, self._reconcile, "reconcile"), "reconcile")
        # Heartbeats, health changes and the peer's death timer decide at once; the periodic
        # tick only serves what ripens with time (failback delay, rate limits, reload).
        self._spawn(self._every(c.interval_ms * 2, self._tick_and_reload, "decide"), "decide")
        await self._stop.wait()
        await self._shutdown()
        return 0

    def _ask_reload(self) -> None:
        self._reload = True

    def _tick_and_reload(self) -> None:
        if self._reload:
            self._reload = False
            self._do_reload()
        self._tick()

    def _do_reload(self) -> None:
        if self.config_path is None:
            return
        try:
            new = load_agent_config(self.config_path)
        except SpecError as exc:
            self.event(f"reload refused, keeping the old config: {exc}", logging.ERROR)
            return
        fixed = ("cluster", "node", "peer", "port", "bind", "vips", "key_file")
        changed = [f for f in fixed if getattr(new, f) != getattr(self.cfg, f)]
        if changed:
            self.event(f"reload refused: {', '.join(changed)} need a restart", logging.ERROR)
            return
        self.cfg = new
        self.views.cfg = new
        self.pinger.targets = list(new.ping_nodes)
        m = self.membership
        m.interval_ms, m.warntime_ms = new.interval_ms, new.warntime_ms
        m.deadtime_ms, m.initdead_ms = new.deadtime_ms, new.initdead_ms
        self.event("configuration reloaded")

    async def _shutdown(self) -> None:
        """SIGTERM: hand our VIPs to a healthy peer (make-before-break), then exit."""
        held = [n for n, a in self.actors.items() if a.held]
        if held:
            self.event(f"stopping: handing {', '.join(held)} to {self.cfg.peer}")
            self.standby = True
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                self._send()
                self._tick()
                if not any(a.held for a in self.actors.values()):
                    break
                await asyncio.sleep(self.cfg.interval_ms / 1000)
            left = [n for n, a in self.actors.items() if a.held]
            if left:
                self.event(
                    f"stopping: {', '.join(left)} kept configured, "
                    f"{self.cfg.peer} could not take it",
                    logging.WARNING,
                )
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.api.close()
        self.pinger.close()
        for r in self.resources:
            await r.close()
        if self.transport is not None:
            self.transport.close()
        self.event(f"{self.cfg.node} stopped")


def _view_changed(before: Heartbeat | None, hb: Heartbeat, cfg: AgentConfig) -> bool:
    """Whether a heartbeat says something placement has not seen: a different view, or the
    peer's stability crossing the failback delay."""
    if before is None:
        return True
    fields = ("healthy", "pingable", "standby", "held", "wanted", "boot_id")
    if any(getattr(before, f) != getattr(hb, f) for f in fields):
        return True
    delay = cfg.failback_delay_ms
    return (before.stable_ms >= delay) != (hb.stable_ms >= delay)


def _realtime(enabled: bool) -> None:
    """Ask for SCHED_RR so a saturated machine does not delay heartbeats; fine if refused."""
    if not enabled:
        return
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(10))
    except (OSError, AttributeError) as exc:
        logger.info("real-time scheduling not available (%s); running with normal priority", exc)


def run_agent(config: Path) -> int:
    """Entry point of ``hapair agent``: load config, run, map fatal errors to exit codes."""
    cfg = load_agent_config(config)
    setup_logging(cfg.log_format, cfg.node)
    # The daemon logs peer transitions itself, as events.
    logging.getLogger("hapair.agent.membership").setLevel(logging.WARNING)
    try:
        return asyncio.run(Agent(cfg, config).run())
    except FatalError as exc:
        logger.error("fatal: %s", exc)
        return 1
