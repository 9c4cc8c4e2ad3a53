"""``hapair restart lbN|--rolling`` in the lab: restart an LB's HAProxy and agent (a new
hapair version, a new HAProxy binary) while the other LB (a pair) or the other LBs (N LBs,
etcd) serve every floating IP.

For one LB, each step waits for the one before (every wait bounded); what each wait waits
for is decided in :mod:`.restartplan`:

1. the peer must be healthy and online (N LBs: at least one other LB healthy, online, with an
   etcd lease: the takers), or nothing is done;
2. the takers forget stale connections to this LB's VIPs (:mod:`.forget`), then ``standby``
   through the agent's API: its VIPs move to the takers, make-before-break;
3. wait until the takers hold them and this LB holds none (read from the kernel);
4. restart HAProxy (stop, start, every backend UP); this LB forgets its stale connections to
   its VIPs; then the agent restarts, each service under a new supervisor;
5. wait until the new agent reports itself healthy and hears its peer (N LBs: every taker,
   and it holds an etcd lease);
6. ``online`` (the new agent starts online; this is then a no-op);
7. wait until it holds its home VIPs again (N LBs: its share, placement's choice), the
   failback after ``failback_delay``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hapair.agent.client import agent_request, agent_status
from hapair.errors import OperationError, UsageError
from hapair.platforms.lab.day2 import restartplan as rp
from hapair.platforms.lab.day2.forget import forget_connections
from hapair.platforms.lab.day2.haproxy import restart_service
from hapair.platforms.lab.day2.scale import Say
from hapair.platforms.lab.day2.target import Target

#: Bounds of each wait (seconds); the failback adds ``failback_delay``.
MOVE_TIMEOUT_S = 30.0
HEALTHY_TIMEOUT_S = 60.0


def _status(t: Target, lb: str) -> dict[str, Any]:
    try:
        return agent_status(str(t.paths.agent_sock(lb)))
    except OperationError:
        return {}


def _admin(t: Target, lb: str, action: str) -> str:
    token = t.paths.admin_token.read_text().strip()
    code, body = agent_request(str(t.paths.agent_sock(lb)), "POST", f"/{action}", token=token)
    if code != 200:
        raise OperationError(f"{lb} refused {action}: {code} {body}")
    return str(body.get("message", body) if isinstance(body, dict) else body)


def _wait(what: str, pred: Callable[[], bool], timeout: float) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise OperationError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - t0


def _holders(t: Target) -> dict[str, list[str]]:
    from hapair.platforms.lab.platform import LabPlatform

    return LabPlatform.vip_owners(t.plan)


def restart_lb(t: Target, lb: str, say: Say) -> None:
    """Restart ``lb`` as the module docstring says (the decisions: :mod:`.restartplan`).

    :raises UsageError: the lab runs no hapair agents, or no other LB is ready to take over.
    :raises OperationError: a step did not complete in time (named).
    """
    if t.engine != "hapair":
        raise UsageError(f"restart: lab {t.name} runs no hapair agents to move the VIPs")
    lbs = [n.name for n in t.plan.lbs]
    coordinated = t.plan.spec.ha.coordinator == "etcd"
    ready = rp.takers(lb, {n: _status(t, n) for n in lbs}, coordinated)
    refused = rp.refusal(lb, lbs, ready, coordinated)
    if refused is not None:
        raise UsageError(refused)
    takers = " and ".join(ready) if len(ready) < 3 else f"{', '.join(ready[:-1])} and {ready[-1]}"
    t0 = time.monotonic()
    homes = [v.name for v in t.plan.vips if v.home == lb]
    # The pair moves its home VIPs; N LBs move whatever placement gave this one.
    moving = rp.carried(lb, _holders(t)) if coordinated else homes
    addresses = [v.address for v in t.plan.vips if v.name in moving]
    for taker in ready:
        forget_connections(t.plan.node(taker).namespace, addresses)
    say(f"{lb}: {_admin(t, lb, 'standby')}")
    took = _wait(
        f"{takers} to hold every VIP", lambda: rp.drained(lb, _holders(t), ready), MOVE_TIMEOUT_S
    )
    verb = "holds" if len(ready) == 1 else "hold"
    say(f"{takers} {verb} every VIP ({took * 1000:.0f} ms); restarting HAProxy on {lb}")
    stopped = restart_service(t, lb, "haproxy")
    say(f"{lb}: HAProxy restarted ({_took(stopped)} to stop), every backend UP")
    if coordinated:  # it carries none now: every VIP's stale connections may go
        addresses = [v.address for v in t.plan.vips]
    forgotten = forget_connections(t.plan.node(lb).namespace, addresses)
    say(f"{lb}: forgot {forgotten} stale connections to {', '.join(addresses)} before its failback")
    stopped = restart_service(t, lb, "agent")
    say(f"{lb}: agent restarted ({_took(stopped)} to stop)")
    took = _wait(
        f"{lb}'s new agent to be healthy",
        lambda: rp.rejoined(_status(t, lb), ready, coordinated),
        HEALTHY_TIMEOUT_S,
    )
    say(f"{lb}: new agent healthy and hearing {takers} ({took * 1000:.0f} ms)")
    say(f"{lb}: {_admin(t, lb, 'online')}")
    limit = MOVE_TIMEOUT_S + t.plan.spec.ha.failback_delay_ms / 1000
    if coordinated:
        limit += t.plan.spec.ha.min_move_interval_ms / 1000 * len(t.plan.vips)
    what = f"{lb} to hold {', '.join(homes)} again" if not coordinated else f"{lb}'s share back"
    took = _wait(what, lambda: rp.back(lb, _holders(t), ready, homes, coordinated), limit)
    held = ", ".join(rp.carried(lb, _holders(t)) if coordinated else homes) or "nothing"
    say(f"{lb} holds {held} again ({took:.1f} s); restarted in {time.monotonic() - t0:.1f} s")


def _took(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"
