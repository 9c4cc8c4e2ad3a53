"""``hapair status`` for the lab: read live from the kernel, HAProxy, the supervisors and agents.

A floating IP's holders are read from the kernel, which keeps an address on a node that died:
:func:`vip_view` says who *serves* it (link up, HAProxy running), which holders are stale, and
calls it split brain only when two holders are alive (their agents running).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hapair.errors import OperationError
from hapair.haproxy_stats import show_stat
from hapair.plan import Plan, Role
from hapair.platforms.lab import network, services, webpool
from hapair.platforms.lab.paths import LabPaths
from hapair.platforms.lab.platform import LabPlatform


@dataclass(frozen=True)
class LbHealth:
    """What status knows about an LB: its link, and whether its services run (``agent`` is
    None when the lab runs no hapair agent)."""

    link_up: bool
    haproxy: bool
    agent: bool | None

    @property
    def serves(self) -> bool:
        """It can answer on an address it holds."""
        return self.link_up and self.haproxy

    @property
    def alive(self) -> bool:
        """Alive as its peer would judge it: serving, and its agent (if any) running."""
        return self.serves and self.agent is not False

    def problem(self) -> str:
        """What is wrong with it, as the end of "<node> ..." (empty when nothing is)."""
        if not self.haproxy and not self.agent:
            return "is down"
        if not self.link_up:
            return "is cut off (link down)"
        if not self.haproxy:
            return "has no HAProxy running"
        if self.agent is False:
            return "has no agent running"
        return ""


def _names(nodes: Sequence[str]) -> str:
    return " and ".join(nodes)


def vip_view(
    name: str,
    address: str,
    home: str,
    holders: Sequence[str],
    lbs: Mapping[str, LbHealth],
    wanted: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Who serves a VIP and how to say it (pure).

    :param holders: the LBs whose interface carries the address (from the kernel).
    :param wanted: each agent's ``wanted`` VIPs, when it answered (tells a hand-over from a
        split brain: the node letting go no longer wants it).
    :returns: ``served_by``, ``state`` (``home``, ``away``, ``handover``, ``split``,
        ``unserved``), ``stale`` (holders that cannot serve it, with why) and ``summary``.
    """
    wanted = wanted or {}
    served = [h for h in holders if lbs[h].serves]
    live = [h for h in holders if lbs[h].alive]
    notes = []
    for h in holders:
        problem = lbs[h].problem()
        if h not in served:
            notes.append(f"{h} {problem} and its interface still carries the address (stale)")
        elif problem:
            notes.append(f"{h} {problem}")
    head = f"{name} {address} (home {home}): "
    if len(live) >= 2:
        leaving = [h for h in live if h in wanted and name not in wanted[h]]
        if leaving and len(leaving) < len(live):
            taker = [h for h in live if h not in leaving]
            state = "handover"
            what = f"moving from {_names(leaving)} to {_names(taker)} (make-before-break)"
        else:
            state = "split"
            what = f"SPLIT BRAIN: held by {_names(live)}, " + (
                "both alive" if len(live) == 2 else "all alive"
            )
    elif served:
        state = "home" if home in served else "away"
        what = f"served by {_names(served)}"
    else:
        state = "unserved"
        what = "NOT SERVED" + ("" if holders else ": no node holds it")
    return {
        "served_by": served,
        "state": state,
        "stale": [h for h in holders if h not in served],
        "summary": "; ".join([head + what, *notes]),
    }


def lab_status(plan: Plan, state: dict[str, Any]) -> dict[str, Any]:
    """The lab as it is right now (owners read from the kernel, backends from HAProxy,
    services from their supervisors)."""
    paths = LabPaths(plan.name)
    table: dict[str, Any] = state.get("procs", {})
    engine = str(state.get("engine"))
    ports = network.ports_up(plan)
    nodes = []
    running: dict[tuple[str, str], bool] = {}
    webs = webpool.web_views(paths, state)
    for n in plan.nodes:
        processes = {}
        if n.role is Role.WEB:  # served by the lab's web app pool, not a process of its own
            web = webs.get(n.name) or webpool.down_view(paths, state, n.name)
            processes["webapp"] = web.to_json()
        for what in services.services_of(plan, n.name, engine):
            if n.role is Role.WEB:
                continue
            svc = services.recorded(table, n.name, what)
            now = svc.running(paths)
            running[n.name, what] = now is not None
            processes[what] = {
                "running": now is not None,
                "pid": now.proc.pid if now else None,
                "supervised": svc.supervised(),
                "restarts": now.restarts if now else None,
            }
        entry: dict[str, Any] = {
            "name": n.name,
            "role": str(n.role),
            "address": n.address,
            "namespace": n.namespace,
            "processes": processes,
        }
        if n.role is not Role.INET:
            entry["link_up"] = ports.get(n.name, False)
        if n.secondary:
            entry["secondary"] = n.secondary
        nodes.append(entry)
    agents = {}
    if engine == "hapair":
        from hapair.agent.client import agent_status

        for lb in plan.lbs:
            try:
                agents[lb.name] = agent_status(str(paths.agent_sock(lb.name)))
            except OperationError as exc:
                agents[lb.name] = {"error": str(exc)}
    health = {
        lb.name: LbHealth(
            link_up=ports.get(lb.name, False),
            haproxy=running[lb.name, "haproxy"],
            agent=running[lb.name, "agent"] if engine == "hapair" else None,
        )
        for lb in plan.lbs
    }
    wanted = {lb: list(a.get("wanted", [])) for lb, a in agents.items() if "error" not in a}
    owners = LabPlatform.vip_owners(plan)
    vips = []
    for v in plan.vips:
        view = vip_view(v.name, v.address, v.home, owners[v.name], health, wanted)
        vips.append(
            {
                "name": v.name,
                "address": v.address,
                "home": v.home,
                "owner": ",".join(view["served_by"]) or None,
                "holders": owners[v.name],
                **view,
            }
        )
    backends = []
    for lb in plan.lbs:
        try:
            servers = show_stat(str(paths.haproxy_sock(lb.name)), timeout=1.0)
        except OperationError as exc:
            backends.append({"lb": lb.name, "error": str(exc)})
            continue
        backends += [
            {"lb": lb.name, "server": s.server, "status": s.status, "check": s.check}
            for s in servers
        ]
    return {
        "name": plan.name,
        "platform": "lab",
        "engine": state.get("engine"),
        "domain": plan.spec.cluster.domain,
        "dns": plan.spec.network.dns,
        "nodes": nodes,
        "vips": vips,
        "backends": backends,
        "agents": agents,
        "web_size": len([n for n in plan.nodes if n.role is Role.WEB]),
    }
