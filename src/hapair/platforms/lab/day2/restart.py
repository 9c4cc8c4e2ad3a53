"""``hapair restart lb1|lb2|--rolling`` in the lab: restart an LB's HAProxy and agent (a new
hapair version, a new HAProxy binary) while the other LB serves both floating IPs.

For one LB, each step waits for the one before (every wait bounded):

1. the peer must be healthy and online, or nothing is done;
2. the peer forgets stale connections to this LB's VIPs (:mod:`.forget`), then ``standby``
   through the agent's API: its VIPs move to the peer, make-before-break;
3. wait until the peer holds them and this LB holds none (read from the kernel);
4. restart HAProxy (stop, start, every backend UP); this LB forgets its stale connections to
   its VIPs; then the agent restarts, each service under a new supervisor;
5. wait until the new agent reports itself healthy and hears its peer;
6. ``online`` (the new agent starts online; this is then a no-op);
7. wait until it holds its home VIPs again (the failback, after ``failback_delay``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hapair.agent.client import agent_request, agent_status
from hapair.errors import OperationError, UsageError
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
    """Restart ``lb`` as the module docstring says.

    :raises UsageError: the lab runs no hapair agents, or the peer is not ready to take over.
    :raises OperationError: a step did not complete in time (named).
    """
    if t.engine != "hapair":
        raise UsageError(f"restart: lab {t.name} runs no hapair agents to move the VIPs")
    peer = t.plan.peer_of(lb).name
    st = _status(t, peer)
    if not st.get("health", {}).get("healthy") or st.get("standby"):
        raise UsageError(
            f"restart {lb}: its peer {peer} is not healthy and online, so it cannot serve both "
            "floating IPs; nothing was done"
        )
    t0 = time.monotonic()
    homes = [v.name for v in t.plan.vips if v.home == lb]
    addresses = [v.address for v in t.plan.vips if v.home == lb]
    forget_connections(t.plan.node(peer).namespace, addresses)
    say(f"{lb}: {_admin(t, lb, 'standby')}")

    def peer_holds_all() -> bool:
        return all(h == [peer] for h in _holders(t).values())

    took = _wait(f"{peer} to hold every VIP", peer_holds_all, MOVE_TIMEOUT_S)
    say(f"{peer} holds every VIP ({took * 1000:.0f} ms); restarting HAProxy on {lb}")
    stopped = restart_service(t, lb, "haproxy")
    say(f"{lb}: HAProxy restarted ({_took(stopped)} to stop), every backend UP")
    forgotten = forget_connections(t.plan.node(lb).namespace, addresses)
    say(f"{lb}: forgot {forgotten} stale connections to {', '.join(addresses)} before its failback")
    stopped = restart_service(t, lb, "agent")
    say(f"{lb}: agent restarted ({_took(stopped)} to stop)")

    def healthy() -> bool:
        s = _status(t, lb)
        return bool(s.get("health", {}).get("healthy")) and s.get("peer", {}).get("state") == "up"

    took = _wait(f"{lb}'s new agent to be healthy", healthy, HEALTHY_TIMEOUT_S)
    say(f"{lb}: new agent healthy and hearing {peer} ({took * 1000:.0f} ms)")
    say(f"{lb}: {_admin(t, lb, 'online')}")
    back = MOVE_TIMEOUT_S + t.plan.spec.ha.failback_delay_ms / 1000

    def home_again() -> bool:
        owners = _holders(t)
        return all(owners[v] == [lb] for v in homes)

    took = _wait(f"{lb} to hold {', '.join(homes)} again", home_again, back)
    say(
        f"{lb} holds {', '.join(homes)} again ({took:.1f} s); restarted in "
        f"{time.monotonic() - t0:.1f} s"
    )


def _took(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"
