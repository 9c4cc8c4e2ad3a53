"""The dashboard-cost benchmark's pure parts: its schedule, medians, table and arguments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hapair.bench.dashcost import schedule, summarize, table

HAPAIR = str(Path(sys.executable).parent / "hapair")


def test_schedule_alternates_the_order_of_states() -> None:
    assert schedule(3, [1, 8]) == [0, 1, 8, 8, 1, 0, 0, 1, 8]


def _w(pages: int, cpu1: float, cpu2: float, rss: float) -> dict[str, object]:
    return {
        "pages": pages,
        "cpu_pct": {"lb1": cpu1, "lb2": cpu2},
        "rss_mib": {"lb1": rss, "lb2": 40.0},
    }


def test_medians_per_state_and_the_table() -> None:
    windows = [_w(0, 2.0, 1.0, 48.0), _w(1, 3.0, 1.5, 48.5), _w(1, 2.5, 1.1, 48.4)]
    windows += [_w(0, 2.2, 1.2, 48.1), _w(0, 9.0, 1.1, 48.2)]
    med = summarize(windows)
    assert med["0"]["lb1"] == {"cpu_pct": 2.2, "rss_mib": 48.1}  # one outlier window: no matter
    assert med["1"]["lb1"] == {"cpu_pct": 2.75, "rss_mib": 48.45}
    assert med["1"]["lb2"]["cpu_pct"] == 1.3
    out = table({"rounds": 3, "window_s": 20.0, "cpus": 2, "medians": med})
    lines = out.splitlines()
    assert lines[0].startswith("median of 3 windows of 20 s per state (2 CPUs)")
    assert "lb1 serving the pages" in lines[1] and "lb2 its peer" in lines[1]
    assert lines[3].split()[0] == "1" and "(+0.55, +0.35)" in lines[3]


def test_page_counts_are_checked_before_any_lab() -> None:
    for bad, says in (("1,x", "numbers separated by commas"), ("9", "from 1 to 8")):
        proc = subprocess.run(
            [HAPAIR, "bench", "dashboard", "--pages", bad], capture_output=True, text=True
        )
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
