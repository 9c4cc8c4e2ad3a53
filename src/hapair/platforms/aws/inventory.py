"""What exists in the account for one cluster, found by its ``hapair:cluster`` tag alone.

``up`` compares it with the layout, ``plan`` prints the difference, ``status`` reads it, and
``down`` deletes it: there is no local state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hapair.platforms.aws import secrets
from hapair.platforms.aws.artifacts import bucket_name, find_bucket
from hapair.platforms.aws.client import TAG_CLUSTER, TAG_NODE, TAG_VIP, Aws, cluster_filter, tags_of

#: Instance states that still count as "the node exists".
LIVE_STATES = ("pending", "running", "stopping", "stopped")


#: The instance roles: one for the LBs, one for the web servers.
ROLES = ("lb", "web")


def iam_name(cluster: str, role: str = "lb") -> str:
    """Name of the IAM role and instance profile of ``role`` (lb or web) instances."""
    return f"hapair-{cluster}-{role}"


def policy_name(cluster: str, role: str = "lb") -> str:
    """Name of that role's inline policy."""
    return f"hapair-{cluster}-{role}-node"


@dataclass
class Inventory:
    """Every resource of a cluster, as the describe calls return them."""

    cluster: str
    vpcs: list[dict[str, Any]] = field(default_factory=list)
    subnets: list[dict[str, Any]] = field(default_factory=list)
    igws: list[dict[str, Any]] = field(default_factory=list)
    route_tables: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    endpoints: list[dict[str, Any]] = field(default_factory=list)
    enis: list[dict[str, Any]] = field(default_factory=list)
    addresses: list[dict[str, Any]] = field(default_factory=list)
    instances: list[dict[str, Any]] = field(default_factory=list)
    #: The LB role and instance profile (the region tag lives on the role).
    role: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None
    #: The web role and instance profile.
    web_role: dict[str, Any] | None = None
    web_profile: dict[str, Any] | None = None
    #: ``{"Name", "Tags"}`` of the cluster's bucket, if it exists.
    bucket: dict[str, Any] | None = None
    #: Names of the cluster's SSM parameters (its secrets).
    parameters: list[str] = field(default_factory=list)

    @property
    def vpc_id(self) -> str | None:
        """The cluster's VPC, if it exists."""
        return self.vpcs[0]["VpcId"] if self.vpcs else None

    def regional(self) -> bool:
        """Something of the cluster exists in this region (its IAM roles are global)."""
        lists = (
            self.vpcs,
            self.subnets,
            self.igws,
            self.route_tables,
            self.groups,
            self.endpoints,
            self.enis,
            self.addresses,
            self.instances,
            self.parameters,
        )
        return any(lists) or self.bucket is not None

    def is_empty(self) -> bool:
        """Nothing of the cluster exists."""
        iam = (self.role, self.profile, self.web_role, self.web_profile)
        return not self.regional() and all(x is None for x in iam)

    def by_name(self, items: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
        """The item whose ``Name`` tag is ``<cluster>-<name>``."""
        want = f"{self.cluster}-{name}"
        return next((i for i in items if tags_of(i).get("Name") == want), None)

    def instance(self, node: str) -> dict[str, Any] | None:
        """The live instance of ``node`` (lb1, web2), if any."""
        return next((i for i in self.instances if tags_of(i).get(TAG_NODE) == node), None)

    def eni(self, node: str) -> dict[str, Any] | None:
        """The ENI made for LB ``node``."""
        return next((e for e in self.enis if tags_of(e).get(TAG_NODE) == node), None)

    def address(self, vip: str) -> dict[str, Any] | None:
        """The EIP of ``vip``."""
        return next((a for a in self.addresses if tags_of(a).get(TAG_VIP) == vip), None)

    def node_of_eni(self, eni_id: str | None) -> str | None:
        """Which node an ENI belongs to (by the ENI's or its instance's tag)."""
        for eni in self.enis:
            if eni["NetworkInterfaceId"] == eni_id:
                return tags_of(eni).get(TAG_NODE)
        for inst in self.instances:
            for ni in inst.get("NetworkInterfaces", []):
                if ni.get("NetworkInterfaceId") == eni_id:
                    return tags_of(inst).get(TAG_NODE)
        return None


def _all(aws: Aws, method: Any, key: str, what: str, **kwargs: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = aws.must(method, what, **kwargs, **({"NextToken": token} if token else {}))
        out += page.get(key, [])
        token = page.get("NextToken")
        if not token:
            return out


def discover(aws: Aws, cluster: str) -> Inventory:
    """Read everything tagged ``hapair:cluster=<cluster>`` (and the LBs' IAM role/profile)."""
    ec2 = aws.ec2
    flt = cluster_filter(cluster)
    inv = Inventory(cluster)
    inv.vpcs = _all(aws, ec2.describe_vpcs, "Vpcs", "vpcs", Filters=flt)
    inv.subnets = _all(aws, ec2.describe_subnets, "Subnets", "subnets", Filters=flt)
    inv.igws = _all(aws, ec2.describe_internet_gateways, "InternetGateways", "igws", Filters=flt)
    inv.route_tables = _all(
        aws, ec2.describe_route_tables, "RouteTables", "route tables", Filters=flt
    )
    inv.groups = _all(
        aws, ec2.describe_security_groups, "SecurityGroups", "security groups", Filters=flt
    )
    inv.endpoints = [
        e
        for e in _all(aws, ec2.describe_vpc_endpoints, "VpcEndpoints", "vpc endpoints", Filters=flt)
        if e.get("State", "").lower() not in ("deleted", "deleting")
    ]
    inv.enis = _all(
        aws, ec2.describe_network_interfaces, "NetworkInterfaces", "network interfaces", Filters=flt
    )
    inv.addresses = _all(aws, ec2.describe_addresses, "Addresses", "elastic ips", Filters=flt)
    reservations = _all(
        aws,
        ec2.describe_instances,
        "Reservations",
        "instances",
        Filters=cluster_filter(cluster, ("instance-state-name", LIVE_STATES)),
    )
    inv.instances = [i for r in reservations for i in r["Instances"]]
    for kind in ROLES:
        role, profile = _iam(aws, cluster, kind)
        if kind == "lb":
            inv.role, inv.profile = role, profile
        else:
            inv.web_role, inv.web_profile = role, profile
    inv.bucket = find_bucket(aws, bucket_name(cluster, aws.account(), aws.region), cluster)
    inv.parameters = sorted(secrets.existing(aws, cluster))
    return inv


def _iam(aws: Aws, cluster: str, kind: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    iam = aws.iam
    name = iam_name(cluster, kind)
    found = aws.call(iam.get_role, f"iam role {name}", ignore=("NoSuchEntity",), RoleName=name)
    role = dict(found["Role"]) if found and _iam_tagged(found["Role"], cluster) else None
    prof = aws.call(
        iam.get_instance_profile,
        f"instance profile {name}",
        ignore=("NoSuchEntity",),
        InstanceProfileName=name,
    )
    return role, (dict(prof["InstanceProfile"]) if prof is not None else None)


def _iam_tagged(item: Any, cluster: str) -> bool:
    # A role of the same name that hapair did not make is left alone (and `up` will refuse).
    tags = {t["Key"]: t["Value"] for t in item.get("Tags", [])}
    return tags.get(TAG_CLUSTER) == cluster
