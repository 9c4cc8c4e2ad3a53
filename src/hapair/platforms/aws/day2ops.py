"""``hapair restart`` and ``hapair cert rotate`` on AWS: no SSH, no instance replaced.

Both publish a new version of the desired document that the LBs follow (:mod:`.desired`) and
then watch what the operator can see with EC2's APIs: the LBs' acknowledgements (the tag
``hapair:applied`` on their instances, :mod:`.acks`) and, for a restart, where the EIPs are
(``DescribeAddresses``). Every wait is bounded and every refusal is an error that names the LB
and its reason.

**Restart**, one LB at a time (``--rolling``: each LB in name order): the document's restart
generation of that LB goes up by one; that LB's follower sees it within one poll (10-30 s),
refuses unless its agent hears a healthy, online peer, else puts its agent in standby (its EIPs
move to the peer), restarts HAProxy and the agent, waits until the new agent is healthy and
hears the peer, ``online``, and acknowledges (:mod:`.lbrestart`). This side then waits until the
LB's home EIPs are back on it (the failback, after ``failback_delay``), and only then goes on to
the next LB: the other LB serves both EIPs meanwhile.

**Certificate rotation**: the PEM (given, or a new self-signed one for ``cluster.domain``) is
checked here (key matches certificate), put as a new version of the SecureString
``/hapair/<cluster>/cert`` (:mod:`.certs`), and a document naming that version and its SHA-256
is published; each LB's follower fetches it, checks it again and puts it live through HAProxy's
runtime API (``set ssl cert``, ``commit ssl cert``: no reload). Done when both acknowledge.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from hapair.day2.desired import DesiredDoc
from hapair.day2.follow import Schedule
from hapair.day2.pem import PemError, self_signed
from hapair.errors import OperationError, UsageError
from hapair.plan import Plan
from hapair.platforms.aws import acks, certs, desired
from hapair.platforms.aws.client import TAG_NODE, TAG_VIP, Aws, cluster_filter, tags_of
from hapair.platforms.aws.timing import effective_ha

Say = Callable[[str], None]

#: Seconds the LBs take at most to see a new version (the followers' longest poll interval).
POLL_BOUND_S = Schedule().high_s
#: What an LB's restart may take once it started (the bounds of :class:`.lbrestart.RestartConfig`:
#: the EIPs' move, HAProxy, the new agent healthy).
RESTART_BOUND_S = 90.0 + 30.0 + 180.0
#: Seconds beyond ``failback_delay`` the EIPs may take to come back (EC2 calls, reads).
FAILBACK_MARGIN_S = 60.0


def eip_owners(aws: Aws, cluster: str) -> dict[str, str | None]:
    """VIP -> the LB its EIP is associated with now (None: none), read from EC2."""
    flt = cluster_filter(cluster)
    addresses = aws.must(aws.ec2.describe_addresses, "elastic ips", Filters=flt)["Addresses"]
    enis = aws.must(aws.ec2.describe_network_interfaces, "network interfaces", Filters=flt)[
        "NetworkInterfaces"
    ]
    node = {e["NetworkInterfaceId"]: tags_of(e).get(TAG_NODE) for e in enis}
    return {
        tags_of(a).get(TAG_VIP, a["AllocationId"]): node.get(a.get("NetworkInterfaceId", ""))
        for a in addresses
    }


def owners_line(owners: Mapping[str, str | None]) -> str:
    """``vip1 on lb2, vip2 on lb2``. Pure."""
    return ", ".join(f"{v} on {o or 'nobody'}" for v, o in sorted(owners.items()))


class EipWatch:
    """Reads where the EIPs are and says so when it changed."""

    def __init__(self, aws: Aws, cluster: str, say: Say) -> None:
        self.aws, self.cluster, self.say = aws, cluster, say
        self.owners: dict[str, str | None] = {}
        self.last = ""

    def __call__(self) -> dict[str, str | None]:
        """Read them; say the new placement when it changed; returns it."""
        self.owners = eip_owners(self.aws, self.cluster)
        line = owners_line(self.owners)
        if line != self.last:
            self.say(f"EIPs: {line}")
            self.last = line
        return self.owners


def _current(aws: Aws, cluster: str, what: str) -> DesiredDoc:
    doc, _version = desired.current(aws, cluster)
    if doc is None:
        raise UsageError(
            f"{what}: cluster {cluster} has no desired document in {aws.region}: run "
            "`hapair up` first"
        )
    return doc


def _acknowledged(
    aws: Aws,
    cluster: str,
    version: int,
    lbs: Iterable[str],
    *,
    timeout: float,
    sleep: Callable[[float], None],
    on_round: Callable[[], object] | None = None,
) -> None:
    """Wait until every LB acknowledged ``version``; an LB that never acknowledges anything
    cannot do what this version asks (an older hapair).

    :raises OperationError: refused, silent, or late (named).
    """
    verdict = acks.wait(aws, cluster, version, lbs, timeout=timeout, sleep=sleep, on_round=on_round)
    silent = [lb for lb in verdict.waiting if lb in verdict.silent]
    if silent:
        raise OperationError(
            f"{', '.join(silent)} acknowledge nothing after {timeout:g} s: no follower runs there, "
            "or one of an older hapair that cannot do this (replace the LB: terminate it, then "
            "`hapair up`)"
        )
    acks.require(verdict, version, timeout)


def restart(
    aws: Aws,
    plan: Plan,
    lbs: Iterable[str],
    say: Say,
    *,
    poll_bound_s: float = POLL_BOUND_S,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Restart each LB of ``lbs`` in turn (the module docstring).

    :raises UsageError: no desired document (run ``up``), or an unknown LB.
    :raises OperationError: an LB refused (its peer cannot take over, named with the reason),
        did not acknowledge in time, or its EIPs did not come back in time.
    """
    c = plan.name
    names = [lb.name for lb in plan.lbs]
    failback_s = effective_ha(plan.spec).failback_delay_ms / 1000
    for lb in lbs:
        if lb not in names:
            raise UsageError(f"restart: {lb} is not a load balancer (use {plan.lb_hint})")
        doc = _current(aws, c, "restart")
        gen = doc.restart_generation(lb) + 1
        version = desired.publish(aws, c, replace(doc, restarts={**doc.restarts, lb: gen}))
        say(
            f"version {version}: restart {lb} (generation {gen}); its follower takes it within "
            f"{poll_bound_s:g} s"
        )
        watch = EipWatch(aws, c, say)
        watch()
        t0 = time.monotonic()
        _acknowledged(
            aws,
            c,
            version,
            names,
            timeout=acks.ack_timeout(poll_bound_s) + RESTART_BOUND_S,
            sleep=sleep,
            on_round=watch,
        )
        say(f"{lb}: HAProxy and agent restarted, healthy, online ({time.monotonic() - t0:.0f} s)")
        homes = sorted(v.name for v in plan.vips if v.home == lb)
        limit = failback_s + FAILBACK_MARGIN_S
        waited = 0.0
        while True:
            owners = watch()
            away = [v for v in homes if owners.get(v) != lb]
            if not away:
                break
            if waited >= limit:
                raise OperationError(
                    f"{lb} restarted, but {', '.join(away)} not back on it after {limit:g} s "
                    f"({owners_line({v: owners.get(v) for v in away})})"
                )
            sleep(2.0)
            waited += 2.0
        say(f"{lb} holds {', '.join(homes) or 'nothing'} again")


