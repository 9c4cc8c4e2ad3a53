"""The network: VPC, subnet(s), internet gateway, route table with a default route, and the
optional VPC endpoints (EC2 and SSM interface endpoints, the S3 gateway endpoint).
``ensure_network`` creates what is missing; ``delete_network`` removes it all in dependency
order and waits until it is gone."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from hapair.platforms.aws.client import NOT_VISIBLE_YET, STILL_IN_USE, Aws, cluster_tags, tag_spec
from hapair.platforms.aws.inventory import Inventory
from hapair.platforms.aws.layout import AwsLayout

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkIds:
    """Ids of the cluster's network resources."""

    vpc: str
    subnets: dict[str, str]
    igw: str
    route_table: str


def _zones(aws: Aws) -> list[str]:
    res = aws.must(
        aws.ec2.describe_availability_zones,
        "availability zones",
        Filters=[{"Name": "state", "Values": ["available"]}],
    )
    zones = sorted(
        z["ZoneName"]
        for z in res["AvailabilityZones"]
        if z.get("ZoneType", "availability-zone") == "availability-zone"
    )
    return zones


#: The VPC's DNS attributes, as DescribeVpcAttribute names them and ModifyVpcAttribute sets them.
DNS_ATTRIBUTES = (
    ("enableDnsSupport", "EnableDnsSupport"),
    ("enableDnsHostnames", "EnableDnsHostnames"),
)


def ensure_dns(aws: Aws, vpc_id: str) -> list[str]:
    """Turn on the VPC's DNS support and hostnames where they are off (the EC2 endpoint's
    private DNS needs both); checked on every ``up``, since anyone may turn them off.

    :returns: the attributes that had to be turned on.
    """
    fixed = []
    for attribute, key in DNS_ATTRIBUTES:
        res = aws.must(
            aws.ec2.describe_vpc_attribute,
            f"vpc {vpc_id}",
            retry=NOT_VISIBLE_YET,
            VpcId=vpc_id,
            Attribute=attribute,
        )
        value: Any = res.get(key) or {}
        if not value.get("Value", False):
            aws.must(
                aws.ec2.modify_vpc_attribute,
                f"vpc {vpc_id}",
                VpcId=vpc_id,
                **{key: {"Value": True}},
            )
            fixed.append(attribute)
    return fixed


def ensure_network(aws: Aws, layout: AwsLayout, inv: Inventory) -> NetworkIds:
    """Create the VPC, subnets, IGW and route table that are missing; idempotent."""
    ec2 = aws.ec2
    c = layout.cluster
    retry = NOT_VISIBLE_YET
    vpc = inv.by_name(inv.vpcs, "vpc")
    if vpc is None:
        vpc_id = aws.must(
            ec2.create_vpc,
            f"vpc {c}-vpc",
            CidrBlock=layout.vpc_cidr,
            TagSpecifications=tag_spec("vpc", cluster_tags(c, "vpc")),
        )["Vpc"]["VpcId"]
        aws.wait_until(
            f"vpc {vpc_id} is available",
            lambda: (
                aws.must(ec2.describe_vpcs, vpc_id, retry=retry, VpcIds=[vpc_id])["Vpcs"][0][
                    "State"
                ]
                == "available"
            ),
        )
    else:
        vpc_id = vpc["VpcId"]
    ensure_dns(aws, vpc_id)
    zones = _zones(aws)
    subnets: dict[str, str] = {}
    for i, (key, cidr) in enumerate(sorted(layout.subnets.items())):
        found = inv.by_name(inv.subnets, key)
        if found is not None:
            subnets[key] = found["SubnetId"]
            continue
        subnets[key] = aws.must(
            ec2.create_subnet,
            f"subnet {c}-{key}",
            retry=retry,
            VpcId=vpc_id,
            CidrBlock=cidr,
            AvailabilityZone=zones[i % len(zones)],
            TagSpecifications=tag_spec("subnet", cluster_tags(c, key)),
        )["Subnet"]["SubnetId"]
    igw = inv.by_name(inv.igws, "igw")
    if igw is None:
        igw_id = aws.must(
            ec2.create_internet_gateway,
            f"internet gateway {c}-igw",
            TagSpecifications=tag_spec("internet-gateway", cluster_tags(c, "igw")),
        )["InternetGateway"]["InternetGatewayId"]
        attached = False
    else:
        igw_id = igw["InternetGatewayId"]
        attached = any(a.get("VpcId") == vpc_id for a in igw.get("Attachments", []))
    if not attached:
        aws.call(
            ec2.attach_internet_gateway,
            f"internet gateway {igw_id}",
            retry=retry,
            ignore=("Resource.AlreadyAssociated",),
            InternetGatewayId=igw_id,
            VpcId=vpc_id,
        )
    rtb = inv.by_name(inv.route_tables, "rtb")
    if rtb is None:
        rtb_id = aws.must(
            ec2.create_route_table,
            f"route table {c}-rtb",
            retry=retry,
            VpcId=vpc_id,
            TagSpecifications=tag_spec("route-table", cluster_tags(c, "rtb")),
        )["RouteTable"]["RouteTableId"]
        rtb = {"RouteTableId": rtb_id, "Routes": [], "Associations": []}
    rtb_id = rtb["RouteTableId"]
    if not any(r.get("DestinationCidrBlock") == "0.0.0.0/0" for r in rtb.get("Routes", [])):
        aws.call(
            ec2.create_route,
            f"route table {rtb_id}",
            retry=retry,
            ignore=("RouteAlreadyExists",),
            RouteTableId=rtb_id,
            DestinationCidrBlock="0.0.0.0/0",
            GatewayId=igw_id,
        )
    associated = {a.get("SubnetId") for a in rtb.get("Associations", [])}
    for subnet_id in subnets.values():
        if subnet_id not in associated:
            aws.call(
                ec2.associate_route_table,
                f"route table {rtb_id}",
                retry=retry,
                ignore=("Resource.AlreadyAssociated",),
                RouteTableId=rtb_id,
                SubnetId=subnet_id,
            )
    return NetworkIds(vpc_id, subnets, igw_id, rtb_id)


