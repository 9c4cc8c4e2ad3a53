"""What the cluster's instances may do, held to the Service Authorization Reference. Pure.

:data:`SAR` copies, for every action the instances use, the row of AWS's *Service
Authorization Reference* ("Actions, resources, and condition keys for ...": Amazon EC2,
AWS Systems Manager, Amazon S3): the resource types the action is authorized against and the
condition keys each supports. :data:`SAR_ARNS` copies the ARN format of those resource types.
The policies below allow exactly the actions the code calls (:data:`LB_CALLS`,
:data:`WEB_CALLS`), each on the narrowest resources the table allows, with conditions drawn
only from the table's keys; ``tests/aws/test_aws_iam.py`` holds them to it.

The partition of every ARN comes from the region (``aws``, ``aws-cn``, ``aws-us-gov``, ...),
as botocore's endpoint data says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.exceptions import UnknownRegionError

from hapair.errors import UsageError

TAG_CLUSTER = "hapair:cluster"
TAG_ROLE = "hapair:role"
#: The tag the LBs may write on an EIP they let go (see hapair.agent.resources.aws_eip).
TAG_RELEASED = "hapair:released"
#: The tag an LB writes on its own instance: the desired version it applied (.acks).
TAG_APPLIED = "hapair:applied"

#: The instance-level condition keys of EC2's ``instance`` resource type for AssociateAddress.
_EC2_INSTANCE_KEYS = (
    "aws:ResourceTag/${TagKey}",
    "ec2:AvailabilityZone",
    "ec2:AvailabilityZoneId",
    "ec2:CpuOptionsAmdSevSnp",
    "ec2:EbsOptimized",
    "ec2:InstanceAutoRecovery",
    "ec2:InstanceBandwidthWeighting",
    "ec2:InstanceID",
    "ec2:InstanceMarketType",
    "ec2:InstanceMetadataTags",
    "ec2:InstanceProfile",
    "ec2:InstanceType",
    "ec2:ManagedResourceOperator",
    "ec2:MetadataHttpEndpoint",
    "ec2:MetadataHttpPutResponseHopLimit",
    "ec2:MetadataHttpTokens",
    "ec2:PlacementGroup",
    "ec2:ProductCode",
    "ec2:ResourceTag/${TagKey}",
    "ec2:RootDeviceType",
    "ec2:Tenancy",
)


@dataclass(frozen=True)
class SarAction:
    """One action of the Service Authorization Reference, as far as hapair uses it.

    :ivar level: the access level column (Read, List, Write, ...).
    :ivar resources: resource type -> the condition keys the table lists for it on this row;
        empty: the action supports no resource-level permission (``"Resource": "*"`` only).
    :ivar required: the resource types marked required (``*``) in the table.
    :ivar keys: the condition keys of the row's last line (they apply to the action itself).
    """

    level: str
    resources: Mapping[str, tuple[str, ...]]
    required: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()


#: Rows of the Service Authorization Reference (docs.aws.amazon.com/service-authorization/
#: latest/reference/list_amazonec2.html, list_awssystemsmanager.html, list_amazons3.html),
#: copied for the actions hapair's instances call.
SAR: dict[str, SarAction] = {
    "ec2:AssociateAddress": SarAction(
        level="Write",
        resources={
            "elastic-ip": (
                "aws:ResourceTag/${TagKey}",
                "ec2:AllocationId",
                "ec2:Domain",
                "ec2:PublicIpAddress",
                "ec2:ResourceTag/${TagKey}",
            ),
            "instance": _EC2_INSTANCE_KEYS,
            "network-interface": (
                "aws:ResourceTag/${TagKey}",
                "ec2:AvailabilityZone",
                "ec2:ManagedResourceOperator",
                "ec2:NetworkInterfaceID",
                "ec2:ResourceTag/${TagKey}",
                "ec2:Subnet",
                "ec2:Vpc",
            ),
        },
        keys=("ec2:Region",),
    ),
    "ec2:CreateTags": SarAction(
        level="Tagging",
        resources={
            "elastic-ip": (
                "aws:RequestTag/${TagKey}",
                "aws:ResourceTag/${TagKey}",
                "aws:TagKeys",
                "ec2:AllocationId",
                "ec2:Domain",
                "ec2:PublicIpAddress",
                "ec2:ResourceTag/${TagKey}",
            ),
            "instance": tuple(
                sorted(("aws:RequestTag/${TagKey}", "aws:TagKeys", *_EC2_INSTANCE_KEYS))
            ),
        },
        keys=("ec2:CreateAction", "ec2:Region"),
    ),
    "ec2:DisassociateAddress": SarAction(
        level="Write",
        resources={
            "elastic-ip": (
                "aws:ResourceTag/${TagKey}",
                "ec2:AllocationId",
                "ec2:Domain",
                "ec2:PublicIpAddress",
                "ec2:ResourceTag/${TagKey}",
            ),
            "instance": _EC2_INSTANCE_KEYS,
            "network-interface": (
                "aws:ResourceTag/${TagKey}",
                "ec2:AvailabilityZone",
                "ec2:ManagedResourceOperator",
                "ec2:NetworkInterfaceID",
                "ec2:ResourceTag/${TagKey}",
                "ec2:Subnet",
                "ec2:Vpc",
            ),
        },
        keys=("ec2:Region",),
    ),
    "ec2:DescribeAddresses": SarAction(level="List", resources={}, keys=("ec2:Region",)),
    "ec2:DescribeInstances": SarAction(level="List", resources={}, keys=("ec2:Region",)),
    "ec2:DescribeNetworkInterfaces": SarAction(level="List", resources={}, keys=("ec2:Region",)),
    "ssm:GetParameter": SarAction(
        level="Read",
        resources={"parameter": ("aws:ResourceTag/${TagKey}",)},
        required=("parameter",),
    ),
    "ssm:GetParameters": SarAction(
        level="Read",
        resources={"parameter": ("aws:ResourceTag/${TagKey}",)},
        required=("parameter",),
    ),
    "s3:GetObject": SarAction(
        level="Read",
        resources={"accesspointobject": (), "object": ()},
        keys=(
            "s3:AccessGrantsInstanceArn",
            "s3:ExistingObjectTag/<key>",
            "s3:authType",
            "s3:ResourceAccount",
            "s3:signatureAge",
            "s3:signatureversion",
            "s3:TlsVersion",
            "s3:x-amz-content-sha256",
        ),
    ),
}

#: Cross-service condition keys (the IAM User Guide's "AWS global condition context keys":
#: global keys with a service's prefix, in the request context of any service's action):
#: ``ec2:SourceInstanceARN`` is the instance whose role credentials signed the request.
CROSS_SERVICE_KEYS = ("ec2:SourceInstanceARN",)

#: ARN formats of the resource types above, from the same pages' resource types tables.
SAR_ARNS: dict[str, str] = {
    "ec2:elastic-ip": "arn:${Partition}:ec2:${Region}:${Account}:elastic-ip/${AllocationId}",
    "ec2:instance": "arn:${Partition}:ec2:${Region}:${Account}:instance/${InstanceId}",
    "ec2:network-interface": (
        "arn:${Partition}:ec2:${Region}:${Account}:network-interface/${NetworkInterfaceId}"
    ),
    "ssm:parameter": (
        "arn:${Partition}:ssm:${Region}:${Account}:parameter/${ParameterNameWithoutLeadingSlash}"
    ),
    "s3:object": "arn:${Partition}:s3:::${BucketName}/${ObjectName}",
}

#: Every API call an LB instance makes with its role, as ``service:Operation``, and the IAM
#: action that authorizes it: the aws_eip agent (EC2), the node sync (SSM, S3) and the
#: desired-document follower (SSM GetParameter, GetParameters for the certificate; EC2
#: DescribeInstances for the web watch, CreateTags for its acknowledgement).
LB_CALLS: dict[str, str] = {
    "ssm:GetParameter": "ssm:GetParameter",
    "ec2:AssociateAddress": "ec2:AssociateAddress",
    "ec2:CreateTags": "ec2:CreateTags",
    "ec2:DisassociateAddress": "ec2:DisassociateAddress",
    "ec2:DescribeAddresses": "ec2:DescribeAddresses",
    "ec2:DescribeInstances": "ec2:DescribeInstances",
    "ec2:DescribeNetworkInterfaces": "ec2:DescribeNetworkInterfaces",
    "ssm:GetParameters": "ssm:GetParameters",
    "s3:GetObject": "s3:GetObject",
}
#: Every API call a web instance makes with its role: it fetches hapair's wheel, nothing else.
WEB_CALLS: dict[str, str] = {"s3:GetObject": "s3:GetObject"}

#: Object prefixes in the cluster's bucket: what instances install, and what LBs serve.
ARTIFACTS_PREFIX = "artifacts/"
DESIRED_PREFIX = "desired/"


def partition_for(region: str) -> str:
    """The partition of ``region`` (``aws``, ``aws-cn``, ``aws-us-gov``, ...), from botocore.

    :raises UsageError: botocore knows no such region.
    """
    try:
        return str(boto3.session.Session().get_partition_for_region(region))
    except UnknownRegionError:
        raise UsageError(f"unknown AWS region {region!r}: no partition for it") from None


@dataclass(frozen=True)
class Scope:
    """Where the policies apply: one cluster in one account and region.

    :ivar cluster: the cluster's name (its resources carry ``hapair:cluster=<cluster>``).
    :ivar account: the 12-digit account id.
    :ivar region: the region the cluster lives in.
    :ivar bucket: the cluster's artifact bucket.
    """

    cluster: str
    account: str
    region: str
    bucket: str

    @property
    def partition(self) -> str:
        """The region's partition."""
        return partition_for(self.region)

    def arn(self, kind: str, **parts: str) -> str:
        """The ARN of resource type ``kind`` (``ec2:elastic-ip``, ...) from :data:`SAR_ARNS`."""
        out = SAR_ARNS[kind]
        values = {"Partition": self.partition, "Region": self.region, "Account": self.account}
        values.update(parts)
        for name, value in values.items():
            out = out.replace("${" + name + "}", value)
        return out

    @property
    def secrets_path(self) -> str:
        """The SSM path of the cluster's secrets (no trailing slash)."""
        return f"/hapair/{self.cluster}"

    @property
    def desired_parameter(self) -> str:
        """The SSM parameter of the LBs' desired document (``hapair.platforms.aws.desired``)."""
        return f"{self.secrets_path}/desired"


