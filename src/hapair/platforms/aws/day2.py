"""``hapair apply`` / ``scale --web N`` on AWS: no SSH, no LB replaced.

The LBs follow the cluster's desired document in SSM (:mod:`.desired`, :mod:`.follower`), so
changing what they serve is publishing a new version of it. :func:`plan_apply` reads what runs
(instances, the current document and its version) and says what will change; nothing is
touched. :func:`run_apply` then, in this order:

1. converges everything but the instances, as ``up`` does (network, security groups and their
   rules, IAM, bucket, secrets, EIPs, ENIs: :func:`~.prepare.prepare`);
2. launches the new web instances and waits until they run;
3. when web nodes go: publishes the new document with them listed in ``drain`` (the LBs stop
   sending them new requests at their next poll), waits a bounded time (one poll interval plus
   the drain timeout), then terminates them;
4. publishes the final document (the LBs add the new servers through the runtime API, delete
   the drained ones, or reload seamlessly when HAProxy's settings changed), and updates the
   bucket's per-LB documents that LBs of older hapair versions read.

An invalid spec never gets here (the CLI's spec load refuses it): nothing changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hapair.day2.desired import DesiredDoc, DocumentError, Server
from hapair.day2.follow import FollowPlan, Schedule, decide
from hapair.errors import UsageError
from hapair.plan import Plan
from hapair.platforms.aws import artifacts, desired, instances, nodes
from hapair.platforms.aws.client import tags_of
from hapair.platforms.aws.inventory import discover
from hapair.platforms.aws.layout import NodeLayout, make_layout
from hapair.platforms.aws.prepare import prepare
from hapair.platforms.base import Progress

if TYPE_CHECKING:
    from hapair.platforms.aws.platform import AwsPlatform

#: Seconds the LBs take at most to see a new version (the followers' longest poll interval).
POLL_BOUND_S = Schedule().high_s


@dataclass(frozen=True)
class Leaving:
    """A web instance that goes: its node name, instance id and private address."""

    name: str
    instance_id: str
    address: str


@dataclass(frozen=True)
class AwsApplyPlan:
    """What ``apply`` will do on AWS.

    :ivar version: the current document's version (0: none yet).
    :ivar running: the current document (None: none, or one that does not decode: ``note``).
    :ivar final: the document once applied.
    :ivar add: web nodes to launch.
    :ivar remove: web instances to drain, then terminate.
    :ivar follow: what the LBs will do with ``final``.
    """

    cluster: str
    region: str
    version: int
    running: DesiredDoc | None
    final: DesiredDoc
    add: tuple[NodeLayout, ...]
    remove: tuple[Leaving, ...]
    follow: FollowPlan
    note: str = ""

    @property
    def empty(self) -> bool:
        """Nothing differs."""
        return not self.add and not self.remove and self.follow.empty

    @property
    def drain_doc(self) -> DesiredDoc | None:
        """The document published before terminating (``remove`` in drain); None: none."""
        if not self.remove:
            return None
        drained = tuple(Server(x.name, x.address, "drain") for x in self.remove)
        return DesiredDoc(
            self.final.cluster,
            self.final.haproxy,
            self.final.web_port,
            self.final.servers + drained,
            self.final.agent,
        )

    def lines(self, drain_s: float) -> list[str]:
        """The plan as shown before anything is done."""
        where = f"/hapair/{self.cluster}/desired in {self.region}"
        head = [f"desired document {where}: version {self.version or 'none yet'}"]
        if self.note:
            head.append(f"  note: {self.note}")
        if self.empty:
            return [*head, "nothing to change: the running cluster has this spec"]
        steps = []
        if self.add:
            names = ", ".join(n.name for n in self.add)
            steps.append(f"launch {names} and wait until they run")
        if self.remove:
            names = ", ".join(x.name for x in self.remove)
            steps.append(
                f"publish a version with {names} in drain; wait {POLL_BOUND_S + drain_s:g} s "
                f"(one poll interval + the drain timeout); terminate {names}"
            )
        if not self.follow.empty or self.add or self.remove:
            steps.append(f"publish the final version; the LBs apply it by {self.follow.reason()}")
        return [*head, "steps:", *(f"  {i}. {s}" for i, s in enumerate(steps, 1))]


def plan_apply(platform: AwsPlatform, plan: Plan) -> AwsApplyPlan:
    """What applying ``plan`` to the running cluster does (reads only).

    :raises UsageError: no such cluster here, or an LB has no instance (``up`` makes LBs).
    """
    aws = platform.aws(plan.spec.aws.region or None)
    c = plan.name
    inv = discover(aws, c)
    layout = make_layout(plan)
    missing = [lb.name for lb in layout.lbs if inv.instance(lb.name) is None]
    if missing:
        raise UsageError(
            f"apply: {', '.join(missing)} of cluster {c} has no instance in {aws.region}: run "
            "`hapair up` first (apply changes a running cluster; it never creates or replaces LBs)"
        )
    note = ""
    try:
        running, version = desired.current(aws, c)
    except DocumentError as exc:
        running, version = None, 0
        note = f"the current document is invalid ({exc}); the LBs keep what they run until now"
    final = desired.document(plan, layout)
    wanted = {w.name for w in layout.webs}
    webs = [i for i in inv.instances if tags_of(i).get("hapair:role") == "web"]
    have = {instances.node_name(i) for i in webs}
    add = tuple(w for w in layout.webs if w.name not in have)
    remove = tuple(
        sorted(
            (
                Leaving(instances.node_name(i), i["InstanceId"], i.get("PrivateIpAddress", ""))
                for i in webs
                if instances.node_name(i) not in wanted
            ),
            key=lambda x: x.name,
        )
    )
    follow = decide(running, final)
    return AwsApplyPlan(c, aws.region, version, running, final, add, remove, follow, note)


def run_apply(
    platform: AwsPlatform,
    plan: Plan,
    ap: AwsApplyPlan,
    say: Callable[[str], None],
    drain_s: float,
    *,
    poll_bound_s: float = POLL_BOUND_S,
    sleep: Callable[[float], None] = time.sleep,
    progress: Progress | None = None,
) -> int:
    """Carry out ``ap`` (see the module docstring); returns the final document's version.

    :raises CloudError: an AWS call failed; what came before it is done (run ``apply`` again).
    """
    p = prepare(platform, plan, progress or (lambda _s: None))
    aws = p.aws
    say("network, security groups, IAM, bucket and secrets converged")
    if ap.add:
        ids = platform.launch(p, plan, list(ap.add))
        say(f"launched {', '.join(n.name for n in ap.add)}; waiting until they run")
        instances.wait_running(aws, ids)
        say(f"{len(ids)} web instance(s) running")
    version = ap.version
    drain = ap.drain_doc
    if drain is not None:
        version = desired.publish(aws, plan.name, drain)
        names = ", ".join(x.name for x in ap.remove)
        wait = poll_bound_s + drain_s
        say(f"version {version}: {names} in drain; waiting {wait:g} s before terminating")
        sleep(wait)
        instances.terminate(aws, [x.instance_id for x in ap.remove])
        say(f"terminated {names}")
    if ap.running != ap.final or drain is not None:
        version = desired.publish(aws, plan.name, ap.final)
        say(f"version {version} published: {len(ap.final.servers)} web server(s)")
    for lb in p.layout.lbs:  # the per-LB documents LBs of older hapair versions read
        artifacts.put_object(
            aws,
            p.scope.bucket,
            nodes.desired_key(lb.name),
            nodes.desired(plan, p.layout, lb.name),
            "application/json",
        )
    return version