def cert_rotate(
    aws: Aws,
    plan: Plan,
    pem: str | None,
    say: Say,
    *,
    poll_bound_s: float = POLL_BOUND_S,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Put ``pem`` (None: a new self-signed one) live on every LB (the module docstring);
    returns the document's version.

    :raises UsageError: no desired document, HTTPS is off, or the PEM is not a certificate with
        its matching key (nothing was put or published).
    :raises OperationError: an LB refused it (named, with HAProxy's or the check's words), or
        did not acknowledge in time.
    """
    c = plan.name
    doc = _current(aws, c, "cert rotate")
    if not doc.haproxy.https:
        raise UsageError(
            f"cert rotate: cluster {c} does not serve HTTPS (set haproxy.https = true and "
            "`hapair apply`)"
        )
    if pem is None:
        pem = self_signed(plan.spec.cluster.domain)
        say(f"made a new self-signed certificate for {plan.spec.cluster.domain}")
    try:
        ref = certs.put(aws, c, pem)
    except PemError as exc:
        raise UsageError(f"--cert: {exc}") from None
    say(
        f"certificate put in {certs.parameter(c)}, version {ref.version} "
        f"(sha256 {ref.sha256[:16]}...)"
    )
    version = desired.publish(aws, c, replace(doc, cert=ref))
    names = [lb.name for lb in plan.lbs]
    say(f"version {version}: {', '.join(names)} put it live through HAProxy's runtime API")
    _acknowledged(aws, c, version, names, timeout=acks.ack_timeout(poll_bound_s), sleep=sleep)
    say(f"{', '.join(names)} serve certificate {ref.sha256[:16]}... (no reload)")
    return version
