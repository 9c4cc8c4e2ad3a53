"""The ``aws`` platform: what the seed's Terraform built, with boto3, found again by tags.

``up`` converges: it creates what is missing, adds or removes web instances to match the web
size, re-renders what the LBs serve (their desired documents), and leaves everything else
alone (a second ``up`` creates nothing). On AWS itself it then waits until both EIPs serve the
demo page. ``down`` deletes in dependency order and waits until everything is gone. Neither
keeps local state.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import boto3

from hapair.errors import OperationError, UsageError
from hapair.plan import Plan
from hapair.platforms.aws import (
    artifacts,
    certs,
    desired,
    instances,
    network,
    nodes,
    secrets,
    security,
    userdata,
)
from hapair.platforms.aws.client import Aws, Timing, make_session, tags_of
from hapair.platforms.aws.cost import CostLine, estimate
from hapair.platforms.aws.iam import Scope
from hapair.platforms.aws.inventory import Inventory, discover
from hapair.platforms.aws.layout import AwsLayout, NodeLayout, make_layout
from hapair.platforms.aws.planner import Change, plan_changes
from hapair.platforms.aws.prepare import TAG_REGION, Prepared, prepare
from hapair.platforms.aws.readiness import (
    NodeState,
    Probe,
    Readiness,
    VipState,
    cloud_init_state,
    wait_until_serving,
)
from hapair.platforms.aws.status import cluster_status
from hapair.platforms.aws.webready import console_of
from hapair.platforms.base import Platform, Progress, no_progress

logger = logging.getLogger(__name__)

#: How long ``up`` waits for both EIPs to serve the demo page (instances install for minutes).
SERVING_TIMEOUT = 1200.0

SessionFactory = Callable[[str | None], boto3.Session]


class AwsPlatform(Platform):
    """The cluster on AWS, in the account and region the standard AWS configuration selects.

    :param session_factory: makes the boto3 session for a region (``None`` = the configured
        one); default :func:`~hapair.platforms.aws.client.make_session`.
    :param region: region to use when the spec names none (default: the configuration's).
    :param endpoint_url: AWS endpoint (default: ``AWS_ENDPOINT_URL`` if set, else AWS).
    :param timing: poll interval and time limits (tests shorten them).
    :param bundle: what ``up`` uploads for the instances to install (default: the wheel of
        this checkout, built once per source digest: :func:`artifacts.cached_bundle`).
    :param serving_timeout: how long ``up`` waits for the demo page on both EIPs; it waits
        only against AWS itself (a local endpoint such as moto starts no instance).
    """

    def __init__(
        self,
        session_factory: SessionFactory | None = None,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        timing: Timing | None = None,
        bundle: artifacts.BundleSource | None = None,
        serving_timeout: float = SERVING_TIMEOUT,
    ) -> None:
        self.session_factory = session_factory or make_session
        self.region = region
        self.endpoint_url = endpoint_url
        self.timing = timing or Timing()
        self.bundle = bundle or artifacts.cached_bundle
        self.serving_timeout = serving_timeout
        self._aws: dict[str | None, Aws] = {}

    def aws(self, region: str | None = None) -> Aws:
        """The boto3 clients for ``region`` (default: the constructor's, else the config's)."""
        key = region or self.region
        if key not in self._aws:
            self._aws[key] = Aws(self.session_factory(key), self.endpoint_url, self.timing)
        return self._aws[key]

    @staticmethod
    def scope(aws: Aws, cluster: str) -> Scope:
        """The cluster's account, region and bucket, as the IAM policies see them."""
        account = aws.account()
        return Scope(
            cluster, account, aws.region, artifacts.bucket_name(cluster, account, aws.region)
        )

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
        """Create what is missing, update what the LBs serve, then (on AWS) wait until both
        EIPs serve the demo page.

        :raises CloudError: an AWS call failed (code and resource in the error); run ``up``
            again to finish, or ``down`` to clean.
        :raises SpecError: the spec's [ha] timings do not fit with the AWS profile's.
        :raises OperationError: the wheel could not be built, the haproxy renderer is not
            available, or the EIPs do not serve the demo page in time (the reasons, per node).
        """
        p = prepare(self, plan, progress)
        aws, layout, inv = p.aws, p.layout, p.inv
        progress(f"what the LBs serve: {len(layout.webs)} web server(s) (desired documents)")
        for lb in layout.lbs:
            artifacts.put_object(
                aws,
                p.scope.bucket,
                nodes.desired_key(lb.name),
                nodes.desired(plan, layout, lb.name),
                "application/json",
            )
        publish_document(aws, plan, layout, progress)
        missing = [n for n in layout.nodes if inv.instance(n.name) is None]
        if missing:
            progress(f"launch {', '.join(n.name for n in missing)}")
        started = self.launch(p, plan, missing)
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
            addr = p.where.eips[vip.name]
            if not addr.get("AssociationId"):
                home = layout.node(vip.home)
                instances.associate_home(
                    aws, addr["AllocationId"], p.where.enis[home.name], home.private_ip
                )
        if not started and not extra:
            progress("no instance to change")
        self._wait_serving(aws, plan, progress)

    def launch(self, p: Prepared, plan: Plan, missing: list[NodeLayout]) -> list[str]:
        """Launch an instance for each node of ``missing``; returns the new instance ids."""
        if not missing:
            return []
        started = []
        for node in missing:
            if node.name in p.where.enis:
                data = nodes.lb_user_data(plan, p.layout, node.name, p.where)
                role: dict[str, Any] = {
                    "group_id": p.groups["lb"],
                    "eni_id": p.where.enis[node.name],
                    "profile": p.profiles["lb"],
                }
            else:
                data = nodes.web_user_data(plan, p.layout, node.name, p.where)
                role = {"group_id": p.groups["web"], "profile": p.profiles["web"]}
            started.append(
                instances.launch(
                    p.aws,
                    plan.name,
                    node,
                    ami=p.ami,
                    user_data=userdata.pack(data),
                    subnet_id=p.subnets[node.subnet],
                    key_name=plan.spec.aws.key_name,
                    client_token=f"hapair-{plan.name}-{node.name}-{p.run}",
                    **role,
                )
            )
        return started

    def _wait_serving(self, aws: Aws, plan: Plan, progress: Progress) -> None:
        """On AWS itself, wait until both EIPs serve the demo page; else say why not."""
        host = urlsplit(aws.ec2.meta.endpoint_url).hostname or ""
        if not host.endswith((".amazonaws.com", ".amazonaws.com.cn")):
            progress(f"not waiting for the demo page: the EC2 endpoint {host} is not AWS")
            return
        progress("wait until both EIPs serve the demo page (instances install for minutes)")

        def read() -> tuple[list[NodeState], list[VipState]]:
            return self._states(aws, plan.name)

        def report(r: Readiness) -> None:
            for line in r.problems:
                logger.info("not ready: %s", line)

        verdict = wait_until_serving(
            read,
            lambda v: probe_eip(v, plan.spec.haproxy.http_port, plan.spec.cluster.domain),
            timeout=self.serving_timeout,
            report=report,
        )
        if not verdict.ready:
            raise OperationError(
                "the EIPs do not serve the demo page yet:\n  " + "\n  ".join(verdict.problems)
            )

    def _states(self, aws: Aws, name: str) -> tuple[list[NodeState], list[VipState]]:
        st = cluster_status(discover(aws, name))
        states = []
        for n in st["nodes"]:
            console = console_of(aws, n["instance"]) if n["state"] == "running" else ""
            states.append(NodeState(n["name"], n["role"], n["state"], cloud_init_state(console)))
        vips = [VipState(v["name"], v["address"], v["owner"]) for v in st["vips"]]
        return states, vips

    def rotate_secrets(self, name: str, which: list[str]) -> list[str]:
        """Write new values of the cluster's secrets (all of them when ``which`` is empty).

        :returns: the secrets rotated.
        :raises UsageError: unknown secret, or no such cluster here.
        """
        return secrets.rotate(self.aws(), name, which)

    # ---------------------------------------------------------------- status / down
    @staticmethod
    def _here(aws: Aws, name: str, inv: Inventory) -> bool:
        """Whether cluster ``name`` has anything in ``aws``'s region.

        Its IAM role and instance profile are global: alone, they count only when the role was
        made for this region (or predates the region tag). Else the cluster lives elsewhere.

        :raises UsageError: nothing here, and the role names the region it lives in.
        """
        if inv.regional():
            return True
        if all(x is None for x in (inv.role, inv.profile, inv.web_role, inv.web_profile)):
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
        if inv.bucket is not None:
            progress(f"empty and delete the bucket {inv.bucket['Name']} (every version)")
            artifacts.delete_bucket(aws, inv.bucket["Name"])
        if inv.parameters:
            progress(f"delete {len(inv.parameters)} secret(s) in SSM Parameter Store")
            secrets.delete_secrets(aws, inv.parameters)
        progress("delete the iam instance profiles and roles")
        security.delete_iam(aws, name, inv)
        progress("check that nothing is left")
        aws.wait_until(
            f"nothing of {name} is left",
            lambda: discover(aws, name).is_empty(),
            timeout=self.timing.retry,
        )
        return True


def probe_eip(vip: VipState, port: int, domain: str, timeout: float = 5.0) -> Probe:
    """``GET /`` of an EIP's public address, as a client on the Internet would."""
    url = f"http://{vip.address}:{port}/"
    req = urllib.request.Request(url, headers={"Host": domain, "Accept": "text/plain"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            body = res.read(4096).decode("utf-8", "replace")
            return Probe(vip.name, res.status, body, res.headers.get("x-lb", ""))
    except urllib.error.HTTPError as exc:
        return Probe(vip.name, exc.code, "", exc.headers.get("x-lb", ""), f"HTTP {exc.code}")
    except (OSError, ValueError) as exc:
        return Probe(vip.name, None, error=str(exc) or type(exc).__name__)


def publish_document(aws: Aws, plan: Plan, layout: AwsLayout, progress: Progress) -> int:
    """``up``'s desired document: the spec's, keeping the running one's certificate and restart
    generations, with a first certificate when HTTPS is on and the cluster has none."""
    doc = desired.document(plan, layout, keep=desired.running(aws, plan.name))
    doc, line = certs.with_initial(aws, plan.spec, doc)
    if line:
        progress(line)
    return desired.publish(aws, plan.name, doc)
