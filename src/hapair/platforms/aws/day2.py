"""``hapair apply`` / ``scale --web N`` on AWS: no SSH, no LB replaced.

The LBs follow the cluster's desired document in SSM (:mod:`.desired`, :mod:`.follower`), so
changing what they serve is publishing a new version of it. :func:`plan_apply` reads what runs
(instances, the current document and its version) and says what will change; nothing is
touched. :func:`run_apply` then, in this order:

1. converges everything but the instances, as ``up`` does (network, security groups and their
   rules, IAM, bucket, secrets, EIPs, ENIs: :func:`~.prepare.prepare`);
2. launches the new web instances and waits until they run and serve (cloud-init done, which
   the web user data makes wait for the web app's health check: :mod:`.webready`), bounded;
3. when web nodes go: publishes the new document with them listed in ``drain`` (the LBs stop
   sending them new requests at their next poll), waits until both LBs acknowledge it and have
   no session left on them (bounded: :func:`.acks.await_drain`; a refusal stops here, nothing
   terminated), then terminates them;
4. publishes the final document (the LBs add the new servers through the runtime API, delete
   the drained ones, or reload seamlessly when HAProxy's settings changed), waits until both
   acknowledge it (a refusal is an error naming the LB and its reason), and updates the
   bucket's per-LB documents that LBs of older hapair versions read. When HTTPS is on and the
   cluster has no certificate yet, one is put in SSM first (:func:`with_certificate`).

An invalid spec never gets here (the CLI's spec load refuses it): nothing changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from hapair.day2.desired import DesiredDoc, DocumentError, Server
from hapair.day2.follow import FollowPlan, Schedule, decide
from hapair.errors import UsageError
from hapair.plan import Plan
from hapair.platforms.aws import acks, artifacts, certs, desired, instances, nodes
from hapair.platforms.aws.client import Aws, tags_of
from hapair.platforms.aws.inventory import discover
from hapair.platforms.aws.layout import NodeLayout, make_layout
from hapair.platforms.aws.precheck import check_document
from hapair.platforms.aws.prepare import prepare
from hapair.platforms.aws.security import RuleDelta, rule_deltas
from hapair.platforms.aws.webready import WEB_READY_TIMEOUT, wait_webs_ready
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
    :ivar rules: how the security groups' rules differ from the spec's (admin CIDRs, ports).
    :ivar checked: what checked ``final``'s haproxy.cfg here (:mod:`.precheck`).
    :ivar unserved: (name, instance id) of web instances that stay but no published document
        lists yet (launched by an ``apply`` that stopped waiting): waited for as new ones.
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
    rules: tuple[RuleDelta, ...] = ()
    checked: str = ""
    unserved: tuple[tuple[str, str], ...] = ()

    @property
    def empty(self) -> bool:
        """Nothing differs."""
        return not self.add and not self.remove and not self.rules and self.follow.empty

    @property
    def drain_doc(self) -> DesiredDoc | None:
        """The document published before terminating (``remove`` in drain); None: none."""
        if not self.remove:
            return None
        drained = tuple(Server(x.name, x.address, "drain") for x in self.remove)
        return replace(self.final, servers=self.final.servers + drained)

    def lines(self, drain_s: float) -> list[str]:
        """The plan as shown before anything is done."""
        where = f"/hapair/{self.cluster}/desired in {self.region}"
        head = [f"desired document {where}: version {self.version or 'none yet'}"]
        if self.note:
            head.append(f"  note: {self.note}")
        if self.checked:
            head.append(f"  check: {self.checked}")
        if self.empty:
            return [*head, "nothing to change: the running cluster has this spec"]
        steps = [d.line() for d in self.rules]
        if self.unserved:
            names = ", ".join(n for n, _ in self.unserved)
            steps.append(f"wait until {names} (launched before, never published) serve")
        if self.add:
            names = ", ".join(n.name for n in self.add)
            steps.append(f"launch {names} and wait until they run and serve")
        if self.remove:
            names = ", ".join(x.name for x in self.remove)
            steps.append(
                f"publish a version with {names} in drain; wait until both LBs acknowledge it "
                f"(at most {acks.ack_timeout(POLL_BOUND_S):g} s) and have no session left on "
                f"{names} (at most {drain_s:g} s); terminate {names}"
            )
        cert = certificate_step(self.final)
        if cert and (not self.follow.empty or self.add or self.remove):
            steps.append(cert)
        if not self.follow.empty or self.add or self.remove:
            steps.append(
                f"publish the final version; the LBs apply it by {self.follow.reason()}, "
                "and acknowledge it"
            )
        return [*head, "steps:", *(f"  {i}. {s}" for i, s in enumerate(steps, 1))]


def plan_apply(
    platform: AwsPlatform, plan: Plan, check: Callable[[str], None] | None = None
) -> AwsApplyPlan:
    """What applying ``plan`` to the running cluster does (reads only); the final document's
    haproxy.cfg is checked here first (``check``, default ``haproxy -c``: :mod:`.precheck`).

    :raises UsageError: no such cluster here, an LB has no instance (``up`` makes LBs), or
        the final haproxy.cfg is refused (nothing changed).
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
    final = desired.document(plan, layout, keep=running)  # certificate, restart generations
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
    listed = {s.name for s in running.servers} if running is not None else set()
    unserved = tuple(
        (instances.node_name(i), str(i["InstanceId"]))
        for i in webs
        if instances.node_name(i) in wanted - listed
    )
    follow = decide(running, final)
    checked = check_document(final, [lb.name for lb in layout.lbs], check)
    rules = rule_deltas(plan.spec, inv)
    return AwsApplyPlan(
        c, aws.region, version, running, final, add, remove, follow, note, rules, checked, unserved
    )


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
    ready_timeout: float = WEB_READY_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Carry out ``ap`` (see the module docstring); returns the final document's version.

    :raises CloudError: an AWS call failed; what came before it is done (run ``apply`` again).
    :raises OperationError: new web instances do not serve within ``ready_timeout`` (nothing
        was published: the LBs do not send them traffic).
    """
    p = prepare(platform, plan, progress or (lambda _s: None))
    aws = p.aws
    say("network, security groups, IAM, bucket and secrets converged")
    started = dict(ap.unserved)
    if ap.add:
        ids = platform.launch(p, plan, list(ap.add))
        say(f"launched {', '.join(n.name for n in ap.add)}; waiting until they run")
        instances.wait_running(aws, ids)
        say(f"{len(ids)} web instance(s) running; waiting until they serve")
        started.update(zip((n.name for n in ap.add), ids, strict=True))
    if started:
        wait_webs_ready(aws, started, say, timeout=ready_timeout, clock=clock, sleep=sleep)
    version = ap.version
    final, drain = with_certificate(aws, plan, ap.final, ap.drain_doc, say)
    lbs = [lb.name for lb in p.layout.lbs]
    if drain is not None:
        version = desired.publish(aws, plan.name, drain)
        names = ", ".join(x.name for x in ap.remove)
        acks.await_drain(
            aws,
            plan.name,
            version,
            lbs,
            names,
            say,
            poll_bound_s=poll_bound_s,
            drain_s=drain_s,
            sleep=sleep,
        )
        instances.terminate(aws, [x.instance_id for x in ap.remove])
        say(f"terminated {names}")
    if ap.running != final or drain is not None:
        version = desired.publish(aws, plan.name, final)
        say(f"version {version} published: {len(final.servers)} web server(s)")
        verdict = acks.settle(
            aws,
            plan.name,
            version,
            lbs,
            say,
            timeout=acks.ack_timeout(poll_bound_s),
            silent_s=0,
            sleep=sleep,
        )
        if verdict.done:
            say(f"version {version} applied by {', '.join(lbs)}")
    for lb in p.layout.lbs:  # the per-LB documents LBs of older hapair versions read
        artifacts.put_object(
            aws,
            p.scope.bucket,
            nodes.desired_key(lb.name),
            nodes.desired(plan, p.layout, lb.name),
            "application/json",
        )
    return version


def with_certificate(
    aws: Aws,
    plan: Plan,
    final: DesiredDoc,
    drain: DesiredDoc | None,
    say: Callable[[str], None],
) -> tuple[DesiredDoc, DesiredDoc | None]:
    """``final`` and ``drain`` with a certificate when HTTPS is on and the cluster has none yet
    (put first: the spec's ``haproxy.cert``, else a new self-signed one), so that both LBs
    serve the same one and never refuse HTTPS for want of a file; unchanged otherwise."""
    final, line = certs.with_initial(aws, plan.spec, final)
    if not line:
        return final, drain
    say(line)
    return final, (replace(drain, cert=final.cert) if drain is not None else None)


def certificate_step(final: DesiredDoc) -> str | None:
    """The plan's line for the certificate ``run_apply`` puts (None: none)."""
    if not final.haproxy.https or final.cert is not None:
        return None
    return "put a certificate in SSM for both LBs (haproxy.cert, else a new self-signed one)"