def assume_role_policy() -> dict[str, Any]:
    """Who may assume the instance roles: EC2."""
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


def _artifacts(scope: Scope, *prefixes: str) -> list[str]:
    return [scope.arn("s3:object", BucketName=scope.bucket, ObjectName=f"{p}*") for p in prefixes]


def lb_policy(scope: Scope) -> dict[str, Any]:
    """The LB role: read EIPs, its ENI and the web instances; move only this cluster's EIPs,
    only onto (and, for the compare-and-swap, off) this cluster's LB ENIs, mark them released
    (one tag key, nothing else); acknowledge a desired version on its own instance only (one
    tag key); read only this cluster's secrets (the certificate among them); follow exactly its
    desired-document parameter; fetch the artifacts and the LBs' desired documents of older
    versions (bucket)."""
    region = {"StringEquals": {"ec2:Region": scope.region}}
    cluster = {f"aws:ResourceTag/{TAG_CLUSTER}": scope.cluster}
    lb = {**cluster, f"aws:ResourceTag/{TAG_ROLE}": "lb"}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadAddressesAndInterfaces",
                "Effect": "Allow",
                "Action": [
                    "ec2:DescribeAddresses",
                    "ec2:DescribeInstances",
                    "ec2:DescribeNetworkInterfaces",
                ],
                "Resource": "*",
                "Condition": region,
            },
            {
                "Sid": "MoveOnlyThisClustersEips",
                "Effect": "Allow",
                "Action": ["ec2:AssociateAddress", "ec2:DisassociateAddress"],
                "Resource": [scope.arn("ec2:elastic-ip", AllocationId="*")],
                "Condition": {"StringEquals": cluster},
            },
            {
                "Sid": "OnlyOntoThisClustersLbs",
                "Effect": "Allow",
                "Action": ["ec2:AssociateAddress", "ec2:DisassociateAddress"],
                "Resource": [
                    scope.arn("ec2:network-interface", NetworkInterfaceId="*"),
                    scope.arn("ec2:instance", InstanceId="*"),
                ],
                "Condition": {"StringEquals": lb},
            },
            {
                "Sid": "MarkOnlyThisClustersEipsReleased",
                "Effect": "Allow",
                "Action": ["ec2:CreateTags"],
                "Resource": [scope.arn("ec2:elastic-ip", AllocationId="*")],
                "Condition": {
                    "StringEquals": cluster,
                    "ForAllValues:StringEquals": {"aws:TagKeys": [TAG_RELEASED]},
                },
            },
            {
                "Sid": "AcknowledgeOnlyOnItsOwnInstance",
                "Effect": "Allow",
                "Action": ["ec2:CreateTags"],
                "Resource": [scope.arn("ec2:instance", InstanceId="*")],
                "Condition": {
                    "StringEquals": lb,
                    # The instance tagged is the one whose credentials sign the call:
                    # ${ec2:InstanceID} is the tagged instance's id (a key of the instance
                    # resource type, used as a policy variable).
                    "ArnEquals": {
                        "ec2:SourceInstanceARN": scope.arn(
                            "ec2:instance", InstanceId="${ec2:InstanceID}"
                        )
                    },
                    "ForAllValues:StringEquals": {"aws:TagKeys": [TAG_APPLIED]},
                },
            },
            {
                "Sid": "ReadOnlyThisClustersSecrets",
                "Effect": "Allow",
                "Action": ["ssm:GetParameters"],
                "Resource": [
                    scope.arn(
                        "ssm:parameter",
                        ParameterNameWithoutLeadingSlash=f"{scope.secrets_path[1:]}/*",
                    )
                ],
            },
            {
                "Sid": "FollowThisClustersDesiredConfig",
                "Effect": "Allow",
                "Action": ["ssm:GetParameter"],
                "Resource": [
                    scope.arn(
                        "ssm:parameter",
                        ParameterNameWithoutLeadingSlash=scope.desired_parameter[1:],
                    )
                ],
            },
            {
                "Sid": "FetchArtifactsAndDesiredConfig",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": _artifacts(scope, ARTIFACTS_PREFIX, DESIRED_PREFIX),
            },
        ],
    }


def web_policy(scope: Scope) -> dict[str, Any]:
    """The web role: fetch hapair's wheel and pinned requirements, nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "FetchArtifacts",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": _artifacts(scope, ARTIFACTS_PREFIX),
            }
        ],
    }


def bucket_policy(scope: Scope, reader_roles: list[str]) -> dict[str, Any]:
    """The bucket's policy: no request without TLS, and objects readable only by the cluster's
    instance roles (``reader_roles``: their ARNs)."""
    bucket = f"arn:{scope.partition}:s3:::{scope.bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyWithoutTls",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket, f"{bucket}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
            {
                "Sid": "ReadOnlyByTheClustersInstances",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"{bucket}/*",
                "Condition": {"StringNotEquals": {"aws:PrincipalArn": sorted(reader_roles)}},
            },
        ],
    }
