"""The N-node agent's ``/status`` document: itself, every peer, etcd (lease, owners) and the
decision's reasons, as JSON-ready data. ``held`` and ``wanted`` mean what they mean for the
pair (``wanted``: what etcd granted this node), so ``hapair status`` reads both alike."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hapair.agent.history import process_usage

if TYPE_CHECKING:
    from hapair.agent.ndaemon import NodeAgent

CONFIG_FIELDS = (
    "interval_ms",
    "warntime_ms",
    "deadtime_ms",
    "initdead_ms",
    "auto_failback",
    "failback_delay_ms",
    "min_move_interval_ms",
    "handover_ms",
    "etcd_lease_ttl_ms",
    "ping_nodes",
)


def node_status(agent: NodeAgent) -> dict[str, Any]:
    """The ``/status`` document of an N-node ``agent``."""
    now = agent.now_ms()
    view = agent.view()
    peers = []
    for p in view.peers:
        m = agent.mesh.members[p.name]
        peers.append(
            {
                "name": p.name,
                "state": str(m.state(now)),
                "liveness": str(p.liveness),
                "last_heartbeat_ms": None if p.silence_ms is None else int(p.silence_ms),
                "loss": round(m.loss(now), 3),
                "healthy": p.healthy,
                "standby": p.standby,
                "held": sorted(p.held),
            }
        )
    e = view.etcd
    agent.etcd_info.ask()  # someone looks: the members and leases are read again soon
    k = agent.etcd.keeper
    last = agent.last
    return {
        "self": agent.cfg.node,
        "cluster": agent.cfg.cluster,
        "coordinator": "etcd",
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
            "pingable": view.own.pingable,
            "stable_ms": int(view.own.stable_ms),
        },
        "peers": peers,
        "etcd": {
            "endpoints": agent.etcd.endpoints,
            "available": e.available,
            "lease": None if e.lease is None else f"{e.lease:x}",
            "lease_valid": e.valid,
            "lease_left_ms": None if k.lease is None else int((k.fence_at - k.clock()) * 1000),
            "fenced": e.fenced or None,
            "last_error": agent.etcd.last_error or None,
            "owners": {
                vip: {"node": o.node, "lease": f"{o.lease:x}", "mod_revision": o.mod_revision}
                for vip, o in sorted(e.owners.items())
            },
            # members (health, leader), leader, healthy_members, leases (per VIP), read_ms_ago
            **agent.etcd_info.document([v.name for v in agent.cfg.vips]),
        },
        "held": sorted(n for n, a in agent.actors.items() if a.held),
        "wanted": sorted(agent.etcd.ownership.granted(e.lease)),
        "decision": None if last is None else last.summary,
        "reasons": {} if last is None else dict(last.reasons),
        "config": {k2: getattr(agent.cfg, k2) for k2 in CONFIG_FIELDS},
        "counters": {
            "heartbeats_sent": agent.mesh.seq,
            "dropped": dict(agent.mesh.decoder.dropped),
            "action_failures": {n: a.failures for n, a in agent.actors.items()},
            "unexpected_errors": agent.unexpected_errors,
        },
        "events": list(agent.events)[-30:],
    }
