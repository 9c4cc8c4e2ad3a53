"""What each node of an AWS cluster is given: its user data, and each LB's desired document.
Pure: ids and addresses come in, text comes out; no AWS call.

The desired document (``desired/<lb>.json`` in the cluster's bucket) is how the LBs follow the
web fleet: ``up`` renders every LB's haproxy.cfg for the web servers of the layout and uploads
it; each LB's node sync applies it within a minute (:mod:`~hapair.platforms.aws.nodesync`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from hapair.day2.desired import AGENT_TIMINGS
from hapair.errors import OperationError
from hapair.plan import Plan
from hapair.platforms.aws import userdata
from hapair.platforms.aws.desired import parameter as desired_parameter
from hapair.platforms.aws.iam import DESIRED_PREFIX
from hapair.platforms.aws.layout import AwsLayout
from hapair.platforms.aws.nodesync import STATS_PASSWORD_PLACEHOLDER, NodeConfig, desired_document
from hapair.platforms.aws.secrets import path as secrets_path
from hapair.platforms.aws.timing import AWS_AGENT, effective_ha
from hapair.render.nftables import render_lb_silence


@dataclass(frozen=True)
class Placement:
    """The cloud facts the nodes' configuration needs.

    :ivar region: the cluster's region.
    :ivar bucket: the cluster's bucket.
    :ivar eips: vip -> its address record (``AllocationId``, ``PublicIp``).
    :ivar enis: LB -> its ENI id.
    :ivar install: where the instances get hapair.
    """

    region: str
    bucket: str
    eips: dict[str, dict[str, Any]]
    enis: dict[str, str]
    install: userdata.Install


def desired_key(node: str) -> str:
    """The object key of LB ``node``'s desired document."""
    return f"{DESIRED_PREFIX}{node}.json"


def _render_haproxy(plan: Plan, layout: AwsLayout, node: str) -> str:
    try:
        from hapair.render.haproxy import render_haproxy
    except ImportError as exc:
        raise OperationError(f"cannot render haproxy.cfg: hapair.render.haproxy: {exc}") from exc
    https = plan.spec.haproxy.https
    return render_haproxy(
        plan,
        node,
        backends=[(w.name, w.private_ip) for w in layout.webs],
        stats_socket=userdata.STATS_SOCKET,
        stats_password=STATS_PASSWORD_PLACEHOLDER,
        cert_path=userdata.CERT_FILE if https else None,
        server_state_file=userdata.SERVER_STATE_FILE,
    )


def desired(plan: Plan, layout: AwsLayout, node: str) -> bytes:
    """LB ``node``'s desired document: haproxy.cfg for the layout's web servers, the stats
    password left as a placeholder (the LB fills it in from SSM)."""
    backends = [(w.name, w.private_ip) for w in layout.webs]
    return desired_document(plan.name, node, _render_haproxy(plan, layout, node), backends)


def agent_toml(plan: Plan, layout: AwsLayout, node: str, where: Placement) -> str:
    """LB ``node``'s agent.toml: ``aws_eip`` VIPs on its ENI (the primary address for its home
    VIP, the secondary for the peer's, as the seed), the AWS timings, no secret."""
    from hapair.agent.config import VipConfig, dump_toml
    from hapair.render.agent import agent_config

    spec = plan.spec
    me, peer = layout.node(node), layout.peer_of(node)
    base = agent_config(
        plan,
        node,
        key_file=userdata.KEY_FILE,
        admin_token_file=userdata.TOKEN_FILE,
        stats_socket=userdata.STATS_SOCKET,
        api_socket=userdata.AGENT_SOCKET,
        driver="aws_eip",
    )
    ha = effective_ha(spec)
    timings = {name: getattr(ha, name) for name in AGENT_TIMINGS}
    vips = [
        VipConfig(
            name=v.name,
            address=str(where.eips[v.name]["PublicIp"]),
            home=v.home,
            driver="aws_eip",
            allocation_id=str(where.eips[v.name]["AllocationId"]),
            eni_id=where.enis[node],
            private_ip=me.private_ip if v.home == node else str(me.secondary_ip),
        )
        for v in layout.vips
    ]
    agent = base.model_copy(
        update={
            "peer_addresses": [a for a in (peer.private_ip, peer.secondary_ip) if a],
            "peer_probe_address": peer.private_ip,
            "ping_nodes": list(spec.ha.ping_nodes) or [layout.gateway(me.subnet)],
            "aws_region": where.region,
            "boot_file": userdata.BOOT_FILE,
            "vips": vips,
            **timings,
            **AWS_AGENT,
        }
    )
    return dump_toml(agent)


def lb_user_data(plan: Plan, layout: AwsLayout, node: str, where: Placement) -> str:
    """The user data of LB ``node``."""
    me = layout.node(node)
    sync = NodeConfig(
        cluster=plan.name,
        node=node,
        region=where.region,
        bucket=where.bucket,
        desired_key=desired_key(node),
        secrets_path=secrets_path(plan.name),
        key_file=userdata.KEY_FILE,
        token_file=userdata.TOKEN_FILE,
        haproxy_cfg=userdata.HAPROXY_CFG,
        desired_parameter=desired_parameter(plan.name),
        stats_password_file=userdata.STATS_PASSWORD_FILE,
    )
    lbs = [layout.node(lb.name) for lb in plan.lbs]
    ports = [plan.spec.haproxy.http_port]
    if plan.spec.haproxy.https:
        ports.append(plan.spec.haproxy.https_port)
    silence = render_lb_silence(
        plan.name,
        node,
        [str(a) for a in (me.private_ip, me.secondary_ip) if a],
        [str(a) for n in lbs for a in (n.private_ip, n.secondary_ip) if a],
        ports,
    )
    return userdata.lb_user_data(
        cluster=plan.name,
        node=node,
        agent_toml=agent_toml(plan, layout, node, where),
        silence_nft=silence,
        node_json=sync.dumps(),
        install=where.install,
        secondary_ip=str(me.secondary_ip),
        prefixlen=ipaddress.ip_network(layout.subnets[me.subnet]).prefixlen,
        gateway=layout.gateway(me.subnet),
        self_signed_for=plan.spec.cluster.domain if plan.spec.haproxy.https else None,
        follow_desired=True,
    )


def web_user_data(plan: Plan, layout: AwsLayout, node: str, where: Placement) -> str:
    """The user data of web ``node``."""
    return userdata.web_user_data(
        cluster=plan.name,
        node=node,
        address=layout.node(node).private_ip,
        port=plan.spec.web.port,
        install=where.install,
    )
