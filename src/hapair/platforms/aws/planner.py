"""What ``up`` would create, change or delete, given what exists. Pure.

``hapair plan --platform aws`` prints this list; ``up`` carries out the same decisions.
"""

from __future__ import annotations

from typing import NamedTuple

from hapair.platforms.aws.client import tags_of
from hapair.platforms.aws.cost import INSTANCE_HOURLY
from hapair.platforms.aws.inventory import Inventory
from hapair.platforms.aws.layout import AwsLayout
from hapair.platforms.aws.network import ENDPOINTS
from hapair.platforms.aws.secrets import SECRETS
from hapair.platforms.aws.security import GROUPS, desired_rules, observed_rules
from hapair.spec import Spec


class Change(NamedTuple):
    """One line of the plan: ``action`` is create, change, delete or keep."""

    action: str
    resource: str
    detail: str


def _price(itype: str) -> str:
    price = INSTANCE_HOURLY.get(itype)
    return f"{itype}, {price:.4f} USD/h" if price is not None else f"{itype}, price unknown"


def plan_changes(spec: Spec, layout: AwsLayout, inv: Inventory) -> list[Change]:
    """Every resource of the cluster with what ``up`` would do to it."""
    c = layout.cluster
    out: list[Change] = []

    def one(exists: bool, resource: str, detail: str) -> None:
        out.append(Change("keep" if exists else "create", resource, detail))

    one(inv.by_name(inv.vpcs, "vpc") is not None, f"vpc {c}-vpc", layout.vpc_cidr)
    for key, cidr in sorted(layout.subnets.items()):
        one(inv.by_name(inv.subnets, key) is not None, f"subnet {c}-{key}", cidr)
    one(inv.by_name(inv.igws, "igw") is not None, f"internet gateway {c}-igw", "attached")
    one(
        inv.by_name(inv.route_tables, "rtb") is not None, f"route table {c}-rtb", "0.0.0.0/0 -> igw"
    )
    want = desired_rules(spec)
    ids = {k: g["GroupId"] for k in GROUPS if (g := inv.by_name(inv.groups, GROUPS[k][0]))}
    for key, (suffix, _role) in GROUPS.items():
        if key == "endpoint" and not spec.aws.ec2_endpoint:
            continue
        group = inv.by_name(inv.groups, suffix)
        resource = f"security group {c}-{suffix}"
        if group is None:
            out.append(Change("create", resource, f"{len(want[key])} ingress rules"))
            continue
        have = observed_rules(group, ids)
        add, drop = want[key] - have, have - want[key]
        if add or drop:
            out.append(Change("change", resource, f"+{len(add)} -{len(drop)} ingress rules"))
        else:
            out.append(Change("keep", resource, f"{len(have)} ingress rules"))
    one(
        inv.role is not None,
        f"iam role hapair-{c}-lb",
        "move this cluster's EIPs onto its LBs; read its secrets, its artifacts",
    )
    one(inv.profile is not None, f"instance profile hapair-{c}-lb", "for lb1, lb2")
    one(inv.web_role is not None, f"iam role hapair-{c}-web", "read the artifacts only")
    one(inv.web_profile is not None, f"instance profile hapair-{c}-web", "for the web servers")
    one(
        inv.bucket is not None,
        f"s3 bucket {inv.bucket['Name'] if inv.bucket else f'hapair-{c}-<account>-<region>'}",
        "private, encrypted: hapair's wheel, what the LBs serve",
    )
    stored = {name.rsplit("/", 1)[1] for name in inv.parameters}
    for secret in SECRETS:
        one(secret in stored, f"ssm parameter /hapair/{c}/{secret}", "SecureString")
    one(
        "desired" in stored,
        f"ssm parameter /hapair/{c}/desired",
        f"String, standard tier: what the LBs serve ({len(layout.webs)} web servers)",
    )
    if spec.aws.ec2_endpoint:
        for name, (service, kind) in ENDPOINTS.items():
            one(
                inv.by_name(inv.endpoints, name) is not None,
                f"vpc endpoint {c}-{name}",
                f"{service} ({kind.lower()}): reachable without a public address",
            )
    for vip in layout.vips:
        addr = inv.address(vip.name)
        detail = f"home {vip.home}" + (f", {addr['PublicIp']}" if addr else "")
        one(addr is not None, f"elastic ip {c}-{vip.name}", detail)
    for lb in layout.lbs:
        one(
            inv.eni(lb.name) is not None,
            f"network interface {c}-{lb.name}-eni",
            f"{lb.private_ip} + {lb.secondary_ip}",
        )
    for node in layout.nodes:
        inst = inv.instance(node.name)
        one(
            inst is not None,
            f"instance {c}-{node.name}",
            f"{_price(node.instance_type)}, {node.private_ip}",
        )
    wanted = {n.name for n in layout.nodes}
    for inst in inv.instances:
        name = tags_of(inst).get("hapair:node", "")
        if name not in wanted:
            out.append(
                Change(
                    "delete",
                    f"instance {c}-{name or inst['InstanceId']}",
                    f"{inst['InstanceId']} (web size is now {len(layout.webs)})",
                )
            )
    return out


def format_changes(changes: list[Change]) -> str:
    """The plan as text, one resource per line, then a count of each action."""
    marks = {"create": "+", "change": "~", "delete": "-", "keep": " "}
    lines = [
        f"  {marks.get(ch.action, '?')} {ch.action:<6} {ch.resource:<40} {ch.detail}"
        for ch in changes
    ]
    counts = {
        a: sum(1 for ch in changes if ch.action == a)
        for a in ("create", "change", "delete", "keep")
    }
    lines.append(
        "  "
        + ", ".join(f"{n} to {a}" for a, n in counts.items() if a != "keep")
        + f", {counts['keep']} unchanged"
    )
    return "\n".join(lines)
