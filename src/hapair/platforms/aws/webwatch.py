"""On an AWS LB: notice web instances terminated behind hapair's back.

The desired document lists the web servers; a web instance terminated outside ``apply`` (by
hand, by a spot reclaim, by a failed host) stays in it until the next ``apply``, and until
then only HAProxy's health checks keep traffic off it. The follower therefore asks EC2, at
each of its polls (every 10-30 s, jittered), for the cluster's web instances: one
``DescribeInstances`` filtered by the cluster's and the web role's tags, through the LB role
(which may call it and nothing else of it). A server of the document whose address belongs to a
web instance EC2 shows **shutting-down, terminated, stopping or stopped**, and to no pending or
running one, is taken out of what this LB serves: the follower applies the document without
it, through HAProxy's runtime API (drain, bounded; maint; ``del server``), as for a server
``apply`` removes. Only positive evidence removes a server: an address EC2 does not mention
(an instance not tagged, a list cut short) is kept, and a failed or throttled call changes
nothing and waits longer before the next one (doubling per failure, jittered, at most 300 s).
A new instance at the same address (a replacement) puts the server back.

:func:`gone_addresses` and :func:`without` are pure; :class:`WebWatch` makes the call.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from hapair.day2.desired import DesiredDoc
from hapair.day2.follow import Schedule, next_delay

#: States of an instance that serves no more (or soon will not).
GONE_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})
#: States of an instance that serves, or is about to.
LIVE_STATES = frozenset({"pending", "running"})


def gone_addresses(instances: Iterable[dict[str, Any]]) -> frozenset[str]:
    """Private addresses of web instances EC2 shows gone, with no live instance at the same
    address. Pure.

    :param instances: ``Instances`` entries of DescribeInstances answers.
    """
    gone: set[str] = set()
    live: set[str] = set()
    for inst in instances:
        address = inst.get("PrivateIpAddress")
        state = inst.get("State", {}).get("Name", "")
        if not address:
            continue
        if state in LIVE_STATES:
            live.add(address)
        elif state in GONE_STATES:
            gone.add(address)
    return frozenset(gone - live)


def without(doc: DesiredDoc, gone: frozenset[str]) -> DesiredDoc:
    """``doc`` minus the servers at a ``gone`` address. Pure."""
    if not gone or not any(s.address in gone for s in doc.servers):
        return doc
    return replace(doc, servers=tuple(s for s in doc.servers if s.address not in gone))


class WebWatch:
    """The cluster's web instances as EC2 sees them, asked at most once per follower poll.

    :param ec2: an EC2 client with the LB role's credentials (one attempt per call).
    :param cluster: the cluster's name (its instances carry ``hapair:cluster=<cluster>``).
    :param schedule: the backoff after failures (the follower's schedule).
    :param clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        ec2: Any,
        cluster: str,
        *,
        schedule: Schedule | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ec2, self.cluster = ec2, cluster
        self.schedule = schedule or Schedule()
        self.rng = rng or random.Random()
        self.clock = clock
        #: Addresses of web instances seen gone (the follower serves none of them).
        self.gone: frozenset[str] = frozenset()
        self.failures = 0
        self.not_before = float("-inf")
        self.errors = 0
        #: The last poll changed :attr:`gone`.
        self.changed = False

    def poll(self) -> str | None:
        """Ask EC2 once, unless backing off. Returns a sentence when :attr:`gone` changed or
        the call failed, ``None`` otherwise. A failure changes nothing."""
        now = self.clock()
        self.changed = False
        if now < self.not_before:
            return None
        try:
            instances = self._describe()
        except (ClientError, BotoCoreError) as exc:
            self.failures += 1
            self.errors += 1
            wait = next_delay(self.schedule, self.failures, self.rng)
            self.not_before = now + wait
            code = (
                exc.response.get("Error", {}).get("Code", "Unknown")
                if isinstance(exc, ClientError)
                else type(exc).__name__
            )
            return (
                f"web instances unknown ({code}): served set unchanged, next look in {wait:.0f} s"
            )
        self.failures, self.not_before = 0, float("-inf")
        gone = gone_addresses(instances)
        if gone == self.gone:
            return None
        before, self.gone, self.changed = self.gone, gone, True
        parts = []
        if gone - before:
            parts.append(f"gone: {', '.join(sorted(gone - before))}")
        if before - gone:
            parts.append(f"back: {', '.join(sorted(before - gone))}")
        return f"web instances changed behind hapair's back ({'; '.join(parts)})"

    def _describe(self) -> list[dict[str, Any]]:
        filters = [
            {"Name": "tag:hapair:cluster", "Values": [self.cluster]},
            {"Name": "tag:hapair:role", "Values": ["web"]},
        ]
        out: list[dict[str, Any]] = []
        token = ""
        while True:
            kw: dict[str, Any] = {"Filters": filters, "MaxResults": 1000}
            if token:
                kw["NextToken"] = token
            res = self.ec2.describe_instances(**kw)
            for reservation in res.get("Reservations", []):
                out.extend(reservation.get("Instances", []))
            token = res.get("NextToken", "")
            if not token:
                return out
