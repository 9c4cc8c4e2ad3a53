"""The data-plane benchmark across LB counts (``hapair bench dataplane --lbs 2,3,4``, issue 13).

For each N: build the lab (N = 2: the pair as today, 2 VIPs; N > 2: N LBs, 2 VIPs each,
etcd), wait until balanced, then one bounded wrk run from the client through **every VIP at
once** (one wrk thread per VIP, each thread's connections pinned to its VIP by a Lua
``setup``). Per LB, HAProxy's own counters before and after (``show info``: ``CumReq``, and
the worker's CPU time from ``/proc``) give its requests/s and its requests per CPU-second: on
a host whose cores everything shares (client, LBs, web nodes, etcd), the total cannot grow
with N, but the cost of a request on an LB can be measured.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hapair.bench.labs import bench_name
from hapair.bench.nlabs import build_n, wait_balanced
from hapair.bench.wrk import run_wrk
from hapair.errors import OperationError
from hapair.haproxy_runtime import worker_pid
from hapair.haproxy_stats import command
from hapair.plan import Plan
from hapair.platforms.lab.paths import LabPaths
from hapair.platforms.lab.platform import LabPlatform


def wrk_script(addresses: Sequence[str], port: int) -> str:
    """A wrk Lua script that gives thread *i* the VIP ``addresses[i mod M]`` (pure)."""
    if not addresses:
        raise ValueError("no address to load")
    quoted = ", ".join(f'"{a}"' for a in addresses)
    return (
        f"local vips = {{{quoted}}}\n"
        "local n = 0\n"
        "function setup(thread)\n"
        f'  thread.addr = wrk.lookup(vips[(n % #vips) + 1], "{port}")[1]\n'
        "  n = n + 1\n"
        "end\n"
    )


@dataclass(frozen=True)
class LbSnapshot:
    """One HAProxy's counters at one moment."""

    requests: int
    cpu_s: float


@dataclass(frozen=True)
class LbFigures:
    """One LB over a wrk run: requests/s it served and HAProxy CPU seconds per second."""

    lb: str
    rps: float
    cpu: float

    @property
    def per_cpu_s(self) -> float | None:
        """Requests per HAProxy CPU-second (None when it used no measurable CPU)."""
        return self.rps / self.cpu if self.cpu > 0 else None


def lb_figures(lb: str, before: LbSnapshot, after: LbSnapshot, seconds: float) -> LbFigures:
    """The rates between two snapshots (pure)."""
    if seconds <= 0:
        raise ValueError("the interval must be positive")
    return LbFigures(
        lb,
        round((after.requests - before.requests) / seconds, 1),
        round((after.cpu_s - before.cpu_s) / seconds, 4),
    )


def parse_cum_req(info: str) -> int:
    """``CumReq`` from a ``show info`` answer (pure).

    :raises OperationError: it has none.
    """
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "CumReq" and value.strip().isdigit():
            return int(value)
    raise OperationError("HAProxy's `show info` has no CumReq")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def snapshot(plan: Plan) -> dict[str, LbSnapshot]:
    """Every LB's HAProxy counters now."""
    paths = LabPaths(plan.name)
    out = {}
    for lb in plan.lbs:
        sock = str(paths.haproxy_sock(lb.name))
        out[lb.name] = LbSnapshot(
            parse_cum_req(command(sock, "show info")), _cpu_s(worker_pid(sock))
        )
    return out


def run_one(
    lbs: int, duration: int, connections: int, name: str, say: Callable[[str], None]
) -> dict[str, Any]:
    """One lab of ``lbs`` LBs, one wrk run through every VIP; torn down afterwards."""
    say(f"building lab {name} ({lbs} LBs)")
    plan, lab = build_n(name, lbs, vips_per_lb=1 if lbs == 2 else 2)
    try:
        wait_balanced(plan, lab, 60)
        port = plan.spec.haproxy.http_port
        vips = [v.address for v in plan.vips]
        with tempfile.TemporaryDirectory(prefix="hapair-wrk-") as tmp:
            script = Path(tmp) / "vips.lua"
            script.write_text(wrk_script(vips, port))
            script.chmod(0o644)
            before, t0 = snapshot(plan), time.monotonic()
            r = run_wrk(
                plan.node("inet").namespace,
                f"http://{vips[0]}:{port}/",
                plan.spec.cluster.domain,
                duration,
                max(connections, len(vips)),
                threads=len(vips),
                script=str(script),
            )
            after, seconds = snapshot(plan), time.monotonic() - t0
    finally:
        say(f"tearing down {name}")
        LabPlatform("hapair").down(name)
    per_lb = [lb_figures(lb, before[lb], after[lb], seconds) for lb in before]
    say(
        f"{lbs} LBs: {r.rps:,.0f} req/s in all, "
        + ", ".join(f"{f.lb} {f.rps:,.0f}" for f in per_lb)
    )
    return {
        "lbs": lbs,
        "vips": len(vips),
        "coordinator": plan.spec.ha.coordinator,
        "wrk": asdict(r),
        "per_lb": [asdict(f) | {"per_cpu_s": f.per_cpu_s} for f in per_lb],
    }


def lab_name(base: str, lbs: int, several: bool) -> str:
    """One lab name per LB count (the spec's 8 characters at most): ``base`` cut, + N (pure)."""
    return base[: 8 - len(str(lbs))] + str(lbs) if several else base


def bench_dataplane_n(
    counts: Sequence[int],
    duration: int = 5,
    connections: int = 20,
    name: str | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """One lab per LB count, one after the other (see the module docstring)."""
    base = name or bench_name()
    runs = [
        run_one(n, duration, connections, lab_name(base, n, len(counts) > 1), say) for n in counts
    ]
    return {"duration_s": duration, "connections": connections, "runs": runs}


def table(report: dict[str, Any]) -> str:
    """The markdown table of a report (pure)."""
    out = [
        "| LBs | VIPs | total req/s | per LB req/s (mean; min-max) | HAProxy CPU per LB "
        "(cores) | req per HAProxy CPU-s | wrk p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        lbs = run["per_lb"]
        rps = [f["rps"] for f in lbs]
        cpu = [f["cpu"] for f in lbs]
        eff = [f["per_cpu_s"] for f in lbs if f["per_cpu_s"] is not None]
        mean_eff = f"{sum(eff) / len(eff):,.0f}" if eff else "-"
        out.append(
            f"| {run['lbs']} | {run['vips']} | {run['wrk']['rps']:,.0f} | "
            f"{sum(rps) / len(rps):,.0f}; {min(rps):,.0f}-{max(rps):,.0f} | "
            f"{sum(cpu) / len(cpu):.2f} | {mean_eff} | {run['wrk']['p99_ms']:.2f} | "
            f"{run['wrk']['errors']} |"
        )
    return "\n".join(out) + "\n"
