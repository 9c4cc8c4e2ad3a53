"""The agent's Prometheus metrics, in a registry of their own (one per agent)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)


class Metrics:
    """Heartbeats, drops by reason, VIP moves by reason, failover durations, API errors."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.hb_sent = Counter("hapair_heartbeats_sent", "Heartbeat datagrams sent", registry=r)
        self.hb_received = Counter(
            "hapair_heartbeats_received", "Heartbeat datagrams accepted", registry=r
        )
        self.hb_dropped = Counter(
            "hapair_heartbeats_dropped", "Datagrams dropped, by reason", ["reason"], registry=r
        )
        self.moves = Counter(
            "hapair_vip_moves",
            "Changes of what this node holds (take/release), by reason label "
            "(failover, failback, startup, standby, unhealthy, isolated, orphan, settle, other)",
            ["vip", "action", "reason"],
            registry=r,
        )
        self.action_failures = Counter(
            "hapair_vip_action_failures",
            "Resource-agent calls that failed",
            ["vip", "action"],
            registry=r,
        )
        self.drift = Counter(
            "hapair_vip_drift_repairs",
            "Times the real holder differed from the wanted one and was repaired",
            ["vip"],
            registry=r,
        )
        self.failover = Histogram(
            "hapair_failover_duration_seconds",
            "From the peer's last heartbeat to this node holding its VIP",
            buckets=(0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 0.75, 1, 2, 5, 10),
            registry=r,
        )
        self.api_errors = Counter(
            "hapair_api_errors", "Status API requests refused or failed", ["reason"], registry=r
        )
        self.held = Gauge("hapair_vip_held", "1 if this node holds the VIP", ["vip"], registry=r)
        self.peer_up = Gauge("hapair_peer_up", "1 if the peer's heartbeats arrive", registry=r)
        self.healthy = Gauge("hapair_healthy", "1 if the local HAProxy can serve", registry=r)
        self.unexpected = Counter(
            "hapair_unexpected_errors",
            "Errors caught by the safety net (a bug: please report), by loop",
            ["loop"],
            registry=r,
        )
        self.peer_loss = Gauge(
            "hapair_peer_heartbeat_loss",
            "Share of heartbeat intervals without a heartbeat from the peer (last 10 s)",
            registry=r,
        )
        self.cycle_overruns = Counter(
            "hapair_cycle_overruns",
            "Decision cycles that started late by more than one interval",
            registry=r,
        )
        # What the agent process costs (process_cpu_seconds_total, process_resident_memory_bytes,
        # ...), read from /proc at each scrape.
        ProcessCollector(registry=r)

    def render(self) -> bytes:
        """Prometheus text exposition."""
        return generate_latest(self.registry)
