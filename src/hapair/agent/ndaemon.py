"""The N-node agent daemon (``coordinator = "etcd"``): heartbeats to every peer, health, etcd,
and the actors that carry the decisions of :mod:`hapair.agent.nnode` out.

Heartbeats go to every other LB, a full mesh (:mod:`hapair.agent.nmesh` says why).

A tick reads one snapshot (:class:`~hapair.agent.nnode.View`), calls the pure ``decide()``,
hands each wish to the VIP's actor and starts the etcd acquisitions; a granted VIP is added and
announced (gratuitous ARP) only once etcd has said so. The safety net, the event log, the
periodic loops, the reconcile pass and the stop's last steps are shared with the pair
(:mod:`hapair.agent.core`); the health gate and the ping nodes are the pair's, reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from hapair.agent.actor import VipActor
from hapair.agent.api import StatusApi
from hapair.agent.boot import next_boot_id
from hapair.agent.core import (
    HANDOFF_S,
    KEY_REFRESH_MS,
    AgentCore,
    realtime,
    reconcile,
    run_main,
    start_logging,
)
from hapair.agent.dashboard import Dashboard
from hapair.agent.health import Health, HealthGate, Pinger, http_ok, read_stats
from hapair.agent.keyring import Keyring
from hapair.agent.nconfig import NodeConfig, load_node_config
from hapair.agent.ndashdoc import NodeClusterView
from hapair.agent.netcd import EtcdLink
from hapair.agent.netcdinfo import EtcdInfo
from hapair.agent.nmesh import Mesh
from hapair.agent.nnode import (
    Acquire,
    Decision,
    SelfView,
    SetStability,
    Stability,
    Timings,
    View,
    decide,
    eligible,
)
from hapair.agent.nstatus import node_status
from hapair.agent.pingverdict import PING_EVERY_INTERVALS, PingVerdict
from hapair.agent.protocol import Heartbeat
from hapair.agent.resources.base import FakeFloatingIP, FloatingIP
from hapair.errors import FatalError

logger = logging.getLogger("hapair.agent")

#: How long a node waits at start for its etcd lease and a first read of the owners (s).
ETCD_START_S = 5.0


def make_resource(cfg: NodeConfig, index: int) -> FloatingIP:
    """The resource agent of VIP ``index`` (``l2`` or ``fake``; AWS runs the pair only)."""
    v = cfg.vips[index]
    if v.driver == "l2":
        from hapair.agent.resources.l2 import L2FloatingIP

        return L2FloatingIP(v.name, v.address, v.ifname)
    if v.driver == "fake":
        return FakeFloatingIP(v.name, v.address)
    raise FatalError(f"vips.{index}.driver: {v.driver} is not supported with etcd; use l2")


class NodeAgent(AgentCore):
    """One LB's N-node agent. Use ``await agent.run()``; stops on SIGTERM/SIGINT."""

    #: An etcd acquisition or a request through the local HAProxy ends by itself.
    one_shot_tasks = ("acquire-", "probe-")

    def __init__(self, cfg: NodeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.keyring = Keyring(Path(cfg.key_file))
        self.token = Path(cfg.admin_token_file).read_text().strip()
        self.mesh = Mesh(cfg, self.keyring, self.metrics, self.now_ms, self.tick, self.event)
        self.resources = [make_resource(cfg, i) for i in range(len(cfg.vips))]
        timeout = cfg.action_timeout_ms / 1000
        self.actors = {
            r.name: VipActor(r, timeout, self._on_action, unexpected=self.unexpected)
            for r in self.resources
        }
        self.gate = HealthGate(rise=cfg.health_rise, fall=cfg.health_fall)
        self.health: Health = self.gate.current
        self.pinger = Pinger(PingVerdict(cfg.ping_nodes, cfg.interval_ms), self.now_ms)
        self.stability = Stability()
        self.eligible_set = SetStability()
        self.standby = False
        self.etcd = EtcdLink(
            endpoints=list(cfg.etcd_endpoints),
            user=cfg.etcd_user,
            password_file=cfg.etcd_password_file,
            timeout_s=cfg.etcd_timeout_ms / 1000,
            ttl_s=cfg.lease_ttl_s,
            poll_s=cfg.etcd_poll_ms / 1000,
            cluster=cfg.cluster,
            me=cfg.node,
            vips=[v.name for v in cfg.vips],
            now_ms=self.now_ms,
            on_change=self.tick,
            event=self.event,
        )
        self.etcd_info = EtcdInfo(
            self.etcd.client, cfg.etcd_endpoints, lambda: self.etcd.ownership.owners
        )
        self.last_move_ms: float | None = None
        self.last: Decision | None = None
        self.api = StatusApi(self, self.token, Dashboard(NodeClusterView(self)))

    # ------------------------------------------------------------------ actions
    def _on_action(self, vip: str, action: str, ok: bool, took: float, err: str) -> None:
        if ok:
            self.metrics.held.labels(vip).set(1 if action == "start" else 0)
        else:
            self.metrics.action_failures.labels(vip, action).inc()
            self.event(f"{action} of {vip} failed after {took * 1000:.0f} ms: {err}; retrying")
        if ok and self._ready:
            self._send()  # the peers learn at once what this node carries (make-before-break)

    # ------------------------------------------------------------------ heartbeats
    def _heartbeat(self, seq: int) -> Heartbeat:
        return Heartbeat(
            cluster=self.cfg.cluster,
            node=self.cfg.node,
            boot_id=self.boot_id,
            seq=seq,
            healthy=self.health.healthy,
            answers=self.health.answers,
            pingable=self.pinger.verdict.pingable(self.now_ms()),
            stable_ms=int(self.stability.update(self._eligible_self(), self.now_ms())),
            # With etcd, standby means "takes no VIP": an operator's, or no valid lease.
            standby=self.standby or not self.etcd.usable(),
            # Only what is carried: 64 VIP names fit in one datagram, twice would not.
            held=self._held(),
            coordinated=self.etcd.available,
        )

    def _send(self) -> None:
        self.mesh.send(self.transport, self._heartbeat)

    # ------------------------------------------------------------------ decisions
    def _eligible_self(self) -> bool:
        return self.health.healthy and not self.standby and self.etcd.usable()

    def view(self) -> View:
        """The snapshot a decision reads."""
        now = self.now_ms()
        own = SelfView(
            healthy=self.health.healthy,
            answers=self.health.answers,
            pingable=self.pinger.verdict.pingable(self.now_ms()),
            standby=self.standby,
            stable_ms=self.stability.update(self._eligible_self(), now),
        )
        c = self.cfg
        v = View(
            now_ms=now,
            me=c.node,
            vips=tuple(v.name for v in c.vips),
            own=own,
            peers=self.mesh.views(now),
            etcd=self.etcd.view(),
            held=frozenset(n for n, a in self.actors.items() if a.held),
            lost_at=dict(self.etcd.ownership.lost_at),
            pending=frozenset(self.etcd.pending),
            last_move_ms=self.last_move_ms,
            timings=Timings(
                c.auto_failback, c.failback_delay_ms, c.min_move_interval_ms, c.handover_ms
            ),
        )
        stable = self.eligible_set.update(eligible(v)[1], now)
        return dataclasses.replace(v, eligible_stable_ms=stable)

    def tick(self) -> None:
        """Decide now (inside the safety net)."""
        if self._ready:
            self.guarded("decide", self._decide)

    def _decide(self) -> None:
        for sentence in self.mesh.transitions():
            self.event(sentence)
        d = decide(self.view())
        if self.last is None or d.summary != self.last.summary:
            logger.debug("decision: %s", d.summary)
        for vip, want in d.wishes.items():
            actor = self.actors[vip]
            if not want and (actor.desired or (actor.desired is None and actor.held)):
                self.event(f"released {vip}: {d.reasons[vip]}")
                self.metrics.moves.labels(vip, "release", "other").inc()
            actor.want(want)
        for a in d.acquire:
            self.etcd.pending.add(a.vip)  # no second acquire of it before this one ends
            self._spawn(self._acquire(a), f"acquire-{a.vip}")
        self.last = d

    async def _acquire(self, a: Acquire) -> None:
        grant = await self.etcd.acquire(a)
        if grant is None:
            self.tick()
            return
        if not grant.granted:
            self.event(f"not taking {a.vip}: {grant.reason}")
            self.tick()
            return
        if a.kind == "balance":
            self.last_move_ms = self.now_ms()
        self.event(a.reason)
        label = (
            "failback" if a.kind == "balance" else "failover" if a.kind == "failover" else "startup"
        )
        self.metrics.moves.labels(a.vip, "take", label).inc()
        self.actors[a.vip].want(True, announce=True)
        self.tick()

    # ------------------------------------------------------------------ loops
    def _loop_ended(self, name: str, exc: BaseException | None) -> None:
        logger.error("loop %s ended: %r, please report", name, exc)
        self.exit_code = 1
        self._stop.set()

    async def _read_stats(self) -> None:
        answers, up, total = await read_stats(self.cfg.stats_socket, timeout=0.5)
        self._apply_health(self.gate.stats(answers, up, total))

    def _probe_self(self) -> None:
        """Start one request through the local HAProxy, without waiting for the last one."""
        self._spawn(self._request_self(), "probe-self")

    async def _request_self(self) -> None:
        started = self.now_ms()
        ok = await http_ok(
            "127.0.0.1", self.cfg.http_port, self.cfg.check_path, self.cfg.request_timeout_ms / 1000
        )
        self._apply_health(self.gate.request(ok, started))

    def _apply_health(self, h: Health) -> None:
        before, self.health = self.health, h
        if h.healthy != before.healthy or h.answers != before.answers:
            self.event(f"health: {h.summary}")
            self.metrics.healthy.set(1 if h.healthy else 0)
            self.tick()

    async def _reconcile(self) -> None:
        await reconcile(self.actors.values(), self.cfg.action_timeout_ms / 1000, self.metrics)

    # ------------------------------------------------------------------ API backend
    def status(self) -> dict[str, Any]:
        """The ``/status`` document."""
        return node_status(self)

    async def set_standby(self, on: bool) -> str:
        """Standby: the others take this node's VIPs (make-before-break); online: it takes its
        share back after ``failback_delay``."""
        if on == self.standby:
            return f"{self.cfg.node} is already {'in standby' if on else 'online'}"
        self.standby = on
        self.event(f"operator: {self.cfg.node} {'standby' if on else 'online'}")
        self._send()
        self.tick()
        if on:
            return f"{self.cfg.node} in standby: its VIPs move to the other LBs once they hold them"
        return (
            f"{self.cfg.node} online: it takes its share back after {self.cfg.failback_delay_ms} ms"
        )

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (exit 0) or a fatal error (exit 1)."""
        self._listen_signals()
        self.boot_id = next_boot_id(self.cfg.boot_path())
        realtime(self.cfg.realtime)
        await self._open_heartbeats(self.cfg.bind, self.cfg.port, self.mesh.receive)
        await self.api.start(self.cfg.api_bind, self.cfg.api_port, self.cfg.api_socket or None)
        with contextlib.suppress(OSError):
            self.pinger.open()
            self.pinger.send()
        peers = ", ".join(f"{p.name} at {p.addresses[0]}" for p in self.cfg.peers)
        self.event(
            f"{self.cfg.node} starting (boot {self.boot_id}, N-node, etcd "
            f"{', '.join(self.cfg.etcd_endpoints)}); peers {peers}; {len(self.cfg.vips)} VIPs"
        )
        await self._reconcile()
        for name in sorted(n for n, a in self.actors.items() if a.held):
            self.event(f"found {name} configured here at start")
        await self._read_stats()
        await self._request_self()
        await self.etcd.start(ETCD_START_S)
        self._ready = True
        for coro, name in (
            (self.etcd.lease_loop(), "etcd-lease"),
            (self.etcd.watch_loop(), "etcd-watch"),
            (self.etcd.poll_loop(), "etcd-poll"),
            (self.etcd_info.loop(), "etcd-info"),
            *((a.run(), f"actor-{n}") for n, a in self.actors.items()),
        ):
            self._spawn(coro, name)
        c, every = self.cfg, self._spawn_every
        every(lambda: c.interval_ms, self._send, "heartbeat")
        every(lambda: c.health_interval_ms, self._read_stats, "health-stats")
        every(lambda: c.health_interval_ms, self._probe_self, "health")
        every(lambda: c.interval_ms / 2, self.mesh.probe_late, "peer-probe")
        every(lambda: c.interval_ms * PING_EVERY_INTERVALS, self.pinger.send, "ping")
        every(lambda: c.reconcile_interval_ms, self._reconcile, "reconcile")
        every(lambda: c.interval_ms * 2, self.tick, "decide")
        every(lambda: KEY_REFRESH_MS, self.keyring.refresh, "keys")
        self.tick()
        await self._stop.wait()
        await self._shutdown()
        return self.exit_code

    async def _shutdown(self) -> None:
        """SIGTERM: standby, wait (bounded) until the others carry this node's VIPs, revoke."""
        if self._held() and self.exit_code == 0:
            self.event(f"stopping: handing {', '.join(sorted(self._held()))} to the other LBs")
            self.standby = True
            deadline = time.monotonic() + HANDOFF_S
            while self._held() and time.monotonic() < deadline:
                self._send()
                self.tick()
                await asyncio.sleep(self.cfg.interval_ms / 1000)
        left = sorted(self._held())
        if left:
            self.event(f"stopping: {', '.join(left)} kept configured, nobody took it")
        await self._end_tasks()
        await self.mesh.close()
        self.etcd_info.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self.etcd.close(revoke=not left)
        await self._close(self.cfg.node)


def run_node_agent(config: Path) -> int:
    """Entry point for an N-node ``agent.toml``: load, run, map fatal errors to exit 1."""
    cfg = load_node_config(config)
    start_logging(cfg.log_format, cfg.node)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # The lease keeper's grants and fences are logged as this agent's events.
    logging.getLogger("hapair.coord.etcd_store").setLevel(logging.ERROR)
    return run_main(lambda: NodeAgent(cfg).run())
