"""The boot rehearsal's cloud: the aws platform's own ``up``, run against the rehearsal's moto.

``up`` builds this checkout's wheel and pins its requirements, makes the bucket and uploads
both, writes the SSM secrets and the desired document, allocates the EIPs and "launches" the
instances; moto starts nothing, but it keeps each instance's user data exactly as EC2 would hand
it to cloud-init. The rehearsal reads it back from there (``DescribeInstanceAttribute``) and
boots it for real.

On EC2 an instance's SDK and ``s3get.py`` take the instance role's temporary credentials from
the instance metadata service. The rehearsal has no metadata service: it asks moto's STS for the
same role's credentials (``AssumeRole``) and hands them to the instance in its environment.
"""

from __future__ import annotations

import base64
import gzip
from dataclasses import dataclass, field
from typing import Any

import boto3

from hapair.plan import Plan, make_plan
from hapair.platforms.aws import AwsPlatform
from hapair.platforms.aws.client import Timing
from hapair.platforms.base import Progress
from hapair.spec import parse

from . import rehearsal_net as net

REGION = "us-east-1"
#: Dummy credentials for the rehearsal's own calls (moto accepts any).
OPERATOR_KEY = "rehearsal"


@dataclass(frozen=True)
class Node:
    """One node to boot.

    :ivar name: lb1, web1, ...
    :ivar role: ``lb`` or ``web``.
    :ivar instance_id: its (moto) instance id, the NoCloud instance-id.
    :ivar private_ip: its primary private address (the container's address).
    :ivar user_data: exactly what EC2 would hand cloud-init (plain or gzip).
    """

    name: str
    role: str
    instance_id: str
    private_ip: str
    user_data: bytes


@dataclass
class Cloud:
    """What ``up`` made in moto, as the rehearsal needs it."""

    cluster: str
    plan: Plan
    nodes: dict[str, Node] = field(default_factory=dict)
    #: role kind -> the instance role's temporary credentials (moto's STS).
    credentials: dict[str, dict[str, str]] = field(default_factory=dict)

    def plan_layout_secondary(self, node: str) -> str:
        """LB ``node``'s secondary private address."""
        from hapair.platforms.aws.layout import make_layout

        return str(make_layout(self.plan).node(node).secondary_ip)


def rehearsal_plan(cluster: str, ami: str, webs: int) -> Plan:
    """An aws plan whose VPC is the rehearsal's 198.18.0.0/16, with ``webs`` web servers."""
    return make_plan(
        parse(
            {
                "cluster": {"name": cluster, "platform": "aws"},
                "web": {"size": webs},
                "aws": {
                    "region": REGION,
                    "ami": ami,
                    "vpc_cidr": net.VPC_CIDR,
                    "subnet_cidr": net.SUBNET_CIDR,
                    "subnet2_cidr": net.SUBNET2_CIDR,
                },
                "admin": {"cidrs": ["198.18.0.0/15"]},
            }
        )
    )


def _session(region: str | None) -> boto3.Session:
    return boto3.Session(
        aws_access_key_id=OPERATOR_KEY,
        aws_secret_access_key=OPERATOR_KEY,
        region_name=region or REGION,
    )


def setup(cluster: str, endpoint: str, webs: int, progress: Progress) -> Cloud:
    """Run the aws platform's ``up`` against moto at ``endpoint`` and read back what each
    instance would boot with."""
    session = _session(REGION)
    ec2: Any = session.client("ec2", endpoint_url=endpoint)
    ami = str(ec2.describe_images()["Images"][0]["ImageId"])
    plan = rehearsal_plan(cluster, ami, webs)
    platform = AwsPlatform(
        _session,
        region=REGION,
        endpoint_url=endpoint,
        timing=Timing(poll=0.2, wait=60.0, retry=30.0),
    )
    platform.up(plan, progress)
    cloud = Cloud(cluster, plan)
    res = ec2.describe_instances(
        Filters=[
            {"Name": "tag:hapair:cluster", "Values": [cluster]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
    )
    for reservation in res["Reservations"]:
        for inst in reservation["Instances"]:
            tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
            iid = inst["InstanceId"]
            value = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
            raw = base64.b64decode(value["UserData"]["Value"])
            name = tags["hapair:node"]
            cloud.nodes[name] = Node(
                name=name,
                role=tags.get("hapair:role", "lb" if name.startswith("lb") else "web"),
                instance_id=iid,
                private_ip=str(inst["PrivateIpAddress"]),
                user_data=raw,
            )
    iam: Any = session.client("iam", endpoint_url=endpoint)
    sts: Any = session.client("sts", endpoint_url=endpoint)
    for kind in ("lb", "web"):
        arn = iam.get_role(RoleName=f"hapair-{cluster}-{kind}")["Role"]["Arn"]
        creds = sts.assume_role(RoleArn=arn, RoleSessionName=f"rehearsal-{kind}")["Credentials"]
        cloud.credentials[kind] = {
            "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
            "AWS_SESSION_TOKEN": creds["SessionToken"],
        }
    return cloud


def user_data_text(node: Node) -> str:
    """The node's user data as text (gunzipped when EC2 got it compressed)."""
    raw = node.user_data
    return (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()


def instance_environment(cloud: Cloud, node: Node, endpoint: str, proxy: str) -> dict[str, str]:
    """What the rehearsal gives an instance in place of EC2's metadata service and the VPC's
    way out: the role's credentials, the endpoint, no metadata service, and the package proxy
    (everything but the endpoint goes through it). No region: the instance must know it."""
    return {
        **cloud.credentials[node.role],
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
        "http_proxy": proxy,
        "https_proxy": proxy,
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        "no_proxy": net.ROUTER,
        "NO_PROXY": net.ROUTER,
    }


def eip_report(endpoint: str) -> list[str]:
    """Where each EIP is associated now (one line each)."""
    ec2: Any = _session(REGION).client("ec2", endpoint_url=endpoint)
    out = []
    for a in ec2.describe_addresses()["Addresses"]:
        tags = {t["Key"]: t["Value"] for t in a.get("Tags", [])}
        out.append(
            f"{tags.get('Name', a['AllocationId'])} {a['PublicIp']}: "
            f"{a.get('NetworkInterfaceId', 'unassociated')} {a.get('PrivateIpAddress', '')}"
        )
    return out
