"""``hapair apply`` in the lab: change a running lab to a new spec, only where it differs.

Before anything changes, every file of the new spec is rendered, each haproxy.cfg is checked
with ``haproxy -c`` and each changed ruleset with ``nft -c``: a spec that fails there leaves the
running lab exactly as it was. Then, in this order (:class:`~hapair.day2.changes.ApplyPlan`):

1. web size, through :mod:`.scale` (runtime API, no reload);
2. HAProxy settings, one LB after the other: write its haproxy.cfg, seamless reload
   (:func:`.haproxy.seamless_reload`), check its new worker serves;
3. security groups: one ``nft -f`` per changed node (the ruleset replaces the old one in one
   transaction; established connections are kept by conntrack);
4. agent timings: agent.toml rewritten, SIGHUP, and the agent's ``/status`` must show them;
5. the state records the new spec.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from hapair.agent.client import agent_status
from hapair.agent.statusdoc import CONFIG_FIELDS
from hapair.day2.changes import ApplyPlan, apply_plan
from hapair.errors import OperationError
from hapair.fileio import write_atomic
from hapair.plan import make_plan
from hapair.platforms.lab import configs, procs, services
from hapair.platforms.lab.day2.haproxy import seamless_reload
from hapair.platforms.lab.day2.scale import Say, scale
from hapair.platforms.lab.day2.target import Target
from hapair.platforms.lab.system import in_ns, run
from hapair.render.agent import agent_config
from hapair.spec import Spec

#: Seconds an agent has to show its new timings in /status after SIGHUP.
AGENT_RELOAD_TIMEOUT_S = 5.0


def plan_for(t: Target, new: Spec) -> ApplyPlan:
    """What applying ``new`` to the running lab does (nothing is touched).

    :raises UsageError: ``new`` changes a field that cannot change live.
    """
    return apply_plan(t.plan.spec, new)


def apply_spec(t: Target, new: Spec, p: ApplyPlan, say: Say, drain_timeout: float) -> None:
    """Carry out ``p`` (from :func:`plan_for`) on the running lab.

    :raises OperationError: a check refused the new configuration (nothing changed), or a step
        failed (the message says which; what came before it is done and recorded).
    """
    plan = make_plan(new)
    configs.ensure_self_signed(plan, t.paths)
    try:
        rendered = configs.render(plan, t.paths)  # haproxy -c of each LB's new haproxy.cfg
        for node in p.firewall:
            configs.check_nft(plan.node(node).namespace, rendered.nft[node])
    except OperationError as exc:
        raise OperationError(f"nothing was changed: {exc}") from None
    say("new configuration checked (haproxy -c, nft -c)")
    if p.scale.add or p.scale.remove:
        scale(t, new.web.size, say, drain_timeout)
    for lb in p.reload:
        write_atomic(t.paths.haproxy_cfg(lb), rendered.haproxy[lb], mode=0o600)
        took = seamless_reload(t, lb)
        say(f"{lb}: HAProxy reloaded seamlessly in {took * 1000:.0f} ms; its new worker serves")
    for node in p.firewall:
        path = t.paths.nft(node)
        write_atomic(path, rendered.nft[node])
        run(in_ns(plan.node(node).namespace, ["nft", "-f", str(path)]))
    if p.firewall:
        say(f"security groups replaced on {', '.join(p.firewall)}")
    for lb in p.agents:
        write_atomic(t.paths.agent_toml(lb), rendered.agent[lb], mode=0o600)
        if t.engine == "hapair":
            took = reload_agent(t, lb, expected_config(t, new, lb))
            say(f"{lb}: agent reloaded its configuration in {took * 1000:.0f} ms")
    t.save(new)


def expected_config(t: Target, new: Spec, lb: str) -> dict[str, Any]:
    """The timings ``/status`` must show once ``lb``'s agent runs ``new``'s agent.toml."""
    cfg = agent_config(
        make_plan(new),
        lb,
        key_file=str(t.paths.key),
        admin_token_file=str(t.paths.admin_token),
        stats_socket=str(t.paths.haproxy_sock(lb)),
        api_socket=str(t.paths.agent_sock(lb)),
    )
    dumped = cfg.model_dump(mode="json")
    return {k: dumped[k] for k in CONFIG_FIELDS}


def reload_agent(t: Target, lb: str, expected: dict[str, Any]) -> float:
    """SIGHUP ``lb``'s agent and wait until its ``/status`` shows ``expected``; returns the
    seconds it took.

    :raises OperationError: the agent does not run, or refused the file (its reason given).
    """
    svc = services.recorded(t.state.get("procs", {}), lb, "agent")
    now = svc.running(t.paths)
    if now is None:
        raise OperationError(f"the agent does not run on {lb}: `hapair revive {lb}` first")
    sock = str(t.paths.agent_sock(lb))
    t0 = time.monotonic()
    procs.signal_proc(
        now.proc, signal.SIGHUP
    )  # the agent applies agent.toml as a whole, or refuses
    last: dict[str, Any] = {}
    while time.monotonic() - t0 < AGENT_RELOAD_TIMEOUT_S:
        try:
            last = agent_status(sock)
        except OperationError:
            last = {}
        if last.get("config") == expected:
            return time.monotonic() - t0
        time.sleep(0.05)
    refused = [
        e.get("message", "")
        for e in last.get("events", [])
        if "reload refused" in str(e.get("message", ""))
    ]
    why = refused[-1] if refused else f"it shows {last.get('config')}"
    raise OperationError(f"{lb}'s agent did not take its new configuration: {why}")
