"""What ``up`` and ``apply`` share on AWS: converge everything but the instances.

:func:`prepare` creates what is missing and corrects what drifted (network, security groups and
their rules, IAM roles and policies, the private bucket and hapair's wheel in it, the secrets,
the EIPs and the LBs' ENIs); each step is idempotent. It returns the ids and facts the
instances' launch needs (:class:`Prepared`). No instance is started or stopped here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hapair.plan import Plan
from hapair.platforms.aws import artifacts, instances, network, nodes, secrets, security, userdata
from hapair.platforms.aws.client import Aws
from hapair.platforms.aws.iam import Scope
from hapair.platforms.aws.inventory import Inventory, discover, iam_name
from hapair.platforms.aws.layout import AwsLayout, make_layout
from hapair.platforms.aws.timing import effective_ha
from hapair.platforms.base import Progress

if TYPE_CHECKING:
    from hapair.platforms.aws.platform import AwsPlatform

#: Tag of the cluster's (global) IAM role: the region its cluster lives in.
TAG_REGION = "hapair:region"


@dataclass(frozen=True)
class Prepared:
    """Everything an instance launch needs, once :func:`prepare` converged the rest.

    :ivar run: this run's id (the launches' ClientTokens share it).
    """

    aws: Aws
    layout: AwsLayout
    inv: Inventory
    scope: Scope
    ami: str
    subnets: dict[str, str]
    groups: dict[str, str]
    profiles: dict[str, str]
    where: nodes.Placement
    run: str


def prepare(platform: AwsPlatform, plan: Plan, progress: Progress) -> Prepared:
    """Converge everything of ``plan`` but its instances (see the module docstring).

    :raises CloudError: an AWS call failed (code and resource in the error).
    :raises SpecError: the spec's [ha] timings do not fit with the AWS profile's.
    """
    spec = plan.spec
    layout = make_layout(plan)
    effective_ha(spec)  # a spec whose [ha] does not fit the AWS profile stops here
    aws = platform.aws(spec.aws.region or None)
    c = plan.name
    run = uuid.uuid4().hex[:12]
    progress(f"find what exists for {c} in {aws.region}")
    inv = discover(aws, c)
    scope = platform.scope(aws, c)
    progress("find the AMI")
    ami = instances.find_ami(aws, spec.aws.ami)
    progress("network: vpc (dns on), subnets, internet gateway, routes")
    net = network.ensure_network(aws, layout, inv)
    progress("security groups")
    groups = security.ensure_groups(aws, spec, inv, net.vpc)
    progress("iam roles and instance profiles (lb, web)")
    profiles = security.ensure_iam(aws, scope, inv)
    # IAM is global: the role says in which region its cluster lives, so that a `down` or
    # `status` in another region does not take it for this cluster (see AwsPlatform._here).
    aws.must(
        aws.iam.tag_role,
        f"iam role {iam_name(c)}",
        RoleName=iam_name(c),
        Tags=[{"Key": TAG_REGION, "Value": aws.region}],
    )
    progress(f"private bucket {scope.bucket} (encrypted, no public access)")
    readers = [security.role_arn(scope, kind) for kind in profiles]
    artifacts.ensure_bucket(aws, scope, readers, exists=inv.bucket is not None)
    install = userdata.Install(aws.region, scope.bucket, pip_spec=spec.aws.pip_spec)
    if not spec.aws.pip_spec:
        progress("build hapair's wheel and pin its dependencies; upload them")
        bundle = platform.bundle()
        artifacts.upload_bundle(aws, scope.bucket, bundle)
        install = userdata.Install(
            aws.region,
            scope.bucket,
            wheel_key=bundle.wheel_key,
            wheel_sha256=bundle.wheel_sha256,
            requirements_key=bundle.requirements_key,
        )
    progress("secrets in SSM Parameter Store (SecureString)")
    secrets.ensure_secrets(aws, c, spec.haproxy.stats_password)
    if spec.aws.ec2_endpoint:
        progress("VPC endpoints: EC2 and SSM (interface), S3 (gateway)")
        network.ensure_endpoints(aws, layout, inv, net, groups["endpoint"])
    progress("elastic ips")
    eips = instances.ensure_eips(aws, c, [(v.name, v.home) for v in layout.vips], inv)
    progress("LB network interfaces (primary + secondary address)")
    enis = {
        lb.name: instances.ensure_eni(aws, c, lb, net.subnets[lb.subnet], groups["lb"], inv)
        for lb in layout.lbs
    }
    where = nodes.Placement(aws.region, scope.bucket, eips, enis, install)
    return Prepared(aws, layout, inv, scope, ami, net.subnets, groups, profiles, where, run)
