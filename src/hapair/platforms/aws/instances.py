"""Compute: the AMI, the LBs' ENIs (primary + secondary private address), the two EIPs, the LB
and web instances, and their removal in dependency order."""

from __future__ import annotations

import logging
from typing import Any

from hapair.errors import CloudError
from hapair.platforms.aws.client import (
    IAM_PROPAGATION,
    NOT_VISIBLE_YET,
    STILL_IN_USE,
    Aws,
    cluster_tags,
    tag_spec,
    tags_of,
)
from hapair.platforms.aws.inventory import Inventory
from hapair.platforms.aws.layout import NodeLayout

logger = logging.getLogger(__name__)

#: SSM public parameters, tried in order: Debian 12, then Ubuntu 24.04.
AMI_PARAMETERS = (
    "/aws/service/debian/release/12/latest/amd64",
    "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id",
)
#: Name-filter fallbacks: (owner account, name pattern). Debian's and Canonical's accounts.
AMI_NAME_FILTERS = (
    ("136693071363", "debian-12-amd64-*"),
    ("099720109477", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"),
)


def find_ami(aws: Aws, wanted: str = "") -> str:
    """The AMI to boot: ``wanted`` if given, else Debian 12 (SSM public parameter, then a name
    filter on Debian's account), else Ubuntu 24.04.

    :raises CloudError: none found (code ``AmiNotFound``).
    """
    if wanted:
        return wanted
    for name in AMI_PARAMETERS:
        res = aws.call(
            aws.ssm.get_parameter,
            f"ssm parameter {name}",
            ignore=("ParameterNotFound", "AccessDeniedException", "ValidationException"),
            Name=name,
        )
        value = res["Parameter"].get("Value", "") if res else ""
        if value.startswith("ami-"):
            return value
    for owner, pattern in AMI_NAME_FILTERS:
        images = aws.must(
            aws.ec2.describe_images,
            f"images {pattern}",
            Owners=[owner],
            Filters=[
                {"Name": "name", "Values": [pattern]},
                {"Name": "architecture", "Values": ["x86_64"]},
                {"Name": "state", "Values": ["available"]},
            ],
        )["Images"]
        if images:
            return str(max(images, key=lambda i: i.get("CreationDate", ""))["ImageId"])
    raise CloudError(
        "no Debian 12 or Ubuntu 24.04 AMI found in this region; set aws.ami in the spec",
        "AmiNotFound",
        "ami",
    )


def ensure_eips(
    aws: Aws, cluster: str, vips: list[tuple[str, str]], inv: Inventory
) -> dict[str, dict[str, Any]]:
    """Allocate the EIPs that are missing (one per ``(vip, home)``, tagged with both).

    :returns: vip -> its address record (``AllocationId``, ``PublicIp``, association if any).
    """
    out: dict[str, dict[str, Any]] = {}
    for vip, home in vips:
        found = inv.address(vip)
        if found is None:
            res = aws.must(
                aws.ec2.allocate_address,
                f"elastic ip {cluster}-{vip}",
                Domain="vpc",
                TagSpecifications=tag_spec(
                    "elastic-ip", cluster_tags(cluster, vip, vip=vip, home=home)
                ),
            )
            found = {"AllocationId": res["AllocationId"], "PublicIp": res["PublicIp"]}
        out[vip] = found
    return out


def ensure_eni(
    aws: Aws, cluster: str, node: NodeLayout, subnet_id: str, group_id: str, inv: Inventory
) -> str:
    """The LB's ENI with its primary and secondary private addresses (made once, kept across
    instance replacement so the EIP associations and the agent's config stay valid)."""
    found = inv.eni(node.name)
    if found is not None:
        return str(found["NetworkInterfaceId"])
    assert node.secondary_ip is not None
    res = aws.must(
        aws.ec2.create_network_interface,
        f"network interface {cluster}-{node.name}",
        retry=NOT_VISIBLE_YET,
        SubnetId=subnet_id,
        Groups=[group_id],
        PrivateIpAddresses=[
            {"PrivateIpAddress": node.private_ip, "Primary": True},
            {"PrivateIpAddress": node.secondary_ip, "Primary": False},
        ],
        Description=f"hapair {cluster} {node.name}: primary + secondary for the EIPs",
        TagSpecifications=tag_spec(
            "network-interface", cluster_tags(cluster, f"{node.name}-eni", "lb", node=node.name)
        ),
    )
    # Source/destination check stays on: an EIP is translated to the ENI's own private
    # address, so the LB only ever sends and receives for addresses it owns; it routes nothing.
    return str(res["NetworkInterface"]["NetworkInterfaceId"])


def launch(
    aws: Aws,
    cluster: str,
    node: NodeLayout,
    *,
    ami: str,
    user_data: bytes,
    subnet_id: str,
    group_id: str,
    eni_id: str | None = None,
    profile: str | None = None,
    key_name: str = "",
    client_token: str = "",
) -> str:
    """Start the instance of ``node``; LBs boot on their ENI, web nodes get their fixed private
    address and a public address for egress; each with its role's instance profile.

    :param client_token: makes the launch idempotent: a retry of this call (after a timeout
        whose answer was lost, say) returns the instance the first attempt started.
    :returns: the instance id.
    """
    tags = cluster_tags(cluster, node.name, str(node.role), node=node.name)
    if eni_id is not None:
        nics: list[dict[str, Any]] = [{"DeviceIndex": 0, "NetworkInterfaceId": eni_id}]
    else:
        nics = [
            {
                "DeviceIndex": 0,
                "SubnetId": subnet_id,
                "Groups": [group_id],
                "PrivateIpAddress": node.private_ip,
                "AssociatePublicIpAddress": True,
                "DeleteOnTermination": True,
            }
        ]
    kwargs: dict[str, Any] = {
        "ImageId": ami,
        "InstanceType": node.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        # boto3 base64-encodes UserData itself (str or bytes).
        "UserData": user_data,
        "NetworkInterfaces": nics,
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        "TagSpecifications": [
            *tag_spec("instance", tags),
            *tag_spec("volume", tags),
            *([] if eni_id else tag_spec("network-interface", tags)),
        ],
    }
    if profile:
        kwargs["IamInstanceProfile"] = {"Name": profile}
    if key_name:
        kwargs["KeyName"] = key_name
    if client_token:
        kwargs["ClientToken"] = client_token
    res = aws.must(
        aws.ec2.run_instances,
        f"instance {cluster}-{node.name}",
        retry=IAM_PROPAGATION + NOT_VISIBLE_YET,
        **kwargs,
    )
    return str(res["Instances"][0]["InstanceId"])


def instance_states(aws: Aws, ids: list[str]) -> dict[str, str]:
    """Instance id -> state name (missing ids are ``terminated``)."""
    if not ids:
        return {}
    res = aws.call(aws.ec2.describe_instances, "instances", retry=NOT_VISIBLE_YET, InstanceIds=ids)
    states = {i: "terminated" for i in ids}
    for r in res["Reservations"] if res else []:
        for inst in r["Instances"]:
            states[inst["InstanceId"]] = inst["State"]["Name"]
    return states


def wait_running(aws: Aws, ids: list[str]) -> None:
    """Wait until every instance runs."""

    def ready() -> bool:
        states = instance_states(aws, ids)
        bad = [i for i, s in states.items() if s not in ("pending", "running")]
        if bad:
            raise CloudError(
                f"instances stopped while starting: {', '.join(bad)}",
                "InstanceNotRunning",
                ", ".join(bad),
            )
        return all(s == "running" for s in states.values())

    aws.wait_until(f"instances {', '.join(ids)} run", ready)


def terminate(aws: Aws, ids: list[str]) -> None:
    """Terminate instances and wait until they are terminated."""
    if not ids:
        return
    aws.call(
        aws.ec2.terminate_instances,
        f"instances {', '.join(ids)}",
        ignore=("InvalidInstanceID.NotFound",),
        InstanceIds=ids,
    )
    aws.wait_until(
        f"instances {', '.join(ids)} are terminated",
        lambda: all(s == "terminated" for s in instance_states(aws, ids).values()),
    )


def associate_home(aws: Aws, allocation_id: str, eni_id: str, private_ip: str) -> None:
    """Put an EIP on an LB's address (``up`` does this only for an EIP nobody holds: once the
    agents run, they decide where the EIPs are)."""
    aws.must(
        aws.ec2.associate_address,
        f"elastic ip {allocation_id}",
        retry=(*NOT_VISIBLE_YET, "IncorrectInstanceState"),
        AllocationId=allocation_id,
        NetworkInterfaceId=eni_id,
        PrivateIpAddress=private_ip,
        AllowReassociation=False,
    )


def release_eips(aws: Aws, inv: Inventory) -> None:
    """Disassociate and release the cluster's EIPs."""
    gone = ("InvalidAllocationID.NotFound", "InvalidAssociationID.NotFound")
    for addr in inv.addresses:
        alloc = addr["AllocationId"]
        if addr.get("AssociationId"):
            aws.call(
                aws.ec2.disassociate_address,
                f"elastic ip {alloc}",
                ignore=gone,
                AssociationId=addr["AssociationId"],
            )
        aws.call(
            aws.ec2.release_address,
            f"elastic ip {alloc}",
            ignore=gone,
            retry=("InvalidIPAddress.InUse", *STILL_IN_USE),
            AllocationId=alloc,
        )


def delete_enis(aws: Aws, inv: Inventory) -> None:
    """Delete the LBs' ENIs (once their instances are gone) and wait until they are gone."""
    gone = ("InvalidNetworkInterfaceID.NotFound",)
    ids = [e["NetworkInterfaceId"] for e in inv.enis]
    for eni_id in ids:
        aws.call(
            aws.ec2.delete_network_interface,
            f"network interface {eni_id}",
            ignore=gone,
            retry=STILL_IN_USE,
            NetworkInterfaceId=eni_id,
        )

    def none_left() -> bool:
        res = aws.call(
            aws.ec2.describe_network_interfaces,
            "network interfaces",
            ignore=gone,
            NetworkInterfaceIds=ids,
        )
        return res is None or not res["NetworkInterfaces"]

    if ids:
        aws.wait_until("the network interfaces are deleted", none_left)


def node_name(instance: dict[str, Any]) -> str:
    """The ``hapair:node`` of an instance."""
    return tags_of(instance).get("hapair:node", "")
