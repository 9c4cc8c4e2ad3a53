"""The ``aws`` platform: what the seed's Terraform built, with boto3, found again by tags.

``up`` converges: it creates what is missing, adds or removes web instances to match the web
size, and leaves everything else alone (a second ``up`` creates nothing). ``down`` deletes in
dependency order and waits until everything is gone. Neither keeps local state.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import secrets as random_secrets
from collections.abc import Callable
from typing import Any

import boto3

from hapair.errors import OperationError, UsageError
from hapair.plan import Plan
from hapair.platforms.aws import instances, network, security, userdata
from hapair.platforms.aws.client import Aws, Timing, make_session, tags_of
from hapair.platforms.aws.cost import CostLine, estimate
from hapair.platforms.aws.inventory import Inventory, discover, iam_name
from hapair.platforms.aws.layout import AwsLayout, make_layout
from hapair.platforms.aws.planner import Change, plan_changes
from hapair.platforms.aws.status import cluster_status
from hapair.platforms.base import Platform, Progress, no_progress

logger = logging.getLogger(__name__)

#: Tag of the cluster's (global) IAM role: the region its cluster lives in.
TAG_REGION = "hapair:region"

SessionFactory = Callable[[str | None], boto3.Session]


class AwsPlatform(Platform):
    """The cluster on AWS, in the account and region the standard AWS configuration selects.

    :param session_factory: makes the boto3 session for a region (``None`` = the configured
        one); default :func:`~hapair.platforms.aws.client.make_session`.
    :param region: region to use when the spec names none (default: the configuration's).
    :param endpoint_url: EC2/IAM/SSM endpoint (default: ``AWS_ENDPOINT_URL`` if set, else AWS).
    :param timing: poll interval and time limits (tests shorten them).
    """

    def __init__(
        self,
        session_factory: SessionFactory | None = None,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        timing: Timing | None = None,
    ) -> None:
        self.session_factory = session_factory or make_session
        self.region = region
        self.endpoint_url = endpoint_url
        self.timing = timing or Timing()
        self._aws: dict[str | None, Aws] = {}

    def aws(self, region: str | None = None) -> Aws:
        """The boto3 clients for ``region`` (default: the constructor's, else the config's)."""
        key = region or self.region
        if key not in self._aws:
            self._aws[key] = Aws(self.session_factory(key), self.endpoint_url, self.timing)
        return self._aws[key]

    # ---------------------------------------------------------------- plan
    def plan_changes(self, plan: Plan) -> list[Change]:
        """What ``up`` would create, change or delete for ``plan`` (reads only)."""
        aws = self.aws(plan.spec.aws.region or None)
        return plan_changes(plan.spec, make_layout(plan), discover(aws, plan.name))

    def cost(self, plan: Plan) -> list[CostLine]:
        """Hourly cost estimate of ``plan`` (pure, no AWS call)."""
        return estimate(make_layout(plan), endpoint=plan.spec.aws.ec2_endpoint)

    # ---------------------------------------------------------------- up
    def up(self, plan: Plan, progress: Progress = no_progress) -> None:
        """Create what is missing (see the module docstring).

        :raises CloudError: an AWS call failed (code and resource in the error); run ``up``
            again to finish, or ``down`` to clean.
        :raises OperationError: the haproxy renderer is not available.
        """
        spec = plan.spec
        aws = self.aws(spec.aws.region or None)
        layout = make_layout(plan)
        c = plan.name
        progress(f"find what exists for {c} in {aws.region}")
        inv = discover(aws, c)
        progress("find the AMI")
        ami = instances.find_ami(aws, spec.aws.ami)
        progress("network: vpc, subnets, internet gateway, routes")
        net = network.ensure_network(aws, layout, inv)
        progress("security groups")
        groups = security.ensure_groups(aws, spec, inv, net.vpc)
        progress("iam role and instance profile for the LBs")
        profile = security.ensure_iam(aws, c, inv)
        # IAM is global: the role says in which region its cluster lives, so that a `down` or
        # `status` in another region does not take it for this cluster (see _here).
        aws.must(
            aws.iam.tag_role,
            f"iam role {iam_name(c)}",
            RoleName=iam_name(c),
            Tags=[{"Key": TAG_REGION, "Value": aws.region}],
        )
        if spec.aws.ec2_endpoint:
            progress("EC2 interface endpoint")
            network.ensure_endpoint(aws, layout, inv, net, groups["endpoint"])
        progress("elastic ips")
        eips = instances.ensure_eips(aws, c, [(v.name, v.home) for v in layout.vips], inv)
        progress("LB network interfaces (primary + secondary address)")
        enis = {
            lb.name: instances.ensure_eni(aws, c, lb, net.subnets[lb.subnet], groups["lb"], inv)
            for lb in layout.lbs
        }
        started: list[str] = []
        missing = [n for n in layout.nodes if inv.instance(n.name) is None]
        if missing:
            progress(f"launch {', '.join(n.name for n in missing)}")
            keys = self._secrets(aws, inv)
            for node in missing:
                if node.name in enis:
                    data = self.lb_user_data(plan, layout, node.name, eips, enis, keys, aws.region)
                    role: dict[str, Any] = {
                        "group_id": groups["lb"],
                        "eni_id": enis[node.name],
                        "profile": profile,
                    }
                else:
                    data = userdata.web_user_data(
                        cluster=c,
                        node=node.name,
                        address=node.private_ip,
                        port=spec.web.port,
                        pip_spec=spec.aws.pip_spec,
                    )
                    role = {"group_id": groups["web"]}
                iid = instances.launch(
                    aws,
                    c,
                    node,
                    ami=ami,
                    user_data=userdata.pack(data),
                    subnet_id=net.subnets[node.subnet],
                    key_name=spec.aws.key_name,
                    **role,
                )
                started.append(iid)
        wanted = {n.name for n in layout.nodes}
        extra = [i["InstanceId"] for i in inv.instances if instances.node_name(i) not in wanted]
        if extra:
            progress(f"terminate {len(extra)} web instance(s) beyond web.size {len(layout.webs)}")
            instances.terminate(aws, extra)
        if started:
            progress(f"wait until {len(started)} instance(s) run")
            instances.wait_running(aws, started)
        progress("put each unassociated EIP on its home LB's primary address")
        for vip in layout.vips:
            addr = eips[vip.name]
            if not addr.get("AssociationId"):
                home = layout.node(vip.home)
                instances.associate_home(
                    aws, addr["AllocationId"], enis[home.name], home.private_ip
                )
        if not started and not extra:
            progress("nothing to change")

    def _secrets(self, aws: Aws, inv: Inventory) -> userdata.Secrets:
        """The cluster's secrets: from a live LB's user data, else new ones."""
        for inst in inv.instances:
            if tags_of(inst).get("hapair:role") != "lb":
                continue
            res = aws.call(
                aws.ec2.describe_instance_attribute,
                f"instance {inst['InstanceId']}",
                ignore=("InvalidInstanceID.NotFound",),
                InstanceId=inst["InstanceId"],
                Attribute="userData",
            )
            value = res.get("UserData", {}).get("Value") if res else None
            found = (
                userdata.secrets_from(base64.b64decode(value).decode("latin-1")) if value else None
            )
            if found is not None:
                return found
        return userdata.Secrets(
            random_secrets.token_hex(32), random_secrets.token_hex(32), random_secrets.token_hex(12)
        )

    def lb_user_data(
        self,
        plan: Plan,
        layout: AwsLayout,
        node: str,
        eips: dict[str, dict[str, Any]],
        enis: dict[str, str],
        keys: userdata.Secrets,
        region: str,
    ) -> str:
        """The user data of LB ``node``: rendered haproxy.cfg and agent.toml (``aws_eip``)."""
        try:
            from hapair.render.haproxy import render_haproxy
        except ImportError as exc:
            raise OperationError(
                f"cannot render haproxy.cfg: hapair.render.haproxy: {exc}"
            ) from exc
        from hapair.agent.config import VipConfig, dump_toml
        from hapair.render.agent import agent_config

        spec = plan.spec
        me, peer = layout.node(node), layout.peer_of(node)
        https = spec.haproxy.https
        cfg = render_haproxy(
            plan,
            node,
            backends=[(w.name, w.private_ip) for w in layout.webs],
            stats_socket=userdata.STATS_SOCKET,
            stats_password=spec.haproxy.stats_password or keys.stats_password,
            cert_path=userdata.CERT_FILE if https else None,
        )
        base = agent_config(
            plan,
            node,
            key_file=userdata.KEY_FILE,
            admin_token_file=userdata.TOKEN_FILE,
            stats_socket=userdata.STATS_SOCKET,
            api_socket=userdata.AGENT_SOCKET,
            driver="aws_eip",
        )
        vips = [
            VipConfig(
                name=v.name,
                address=str(eips[v.name]["PublicIp"]),
                home=v.home,
                driver="aws_eip",
                allocation_id=str(eips[v.name]["AllocationId"]),
                eni_id=enis[node],
                private_ip=me.private_ip if v.home == node else str(me.secondary_ip),
            )
            for v in layout.vips
        ]
        gateway = layout.gateway(me.subnet)
        agent = base.model_copy(
            update={
                "peer_addresses": [a for a in (peer.private_ip, peer.secondary_ip) if a],
                "peer_probe_address": peer.private_ip,
                "ping_nodes": list(spec.ha.ping_nodes) or [gateway],
                "aws_region": region,
                "vips": vips,
            }
        )
        return userdata.lb_user_data(
            cluster=plan.name,
            node=node,
            haproxy_cfg=cfg,
            agent_toml=dump_toml(agent),
            secrets=keys,
            secondary_ip=str(me.secondary_ip),
            prefixlen=ipaddress.ip_network(layout.subnets[me.subnet]).prefixlen,
            gateway=gateway,
            pip_spec=spec.aws.pip_spec,
            self_signed_for=spec.cluster.domain if https else None,
        )

    # ---------------------------------------------------------------- status / down
    @staticmethod
    def _here(aws: Aws, name: str, inv: Inventory) -> bool:
        """Whether cluster ``name`` has anything in ``aws``'s region.

        Its IAM role and instance profile are global: alone, they count only when the role was
        made for this region (or predates the region tag). Else the cluster lives elsewhere.

        :raises UsageError: nothing here, and the role names the region it lives in.
        """
        regional = (
            inv.vpcs,
            inv.subnets,
            inv.igws,
            inv.route_tables,
            inv.groups,
            inv.endpoints,
            inv.enis,
            inv.addresses,
            inv.instances,
        )
        if any(regional):
            return True
        if inv.role is None and inv.profile is None:
            return False
        home = tags_of(inv.role).get(TAG_REGION) if inv.role else None
        if home and home != aws.region:
            raise UsageError(
                f"no aws cluster named {name} in {aws.region}: its IAM role says it lives in "
                f"{home} (add --region {home}, or set aws.region in the spec)"
            )
        return True

    def status(self, name: str) -> dict[str, Any]:
        """The cluster as AWS sees it now; VIP owners read from the EIPs' associations.

        :raises UsageError: nothing of that cluster in this region.
        """
        aws = self.aws()
        inv = discover(aws, name)
        if not self._here(aws, name, inv):
            raise UsageError(f"no aws cluster named {name} in {aws.region}")
        return cluster_status(inv)

    def down(self, name: str, progress: Progress = no_progress) -> bool:
        """Delete everything tagged with the cluster, in dependency order, and wait until gone.

        :returns: whether anything was found.
        :raises UsageError: nothing here, but the cluster's IAM role says it lives in another
            region (its global IAM role is left alone).
        """
        aws = self.aws()
        inv = discover(aws, name)
        if not self._here(aws, name, inv):
            return False
        if inv.instances:
            progress(f"terminate {len(inv.instances)} instance(s) and wait")
            instances.terminate(aws, [i["InstanceId"] for i in inv.instances])
        if inv.addresses:
            progress(f"release {len(inv.addresses)} elastic ip(s)")
            instances.release_eips(aws, inv)
        if inv.enis:
            progress("delete the LB network interfaces")
            instances.delete_enis(aws, inv)
        if inv.endpoints:
            progress("delete the EC2 endpoint")
            network.delete_endpoints(aws, inv)
        if inv.groups:
            progress("delete the security groups")
            security.delete_groups(aws, inv)
        progress("delete route table, internet gateway, subnets, vpc")
        network.delete_network(aws, inv)
        progress("delete the iam instance profile and role")
        security.delete_iam(aws, name, inv)
        progress("check that nothing is left")
        aws.wait_until(
            f"nothing of {name} is left",
            lambda: discover(aws, name).is_empty(),
            timeout=self.timing.retry,
        )
        return True
