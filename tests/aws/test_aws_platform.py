"""The aws platform against moto: up -> status -> down, idempotence, scaling, SGs, IAM, EIPs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.aws.conftest import aws_plan, flt

from hapair.errors import UsageError
from hapair.plan import Plan
from hapair.platforms.aws import AwsPlatform
from hapair.platforms.aws.cost import estimate, format_estimate, total
from hapair.platforms.aws.planner import format_changes
from hapair.platforms.aws.security import Rule, observed_rules


def count(ec2: Any, iam: Any, name: str) -> dict[str, Any]:
    """Everything tagged with the cluster, counted by kind (instances: by id)."""
    reservations = ec2.describe_instances(
        Filters=[*flt(name), {"Name": "instance-state-name", "Values": ["pending", "running"]}]
    )["Reservations"]
    instances = sorted(i["InstanceId"] for r in reservations for i in r["Instances"])
    roles = [r for r in iam.list_roles()["Roles"] if r["RoleName"] == f"hapair-{name}-lb"]
    return {
        "vpcs": len(ec2.describe_vpcs(Filters=flt(name))["Vpcs"]),
        "subnets": len(ec2.describe_subnets(Filters=flt(name))["Subnets"]),
        "igws": len(ec2.describe_internet_gateways(Filters=flt(name))["InternetGateways"]),
        "rtbs": len(ec2.describe_route_tables(Filters=flt(name))["RouteTables"]),
        "sgs": len(ec2.describe_security_groups(Filters=flt(name))["SecurityGroups"]),
        "endpoints": len(
            [
                e
                for e in ec2.describe_vpc_endpoints(Filters=flt(name))["VpcEndpoints"]
                if e["State"].lower() != "deleted"  # AWS lists deleted endpoints for a while
            ]
        ),
        "eips": len(ec2.describe_addresses(Filters=flt(name))["Addresses"]),
        "lb_enis": len(
            ec2.describe_network_interfaces(
                Filters=[*flt(name), {"Name": "tag:hapair:role", "Values": ["lb"]}]
            )["NetworkInterfaces"]
        ),
        "roles": len(roles),
        "instances": instances,
    }


def test_up_status_down(platform: AwsPlatform, ec2: Any, iam: Any, ami: str, cluster_name: str):
    plan = aws_plan(cluster_name, ami)
    steps: list[str] = []
    platform.up(plan, steps.append)
    assert any("launch lb1, lb2, web1, web2, web3" in s for s in steps)

    st = platform.status(cluster_name)
    assert st["name"] == cluster_name and st["platform"] == "aws" and st["backends"] == []
    assert [n["name"] for n in st["nodes"]] == ["lb1", "lb2", "web1", "web2", "web3"]
    assert {n["state"] for n in st["nodes"]} == {"running"}
    by_name = {n["name"]: n for n in st["nodes"]}
    assert (
        by_name["lb1"]["address"] == "10.20.1.11" and by_name["lb1"]["secondary"] == "10.20.1.111"
    )
    assert (
        by_name["lb2"]["address"] == "10.20.1.12" and by_name["lb2"]["secondary"] == "10.20.1.112"
    )
    assert [by_name[f"web{i}"]["address"] for i in (1, 2, 3)] == [
        "10.20.1.21",
        "10.20.1.22",
        "10.20.1.23",
    ]
    assert {n["role"] for n in st["nodes"]} == {"lb", "web"}
    vips = {v["name"]: v for v in st["vips"]}
    assert vips["vip1"]["home"] == "lb1" and vips["vip1"]["owner"] == "lb1"
    assert vips["vip2"]["home"] == "lb2" and vips["vip2"]["owner"] == "lb2"
    assert vips["vip1"]["association"]["private_ip"] == "10.20.1.11"
    assert vips["vip1"]["association"]["slot"] == "primary"
    assert vips["vip2"]["association"]["private_ip"] == "10.20.1.12"

    # Every resource carries the cluster tag; instances and groups carry their role.
    reservations = ec2.describe_instances(Filters=flt(cluster_name))["Reservations"]
    for inst in (i for r in reservations for i in r["Instances"]):
        tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        assert tags["hapair:role"] == ("lb" if tags["hapair:node"].startswith("lb") else "web")

    assert platform.down(cluster_name, steps.append) is True
    left = count(ec2, iam, cluster_name)
    assert left == {k: ([] if k == "instances" else 0) for k in left}
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_instance_profile(InstanceProfileName=f"hapair-{cluster_name}-lb")
    assert platform.down(cluster_name) is False
    with pytest.raises(UsageError, match=f"no aws cluster named {cluster_name}"):
        platform.status(cluster_name)


def test_up_is_idempotent(platform: AwsPlatform, ec2: Any, iam: Any, ami: str, cluster_name: str):
    plan = aws_plan(cluster_name, ami, size=2)
    before_plan = platform.plan_changes(plan)
    assert {c.action for c in before_plan} == {"create"}
    platform.up(plan)
    first = count(ec2, iam, cluster_name)
    assert first["vpcs"] == 1 and first["sgs"] == 3 and first["eips"] == 2
    assert first["lb_enis"] == 2 and len(first["instances"]) == 4 and first["endpoints"] == 1
    steps: list[str] = []
    platform.up(plan, steps.append)
    assert count(ec2, iam, cluster_name) == first
    assert steps[-1] == "nothing to change"
    assert {c.action for c in platform.plan_changes(plan)} == {"keep"}
    assert "0 to create, 0 to change, 0 to delete" in format_changes(platform.plan_changes(plan))
    platform.down(cluster_name)


def test_web_size_change(platform: AwsPlatform, ec2: Any, iam: Any, ami: str, cluster_name: str):
    platform.up(aws_plan(cluster_name, ami, size=2))
    two = count(ec2, iam, cluster_name)["instances"]
    bigger = aws_plan(cluster_name, ami, size=4)
    changes = platform.plan_changes(bigger)
    assert [c.resource for c in changes if c.action == "create"] == [
        f"instance {cluster_name}-web3",
        f"instance {cluster_name}-web4",
    ]
    platform.up(bigger)
    four = count(ec2, iam, cluster_name)["instances"]
    assert len(four) == 6 and set(two) < set(four)
    assert [n["name"] for n in platform.status(cluster_name)["nodes"]][-2:] == ["web3", "web4"]

    smaller = aws_plan(cluster_name, ami, size=1)
    deletes = [c for c in platform.plan_changes(smaller) if c.action == "delete"]
    assert len(deletes) == 3
    platform.up(smaller)
    nodes = [n["name"] for n in platform.status(cluster_name)["nodes"]]
    assert nodes == ["lb1", "lb2", "web1"]
    assert set(count(ec2, iam, cluster_name)["instances"]) < set(two)
    platform.down(cluster_name)


def test_security_group_rules(platform: AwsPlatform, ec2: Any, ami: str, cluster_name: str):
    platform.up(aws_plan(cluster_name, ami, size=1))
    groups = ec2.describe_security_groups(Filters=flt(cluster_name))["SecurityGroups"]
    by_role = {
        {t["Key"]: t["Value"] for t in g["Tags"]}.get("hapair:role", "endpoint"): g for g in groups
    }
    ids = {k: g["GroupId"] for k, g in by_role.items()}
    admin = "192.0.2.0/24"
    assert observed_rules(by_role["lb"], ids) == {
        Rule("icmp", 3, 4, "0.0.0.0/0"),
        Rule("tcp", 22, 22, "0.0.0.0/0"),
        Rule("tcp", 80, 80, "0.0.0.0/0"),
        Rule("tcp", 443, 443, "0.0.0.0/0"),
        Rule("udp", 694, 694, "sg:lb"),
        Rule("tcp", 9022, 9023, admin),
    }
    assert observed_rules(by_role["web"], ids) == {
        Rule("tcp", 22, 22, admin),
        Rule("tcp", 80, 80, "sg:lb"),
    }
    assert observed_rules(by_role["endpoint"], ids) == {Rule("tcp", 443, 443, "sg:lb")}

    # A rule added by hand is revoked by the next up; a deleted one comes back.
    ec2.authorize_security_group_ingress(
        GroupId=ids["web"],
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 80,
                "ToPort": 80,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ],
    )
    ec2.revoke_security_group_ingress(
        GroupId=ids["lb"],
        IpPermissions=[
            {
                "IpProtocol": "udp",
                "FromPort": 694,
                "ToPort": 694,
                "UserIdGroupPairs": [{"GroupId": ids["lb"]}],
            }
        ],
    )
    drift = {c.resource: c for c in platform.plan_changes(aws_plan(cluster_name, ami, size=1))}
    assert drift[f"security group {cluster_name}-web-sg"].action == "change"
    platform.up(aws_plan(cluster_name, ami, size=1))
    groups = {
        g["GroupId"]: g
        for g in ec2.describe_security_groups(GroupIds=list(ids.values()))["SecurityGroups"]
    }
    assert Rule("tcp", 80, 80, "0.0.0.0/0") not in observed_rules(groups[ids["web"]], ids)
    assert Rule("udp", 694, 694, "sg:lb") in observed_rules(groups[ids["lb"]], ids)
    platform.down(cluster_name)


def test_iam_policy_allows_only_the_agents_actions(
    platform: AwsPlatform, ec2: Any, iam: Any, ami: str, cluster_name: str
):
    platform.up(aws_plan(cluster_name, ami, size=1))
    role = f"hapair-{cluster_name}-lb"
    trust = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
    names = iam.list_role_policies(RoleName=role)["PolicyNames"]
    assert names == [f"hapair-{cluster_name}-eip-failover"]
    doc = iam.get_role_policy(RoleName=role, PolicyName=names[0])["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    actions = {a for s in doc["Statement"] for a in s["Action"]}
    assert actions == {"ec2:DescribeAddresses", "ec2:AssociateAddress", "ec2:DisassociateAddress"}
    assert all(s["Effect"] == "Allow" for s in doc["Statement"])
    move = next(s for s in doc["Statement"] if "ec2:AssociateAddress" in s["Action"])
    assert move["Condition"] == {"StringEquals": {"aws:ResourceTag/hapair:cluster": cluster_name}}
    profile = iam.get_instance_profile(InstanceProfileName=role)["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [role]
    reservations = ec2.describe_instances(Filters=flt(cluster_name))["Reservations"]
    for inst in (i for r in reservations for i in r["Instances"]):
        node = {t["Key"]: t["Value"] for t in inst["Tags"]}["hapair:node"]
        if node.startswith("lb"):
            assert inst["IamInstanceProfile"]["Arn"].endswith(f"instance-profile/{role}")
        else:
            assert "IamInstanceProfile" not in inst
    platform.down(cluster_name)


def test_eips_on_each_lbs_primary_address(
    platform: AwsPlatform, ec2: Any, ami: str, cluster_name: str
):
    platform.up(aws_plan(cluster_name, ami, size=1))
    enis = {
        {t["Key"]: t["Value"] for t in e["TagSet"]}["hapair:node"]: e
        for e in ec2.describe_network_interfaces(
            Filters=[*flt(cluster_name), {"Name": "tag:hapair:role", "Values": ["lb"]}]
        )["NetworkInterfaces"]
    }
    for node, primary, secondary in (
        ("lb1", "10.20.1.11", "10.20.1.111"),
        ("lb2", "10.20.1.12", "10.20.1.112"),
    ):
        addrs = {a["PrivateIpAddress"]: a["Primary"] for a in enis[node]["PrivateIpAddresses"]}
        assert addrs == {primary: True, secondary: False}
    addresses = {
        {t["Key"]: t["Value"] for t in a["Tags"]}["hapair:vip"]: a
        for a in ec2.describe_addresses(Filters=flt(cluster_name))["Addresses"]
    }
    assert addresses["vip1"]["NetworkInterfaceId"] == enis["lb1"]["NetworkInterfaceId"]
    assert addresses["vip1"]["PrivateIpAddress"] == "10.20.1.11"
    assert addresses["vip2"]["NetworkInterfaceId"] == enis["lb2"]["NetworkInterfaceId"]
    assert addresses["vip2"]["PrivateIpAddress"] == "10.20.1.12"
    # up does not fight the agents: an EIP moved to the peer stays where it is.
    ec2.associate_address(
        AllocationId=addresses["vip1"]["AllocationId"],
        NetworkInterfaceId=enis["lb2"]["NetworkInterfaceId"],
        PrivateIpAddress="10.20.1.112",
        AllowReassociation=True,
    )
    platform.up(aws_plan(cluster_name, ami, size=1))
    vip1 = next(v for v in platform.status(cluster_name)["vips"] if v["name"] == "vip1")
    assert vip1["owner"] == "lb2" and vip1["association"]["slot"] == "secondary"
    platform.down(cluster_name)


def test_second_az_puts_lb2_in_its_own_subnet(
    platform: AwsPlatform, ec2: Any, ami: str, cluster_name: str
):
    platform.up(aws_plan(cluster_name, ami, size=1, second_az=True))
    subnets = ec2.describe_subnets(Filters=flt(cluster_name))["Subnets"]
    assert len({s["AvailabilityZone"] for s in subnets}) == 2
    lb2 = next(n for n in platform.status(cluster_name)["nodes"] if n["name"] == "lb2")
    assert lb2["address"] == "10.20.2.12" and lb2["secondary"] == "10.20.2.112"
    platform.down(cluster_name)


def test_cost_estimate(ami: str) -> None:
    lines = estimate_of(aws_plan("c", ami, size=3))
    text = format_estimate(lines)
    assert "5 × t3.small instance" in text
    # 5 × t3.small + 5 volumes + 5 public IPv4 (2 EIPs, 3 web) + 1 endpoint
    assert total(lines) == pytest.approx(5 * 0.0208 + 5 * 8 * 0.08 / 730 + 5 * 0.005 + 0.01)


def estimate_of(plan: Plan) -> Any:
    return AwsPlatform().cost(plan)


def test_estimate_marks_unknown_types(ami: str) -> None:
    from hapair.platforms.aws.layout import make_layout

    lines = estimate(make_layout(aws_plan("c", ami, size=1, web_instance_type="x9.huge")))
    assert "has no price" in format_estimate(lines)
