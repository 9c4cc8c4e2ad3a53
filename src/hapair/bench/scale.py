"""The scale benchmark: ``up`` time and memory of a lab with 3, 50 and 200 web nodes, and the
time to render haproxy.cfg and check it with ``haproxy -c``."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hapair.bench.labs import bench_name
from hapair.plan import Plan, make_plan
from hapair.platforms.lab import network, procs
from hapair.platforms.lab.platform import LabPlatform
from hapair.render.haproxy import check_haproxy, render_haproxy
from hapair.spec import parse

SIZES = (3, 50, 200)


def memory_kib(pids: Sequence[int]) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in KiB over ``pids`` (PSS splits shared pages fairly)."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key == "Rss":
                    rss += int(rest.split()[0])
                elif key == "Pss":
                    pss += int(rest.split()[0])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return rss, pss


def lab_pids(name: str) -> list[int]:
    """Every process in lab ``name``'s namespaces."""
    return [pid for ns in network.lab_namespaces(name) for pid in procs.ns_pids(ns)]


def render_time(plan: Plan, repeat: int = 3) -> tuple[float, float]:
    """Best-of-``repeat`` seconds to render lb1's haproxy.cfg, and to check it."""
    best_render = best_check = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        cfg = render_haproxy(plan, "lb1", stats_socket="/tmp/hapair-scale.sock")
        t1 = time.perf_counter()
        check_haproxy(cfg)
        t2 = time.perf_counter()
        best_render, best_check = min(best_render, t1 - t0), min(best_check, t2 - t1)
    return best_render, best_check


def bench_scale(
    sizes: Sequence[int] = SIZES, say: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """For each size: build a lab (timed), measure its memory, time render + check, tear down."""
    rows = []
    for size in sizes:
        name = bench_name()
        plan = make_plan(parse({"cluster": {"name": name}, "web": {"size": size}}))
        lab = LabPlatform("hapair")
        try:
            say(f"{size} web nodes: up {name}")
            t0 = time.monotonic()
            lab.up(plan)
            up_s = time.monotonic() - t0
            time.sleep(2)  # let every process finish starting
            pids = lab_pids(name)
            rss, pss = memory_kib(pids)
            r, c = render_time(plan)
            t1 = time.monotonic()
        finally:
            lab.down(name)
        down_s = time.monotonic() - t1
        row = {
            "web_nodes": size,
            "namespaces": len(plan.namespaces),
            "processes": len(pids),
            "up_s": round(up_s, 2),
            "down_s": round(down_s, 2),
            "rss_mib": round(rss / 1024, 1),
            "pss_mib": round(pss / 1024, 1),
            "render_ms": round(r * 1000, 2),
            "haproxy_check_ms": round(c * 1000, 1),
        }
        say(f"{size} web nodes: {row}")
        rows.append(row)
    return {"rows": rows}
