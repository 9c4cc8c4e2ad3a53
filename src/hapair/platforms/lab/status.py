"""``hapair status`` for the lab: read live from the kernel, HAProxy and the agents."""

from __future__ import annotations

from typing import Any

from hapair.errors import OperationError
from hapair.haproxy_stats import show_stat
from hapair.plan import Plan, Role
from hapair.platforms.lab import procs
from hapair.platforms.lab.paths import LabPaths
from hapair.platforms.lab.platform import LabPlatform
from hapair.platforms.lab.procs import Proc


def lab_status(plan: Plan, state: dict[str, Any]) -> dict[str, Any]:
    """The lab as it is right now (owners read from the kernel, backends from HAProxy)."""
    paths = LabPaths(plan.name)
    table: dict[str, Any] = state.get("procs", {})
    nodes = []
    for n in plan.nodes:
        processes = {}
        for key, p in table.items():
            node, what = key.split("/", 1)
            if node == n.name:
                processes[what] = procs.alive(Proc(p["pid"], p["start"]))
        entry: dict[str, Any] = {
            "name": n.name,
            "role": str(n.role),
            "address": n.address,
            "namespace": n.namespace,
            "processes": processes,
        }
        if n.secondary:
            entry["secondary"] = n.secondary
        nodes.append(entry)
    owners = LabPlatform.vip_owners(plan)
    vips = [
        {
            "name": v.name,
            "address": v.address,
            "home": v.home,
            "owner": ",".join(owners[v.name]) or None,
            "holders": owners[v.name],
        }
        for v in plan.vips
    ]
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
    agents = {}
    if state.get("engine") == "hapair":
        from hapair.agent.client import agent_status

        for lb in plan.lbs:
            try:
                agents[lb.name] = agent_status(str(paths.agent_sock(lb.name)))
            except OperationError as exc:
                agents[lb.name] = {"error": str(exc)}
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
