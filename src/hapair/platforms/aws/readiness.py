"""Is the cluster serving? What ``up`` waits for on AWS, as pure functions.

``up`` is done when **both EIPs serve the demo page**: each EIP is associated with an LB and a
``GET /`` of its public address answers 200 with the demo page. Until then, every round says
exactly what is missing and why: an instance not running, an EIP on nobody or not on an LB, a
probe that failed (and how), and for each node whose page is not served yet its cloud-init
state, read from its console output (``ec2:GetConsoleOutput``).

:func:`assess` judges one round from what was read (pure); :func:`cloud_init_state` reads a
console output (pure); :func:`wait_until_serving` repeats rounds until ready or out of time,
with the reading, the probing, the clock and the sleep passed in. :func:`assess_webs` judges
new web instances (``apply`` waits for them: :mod:`.webready`); :func:`wait_for` is the loop.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: Text of the demo page that proves a request went through HAProxy to a web app.
DEMO_MARK = "hapair demo page"


@dataclass(frozen=True)
class NodeState:
    """One instance as read: ``state`` is EC2's (pending, running, ...); ``cloud_init`` is
    :func:`cloud_init_state` of its console output."""

    name: str
    role: str
    state: str
    cloud_init: str = "unknown"


@dataclass(frozen=True)
class VipState:
    """One EIP as read: ``owner`` is the node its association points at (``None``: none)."""

    name: str
    address: str
    owner: str | None


@dataclass(frozen=True)
class Probe:
    """One ``GET /`` of an EIP: ``status`` (``None``: no answer), the body's start, the
    answering LB (``x-lb`` header) and the error when there was no answer."""

    vip: str
    status: int | None
    body: str = ""
    served_by: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        """The demo page came back."""
        return self.status == 200 and DEMO_MARK in self.body


@dataclass(frozen=True)
class Readiness:
    """One round's verdict: ``ready``, or one sentence per thing missing in ``problems``."""

    ready: bool
    problems: tuple[str, ...] = ()
    served: tuple[str, ...] = field(default=())
    #: Waiting longer cannot help (a node's cloud-init failed).
    hopeless: bool = False


_FINISHED = re.compile(r"Cloud-init v\. \S+ finished at")
_RUNNING = re.compile(r"Cloud-init v\. \S+ running '([^']+)'")
_FAILED = re.compile(r"(Failed to run module \S+|\[CRITICAL\].*|Traceback)")


def cloud_init_state(console: str) -> str:
    """cloud-init's state from an instance's console output: ``done``, ``error: ...`` (a
    module failed), ``running <stage>``, or ``unknown`` (nothing printed yet)."""
    failed = _FAILED.search(console)
    if failed:
        return f"error: {failed.group(1)[:120]}"
    if _FINISHED.search(console):
        return "done"
    stages = _RUNNING.findall(console)
    if stages:
        return f"running {stages[-1]}"
    return "unknown"


def assess(nodes: list[NodeState], vips: list[VipState], probes: list[Probe]) -> Readiness:
    """Whether both EIPs serve the demo page, and if not, every reason found this round."""
    problems: list[str] = []
    by_name = {n.name: n for n in nodes}
    for n in nodes:
        if n.state != "running":
            problems.append(f"{n.name}: instance is {n.state}")
    by_vip = {p.vip: p for p in probes}
    served = []
    for v in vips:
        probe = by_vip.get(v.name)
        owner = by_name.get(v.owner or "")
        if v.owner is None:
            problems.append(f"{v.name} {v.address}: associated with no instance")
            continue
        if owner is None or owner.role != "lb":
            problems.append(f"{v.name} {v.address}: associated with {v.owner}, not an LB")
            continue
        if probe is None:
            problems.append(f"{v.name} {v.address}: not probed yet")
        elif probe.ok:
            served.append(f"{v.name} {v.address} via {probe.served_by or v.owner}")
        else:
            why = probe.error or f"HTTP {probe.status}" + (
                "" if probe.status != 200 else " without the demo page"
            )
            problems.append(
                f"{v.name} {v.address} (on {v.owner}): {why}; "
                f"{v.owner} cloud-init: {owner.cloud_init}"
            )
    if not vips:
        problems.append("no elastic ips found")
    webs = [n for n in nodes if n.role == "web"]
    broken = [n for n in webs if n.cloud_init.startswith("error")]
    problems += [f"{n.name}: cloud-init {n.cloud_init}" for n in broken]
    return Readiness(not problems and len(served) == len(vips), tuple(problems), tuple(served))


def assess_webs(nodes: list[NodeState]) -> Readiness:
    """Whether new web instances serve: each one running and its cloud-init done (the web
    user data's last step waits until the web app answers its health check, so a done
    cloud-init means a serving app); a failed cloud-init is ``hopeless``."""
    problems = []
    for n in nodes:
        if n.state != "running":
            problems.append(f"{n.name}: instance is {n.state}")
        elif n.cloud_init != "done":
            problems.append(f"{n.name}: cloud-init {n.cloud_init}")
    failed = any(n.cloud_init.startswith("error") for n in nodes)
    return Readiness(not problems, tuple(problems), hopeless=failed)


def wait_for(
    judge: Callable[[], Readiness],
    *,
    timeout: float,
    interval: float = 10.0,
    report: Callable[[Readiness], None] = lambda r: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Readiness:
    """Call ``judge`` every ``interval`` seconds until its verdict is ready or hopeless, or
    ``timeout`` is over; ``report`` sees every round whose verdict changed.

    :returns: the last verdict (``ready`` false when time ran out).
    """
    end = clock() + timeout
    last: Readiness | None = None
    while True:
        verdict = judge()
        if verdict != last:
            report(verdict)
            last = verdict
        if verdict.ready or verdict.hopeless or clock() + interval > end:
            return verdict
        sleep(interval)


def wait_until_serving(
    read: Callable[[], tuple[list[NodeState], list[VipState]]],
    probe: Callable[[VipState], Probe],
    *,
    timeout: float,
    interval: float = 10.0,
    report: Callable[[Readiness], None] = lambda r: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Readiness:
    """Read, probe every associated EIP and :func:`assess`, every ``interval`` seconds until
    ready or ``timeout`` is over (:func:`wait_for`).

    :returns: the last verdict (``ready`` false when time ran out).
    """

    def judge() -> Readiness:
        nodes, vips = read()
        return assess(nodes, vips, [probe(v) for v in vips if v.owner is not None])

    return wait_for(
        judge, timeout=timeout, interval=interval, report=report, clock=clock, sleep=sleep
    )
