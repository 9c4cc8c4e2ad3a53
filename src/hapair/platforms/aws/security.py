"""Security groups (the seed's LB and web SGs) and the instances' IAM roles and profiles.

The rules are pure functions of the spec and the policies pure functions of the cluster's scope
(:mod:`hapair.platforms.aws.iam`); ``ensure_*`` makes AWS match them (missing rules are
authorized, rules nobody asked for are revoked; inline policies nobody asked for are deleted).
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
from hapair.platforms.aws.iam import Scope, assume_role_policy, lb_policy, web_policy
from hapair.platforms.aws.inventory import ROLES, Inventory, iam_name, policy_name
from hapair.spec import Spec

logger = logging.getLogger(__name__)

#: The security groups hapair makes: key -> (Name suffix, role tag or None).
GROUPS: dict[str, tuple[str, str | None]] = {
    "lb": ("lb-sg", "lb"),
    "web": ("web-sg", "web"),
    "endpoint": ("ec2-endpoint-sg", None),
}


@dataclass(frozen=True, order=True)
class Rule:
    """One ingress rule. ``source`` is a CIDR or ``sg:<group key>``; ICMP uses type/code as
    from/to, as the EC2 API does."""

    protocol: str
    from_port: int
    to_port: int
    source: str

    def __str__(self) -> str:
        if self.protocol == "icmp":
            ports = f"type {self.from_port} code {self.to_port}"
        elif self.from_port == self.to_port:
            ports = str(self.from_port)
        else:
            ports = f"{self.from_port}-{self.to_port}"
        return f"{self.protocol} {ports} from {self.source}"


@dataclass(frozen=True)
class RuleDelta:
    """How one group's ingress rules differ from the desired ones.

    :ivar group: the group's name (``<cluster>-lb-sg``, ...).
    :ivar new: the group does not exist yet (``up`` or ``apply`` creates it).
    :ivar add: rules to authorize; ``revoke``: rules nobody asked for.
    """

    group: str
    new: bool
    add: tuple[Rule, ...]
    revoke: tuple[Rule, ...]

    def line(self) -> str:
        """The change as one sentence of a plan."""
        what = [f"allow {r}" for r in self.add] + [f"revoke {r}" for r in self.revoke]
        return f"security group {self.group}{' (new)' if self.new else ''}: {'; '.join(what)}"


def desired_rules(spec: Spec) -> dict[str, frozenset[Rule]]:
    """The ingress rules of every group: the seed's, except that tcp/22 is open only when a
    key pair is set (nothing else listens for SSH logins) and then only from ``admin.cidrs``,
    as are 9022-9023."""
    admin = spec.admin.cidrs
    dash = sorted((spec.haproxy.stats_port, spec.admin.port))
    http = {spec.haproxy.http_port, 443}
    if spec.haproxy.https:
        http.add(spec.haproxy.https_port)
    ssh = {Rule("tcp", 22, 22, c) for c in admin} if spec.aws.key_name else set()
    lb = {Rule("icmp", 3, 4, "0.0.0.0/0")} | ssh
    lb |= {Rule("tcp", p, p, "0.0.0.0/0") for p in http}
    lb.add(Rule("udp", spec.ha.port, spec.ha.port, "sg:lb"))
    lb |= {Rule("tcp", dash[0], dash[1], c) for c in admin}
    web = set(ssh)
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


def split_rules(
    want: frozenset[Rule], have: frozenset[Rule]
) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
    """The rules missing from ``have`` and those beyond ``want``, each sorted."""
    return tuple(sorted(want - have)), tuple(sorted(have - want))


def _group_keys(spec: Spec) -> list[str]:
    return [k for k in GROUPS if k != "endpoint" or spec.aws.ec2_endpoint]


def rule_deltas(spec: Spec, inv: Inventory) -> tuple[RuleDelta, ...]:
    """How the cluster's groups, as found, differ from :func:`desired_rules` (pure: reads
    ``inv`` only); the groups that already match are left out."""
    found = {k: inv.by_name(inv.groups, GROUPS[k][0]) for k in _group_keys(spec)}
    ids = {k: str(g["GroupId"]) for k, g in found.items() if g is not None}
    want = desired_rules(spec)
    out = []
    for key, group in found.items():
        add, revoke = split_rules(want[key], observed_rules(group or {}, ids))
        if add or revoke:
            name = f"{spec.cluster.name}-{GROUPS[key][0]}"
            out.append(RuleDelta(name, group is None, add, revoke))
    return tuple(out)


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
    keys = _group_keys(spec)
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
        missing, extra = split_rules(want[key], have)
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
def role_arn(scope: Scope, kind: str) -> str:
    """The ARN of the ``kind`` (lb or web) instance role."""
    return f"arn:{scope.partition}:iam::{scope.account}:role/{iam_name(scope.cluster, kind)}"


def ensure_iam(aws: Aws, scope: Scope, inv: Inventory) -> dict[str, str]:
    """Create both instance roles, their inline policies and instance profiles; always
    re-put the policies and delete inline policies nobody asked for.

    :returns: role kind (lb, web) -> instance profile name.
    :raises CloudError: a role of that name exists but is not this cluster's.
    """
    iam = aws.iam
    cluster = scope.cluster
    policies = {"lb": lb_policy(scope), "web": web_policy(scope)}
    out = {}
    for kind in ROLES:
        name = iam_name(cluster, kind)
        tags = cluster_tags(cluster, f"{kind}-role", kind)
        role, profile = (inv.role, inv.profile) if kind == "lb" else (inv.web_role, inv.web_profile)
        if role is None:
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
                Description=f"hapair {cluster}: {kind} instances",
                Tags=tags,
            )
        wanted = policy_name(cluster, kind)
        listed = aws.must(iam.list_role_policies, f"iam role {name}", RoleName=name)
        for old in listed["PolicyNames"]:
            if old != wanted:
                logger.info("iam role %s: deleting inline policy %s nobody asked for", name, old)
                aws.must(iam.delete_role_policy, f"iam role {name}", RoleName=name, PolicyName=old)
        aws.must(
            iam.put_role_policy,
            f"iam role {name}",
            RoleName=name,
            PolicyName=wanted,
            PolicyDocument=json.dumps(policies[kind]),
        )
        if profile is None:
            what = f"instance profile {name}"
            made = aws.must(iam.create_instance_profile, what, InstanceProfileName=name, Tags=tags)
            profile = dict(made["InstanceProfile"])
        if not any(r["RoleName"] == name for r in profile.get("Roles", [])):
            aws.must(
                iam.add_role_to_instance_profile,
                f"instance profile {name}",
                InstanceProfileName=name,
                RoleName=name,
            )
        out[kind] = name
    return out


def delete_iam(aws: Aws, cluster: str, inv: Inventory) -> None:
    """Remove both instance profiles, the roles' inline policies and the roles, in that order
    (each retried while IAM still sees a dependency)."""
    iam = aws.iam
    for kind in ROLES:
        name = iam_name(cluster, kind)
        role, profile = (inv.role, inv.profile) if kind == "lb" else (inv.web_role, inv.web_profile)
        steps: list[tuple[Any, dict[str, str]]] = []
        if profile is not None:
            steps += [
                (
                    iam.remove_role_from_instance_profile,
                    {"InstanceProfileName": name, "RoleName": r["RoleName"]},
                )
                for r in profile.get("Roles", [])
            ]
            steps.append((iam.delete_instance_profile, {"InstanceProfileName": name}))
        if role is not None:
            listed = aws.call(
                iam.list_role_policies, f"iam role {name}", ignore=("NoSuchEntity",), RoleName=name
            )
            names = listed["PolicyNames"] if listed else []
            steps += [(iam.delete_role_policy, {"RoleName": name, "PolicyName": p}) for p in names]
            steps.append((iam.delete_role, {"RoleName": name}))
        for fn, kwargs in steps:
            aws.call(
                fn, f"iam {name}", ignore=("NoSuchEntity",), retry=("DeleteConflict",), **kwargs
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
