"""nftables rules that play the seed's security groups inside each node's namespace."""

from __future__ import annotations

from hapair.agent.drainplan import MARK, NFT_SET
from hapair.plan import Plan, Role
from hapair.render import render_template


def lb_group(plan: Plan) -> list[str]:
    """Every address of both LBs (primary and secondary): the seed's LB security group."""
    out: list[str] = []
    for lb in plan.lbs:
        out.append(lb.address)
        if lb.secondary:
            out.append(lb.secondary)
    return out


def client_addresses(plan: Plan) -> list[str]:
    """The addresses clients connect to, where a crashed HAProxy must be silent rather than
    refuse: the floating IPs and, on the aws fabric (whose igw translates each EIP to an LB's
    private address), every LB address too."""
    out = [v.address for v in plan.vips]
    if plan.spec.lab.fabric == "aws":
        out.extend(lb_group(plan))
    return out


def render_nftables(plan: Plan, node: str) -> str | None:
    """The ruleset for ``node`` (an ``nft -f`` script), or ``None`` for nodes without an SG."""
    n = plan.node(node)
    spec = plan.spec
    common = {"node": n.name, "cluster": plan.name, "lb_group": lb_group(plan)}
    if n.role is Role.LB:
        ports = [spec.haproxy.http_port]
        if spec.haproxy.https:
            ports.append(spec.haproxy.https_port)
        elif 443 not in ports:
            ports.append(443)  # the seed's SG opens 443 whether or not HTTPS is served
        return render_template(
            "lb.nft.j2",
            **common,
            http_ports=ports,
            ha_port=spec.ha.port,
            stats_port=spec.haproxy.stats_port,
            admin_port=spec.admin.port,
            admin_cidrs=list(spec.admin.cidrs),
            client_addrs=client_addresses(plan),
            drain_set=NFT_SET,
            drain_mark=f"{MARK:#x}",
        )
    if n.role is Role.WEB:
        return render_template("web.nft.j2", **common, web_port=spec.web.port)
    return None


def render_lb_silence(
    cluster: str, node: str, client_addrs: list[str], lb_group: list[str], http_ports: list[int]
) -> str:
    """An AWS LB's silence rule alone (an ``nft -f`` script; the security group is AWS's):
    new connections to ``client_addrs`` on ``http_ports`` that no HAProxy listens for are
    dropped instead of refused, except from ``lb_group``."""
    if not client_addrs or not lb_group or not http_ports:
        raise ValueError("the silence rule needs addresses, the LB group and ports")
    return render_template(
        "lb-silence.nft.j2",
        cluster=cluster,
        node=node,
        client_addrs=client_addrs,
        lb_group=lb_group,
        http_ports=http_ports,
    )
