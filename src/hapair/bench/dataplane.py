"""The data-plane benchmark: does the agent cost the data path anything?

In one hapair lab, each round runs wrk from the client through VIP1 twice: (a) with both
agents running and (b) with both agents frozen (SIGSTOP together, so nothing moves and they use
no CPU at all: the VIPs stay where they are and HAProxy, the same process with the same
configuration, serves alone: "bare HAProxy"). The order alternates from round to round (a b,
b a, a b, ...) so that a drift of the machine over the run (another tenant, a warming cache)
does not land on one side. After (b) the agents are let go (SIGCONT): each notices that it
did not run, judges nothing until its peer is heard again, and the round waits until both
VIPs are home and served before the next run. The agents' CPU time during each (a) run is
read from ``/proc``. A final run straight to web1 (from lb1's namespace, since the web
security group only admits the LBs) shows what HAProxy adds on top of the backend.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

from hapair.bench.labs import bench_name, build, is_steady, wait_until
from hapair.bench.wrk import WrkResult, run_wrk
from hapair.errors import OperationError
from hapair.plan import Plan
from hapair.platforms.lab.platform import LabPlatform

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _agent_pids(plan: Plan, lab: LabPlatform) -> list[int]:
    pids = []
    for lb in plan.lbs:
        proc = lab.service(plan.name, lb.name, "agent")
        if proc is None:
            raise OperationError(f"the agent of {lb.name} is not running")
        pids.append(proc.pid)
    return pids


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    """Both agents stopped for the block, let go after it (also on error or Ctrl-C)."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


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
    client = plan.node("inet").namespace
    results: dict[str, list[WrkResult]] = {"vip_agents": [], "vip_bare": [], "web1_direct": []}
    agent_cpu: list[float] = []  # both agents together, % of one core, per (a) run
    order: list[str] = []
    try:
        for i in range(rounds):
            for kind in ("agents", "bare") if i % 2 == 0 else ("bare", "agents"):
                wait_until("steady state", lambda: is_steady(plan, lab), 30)
                pids = _agent_pids(plan, lab)
                if kind == "agents":
                    before, t0 = sum(_cpu_s(p) for p in pids), time.monotonic()
                    r = run_wrk(client, vip, host, duration, connections)
                    used = sum(_cpu_s(p) for p in pids) - before
                    agent_cpu.append(used / (time.monotonic() - t0) * 100)
                    results["vip_agents"].append(r)
                    say(
                        f"round {i + 1}: VIP1, agents running: {r.rps:,.0f} req/s "
                        f"(agents {agent_cpu[-1]:.1f} % of a core)"
                    )
                else:
                    with frozen(pids):
                        r = run_wrk(client, vip, host, duration, connections)
                    results["vip_bare"].append(r)
                    say(f"round {i + 1}: VIP1, agents frozen:  {r.rps:,.0f} req/s")
                order.append(kind)
        wait_until("steady state", lambda: is_steady(plan, lab), 30)
        url = f"http://{web1.address}:{plan.spec.web.port}/"
        r = run_wrk(plan.node("lb1").namespace, url, host, duration, connections)
        results["web1_direct"].append(r)
        say(f"web1 directly: {r.rps:,.0f} req/s")
    finally:
        say(f"tearing down {name}")
        LabPlatform("hapair").down(name)
    with_agents = statistics.mean(r.rps for r in results["vip_agents"])
    bare = statistics.mean(r.rps for r in results["vip_bare"])
    pairs = list(zip(results["vip_agents"], results["vip_bare"], strict=True))
    per_round = [round((b.rps - a.rps) / b.rps * 100, 2) for a, b in pairs]
    return {
        "rounds": rounds,
        "duration_s": duration,
        "connections": connections,
        "order": order,
        "results": {k: [asdict(r) for r in v] for k, v in results.items()},
        "agent_cpu_pct_of_core": [round(c, 2) for c in agent_cpu],
        "overhead_per_round_pct": per_round,
        "agent_overhead_pct": round((bare - with_agents) / bare * 100, 2),
    }
