"""The data-plane benchmark: does the agent cost the data path anything?

In one hapair lab, rounds alternate between (a) wrk from the client through VIP1 with both
agents running and (b) the same with both agents gone (SIGSTOP+SIGKILL together, so nothing
moves: the VIPs stay where they are and HAProxy, with the same configuration, serves alone).
A run straight to web1 (from lb1's namespace, since the web security group only admits the
LBs) shows what HAProxy adds on top of the backend.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from hapair.bench.labs import bench_name, build, is_steady, wait_until
from hapair.bench.wrk import WrkResult, run_wrk
from hapair.plan import Plan
from hapair.platforms.lab.platform import LabPlatform


def _kill_agents(plan: Plan, lab: LabPlatform) -> None:
    """Stop both agents for good (their supervisors too), so the round runs without them."""
    for lb in plan.lbs:
        lab.kill(plan.name, lb.name, "agent", keep_down=True)


def bench_dataplane(
    rounds: int = 3,
    duration: int = 10,
    connections: int = 20,
    name: str | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run the rounds (see the module docstring); returns every result and the overhead."""
    name = name or bench_name()
    say(f"building lab {name}")
    plan, lab = build(name, "hapair")
    host = plan.spec.cluster.domain
    vip = f"http://{plan.vips[0].address}:{plan.spec.haproxy.http_port}/"
    web1 = plan.node("web1")
    results: dict[str, list[WrkResult]] = {"vip_agents": [], "vip_bare": [], "web1_direct": []}
    try:
        for i in range(rounds):
            wait_until("steady state", lambda: is_steady(plan, lab), 30)
            r = run_wrk(plan.node("inet").namespace, vip, host, duration, connections)
            results["vip_agents"].append(r)
            say(f"round {i + 1}: VIP1, agents running: {r.rps:,.0f} req/s")
            _kill_agents(plan, lab)
            r = run_wrk(plan.node("inet").namespace, vip, host, duration, connections)
            results["vip_bare"].append(r)
            say(f"round {i + 1}: VIP1, no agents:      {r.rps:,.0f} req/s")
            for lb in plan.lbs:
                lab.revive(name, lb.name)
            url = f"http://{web1.address}:{plan.spec.web.port}/"
            r = run_wrk(plan.node("lb1").namespace, url, host, duration, connections)
            results["web1_direct"].append(r)
            say(f"round {i + 1}: web1 directly:       {r.rps:,.0f} req/s")
    finally:
        say(f"tearing down {name}")
        LabPlatform("hapair").down(name)
    with_agents = statistics.mean(r.rps for r in results["vip_agents"])
    bare = statistics.mean(r.rps for r in results["vip_bare"])
    return {
        "rounds": rounds,
        "duration_s": duration,
        "connections": connections,
        "results": {k: [asdict(r) for r in v] for k, v in results.items()},
        "agent_overhead_pct": round((bare - with_agents) / bare * 100, 2),
    }
