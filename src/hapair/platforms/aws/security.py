"""Security groups (the seed's LB and web SGs) and the LBs' IAM role, profile and policy.

The rules and the policy are pure functions of the spec; ``ensure_*`` makes AWS match them
(missing rules are authorized, rules nobody asked for are revoked).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from hapair.errors import CloudError
from hapair.platforms.aws.client import (
    STILL_IN_USE,
    TAG_CLUSTER,
    Aws,
    cluster_tags,
    tag_spec,
    tags_of,
)
from hapair.platforms.aws.inventory import Inventory, iam_name, policy_name
from hapair.spec import Spec

logger = logging.getLogger(__name__)

#: The security groups hapair makes: key -> (Name suffix, role tag or None).
GROUPS: dict[str, tuple[str, str | None]] = {
    "lb": ("lb-sg", "lb"),
    "web": ("web-sg", "web"),
    "endpoint": ("ec2-endpoint-sg", None),
}
#: The EC2 actions the ``aws_eip`` agent uses, and nothing else.
AGENT_ACTIONS_DESCRIBE = ("ec2:DescribeAddresses",)
AGENT_ACTIONS_MOVE = ("ec2:AssociateAddress", "ec2:DisassociateAddress")


@dataclass(frozen=True, order=True)
class Rule:
    """One ingress rule. ``source`` is a CIDR or ``sg:<group key>``; ICMP uses type/code as
    from/to, as the EC2 API does."""

    protocol: str
    from_port: int
    to_port: int
    source: str


def desired_rules(spec: Spec) -> dict[str, frozenset[Rule]]:
    """The ingress rules of every group (the seed's, with tcp/22 on web and 9022-9023 from
    ``admin.cidrs``)."""
    admin = spec.admin.cidrs
    dash = sorted((spec.haproxy.stats_port, spec.admin.port))
    http = {spec.haproxy.http_port, 443}
    if spec.haproxy.https:
        http.add(spec.haproxy.https_port)
    lb = {Rule("icmp", 3, 4, "0.0.0.0/0"), Rule("tcp", 22, 22, "0.0.0.0/0")}
    lb |= {Rule("tcp", p, p, "0.0.0.0/0") for p in http}
    lb.add(Rule("udp", spec.ha.port, spec.ha.port, "sg:lb"))
    lb |= {Rule("tcp", dash[0], dash[1], c) for c in admin}
    web = {Rule("tcp", 22, 22, c) for c in admin}
    web.add(Rule("tcp", spec.web.port, spec.web.port, "sg:lb"))
    endpoint = {Rule("tcp", 443, 443, "sg:lb")}
    return {"lb": frozenset(lb), "web": frozenset(web), "endpoint": frozenset(endpoint)}


def observed_rules(group: dict[str, Any], ids: dict[str, str]) -> frozenset[Rule]:
    """A group's ingress rules as :class:`Rule`s; group ids mapped back to keys via ``ids``."""
    keys = {v: k for k, v in ids.items()}
    out: set[Rule] = set()
    for perm in group.get("IpPermissions", []):
        proto = str(perm.get("IpProtocol"))
        lo, hi = int(perm.get("FromPort", -1)), int(perm.get("ToPort", -1))
        for r in perm.get("IpRanges", []):
            out.add(Rule(proto, lo, hi, r["CidrIp"]))
        for p in perm.get("UserIdGroupPairs", []):
            out.add(Rule(proto, lo, hi, "sg:" + keys.get(p["GroupId"], p["GroupId"])))
    return frozenset(out)


def _permission(rule: Rule, ids: dict[str, str]) -> dict[str, Any]:
    perm: dict[str, Any] = {
        "IpProtocol": rule.protocol,
        "FromPort": rule.from_port,
        "ToPort": rule.to_port,
    }
    if rule.source.startswith("sg:"):
        key = rule.source[3:]
        perm["UserIdGroupPairs"] = [{"GroupId": ids.get(key, key)}]
    else:
        perm["IpRanges"] = [{"CidrIp": rule.source, "Description": "hapair"}]
    return perm


def ensure_groups(aws: Aws, spec: Spec, inv: Inventory, vpc_id: str) -> dict[str, str]:
    """Create the groups that are missing and make their ingress rules exactly the desired ones.

    :returns: group key (lb, web, endpoint) -> group id.
    """
    ec2 = aws.ec2
    cluster = spec.cluster.name
    ids: dict[str, str] = {}
    found: dict[str, dict[str, Any]] = {}
    keys = [k for k in GROUPS if k != "endpoint" or spec.aws.ec2_endpoint]
    for key in keys:
        suffix, role = GROUPS[key]
        group = inv.by_name(inv.groups, suffix)
        if group is None:
            res = aws.must(
                ec2.create_security_group,
                f"security group {cluster}-{suffix}",
                GroupName=f"{cluster}-{suffix}",
                Description=f"hapair {cluster}: {key}",
                VpcId=vpc_id,
                TagSpecifications=tag_spec("security-group", cluster_tags(cluster, suffix, role)),
            )
            ids[key] = res["GroupId"]
            found[key] = {}
        else:
            ids[key] = group["GroupId"]
            found[key] = group
    want = desired_rules(spec)
    for key in keys:
        have = observed_rules(found[key], ids)
        name = f"security group {cluster}-{GROUPS[key][0]}"
        missing = sorted(want[key] - have)
        extra = sorted(have - want[key])
        if missing:
            aws.call(
                ec2.authorize_security_group_ingress,
                name,
                retry=("InvalidGroup.NotFound",),
                ignore=("InvalidPermission.Duplicate",),
                GroupId=ids[key],
                IpPermissions=[_permission(r, ids) for r in missing],
            )
        if extra:
            logger.info("%s: revoking rules nobody asked for: %s", name, extra)
            aws.call(
                ec2.revoke_security_group_ingress,
                name,
                ignore=("InvalidPermission.NotFound",),
                GroupId=ids[key],
                IpPermissions=[_permission(r, ids) for r in extra],
            )
    return ids


