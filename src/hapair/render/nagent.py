"""The N-node agent's config for an LB of a plan with ``ha.coordinator = "etcd"`` (issue 13):
every other LB as a peer, and the etcd cluster that grants VIP ownership."""

from __future__ import annotations

from hapair.agent.config import VipConfig
from hapair.agent.nconfig import NodeConfig, PeerConfig
from hapair.plan import Plan


def node_config(
    plan: Plan,
    node: str,
    *,
    key_file: str,
    admin_token_file: str,
    stats_socket: str,
    api_socket: str,
    etcd_endpoints: list[str],
    etcd_password_file: str,
    driver: str = "l2",
) -> NodeConfig:
    """The N-node agent config of LB ``node``; VIPs use ``driver`` (l2 in the lab)."""
    spec = plan.spec
    ha = spec.ha
    peers = [
        PeerConfig(
            name=lb.name,
            addresses=[a for a in (lb.address, lb.secondary) if a],
            probe_address=lb.address,
        )
        for lb in plan.lbs
        if lb.name != node
    ]
    return NodeConfig(
        coordinator="etcd",
        cluster=plan.name,
        node=node,
        peers=peers,
        port=ha.port,
        key_file=key_file,
        admin_token_file=admin_token_file,
        api_port=spec.admin.port,
        api_socket=api_socket,
        stats_socket=stats_socket,
        http_port=spec.haproxy.http_port,
        check_path=spec.haproxy.check_path,
        ping_nodes=list(plan.ping_nodes),
        interval_ms=ha.interval_ms,
        warntime_ms=ha.warntime_ms,
        deadtime_ms=ha.deadtime_ms,
        initdead_ms=ha.initdead_ms,
        auto_failback=ha.auto_failback,
        failback_delay_ms=ha.failback_delay_ms,
        health_interval_ms=ha.health_interval_ms,
        min_move_interval_ms=ha.min_move_interval_ms,
        etcd_endpoints=etcd_endpoints,
        etcd_password_file=etcd_password_file,
        etcd_lease_ttl_ms=ha.etcd_lease_ttl_ms,
        vips=[
            VipConfig(name=v.name, address=v.address, home=v.home, driver=driver) for v in plan.vips
        ],
    )