#: The VPC endpoints, by name: (service, type). An LB whose EIP sits on its peer has no public
#: address; through these it still calls the EC2 API (to take its EIP back), reads its secrets
#: and desired document (SSM) and fetches hapair's wheel (S3, a gateway endpoint: free).
ENDPOINTS = {
    "ec2-endpoint": ("ec2", "Interface"),
    "ssm-endpoint": ("ssm", "Interface"),
    "s3-endpoint": ("s3", "Gateway"),
}


def ensure_endpoints(
    aws: Aws, layout: AwsLayout, inv: Inventory, net: NetworkIds, group_id: str
) -> dict[str, str]:
    """The cluster's VPC endpoints (:data:`ENDPOINTS`): interface endpoints with private DNS in
    every subnet, the S3 gateway endpoint on the route table. Returns their ids by name."""
    c = layout.cluster
    ids: dict[str, str] = {}
    for name, (service, kind) in ENDPOINTS.items():
        found = inv.by_name(inv.endpoints, name)
        if found is not None:
            ids[name] = str(found["VpcEndpointId"])
            continue
        where: dict[str, Any] = (
            {
                "SubnetIds": sorted(net.subnets.values()),
                "SecurityGroupIds": [group_id],
                "PrivateDnsEnabled": True,
            }
            if kind == "Interface"
            else {"RouteTableIds": [net.route_table]}
        )
        res = aws.must(
            aws.ec2.create_vpc_endpoint,
            f"vpc endpoint {c}-{name}",
            retry=NOT_VISIBLE_YET,
            VpcEndpointType=kind,
            VpcId=net.vpc,
            ServiceName=f"com.amazonaws.{aws.region}.{service}",
            TagSpecifications=tag_spec("vpc-endpoint", cluster_tags(c, name)),
            **where,
        )
        ids[name] = str(res["VpcEndpoint"]["VpcEndpointId"])
    return ids


def delete_endpoints(aws: Aws, inv: Inventory) -> None:
    """Delete the cluster's VPC endpoints and wait until they are gone."""
    ids = [e["VpcEndpointId"] for e in inv.endpoints]
    if not ids:
        return
    aws.call(aws.ec2.delete_vpc_endpoints, "vpc endpoints", VpcEndpointIds=ids)

    def gone() -> bool:
        res = aws.call(
            aws.ec2.describe_vpc_endpoints,
            "vpc endpoints",
            ignore=("InvalidVpcEndpointId.NotFound",),
            VpcEndpointIds=ids,
        )
        return res is None or all(
            e.get("State", "").lower() == "deleted" for e in res.get("VpcEndpoints", [])
        )

    aws.wait_until("the vpc endpoints are deleted", gone)


def delete_network(aws: Aws, inv: Inventory) -> None:
    """Route table, internet gateway, subnets and VPC, in that order (each retried while AWS
    still sees a dependency)."""
    ec2 = aws.ec2
    gone = (
        "InvalidRouteTableID.NotFound",
        "InvalidAssociationID.NotFound",
        "InvalidInternetGatewayID.NotFound",
        "Gateway.NotAttached",
        "InvalidSubnetID.NotFound",
        "InvalidVpcID.NotFound",
    )
    for rtb in inv.route_tables:
        rtb_id = rtb["RouteTableId"]
        for assoc in rtb.get("Associations", []):
            if not assoc.get("Main"):
                aws.call(
                    ec2.disassociate_route_table,
                    f"route table {rtb_id}",
                    ignore=gone,
                    AssociationId=assoc["RouteTableAssociationId"],
                )
        if not any(a.get("Main") for a in rtb.get("Associations", [])):
            aws.call(
                ec2.delete_route_table,
                f"route table {rtb_id}",
                ignore=gone,
                retry=STILL_IN_USE,
                RouteTableId=rtb_id,
            )
    for igw in inv.igws:
        igw_id = igw["InternetGatewayId"]
        for att in igw.get("Attachments", []):
            aws.call(
                ec2.detach_internet_gateway,
                f"internet gateway {igw_id}",
                ignore=gone,
                retry=STILL_IN_USE,
                InternetGatewayId=igw_id,
                VpcId=att["VpcId"],
            )
        aws.call(
            ec2.delete_internet_gateway,
            f"internet gateway {igw_id}",
            ignore=gone,
            retry=STILL_IN_USE,
            InternetGatewayId=igw_id,
        )
    for subnet in inv.subnets:
        aws.call(
            ec2.delete_subnet,
            f"subnet {subnet['SubnetId']}",
            ignore=gone,
            retry=STILL_IN_USE,
            SubnetId=subnet["SubnetId"],
        )
    for vpc in inv.vpcs:
        aws.call(
            ec2.delete_vpc,
            f"vpc {vpc['VpcId']}",
            ignore=gone,
            retry=STILL_IN_USE,
            VpcId=vpc["VpcId"],
        )
