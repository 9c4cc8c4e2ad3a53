"""The HA agent daemon: asyncio wiring of heartbeats, health, the controller and the actors.

The loop is a thin shell. Observations (heartbeats, health readings, probes of the peer) go to
the pure :class:`~hapair.agent.controller.Controller`; each decision step hands every changed
wish to that VIP's actor and logs each move once, as a sentence with its reason.

It cannot die quietly: every loop and callback runs inside one safety net that logs an
unexpected error with its traceback ("please report") and carries on; only a
:class:`~hapair.errors.FatalError`, or a loop that ends although nobody asked it to, stops the
process, and then with a non-zero exit status (the supervisor, systemd or the lab's, restarts it).

:class:`Agent` joins its parts: the state (:mod:`~hapair.agent.pairstate`), heartbeats
(:mod:`~hapair.agent.pairbeats`), health and probes (:mod:`~hapair.agent.pairhealth`), operator
actions and reload (:mod:`~hapair.agent.pairops`) and the stop (:mod:`~hapair.agent.handover`),
on what it shares with the N-node agent (:mod:`~hapair.agent.core`); this module keeps the
decisions and the start.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from hapair.agent.api import StatusApi
from hapair.agent.boot import next_boot_id
from hapair.agent.config import AgentConfig, load_agent_config
from hapair.agent.controller import Step
from hapair.agent.core import KEY_REFRESH_MS, realtime, run_main, start_logging
from hapair.agent.dashboard import Dashboard  # dashboard hook
from hapair.agent.dashdoc import ClusterView  # dashboard hook
from hapair.agent.handover import Handover
from hapair.agent.history import MAX_MOVES  # dashboard hook
from hapair.agent.historyfile import HistoryFile  # dashboard hook
from hapair.agent.membership import PeerState
from hapair.agent.pairbeats import PairHeartbeats
from hapair.agent.pairhealth import PairHealth
from hapair.agent.pairops import PairOps
from hapair.agent.pingverdict import PING_EVERY_INTERVALS
from hapair.agent.statusdoc import status_document

logger = logging.getLogger("hapair.agent")

__all__ = ["KEY_REFRESH_MS", "Agent", "run_agent"]


class Agent(PairHeartbeats, PairHealth, PairOps, Handover):
    """One node's agent. Use ``await agent.run()``; stops on SIGTERM/SIGINT."""

    def __init__(self, cfg: AgentConfig, config_path: Path | None = None) -> None:
        super().__init__(cfg, config_path)
        self.api = StatusApi(self, self.token, Dashboard(ClusterView(self)))  # dashboard hook

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

    # ------------------------------------------------------------------ decisions
    def tick(self) -> None:
        """Decide now (inside the safety net); nothing once stopping has frozen decisions."""
        if self._frozen:
            return
        self.guarded("decide", self._decide)

    def _decide(self) -> None:
        self._notice_stall()
        now = self.now_ms()
        step = self.controller.step(
            now,
            held=self._held(),
            pingable=self.ping.pingable(now),
            pingable_now=self.ping.pingable_now(now),
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

    # ------------------------------------------------------------------ API backend
    def status(self) -> dict[str, Any]:
        """The ``/status`` document."""
        return status_document(self)

    # ------------------------------------------------------------------ lifecycle
    def open_history(self) -> int:
        """Dashboard hook: load the moves of earlier runs from the history file and keep every
        new one there (:mod:`hapair.agent.historyfile`); returns how many were loaded."""
        return self.history.attach(HistoryFile(self.cfg.history_path(), keep=MAX_MOVES))

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (exit 0) or a fatal error (exit 1)."""
        self._listen_signals(reload=self._ask_reload)
        asyncio.get_running_loop().set_exception_handler(self._loop_exception)
        self.boot_id = next_boot_id(self.cfg.boot_path())
        self.open_history()  # dashboard hook
        realtime(self.cfg.realtime, "; running with normal priority")
        await self._open_heartbeats(self.cfg.bind, self.cfg.port, self.on_datagram)
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
                if self.ping.pingable(self.now_ms()):
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
        every = self._spawn_every
        every(lambda: self.cfg.interval_ms, self._send, "heartbeat")
        every(lambda: self.cfg.health_interval_ms, self._read_stats, "health-stats")
        every(self._request_period_ms, self._probe_self, "health-requests")
        every(lambda: self.cfg.interval_ms * PING_EVERY_INTERVALS, self.pinger.send, "ping")
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


def run_agent(config: Path) -> int:
    """Entry point of ``hapair agent``: load config, run, map fatal errors to exit codes."""
    cfg = load_agent_config(config)
    start_logging(cfg.log_format, cfg.node)
    return run_main(lambda: Agent(cfg, config).run())
