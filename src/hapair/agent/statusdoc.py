"""The ``/status`` document: what one agent knows, as JSON-ready data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hapair.agent.history import process_usage

if TYPE_CHECKING:
    from hapair.agent.daemon import Agent

CONFIG_FIELDS = (
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


def status_document(agent: Agent) -> dict[str, Any]:
    """The ``/status`` document of ``agent``."""
    now = agent.now_ms()
    c = agent.controller
    m = c.membership
    last = m.last()
    silence = m.silence_ms(now)
    return {
        "self": agent.cfg.node,
        "cluster": agent.cfg.cluster,
        "boot_id": agent.boot_id,
        "uptime_s": round(now / 1000, 1),
        "process": process_usage(),
        "standby": agent.standby,
        "health": {
            "healthy": agent.health.healthy,
            "answers": agent.health.answers,
            "summary": agent.health.summary,
            "backends_up": agent.health.backends_up,
            "backends_total": agent.health.backends_total,
            "pingable": agent.pingable(),
            "stable_ms": int(c.stable_ms(now)),
            "flap_penalty_ms": int(c.penalty_ms(now)),
        },
        "peer": {
            "name": agent.cfg.peer,
            "state": str(m.state(now)),
            "last_heartbeat_ms": None if silence is None else int(silence),
            "loss": round(m.loss(now), 3),
            "effective_deadtime_ms": int(m.effective_deadtime_ms(now)),
            "serving": c.peer_serving(now),
            "view": None
            if last is None
            else {
                "healthy": last.healthy,
                "answers": last.answers,
                "pingable": last.pingable,
                "standby": last.standby,
                "held": sorted(last.held),
                "wanted": sorted(last.wanted),
                "stable_ms": last.stable_ms,
            },
        },
        "held": sorted(n for n, a in agent.actors.items() if a.held),
        "wanted": sorted(c.wanted_set()),
        "reasons": dict(c.reasons),
        "config": {k: getattr(agent.cfg, k) for k in CONFIG_FIELDS},
        "counters": {
            "heartbeats_sent": agent.seq,
            "dropped": dict(agent.decoder.dropped),
            "action_failures": {n: a.failures for n, a in agent.actors.items()},
            "unexpected_errors": agent.unexpected_errors,
        },
        "events": list(agent.events)[-30:],
    }