# ---------------------------------------------------------------------------- IAM
def assume_role_policy() -> dict[str, Any]:
    """Who may assume the LBs' role: EC2 instances."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def agent_policy(cluster: str) -> dict[str, Any]:
    """The LBs' policy: read EIPs, and move only this cluster's EIPs between its own ENIs."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadAddresses",
                "Effect": "Allow",
                "Action": list(AGENT_ACTIONS_DESCRIBE),
                "Resource": "*",
            },
            {
                "Sid": "MoveThisClustersAddresses",
                "Effect": "Allow",
                "Action": list(AGENT_ACTIONS_MOVE),
                "Resource": [
                    "arn:aws:ec2:*:*:elastic-ip/*",
                    "arn:aws:ec2:*:*:network-interface/*",
                    "arn:aws:ec2:*:*:instance/*",
                ],
                "Condition": {"StringEquals": {f"aws:ResourceTag/{TAG_CLUSTER}": cluster}},
            },
        ],
    }


def ensure_iam(aws: Aws, cluster: str, inv: Inventory) -> str:
    """Create the role, its inline policy and the instance profile; always re-put the policy.

    :returns: the instance profile's name.
    :raises CloudError: a role of that name exists but is not this cluster's.
    """
    iam = aws.iam
    name = iam_name(cluster)
    tags = cluster_tags(cluster, "lb-role", "lb")
    if inv.role is None:
        existing = aws.call(
            iam.get_role, f"iam role {name}", ignore=("NoSuchEntity",), RoleName=name
        )
        if existing is not None:
            raise CloudError(
                f"iam role {name} exists but is not tagged {TAG_CLUSTER}={cluster}; "
                "remove it or choose another cluster name",
                "EntityAlreadyExists",
                f"iam role {name}",
            )
        aws.must(
            iam.create_role,
            f"iam role {name}",
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(assume_role_policy()),
            Description=f"hapair {cluster}: LB agents move the cluster's EIPs",
            Tags=tags,
        )
    aws.must(
        iam.put_role_policy,
        f"iam role {name}",
        RoleName=name,
        PolicyName=policy_name(cluster),
        PolicyDocument=json.dumps(agent_policy(cluster)),
    )
    profile = inv.profile
    if profile is None:
        res = aws.must(
            iam.create_instance_profile,
            f"instance profile {name}",
            InstanceProfileName=name,
            Tags=tags,
        )
        profile = dict(res["InstanceProfile"])
    if not any(r["RoleName"] == name for r in profile.get("Roles", [])):
        aws.must(
            iam.add_role_to_instance_profile,
            f"instance profile {name}",
            InstanceProfileName=name,
            RoleName=name,
        )
    return name


def delete_iam(aws: Aws, cluster: str, inv: Inventory) -> None:
    """Remove the instance profile, the role's policies and the role."""
    iam = aws.iam
    name = iam_name(cluster)
    gone = ("NoSuchEntity",)
    if inv.profile is not None:
        for role in inv.profile.get("Roles", []):
            aws.call(
                iam.remove_role_from_instance_profile,
                f"instance profile {name}",
                ignore=gone,
                InstanceProfileName=name,
                RoleName=role["RoleName"],
            )
        aws.call(
            iam.delete_instance_profile,
            f"instance profile {name}",
            ignore=gone,
            InstanceProfileName=name,
        )
    if inv.role is not None:
        pols = aws.call(iam.list_role_policies, f"iam role {name}", ignore=gone, RoleName=name)
        for pol in pols["PolicyNames"] if pols else []:
            aws.call(
                iam.delete_role_policy,
                f"iam role {name}",
                ignore=gone,
                RoleName=name,
                PolicyName=pol,
            )
        aws.call(
            iam.delete_role,
            f"iam role {name}",
            ignore=gone,
            retry=("DeleteConflict",),
            RoleName=name,
        )


def group_role(group: dict[str, Any]) -> str | None:
    """The ``hapair:role`` of a group."""
    return tags_of(group).get("hapair:role")


def delete_groups(aws: Aws, inv: Inventory) -> None:
    """Drop the rules that name other groups, then delete the groups (retried while an ENI
    that uses one is still going away)."""
    ec2 = aws.ec2
    gone = ("InvalidGroup.NotFound", "InvalidPermission.NotFound")
    for group in inv.groups:
        refs = [p for p in group.get("IpPermissions", []) if p.get("UserIdGroupPairs")]
        if refs:
            aws.call(
                ec2.revoke_security_group_ingress,
                f"security group {group['GroupId']}",
                ignore=gone,
                GroupId=group["GroupId"],
                IpPermissions=refs,
            )
    for group in inv.groups:
        aws.call(
            ec2.delete_security_group,
            f"security group {group['GroupId']}",
            ignore=gone,
            retry=STILL_IN_USE,
            GroupId=group["GroupId"],
        )
