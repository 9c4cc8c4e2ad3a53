"""What an LB does to go from the desired document it runs to a new one, and when it polls
next. Pure: documents and counters in, a plan and a delay out.

:func:`decide` compares two :class:`~hapair.day2.desired.DesiredDoc`: when only the
backend's server list differs (servers added, drained, made ready again or removed) the
change is a list of runtime-API steps (:class:`Step`) and no reload; anything else in
HAProxy's settings (balance, timeouts, checks, maxconn, HTTPS, the web port, a server's
address) needs a seamless reload. Agent timings are their own step (agent.toml + SIGHUP).
Either way haproxy.cfg is rewritten, so a later reload keeps the same servers.

:func:`next_delay` is the polling schedule: a jittered interval, doubled per consecutive
throttled or failed call up to a ceiling.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from hapair.day2.desired import DesiredDoc


class Op(enum.Enum):
    """A runtime-API step on one server."""

    ADD = "add"  # add server + enable health + enable server (then drain if so listed)
    DRAIN = "drain"  # set server state drain
    READY = "ready"  # set server state ready
    REMOVE = "remove"  # set server state maint, shutdown sessions, del server


@dataclass(frozen=True)
class Step:
    """One runtime-API step: ``op`` on server ``name`` (``address`` for ADD)."""

    op: Op
    name: str
    address: str = ""
    drain: bool = False

    def line(self) -> str:
        """``add web4 (10.20.1.24)``, ``drain web3``."""
        extra = f" ({self.address}{', drained' if self.drain else ''})" if self.address else ""
        return f"{self.op.value} {self.name}{extra}"


@dataclass(frozen=True)
class FollowPlan:
    """What applying a new document takes.

    :ivar reload: a seamless reload is needed (the reasons say why).
    :ivar steps: runtime-API steps (only when no reload is needed).
    :ivar agent: the agent timings changed (rewrite agent.toml, SIGHUP the agent).
    :ivar rewrite: haproxy.cfg changes (always, when anything of HAProxy's changed).
    :ivar reasons: lowercase sentences, one per difference.
    """

    reload: bool
    steps: tuple[Step, ...] = ()
    agent: bool = False
    rewrite: bool = False
    reasons: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        """Nothing to do."""
        return not (self.reload or self.steps or self.agent or self.rewrite)

    def reason(self) -> str:
        """One sentence for the log and the tests."""
        if self.empty:
            return "nothing changed"
        how = "seamless reload" if self.reload else "runtime api" if self.steps else "no haproxy"
        return f"{how}: {'; '.join(self.reasons)}"


def decide(running: DesiredDoc | None, new: DesiredDoc) -> FollowPlan:
    """The plan that brings an LB running ``running`` (None: nothing applied yet) to ``new``."""
    if running is None:
        return FollowPlan(True, (), True, True, ("first document: render and load haproxy.cfg",))
    reasons: list[str] = []
    reload = False
    old_h = running.haproxy.model_dump(mode="json")
    new_h = new.haproxy.model_dump(mode="json")
    changed = [k for k in new_h if old_h.get(k) != new_h[k]]
    if changed:
        reload = True
        reasons.append(f"haproxy settings changed: {', '.join(changed)}")
    if running.web_port != new.web_port:
        reload = True
        reasons.append(f"web port {running.web_port} -> {new.web_port}")
    steps: list[Step] = []
    for s in new.servers:
        old = running.server(s.name)
        if old is None:
            steps.append(Step(Op.ADD, s.name, s.address, drain=s.state == "drain"))
        elif old.address != s.address:
            reload = True
            reasons.append(f"{s.name} moved {old.address} -> {s.address}")
        elif old.state != s.state:
            steps.append(Step(Op.DRAIN if s.state == "drain" else Op.READY, s.name))
    names = {s.name for s in new.servers}
    steps += [Step(Op.REMOVE, s.name) for s in running.servers if s.name not in names]
    if steps:
        reasons.append("servers: " + ", ".join(st.line() for st in steps))
    agent = dict(running.agent) != dict(new.agent)
    if agent:
        diff = sorted(k for k in new.agent if running.agent.get(k) != new.agent[k])
        reasons.append(f"agent timings changed: {', '.join(diff)}")
    rewrite = reload or bool(steps)
    if reload:
        steps = []  # the reload brings the servers; states are set again after it
    return FollowPlan(reload, tuple(steps), agent, rewrite, tuple(reasons))


@dataclass(frozen=True)
class Schedule:
    """The polling schedule.

    :ivar low_s: shortest interval between two polls.
    :ivar high_s: longest interval between two polls (each is uniform in [low, high]).
    :ivar ceiling_s: the longest a backoff may wait.
    """

    low_s: float = 10.0
    high_s: float = 30.0
    ceiling_s: float = 300.0

    def __post_init__(self) -> None:
        if not 0 < self.low_s <= self.high_s <= self.ceiling_s:
            raise ValueError(
                "poll schedule: need 0 < low_s <= high_s <= ceiling_s "
                f"(got {self.low_s}, {self.high_s}, {self.ceiling_s})"
            )


def next_delay(schedule: Schedule, failures: int, rng: random.Random) -> float:
    """Seconds until the next poll after ``failures`` consecutive throttled or failed calls
    (0: the last one worked): uniform in [low, high], times 2**failures, at most the ceiling
    (full jitter above the low bound, so two LBs throttled together do not retry together)."""
    base = rng.uniform(schedule.low_s, schedule.high_s)
    if failures <= 0:
        return base
    top = min(schedule.ceiling_s, schedule.high_s * 2 ** min(failures, 16))
    return rng.uniform(schedule.low_s, top)
