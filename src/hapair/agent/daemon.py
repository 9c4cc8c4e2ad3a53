"""The HA agent daemon: asyncio wiring of heartbeats, health, the controller and the actors.

The loop is a thin shell. Observations (heartbeats, health readings, probes of the peer) go to
the pure :class:`~hapair.agent.controller.Controller`; each decision step hands every changed
wish to that VIP's actor and logs each move once, as a sentence with its reason.

It cannot die quietly: every loop and callback runs inside one safety net that logs an
unexpected error with its traceback ("please report") and carries on; only a
:class:`~hapair.errors.FatalError`, or a loop that ends although nobody asked it to, stops the
process, and then with a non-zero exit status (the supervisor, systemd or the lab's, restarts it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from hapair.agent.actor import VipActor
from hapair.agent.api import StatusApi
from hapair.agent.boot import next_boot_id
from hapair.agent.config import AgentConfig, load_agent_config
from hapair.agent.controller import Controller, Step
from hapair.agent.dashboard import Dashboard  # dashboard hook
from hapair.agent.dashdoc import ClusterView  # dashboard hook
from hapair.agent.drain import make_drainer  # failback drain
from hapair.agent.health import (
    CALM_REQUEST_FACTOR,
    Health,
    HealthGate,
    Pinger,
    http_ok,
    read_stats,
)
from hapair.agent.history import History  # dashboard hook
from hapair.agent.keyring import Keyring
from hapair.agent.logs import setup_logging
from hapair.agent.membership import PeerState
from hapair.agent.metrics import Metrics
from hapair.agent.protocol import Decoder, Heartbeat, encode
from hapair.agent.resources.base import FakeFloatingIP, FloatingIP
from hapair.agent.statusdoc import status_document
from hapair.errors import FatalError, SpecError

logger = logging.getLogger("hapair.agent")

DROP_LOG_EVERY_S = 10.0
"""Dropped datagrams are logged at most once per reason in this many seconds."""
MAX_SELF_PROBES = 8
#: How often (ms) the cluster key files are checked for a rotation (and on SIGHUP).
KEY_REFRESH_MS = 5000.0
"""Requests through the local HAProxy in flight at once, at most."""


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
        self.agent.guarded("heartbeat receiver", self.agent.on_datagram, data)


class Agent:
    """One node's agent. Use ``await agent.run()``; stops on SIGTERM/SIGINT."""

    def __init__(self, cfg: AgentConfig, config_path: Path | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.keyring = Keyring(Path(cfg.key_file))
        self.token = Path(cfg.admin_token_file).read_text().strip()
        self.metrics = Metrics()
        self.boot_id = 0
        self.seq = 0
        self.t0 = time.monotonic()
        self.decoder = Decoder(self.keyring, cfg.cluster, cfg.node, {cfg.peer})
        self.controller = Controller(
            cfg.node, cfg.peer, [(v.name, v.home) for v in cfg.vips], cfg, start_ms=0.0
        )
        self.resources = [make_resource(cfg, i) for i in range(len(cfg.vips))]
        self.drainer = make_drainer(lambda: self.cfg, lambda: self.controller.membership)
        self.actors = {
            r.name: VipActor(r, cfg.action_timeout_ms / 1000, self._on_action, self.drainer)
            for r in self.resources
        }
        self.gate = HealthGate(rise=cfg.health_rise, fall=cfg.health_fall)
        self.health: Health = self.gate.current
        self.pinger = Pinger(list(cfg.ping_nodes))
        self.standby = False
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)
        self.transport: asyncio.DatagramTransport | None = None
        # Dashboard hook: the moves it shows (history.py) and the page on the API.
        self.history = History(cfg.node, cfg.peer, {v.name: v.home for v in cfg.vips})
        self.api = StatusApi(self, self.token, Dashboard(ClusterView(self)))
        self.unexpected_errors = 0
        self.exit_code = 0
        self._stop = asyncio.Event()
        self._stopping = False
        #: set when stopping keeps what this node holds: no decision after that
        self._frozen = False
        self._reload = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._probes: set[asyncio.Task[None]] = set()
        self._dropped_counted: dict[str, int] = {}
        self._dropped_logged: dict[str, tuple[float, int]] = {}
        self._ready = False
        self._timers: list[asyncio.TimerHandle] = []
        self._peer_probe: asyncio.Task[None] | None = None
        self._heard_at: float | None = None

    # ------------------------------------------------------------------ clock and events
    def now_ms(self) -> float:
        """Milliseconds on the monotonic clock since the agent started."""
        return (time.monotonic() - self.t0) * 1000.0

    def event(self, message: str, level: int = logging.INFO) -> None:
        """Log a sentence once and keep it in the recent-events list of ``/status``."""
        logger.log(level, "%s", message)
        t = time.time()  # read once: the seconds and the milliseconds agree
        stamp = time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"
        self.events.append({"time": stamp, "message": message})

    # ------------------------------------------------------------------ the safety net
    def guarded(self, where: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)``; an unexpected error is logged and counted, never fatal."""
        try:
            return fn(*args)
        except FatalError:
            raise
        except Exception:
            self._unexpected(where)
            return None

    def _unexpected(self, where: str) -> None:
        self.unexpected_errors += 1
        self.metrics.unexpected.labels(where).inc()
        logger.exception("unexpected error in %s, please report; carrying on", where)

    def _fatal(self, reason: str) -> None:
        if not self._stopping:
            self.event(f"fatal: {reason}; exiting", logging.ERROR)
        self.exit_code = 1
        self._stop.set()

    # ------------------------------------------------------------------ actions
    def _on_action(self, vip: str, action: str, ok: bool, took: float, err: str) -> None:
        if ok:
            self.metrics.held.labels(vip).set(1 if action == "start" else 0)
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
            self._count_drops()
            return
        self.metrics.hb_received.inc()
        before = self.controller.membership.last()
        changed = self.controller.observe_heartbeat(hb, self.now_ms())
        self.history.observe_peer(before, hb)  # dashboard hook: the peer's moves
        self._heard_at = time.monotonic()
        # If the next heartbeat is late, ping at once (is it the peer or this node's own link?),
        # and decide again the moment the peer could turn dead, not at the next periodic tick.
        for timer in self._timers:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._timers = [
            loop.call_later(1.5 * self.cfg.interval_ms / 1000, self.pinger.send),
            loop.call_later(1.5 * self.cfg.interval_ms / 1000 + 0.001, self._kick_peer_probe),
            loop.call_later(self.cfg.deadtime_ms / 1000 + 0.001, self.tick),
        ]
        self._announce_if_released(before, hb)
        if self._ready and changed:
            self.tick()  # a peer's change of view matters now

    def _count_drops(self) -> None:
        """Count drops by reason; log the first at once, then at most one summary per reason
        every :data:`DROP_LOG_EVERY_S` (a flood of garbage must not flood the log)."""
        now = time.monotonic()
        for reason, total in self.decoder.dropped.items():
            counted = self._dropped_counted.get(reason, 0)
            if total == counted:
                continue
            self.metrics.hb_dropped.labels(reason).inc(total - counted)
            self._dropped_counted[reason] = total
            at, logged = self._dropped_logged.get(reason, (0.0, 0))
            if logged == 0 or now - at >= DROP_LOG_EVERY_S:
                self.event(
                    f"dropped {total - logged} heartbeat datagram(s): {reason} ({total} so far)",
                    logging.WARNING,
                )
                self._dropped_logged[reason] = (now, total)

    def _announce_if_released(self, before: Heartbeat | None, hb: Heartbeat) -> None:
        """The peer just stopped holding a VIP this node holds and wants: announce it again, so
        that no late gratuitous ARP of the peer's leaves clients pointing at it."""
        for vip in sorted(self.controller.peer_released(hb, before)):
            actor = self.actors.get(vip)
            if actor is not None and actor.held and actor.desired:
                self.event(f"announcing {vip} again: {self.cfg.peer} released it")
                actor.want(True, announce=True)

    def _heartbeat(self) -> Heartbeat:
        self.seq += 1
        c = self.controller
        return Heartbeat(
            cluster=self.cfg.cluster,
            node=self.cfg.node,
            boot_id=self.boot_id,
            seq=self.seq,
            healthy=self.health.healthy,
            answers=self.health.answers,
            pingable=self.pinger.reachable(window=1.0),
            stable_ms=int(c.stable_ms(self.now_ms())),
            standby=self.standby,
            held=c.claimed(self._held()),
            wanted=c.wanted_set(),
        )

    def _send(self) -> None:
        gap = self.controller.loop_ran(self.now_ms())
        if gap is not None:
            self.event(gap, logging.WARNING)
            # The ping replies that came in meanwhile could not be read either: the last
            # verdict stands until a fresh ping round has had its chance.
            self.pinger.blind(self.controller.last_gap_ms / 1000)
            self.pinger.send()
        if self.transport is None:
            return
        for addr in self.cfg.peer_addresses:
            # One sequence number per datagram: the copy sent to the peer's second address
            # is not a replay of the first.
            data = encode(self._heartbeat(), self.keyring.signing_key(time.time()))
            with contextlib.suppress(OSError):
                self.transport.sendto(data, (addr, self.cfg.port))
            self.metrics.hb_sent.inc()

    def pingable(self) -> bool:
        """Whether this node reaches a ping node, as its decisions see it (for status)."""
        if self.controller.membership.current is PeerState.DEAD:
            return self.pingable_now()
        return self.pinger.reachable(window=1.0)

    def pingable_now(self) -> bool:
        """Whether a ping node answered a request sent after the peer's next heartbeat was due
        (the controller relies on it once the peer is dead: if the silence is this node's own
        link going down, an older reply proves nothing). The heartbeat and the plain verdict
        use the one-second window: a late heartbeat on a lossy link must not make this node
        look cut off."""
        since = self._heard_at + self.cfg.interval_ms / 1000 if self._heard_at else None
        return self.pinger.reachable(window=1.0, since=since)

    def _held(self) -> frozenset[str]:
        """What this node holds, a VIP being released counting as gone."""
        return frozenset(n for n, a in self.actors.items() if a.held and a.desired is not False)

    # ------------------------------------------------------------------ decisions
    def tick(self) -> None:
        """Decide now (inside the safety net); nothing once stopping has frozen decisions."""
        if self._frozen:
            return
        self.guarded("decide", self._decide)

    def _decide(self) -> None:
        step = self.controller.step(
            self.now_ms(),
            held=self._held(),
            pingable=self.pinger.reachable(window=1.0),
            pingable_now=self.pingable_now(),
            standby=self.standby,
        )
        self._carry_out(step)

    def _carry_out(self, step: Step) -> None:
        for sentence in step.events:
            self.event(sentence)
        for vip, want in step.wishes.items():
            self.actors[vip].want(want, announce=want)
        for move in step.moves:
            self.event(move.sentence)
            self.history.record_move(move)  # dashboard hook: the VIP timeline
            action = "take" if move.take else "release"
            self.metrics.moves.labels(move.vip, action, move.label).inc()
            if move.failover_ms is not None:
                self.metrics.failover.observe(move.failover_ms / 1000)
        for vip in step.announce:
            self.actors[vip].want(True, announce=True)
        m = self.controller.membership
        now = self.now_ms()
        self.metrics.peer_up.set(1 if m.state(now) in (PeerState.UP, PeerState.WARN) else 0)
        self.metrics.peer_loss.set(m.loss(now))

    # ------------------------------------------------------------------ loops
    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or self._stopping:
            return
        exc = task.exception()
        if isinstance(exc, FatalError):
            self._fatal(str(exc))
        else:
            logger.error("loop %s ended unexpectedly: %r, please report", task.get_name(), exc)
            self._fatal(f"loop {task.get_name()} ended")

    async def _every(
        self, period_ms: Callable[[], float], fn: Callable[[], Any], name: str
    ) -> None:
        """Call ``fn`` every ``period_ms()`` (read each round, so a reload takes effect)."""
        next_at = time.monotonic()
        while True:
            try:
                result = fn()
                if asyncio.iscoroutine(result):
                    await result
            except (FatalError, asyncio.CancelledError):
                raise
            except Exception:
                self._unexpected(name)
            period = period_ms() / 1000
            next_at += period
            delay = next_at - time.monotonic()
            if delay < -period:
                self.metrics.cycle_overruns.inc()
                next_at = time.monotonic()
                delay = 0
            await asyncio.sleep(max(delay, 0))

    async def _read_stats(self) -> None:
        answers, up, total = await read_stats(
            self.cfg.stats_socket, timeout=min(0.5, self.cfg.health_interval_ms / 1000 * 5)
        )
        self._apply_health(self.gate.stats(answers, up, total))

    def _request_period_ms(self) -> float:
        calm = self.gate.calm and not self.standby
        return self.cfg.health_interval_ms * (CALM_REQUEST_FACTOR if calm else 1)

    def _probe_self(self) -> None:
        """Start one request through the local HAProxy, without waiting for the last one."""
        if len(self._probes) >= MAX_SELF_PROBES:
            self._apply_health(self.gate.request(False, self.now_ms()))
            return
        task = asyncio.get_running_loop().create_task(self._request_self(), name="self-probe")
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _request_self(self) -> None:
        started = self.now_ms()
        ok = await http_ok(
            "127.0.0.1",
            self.cfg.http_port,
            self.cfg.check_path,
            timeout=self.cfg.request_timeout_ms / 1000,
        )
        self.guarded("health", lambda: self._apply_health(self.gate.request(ok, started)))

    def _apply_health(self, h: Health) -> None:
        before = self.health
        self.health = h
        changed = self.controller.observe_health(h.healthy, h.answers, self.gate.ok_started_ms)
        if h.healthy != before.healthy or h.answers != before.answers:
            self.event(f"health: {h.summary}")
            self.metrics.healthy.set(1 if h.healthy else 0)
        if self._ready and changed:
            self.tick()

    def _kick_peer_probe(self) -> None:
        """The peer's next heartbeat is late: start probing it (unless a probe runs)."""
        if self._peer_probe is None or self._peer_probe.done():
            loop = asyncio.get_running_loop()
            self._peer_probe = loop.create_task(self._probe_peer_while_late(), name="peer-probe")

    async def _probe_peer_while_late(self) -> None:
        """The side channel: real requests through the peer's HAProxy, one after the other,
        made only while its heartbeats are late (in steady state the heartbeats say
        everything, and nothing wakes up for it)."""
        while not self._stopping and self.controller.should_probe(self.now_ms()):
            try:
                await self._probe_peer()
            except Exception:
                self._unexpected("peer-probe")
            await asyncio.sleep(self.cfg.interval_ms / 2000)

    async def _probe_peer(self) -> None:
        """One request through the peer's HAProxy; a failure decides at once."""
        c = self.controller
        started = self.now_ms()
        ok = await http_ok(
            self.cfg.peer_probe_address,
            self.cfg.http_port,
            self.cfg.check_path,
            timeout=c.probe_timeout_ms() / 1000,
        )
        c.observe_probe(ok, started)
        if not ok and self._ready:
            self.tick()  # the verdict a silent peer's death waited for

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
            except (OSError, TimeoutError) as exc:
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
        return status_document(self)

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
        self.tick()
        if on:
            return (
                f"{self.cfg.node} in standby: its VIPs move to {self.cfg.peer} once it holds them"
            )
        delay = self.cfg.failback_delay_ms
        return f"{self.cfg.node} online: it takes its VIPs back after {delay} ms of stable health"

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (exit 0) or a fatal error (exit 1)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._ask_reload)
        loop.set_exception_handler(self._loop_exception)
        self.boot_id = next_boot_id(self.cfg.boot_path())
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
                if self.pinger.reachable(window=1.0):
                    break
        self.event(
            f"{self.cfg.node} starting (boot {self.boot_id}); peer {self.cfg.peer} at "
            f"{', '.join(self.cfg.peer_addresses)}; VIPs "
            + ", ".join(f"{v.name} {v.address} (home {v.home})" for v in self.cfg.vips)
        )
        await self.drainer.clean()  # failback drain: leftovers of a killed agent
        # What do we hold right now? (a restart on a live host may find a VIP still configured)
        await self._reconcile()
        found = [a.resource.name for a in self.actors.values() if a.held]
        for name in found:
            self.event(f"found {name} configured here at start")
        self.controller.found(found)
        # So that the first heartbeat tells the truth: one stats reading, one request.
        await self._read_stats()
        await self._request_self()
        self._ready = True
        self.tick()
        self._start_loops()
        await self._stop.wait()
        await self._shutdown()
        return self.exit_code

    def _start_loops(self) -> None:
        for actor in self.actors.values():
            self._spawn(actor.run(), f"actor-{actor.resource.name}")

        def every(period: Callable[[], float], fn: Callable[[], Any], name: str) -> None:
            self._spawn(self._every(period, fn, name), name)

        every(lambda: self.cfg.interval_ms, self._send, "heartbeat")
        every(lambda: self.cfg.health_interval_ms, self._read_stats, "health-stats")
        every(self._request_period_ms, self._probe_self, "health-requests")
        every(lambda: self.cfg.interval_ms * 2, self.pinger.send, "ping")
        every(lambda: self.cfg.reconcile_interval_ms, self._reconcile, "reconcile")
        every(lambda: KEY_REFRESH_MS, self.refresh_keys, "keys")
        # Heartbeats, health changes and the peer's death timer decide at once; the periodic
        # tick only serves what ripens with time (failback delay, rate limits, reload).
        every(lambda: self.cfg.interval_ms * 2, self._tick_and_reload, "decide")

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Errors asyncio catches itself (callbacks, unretrieved task exceptions)."""
        self.unexpected_errors += 1
        self.metrics.unexpected.labels("event-loop").inc()
        logger.error(
            "unexpected error in the event loop, please report: %s",
            context.get("message"),
            exc_info=context.get("exception"),
        )

    def _ask_reload(self) -> None:
        self._reload = True

    def _tick_and_reload(self) -> None:
        if self._reload:
            self._reload = False
            self.reload()
        self.tick()

    def refresh_keys(self) -> None:
        """Read the cluster key files again if they changed (a rotation: the old key keeps
        counting for an overlap, :mod:`hapair.agent.keyring`); unreadable new files leave the
        keys in use untouched."""
        try:
            changed = self.keyring.refresh()
        except FatalError as exc:
            self.event(f"new cluster key refused, keeping the keys in use: {exc}", logging.ERROR)
            return
        if changed:
            k, now = self.keyring.keys, time.time()
            if k.previous is None or now >= k.drop_at:
                self.event("cluster key changed: signing and accepting the new key only")
            else:
                self.event(
                    f"cluster key changed: signing with the new key in "
                    f"{max(0.0, k.switch_at - now):.0f} s, accepting the old one for "
                    f"{k.drop_at - now:.0f} s"
                )

    def reload(self) -> bool:
        """SIGHUP: apply the config file again, as a whole or not at all. Returns whether it
        was applied."""
        self.refresh_keys()
        if self.config_path is None:
            return False
        try:
            new = load_agent_config(self.config_path)
        except SpecError as exc:
            self.event(f"reload refused, keeping the old config: {exc}", logging.ERROR)
            return False
        fixed = (
            "cluster",
            "node",
            "peer",
            "port",
            "bind",
            "vips",
            "key_file",
            "api_port",
            "api_bind",
            "api_socket",
            "boot_file",
        )
        changed = [f for f in fixed if getattr(new, f) != getattr(self.cfg, f)]
        if changed:
            self.event(
                f"reload refused, keeping the old config: {', '.join(changed)} need a restart",
                logging.ERROR,
            )
            return False
        self.cfg = new
        self.controller.retime(new)
        self.pinger.targets = list(new.ping_nodes)
        self.gate.rise, self.gate.fall = new.health_rise, new.health_fall
        for actor in self.actors.values():
            actor.timeout = new.action_timeout_ms / 1000
        self.event("configuration reloaded: every loop uses the new timings")
        return True

    def _peer_cannot_take(self) -> str | None:
        """Why the peer cannot take this node's VIPs now (stopping), or ``None``."""
        m = self.controller.membership
        state = m.state(self.now_ms())
        if state not in (PeerState.UP, PeerState.WARN):
            return f"{self.cfg.peer} is {state}"
        last = m.last()
        if last is not None and last.standby:
            return f"{self.cfg.peer} is in standby or leaving too"
        return None

    async def _settle_actions(self, timeout: float) -> None:
        """Let actions under way finish (bounded), so that what is kept is what is held."""
        deadline = time.monotonic() + timeout
        while any(a.busy for a in self.actors.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def _shutdown(self) -> None:
        """SIGTERM: hand our VIPs to a healthy peer (make-before-break), then exit. A peer
        that cannot take them (in standby, leaving too, silent) gets nothing: this node
        stops deciding and exits with what it holds still configured, so that HAProxy keeps
        serving it and the next start finds it (handing a VIP to a peer that is leaving too
        only makes it come back, and its announcement can outlive it)."""
        held = [n for n, a in self.actors.items() if a.held]
        if held and self.exit_code == 0:
            self.event(f"stopping: handing {', '.join(held)} to {self.cfg.peer}")
            self.standby = True
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                self._send()
                why = self._peer_cannot_take()
                if why is not None:
                    self._frozen = True  # no decision from here on, heartbeat-driven included
                    await self._settle_actions(1.0)
                    self.event(f"stopping: {why}; keeping what this node holds")
                    break
                self.tick()
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
        self._stopping = True
        probes = [*self._probes, *([self._peer_probe] if self._peer_probe else [])]
        for task in [*self._tasks, *probes]:
            task.cancel()
        for task in [*self._tasks, *probes]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.drainer.close()  # failback drain: end running drains, remove their rules
        await self.api.close()
        self.pinger.close()
        for r in self.resources:
            await r.close()
        if self.transport is not None:
            self.transport.close()
        self.event(f"{self.cfg.node} stopped")


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
