"""The instances' IAM held to the Service Authorization Reference table in hapair.platforms.aws.iam:
every call the code makes is in the table, every policy allows exactly those calls, on resource
ARNs of the types the table lists, with condition keys the table lists, in the region's
partition."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from tests.aws.conftest import REGION, aws_plan
from tests.aws.test_aws_eip import Pair

from hapair.agent.resources.aws_eip import AddressReader, AwsEip, Ec2Calls
from hapair.errors import UsageError
from hapair.platforms.aws import desired, secrets
from hapair.platforms.aws.acks import Ack, TagAcknowledger
from hapair.platforms.aws.follower import Follower, FollowerConfig
from hapair.platforms.aws.iam import (
    CROSS_SERVICE_KEYS,
    LB_CALLS,
    SAR,
    SAR_ARNS,
    WEB_CALLS,
    Scope,
    lb_policy,
    partition_for,
    web_policy,
)
from hapair.platforms.aws.nodesync import NodeConfig, sync_once
from hapair.platforms.aws.webwatch import WebWatch

SCOPES = [
    Scope("c1", "123456789012", "us-east-1", "hapair-c1-123456789012-us-east-1"),
    Scope("c1", "123456789012", "cn-north-1", "hapair-c1-123456789012-cn-north-1"),
    Scope("c1", "123456789012", "us-gov-west-1", "hapair-c1-123456789012-us-gov-west-1"),
]


def arn_pattern(template: str) -> re.Pattern[str]:
    """A regex of an ARN format of the table: each ${Part} is one or more non-colon chars."""
    parts = re.split(r"(\$\{[A-Za-z]+\})", template)
    body = "".join("[^:]+" if p.startswith("${") else re.escape(p) for p in parts)
    return re.compile(body + "$")


def key_allowed(key: str, allowed: set[str]) -> bool:
    """Whether a policy's condition key is one of the table's (``${TagKey}`` = any tag key)."""
    for a in allowed:
        if re.fullmatch(re.escape(a).replace(re.escape("${TagKey}"), ".+"), key):
            return True
    return False


def service_op(client_op: str, service: str) -> str:
    """``associate_address`` on ec2 -> ``ec2:AssociateAddress``."""
    return f"{service}:" + "".join(w.capitalize() for w in client_op.split("_"))


@pytest.mark.parametrize("scope", SCOPES, ids=lambda s: s.region)
@pytest.mark.parametrize("kind", ["lb", "web"])
def test_policies_allow_exactly_the_calls_on_the_tables_resources(scope: Scope, kind: str) -> None:
    policy, calls = (lb_policy(scope), LB_CALLS) if kind == "lb" else (web_policy(scope), WEB_CALLS)
    actions = {a for st in policy["Statement"] for a in st["Action"]}
    assert actions == set(calls.values())
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow" and "NotAction" not in st and "NotResource" not in st
        resources = st["Resource"]
        for action in st["Action"]:
            row = SAR[action]
            service = action.split(":")[0]
            if resources == "*":
                # Only actions the table gives no resource type may be granted on "*".
                assert not row.resources, f"{action} must be scoped to {list(row.resources)}"
                types: list[str] = []
            else:
                types = []
                for arn in resources:
                    assert arn.startswith(f"arn:{partition_for(scope.region)}:")
                    match = [
                        t
                        for t in row.resources
                        if f"{service}:{t}" in SAR_ARNS
                        and arn_pattern(SAR_ARNS[f"{service}:{t}"]).match(arn)
                    ]
                    assert match, f"{arn} is no resource type of {action}"
                    types += match
                    if service in ("ec2", "ssm"):
                        assert f":{scope.region}:{scope.account}:" in arn
            allowed = set(row.keys) | {k for t in types for k in row.resources[t]}
            allowed |= set(CROSS_SERVICE_KEYS)
            for pairs in st.get("Condition", {}).values():
                for key in pairs:
                    assert key_allowed(key, allowed), f"{key} is not a condition key of {action}"


def test_every_call_is_in_the_table() -> None:
    assert set(LB_CALLS.values()) <= set(SAR) and set(WEB_CALLS.values()) <= set(SAR)


def test_the_partition_comes_from_the_region() -> None:
    assert partition_for("eu-west-3") == "aws"
    assert partition_for("cn-northwest-1") == "aws-cn"
    assert partition_for("us-gov-east-1") == "aws-us-gov"
    cn = json.dumps(lb_policy(SCOPES[1]))
    assert "arn:aws-cn:ec2:cn-north-1:" in cn and "arn:aws:" not in cn
    with pytest.raises(UsageError):
        partition_for("xx-nowhere-1")


def test_eips_move_only_onto_this_clusters_lb_enis_and_secrets_stay_in_its_path() -> None:
    policy = lb_policy(SCOPES[0])
    by_sid = {st["Sid"]: st for st in policy["Statement"]}
    onto = by_sid["OnlyOntoThisClustersLbs"]
    assert all(":network-interface/" in r or ":instance/" in r for r in onto["Resource"])
    assert onto["Condition"] == {
        "StringEquals": {
            "aws:ResourceTag/hapair:cluster": "c1",
            "aws:ResourceTag/hapair:role": "lb",
        }
    }
    eip = by_sid["MoveOnlyThisClustersEips"]
    assert eip["Condition"] == {"StringEquals": {"aws:ResourceTag/hapair:cluster": "c1"}}
    tags = by_sid["MarkOnlyThisClustersEipsReleased"]
    assert tags["Condition"]["ForAllValues:StringEquals"] == {"aws:TagKeys": ["hapair:released"]}
    ack = by_sid["AcknowledgeOnlyOnItsOwnInstance"]
    assert ack["Action"] == ["ec2:CreateTags"]
    assert ack["Resource"] == ["arn:aws:ec2:us-east-1:123456789012:instance/*"]
    assert ack["Condition"] == {
        "StringEquals": {
            "aws:ResourceTag/hapair:cluster": "c1",
            "aws:ResourceTag/hapair:role": "lb",
        },
        # the instance tagged is the one whose role credentials sign the call
        "ArnEquals": {
            "ec2:SourceInstanceARN": "arn:aws:ec2:us-east-1:123456789012:instance/${ec2:InstanceID}"
        },
        "ForAllValues:StringEquals": {"aws:TagKeys": ["hapair:applied"]},
    }
    assert by_sid["ReadOnlyThisClustersSecrets"]["Resource"] == [
        "arn:aws:ssm:us-east-1:123456789012:parameter/hapair/c1/*"
    ]
    follow = by_sid["FollowThisClustersDesiredConfig"]
    assert follow["Action"] == ["ssm:GetParameter"]  # exactly one parameter, nothing else
    assert follow["Resource"] == ["arn:aws:ssm:us-east-1:123456789012:parameter/hapair/c1/desired"]
    assert "ssm:" not in json.dumps(web_policy(SCOPES[0]))


class Recorder:
    """A boto3 client that records the operations called through it."""

    def __init__(self, real: Any, service: str, seen: set[str]) -> None:
        self.real, self.service, self.seen = real, service, seen

    def __getattr__(self, name: str) -> Any:
        self.seen.add(service_op(name, self.service))
        return getattr(self.real, name)


def test_the_agent_and_the_node_sync_call_only_what_the_policy_allows(
    platform: Any, ec2: Any, aws_env: str, ami: str, cluster_name: str, tmp_path: Path
) -> None:
    seen: set[str] = set()
    pair = Pair(ec2)
    client = Recorder(boto3.client("ec2", region_name=REGION, endpoint_url=aws_env), "ec2", seen)
    agents = {
        lb: AwsEip(
            "vip1",
            pair.public,
            pair.alloc,
            pair.eni[lb],
            pair.ip[lb][0 if lb == "lb1" else 1],
            cluster="c",
            reader=AddressReader(Ec2Calls(lambda: client), ttl=0.0),
            home=lb == "lb1",
        )
        for lb in ("lb1", "lb2")
    }

    async def every_path() -> None:
        await agents["lb1"].monitor()
        await agents["lb2"].start()  # a failover: the compare-and-swap
        await agents["lb2"].stop()
        agents["lb1"].reader.forget()
        await agents["lb1"].start()  # the failback

    asyncio.run(every_path())
    platform.up(aws_plan(cluster_name, ami, size=1))
    aws = platform.aws()
    scope = platform.scope(aws, cluster_name)
    cfg = NodeConfig(
        cluster=cluster_name,
        node="lb1",
        region=REGION,
        bucket=scope.bucket,
        desired_key="desired/lb1.json",
        secrets_path=secrets.path(cluster_name),
        key_file=str(tmp_path / "k"),
        token_file=str(tmp_path / "t"),
        haproxy_cfg=str(tmp_path / "haproxy.cfg"),
    )
    role = lb_session(aws_env, cluster_name)
    sync_once(
        cfg,
        Recorder(role.client("ssm", endpoint_url=aws_env), "ssm", seen),
        Recorder(role.client("s3", endpoint_url=aws_env), "s3", seen),
        check=lambda text: None,
    )
    # The desired-document follower: one GetParameter per poll, and its web watch one
    # DescribeInstances; nothing else of AWS.
    follower = Follower(
        FollowerConfig(cluster_name, "lb1", REGION, desired.parameter(cluster_name)),
        Recorder(role.client("ssm", endpoint_url=aws_env), "ssm", seen),
        check=lambda text: None,
        watch=WebWatch(
            Recorder(role.client("ec2", endpoint_url=aws_env), "ec2", seen), cluster_name
        ),
    )
    follower._password = lambda: None  # type: ignore[method-assign]  # no file: refused, fine
    assert "rejected" in follower.tick()
    # Its acknowledgement: CreateTags on its own instance, found by its tags (no IMDS here).
    TagAcknowledger(
        Recorder(role.client("ec2", endpoint_url=aws_env), "ec2", seen), cluster_name, "lb1"
    ).put(Ack(1))
    assert seen <= set(LB_CALLS), seen - set(LB_CALLS)
    assert seen == set(LB_CALLS)  # and each of them is used
    platform.down(cluster_name)


def lb_session(endpoint: str, cluster: str, kind: str = "lb") -> boto3.Session:
    """A session with the credentials of the cluster's ``kind`` instance role (moto's STS)."""
    sts = boto3.client("sts", region_name=REGION, endpoint_url=endpoint)
    creds = sts.assume_role(
        RoleArn=f"arn:aws:iam::123456789012:role/hapair-{cluster}-{kind}", RoleSessionName="i-1"
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=REGION,
    )


def test_the_roles_carry_exactly_these_policies(
    platform: Any, iam: Any, ec2: Any, ami: str, cluster_name: str
) -> None:
    platform.up(aws_plan(cluster_name, ami, size=1))
    scope = platform.scope(platform.aws(), cluster_name)
    for kind, policy in (("lb", lb_policy(scope)), ("web", web_policy(scope))):
        role = f"hapair-{cluster_name}-{kind}"
        trust = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
        trust = json.loads(trust) if isinstance(trust, str) else trust
        assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
        assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
        names = iam.list_role_policies(RoleName=role)["PolicyNames"]
        assert names == [f"hapair-{cluster_name}-{kind}-node"]
        doc = iam.get_role_policy(RoleName=role, PolicyName=names[0])["PolicyDocument"]
        assert (json.loads(doc) if isinstance(doc, str) else doc) == policy
    # An inline policy nobody asked for (the one of older hapair versions) is removed.
    iam.put_role_policy(
        RoleName=f"hapair-{cluster_name}-lb",
        PolicyName=f"hapair-{cluster_name}-eip-failover",
        PolicyDocument=json.dumps(lb_policy(scope)),
    )
    platform.up(aws_plan(cluster_name, ami, size=1))
    assert iam.list_role_policies(RoleName=f"hapair-{cluster_name}-lb")["PolicyNames"] == [
        f"hapair-{cluster_name}-lb-node"
    ]
    reservations = ec2.describe_instances(
        Filters=[{"Name": "tag:hapair:cluster", "Values": [cluster_name]}]
    )["Reservations"]
    for inst in (i for r in reservations for i in r["Instances"]):
        kind = {t["Key"]: t["Value"] for t in inst["Tags"]}["hapair:role"]
        assert inst["IamInstanceProfile"]["Arn"].endswith(
            f"instance-profile/hapair-{cluster_name}-{kind}"
        )
    platform.down(cluster_name)
