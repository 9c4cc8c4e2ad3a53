"""The lab's DNS: a hosts file for dnsmasq answering the cluster's name with both floating IPs."""

from __future__ import annotations

from hapair.plan import Plan


def render_hosts(plan: Plan) -> str:
    """Hosts-file lines: ``<vip> <domain>`` for each VIP (so the name has both as A records)."""
    lines = [f"# {plan.name}: the cluster's DNS name answers with both floating IPs"]
    lines += [f"{v.address} {plan.spec.cluster.domain}" for v in plan.vips]
    return "\n".join(lines) + "\n"


def dnsmasq_argv(plan: Plan, hosts_file: str, log_file: str) -> list[str]:
    """argv of dnsmasq for the inet node: authoritative for the lab's name only, no upstream."""
    return [
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        f"--addn-hosts={hosts_file}",
        f"--listen-address={plan.spec.network.dns}",
        "--bind-interfaces",
        "--user=root",
        "--group=root",
        "--pid-file=",
        "--local-ttl=1",
        f"--log-facility={log_file}",
        "--log-queries",
    ]
