"""The aws platform against moto: up -> status -> down, idempotence, scaling, SGs, IAM, EIPs."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
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
    roles = [
        r
        for r in iam.list_roles()["Roles"]
        if r["RoleName"] in (f"hapair-{name}-lb", f"hapair-{name}-web")
    ]
    s3 = boto3.client("s3", region_name="us-east-1")
    buckets = [b for b in s3.list_buckets()["Buckets"] if b["Name"].startswith(f"hapair-{name}-")]
    ssm = boto3.client("ssm", region_name="us-east-1")
    params = ssm.get_parameters_by_path(Path=f"/hapair/{name}")["Parameters"]
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
        "buckets": len(buckets),
        "secrets": len(params),
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
    assert first["lb_enis"] == 2 and len(first["instances"]) == 4 and first["endpoints"] == 3
    # An LB without a public address still reaches EC2 and SSM (interface endpoints with
    # private DNS) and its wheel in S3 (a gateway endpoint on the cluster's route table).
    eps = {
        next(t["Value"] for t in e["Tags"] if t["Key"] == "Name"): e
        for e in ec2.describe_vpc_endpoints(Filters=flt(cluster_name))["VpcEndpoints"]
    }
    for svc in ("ec2", "ssm"):
        ep = eps[f"{cluster_name}-{svc}-endpoint"]
        assert ep["VpcEndpointType"] == "Interface" and ep["PrivateDnsEnabled"] is True
        assert ep["ServiceName"].endswith(f".{svc}")
    s3ep = eps[f"{cluster_name}-s3-endpoint"]
    assert s3ep["VpcEndpointType"] == "Gateway" and s3ep["ServiceName"].endswith(".s3")
    rtbs = ec2.describe_route_tables(Filters=flt(cluster_name))["RouteTables"]
    assert s3ep["RouteTableIds"] == [rtbs[0]["RouteTableId"]]
    assert first["roles"] == 2 and first["buckets"] == 1
    assert first["secrets"] == 4  # three secrets and the LBs' desired document
    steps: list[str] = []
    platform.up(plan, steps.append)
    assert count(ec2, iam, cluster_name) == first
    assert "no instance to change" in steps
    assert steps[-1].startswith("not waiting for the demo page: the EC2 endpoint 127.0.0.1")
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
    # No key pair: nothing listens for an SSH login, so tcp/22 is closed everywhere.
    assert observed_rules(by_role["lb"], ids) == {
        Rule("icmp", 3, 4, "0.0.0.0/0"),
        Rule("tcp", 80, 80, "0.0.0.0/0"),
        Rule("tcp", 443, 443, "0.0.0.0/0"),
        Rule("udp", 694, 694, "sg:lb"),
        Rule("tcp", 9022, 9023, admin),
    }
    assert observed_rules(by_role["web"], ids) == {Rule("tcp", 80, 80, "sg:lb")}
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


def test_second_az_puts_lb2_and_every_other_web_in_its_own_subnet(
    platform: AwsPlatform, ec2: Any, ami: str, cluster_name: str
):
    platform.up(aws_plan(cluster_name, ami, size=3, second_az=True))
    subnets = ec2.describe_subnets(Filters=flt(cluster_name))["Subnets"]
    assert len({s["AvailabilityZone"] for s in subnets}) == 2
    zone = {s["SubnetId"]: s["AvailabilityZone"] for s in subnets}
    nodes = {n["name"]: n for n in platform.status(cluster_name)["nodes"]}
    assert nodes["lb2"]["address"] == "10.20.2.12" and nodes["lb2"]["secondary"] == "10.20.2.112"
    assert [nodes[w]["address"] for w in ("web1", "web2", "web3")] == [
        "10.20.1.21",
        "10.20.2.21",
        "10.20.1.22",
    ]
    reservations = ec2.describe_instances(Filters=flt(cluster_name))["Reservations"]
    az = {
        {t["Key"]: t["Value"] for t in i["Tags"]}["hapair:node"]: zone[i["SubnetId"]]
        for r in reservations
        for i in r["Instances"]
    }
    assert az["lb1"] == az["web1"] == az["web3"] != az["lb2"] == az["web2"]
    platform.down(cluster_name)


def test_ssh_only_with_a_key_pair_and_only_from_admin_cidrs(
    platform: AwsPlatform, ec2: Any, ami: str, cluster_name: str
):
    ec2.create_key_pair(KeyName=f"{cluster_name}-key")
    platform.up(aws_plan(cluster_name, ami, size=1, key_name=f"{cluster_name}-key"))
    groups = ec2.describe_security_groups(Filters=flt(cluster_name))["SecurityGroups"]
    ids = {g["GroupId"]: g["GroupId"] for g in groups}
    for g in groups:
        ssh = {r for r in observed_rules(g, ids) if r.from_port == 22 and r.protocol == "tcp"}
        role = {t["Key"]: t["Value"] for t in g["Tags"]}.get("hapair:role")
        assert ssh == ({Rule("tcp", 22, 22, "192.0.2.0/24")} if role else set())
    platform.down(cluster_name)


def test_small_findings_source_dest_check_dns_and_idempotent_launches(
    platform: AwsPlatform, ec2: Any, ami: str, cluster_name: str
):
    platform.up(aws_plan(cluster_name, ami, size=1))
    for eni in ec2.describe_network_interfaces(
        Filters=[*flt(cluster_name), {"Name": "tag:hapair:role", "Values": ["lb"]}]
    )["NetworkInterfaces"]:
        attr = ec2.describe_network_interface_attribute(
            NetworkInterfaceId=eni["NetworkInterfaceId"], Attribute="sourceDestCheck"
        )
        assert attr["SourceDestCheck"]["Value"] is True  # left on: the LBs route nothing
    reservations = ec2.describe_instances(Filters=flt(cluster_name))["Reservations"]
    for inst in (i for r in reservations for i in r["Instances"]):
        node = {t["Key"]: t["Value"] for t in inst["Tags"]}["hapair:node"]
        assert inst["ClientToken"].startswith(f"hapair-{cluster_name}-{node}-")
    # DNS support and hostnames are ensured on every up, not only when the VPC is made.
    vpc = ec2.describe_vpcs(Filters=flt(cluster_name))["Vpcs"][0]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": False})
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsSupport={"Value": False})
    platform.up(aws_plan(cluster_name, ami, size=1))
    for attribute, key in (
        ("enableDnsSupport", "EnableDnsSupport"),
        ("enableDnsHostnames", "EnableDnsHostnames"),
    ):
        assert ec2.describe_vpc_attribute(VpcId=vpc, Attribute=attribute)[key]["Value"] is True
    platform.down(cluster_name)


def test_a_launch_retried_after_an_error_keeps_its_client_token() -> None:
    from hapair.plan import Role
    from hapair.platforms.aws.client import Aws, Timing
    from hapair.platforms.aws.instances import launch
    from hapair.platforms.aws.layout import NodeLayout

    seen: list[str] = []

    class Ec2:
        def run_instances(self, **kw: Any) -> Any:
            seen.append(kw["ClientToken"])
            if len(seen) == 1:  # the fresh instance profile is not usable by EC2 yet
                raise ClientError(
                    {"Error": {"Code": "InvalidParameterValue", "Message": "profile"}},
                    "RunInstances",
                )
            return {"Instances": [{"InstanceId": "i-1"}]}

    aws = Aws(
        boto3.Session(region_name="us-east-1"),
        timing=Timing(poll=0.01, retry=2.0),
        _clients={"ec2": Ec2()},
    )
    node = NodeLayout("web1", Role.WEB, "subnet1", "10.20.1.21", "t3.small")
    iid = launch(
        aws,
        "c",
        node,
        ami="ami-1",
        user_data=b"#cloud-config\n",
        subnet_id="s",
        group_id="g",
        client_token="hapair-c-web1-run1",
    )
    assert iid == "i-1" and seen == ["hapair-c-web1-run1"] * 2


def test_cost_estimate(ami: str) -> None:
    lines = estimate_of(aws_plan("c", ami, size=3))
    text = format_estimate(lines)
    assert "5 × t3.small instance" in text
    # 5 × t3.small + 5 volumes + 5 public IPv4 (2 EIPs, 3 web) + EC2 and SSM endpoints, 1 AZ
    assert total(lines) == pytest.approx(5 * 0.0208 + 5 * 8 * 0.08 / 730 + 5 * 0.005 + 2 * 0.01)


def estimate_of(plan: Plan) -> Any:
    return AwsPlatform().cost(plan)


def test_estimate_marks_unknown_types(ami: str) -> None:
    from hapair.platforms.aws.layout import make_layout

    lines = estimate(make_layout(aws_plan("c", ami, size=1, web_instance_type="x9.huge")))
    assert "has no price" in format_estimate(lines)
