"""The agent's config for an LB node of a plan (``agent.toml``)."""

from __future__ import annotations

from hapair.agent.config import AgentConfig, VipConfig, dump_toml
from hapair.plan import Plan


def agent_config(
    plan: Plan,
    node: str,
    *,
    key_file: str,
    admin_token_file: str,
    stats_socket: str,
    api_socket: str,
    driver: str = "l2",
) -> AgentConfig:
    """The agent config of LB ``node``; VIPs use ``driver`` (l2 in the lab)."""
    spec = plan.spec
    me = plan.node(node)
    peer = plan.peer_of(node)
    ha = spec.ha
    return AgentConfig(
        cluster=plan.name,
        node=me.name,
        peer=peer.name,
        peer_addresses=[a for a in (peer.address, peer.secondary) if a],
        peer_probe_address=peer.address,
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
        drain_ms=ha.drain_ms,
        vips=[
            VipConfig(name=v.name, address=v.address, home=v.home, driver=driver) for v in plan.vips
        ],
    )


def render_agent(plan: Plan, node: str, **kwargs: str) -> str:
    """``agent.toml`` text for LB ``node``."""
    return dump_toml(agent_config(plan, node, **kwargs))
