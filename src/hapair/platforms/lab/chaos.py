"""Chaos in the lab: kill a node, one of its services or its link; revive it.

What each node can suffer (``NODE`` is ``<c>-<node>``'s short name):

* ``lb1``, ``lb2``: ``machine`` (every process of the namespace, supervisors included, gets
  SIGKILL: down until ``revive``), ``haproxy`` or ``agent`` (that service alone gets SIGKILL;
  its supervisor starts it again after the restart delay, unless ``keep_down``), ``link``.
* ``webN``: ``machine`` or ``link``; ``inet``: ``machine`` (dnsmasq dies);
  ``igw``: ``machine`` or ``link``, both taking the router's switch port down (it has no process).

``revive`` undoes any of them and is idempotent: link up, and every service of the node that
does not run is started (or, when its supervisor waits to restart it, restarted now).
"""

from __future__ import annotations

from typing import Any

from hapair.errors import UsageError
from hapair.plan import Plan, Role
from hapair.platforms.lab import network, procs, services, webpool
from hapair.platforms.lab.paths import LabPaths
from hapair.platforms.lab.state import save_state
from hapair.platforms.lab.system import run

MODES = ("machine", "link", "haproxy", "agent")


def _check(plan: Plan, state: dict[str, Any], node: str, mode: str) -> Role:
    try:
        role = plan.node(node).role
    except KeyError:
        raise UsageError(
            f"no node {node} in lab {plan.name} (nodes: {plan.lb_hint.replace(' or ', ', ')}, "
            f"web1..web{len(plan.webs)}, "
            "igw, inet)"
        ) from None
    if mode not in MODES:
        raise UsageError(f"kill: mode must be one of {', '.join(MODES)} (got {mode})")
    if mode in ("haproxy", "agent") and role is not Role.LB:
        raise UsageError(f"--{mode}: {node} is not a load balancer (use {plan.lb_hint})")
    if mode == "agent" and state.get("engine") != "hapair":
        engine = state.get("engine")
        raise UsageError(f"--agent: lab {plan.name} runs no hapair agent (engine {engine})")
    if mode == "link" and role is Role.INET:
        raise UsageError("--link: inet has no switch port (kill igw --link cuts it off)")
    return role


def kill(
    plan: Plan, state: dict[str, Any], node: str, mode: str = "machine", keep_down: bool = False
) -> str:
    """Fail ``node`` (see the module docstring); returns a sentence saying what was done.

    ``keep_down`` (``haproxy``, ``agent``): kill the service's supervisor too, so that it stays
    down until ``revive``.
    """
    role = _check(plan, state, node, mode)
    ns = plan.node(node).namespace
    if mode == "link" or (role is Role.IGW and mode == "machine"):
        network.set_link(plan, node, up=False)
        what = "its switch port is down" if role is Role.IGW and mode == "machine" else "link down"
        return f"{node}: {what} (`hapair revive {node}` brings it back)"
    if mode == "machine" and role is Role.WEB:  # its web app is served by the lab's pool
        delay = float(state.get("restart_delay", 1.0))
        try:
            webpool.set_down(plan, LabPaths(plan.name), state, node, True, delay)
        finally:
            save_state(plan.name, state)
        return f"{node}: killed (machine: its web app stopped): down until `hapair revive {node}`"
    if mode == "machine":
        pids = procs.ns_pids(ns)
        services.sigkill_all(pids)
        return f"{node}: killed {len(pids)} processes (machine): down until `hapair revive {node}`"
    paths = LabPaths(plan.name)
    svc = services.recorded(state.get("procs", {}), node, mode)
    now = svc.running(paths)
    if mode == "haproxy":  # the master and its workers
        pids = services.node_procs(plan, ns, "haproxy")
    else:
        pids = [now.proc.pid] if now is not None else []
    supervised = svc.supervised()
    if keep_down and supervised:
        assert svc.supervisor is not None
        pids = [svc.supervisor.pid, *pids]
    services.sigkill_all(pids)
    if not pids:
        return f"{node}: {mode} was not running"
    if keep_down or not supervised:
        return f"{node}: killed {mode}; down until `hapair revive {node}`"
    delay = state.get("restart_delay", 1.0)
    again = f"its supervisor restarts it after {delay:g} s (longer if it keeps dying)"
    return f"{node}: killed {mode}; {again}"


def revive(plan: Plan, state: dict[str, Any], node: str, reboot: bool = False) -> str:
    """Bring ``node`` back (see the module docstring); returns what was done.

    ``reboot`` (LBs): first remove the VIPs its interface still carries, as after a reboot.
    """
    role = _check(plan, state, node, "machine")
    n = plan.node(node)
    done = []
    if reboot and role is not Role.LB:
        raise UsageError(f"--reboot: only for load balancers ({node} carries no floating IP)")
    if role is not Role.INET:
        network.set_link(plan, node, up=True)
        done.append("link up")
    if reboot:
        for vip in plan.vips:
            addr = f"{vip.address}/32"
            run(["ip", "-n", n.namespace, "addr", "del", addr, "dev", network.IFNAME], check=False)
        done.append("floating IPs removed")
    paths = LabPaths(plan.name)
    table: dict[str, Any] = state.setdefault("procs", {})
    delay = float(state.get("restart_delay", 1.0))
    if role is Role.WEB:
        try:
            started = webpool.set_down(plan, paths, state, node, False, delay)
        finally:
            save_state(plan.name, state)
        return f"{node}: " + ", ".join(
            [*done, "started webapp" if started else "webapp already running"]
        )
    engine = str(state.get("engine", "hapair"))
    names = services.services_of(plan, node, engine)
    changed = {}
    for svc in names:
        how = services.ensure(plan, paths, table, node, svc, delay)
        if how is not None:
            changed[svc] = how
    try:
        for svc in names:
            if svc in changed:
                services.settle(table, paths, node, svc)
            else:
                services.refresh(table, paths, node, svc)
    finally:  # a new supervisor is recorded even when its service fails to start
        save_state(plan.name, state)
    for how in ("started", "restarted"):
        which = [s for s, h in changed.items() if h == how]
        if which:
            done.append(f"{how} {' and '.join(which)}")
    if role is Role.LB and engine == "static":
        services.place_static(plan, node)
    if not changed and names:
        done.append(f"{' and '.join(names)} already running")
    return f"{node}: " + ", ".join(done)
