"""The false-failover check: an idle hapair lab while every core is saturated for a bounded time,
counting VIP moves (``hapair_vip_moves_total``) and checking the VIPs never left home."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from hapair.bench.engines import HapairAgents
from hapair.bench.labs import HOME, bench_name, build
from hapair.platforms.lab.platform import LabPlatform

#: A busy loop that ends by itself after argv[1] seconds.
BUSY = (
    "import sys,time\nend=time.monotonic()+float(sys.argv[1])\nwhile time.monotonic()<end: pass\n"
)


def busy_loops(n: int, seconds: float) -> list[subprocess.Popen[bytes]]:
    """``n`` CPU-bound processes that stop by themselves after ``seconds``."""
    return [subprocess.Popen([sys.executable, "-c", BUSY, str(seconds)]) for _ in range(n)]


def bench_stress(
    seconds: float,
    workers: int | None = None,
    name: str | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Saturate every core for ``seconds`` while the lab idles; count moves and misplacements."""
    workers = workers or os.cpu_count() or 2
    name = name or bench_name()
    say(f"building lab {name}")
    plan, lab = build(name, "hapair")
    agents = HapairAgents(plan)
    loops: list[subprocess.Popen[bytes]] = []
    misplaced = checks = 0
    try:
        before = agents.moves()
        say(f"{workers} busy loops for {seconds:.0f} s")
        loops = busy_loops(workers, seconds)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            checks += 1
            if lab.vip_owners(plan) != HOME:
                misplaced += 1
            time.sleep(1.0)
        for p in loops:
            p.wait(timeout=30)
        moves = agents.moves() - before
        load = os.getloadavg()
    finally:
        for p in loops:
            if p.poll() is None:
                p.kill()
                p.wait()
        LabPlatform("hapair").down(name)
    return {
        "seconds": seconds,
        "workers": workers,
        "cpus": os.cpu_count(),
        "vip_moves": moves,
        "placement_checks": checks,
        "misplaced_checks": misplaced,
        "loadavg_1_5_15": load,
    }
