"""What the dashboard costs the agents: CPU and memory with no page, one page and N pages open.

One hapair lab and its forwarder (``hapair open``, :mod:`hapair.platforms.lab.forward`); the
dashboard comes through VIP1, so lb1's agent serves every page and lb2's agent answers lb1's
``/haproxy.json`` once a second. Each round measures one window per state: no page open, then
1, then N headless Chromium pages (one Chromium process each, with its own profile: a browser
opens at most 6 connections to one origin, so tabs of one process could not hold N streams),
in reverse order every other round so that a drift of the machine does not land on one state.
A window starts once the forwarder holds at least that many connections to the dashboard (the
pages' event streams are open) and a settling time has passed; it reads both agents' CPU time
from ``/proc/<pid>/stat`` at its ends and their resident memory from ``/proc/<pid>/status``
every second. The report has every window and the median per state (:func:`summarize`).
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, Final

from hapair.bench.dataplane import _agent_pids, _cpu_s
from hapair.bench.labs import bench_name, build, is_steady, wait_until
from hapair.platforms.lab import forward
from hapair.platforms.lab.platform import LabPlatform

CHROMIUM: Final = "/usr/bin/chromium"
HEADLESS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1600",
)
"""Debian's Chromium, headless, with nothing of its own going out (only the page's origin)."""
SETTLE_S: Final = 3.0
"""After the pages' streams are open (or closed), before a window starts."""
LBS: Final = ("lb1", "lb2")
ROLES: Final = {"lb1": "serving the pages", "lb2": "its peer"}


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (``VmRSS`` of ``/proc/<pid>/status``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for pid {pid}")


def schedule(rounds: int, counts: Sequence[int]) -> list[int]:
    """Pages open in each window: every state per round, reversed every other round (pure)."""
    states = [0, *counts]
    out: list[int] = []
    for i in range(rounds):
        out += states if i % 2 == 0 else states[::-1]
    return out


def summarize(windows: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Median CPU (% of one core) and RSS (MiB) per state and LB over the windows (pure):
    ``{"<pages>": {"lb1": {"cpu_pct": .., "rss_mib": ..}, ...}, ...}``."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for pages in sorted({w["pages"] for w in windows}):
        mine = [w for w in windows if w["pages"] == pages]
        out[str(pages)] = {
            lb: {
                "cpu_pct": round(statistics.median(w["cpu_pct"][lb] for w in mine), 2),
                "rss_mib": round(statistics.median(w["rss_mib"][lb] for w in mine), 2),
            }
            for lb in LBS
        }
    return out


def table(report: dict[str, Any]) -> str:
    """The medians as a plain-text table, each state against no page (pure)."""
    med = report["medians"]
    base = med["0"]
    lines = [
        f"median of {report['rounds']} windows of {report['window_s']:g} s per state "
        f"({report['cpus']} CPUs); agent CPU in % of one core, RSS in MiB",
        f"  {'pages open':<11}" + "".join(f"{lb + ' ' + ROLES[lb]:>36}" for lb in LBS),
    ]
    for pages, row in med.items():
        cells = []
        for lb in LBS:
            cpu, rss = row[lb]["cpu_pct"], row[lb]["rss_mib"]
            dcpu, drss = cpu - base[lb]["cpu_pct"], rss - base[lb]["rss_mib"]
            delta = "" if pages == "0" else f" ({dcpu:+.2f}, {drss:+.2f})"
            cells.append(f"{cpu:.2f} %  {rss:.1f} MiB{delta}".rjust(36))
        lines.append(f"  {pages:<11}" + "".join(cells))
    return "\n".join(lines) + "\n"


def _dashboard_connections(port: int) -> int:
    """Connections established to the forwarder's dashboard port on loopback."""
    out = subprocess.run(
        ["ss", "-tnH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def _connected(port: int, n: int) -> bool:
    """Whether exactly ``n`` connections to the dashboard are open (``n`` pages' streams, none
    left over from the window before)."""
    return _dashboard_connections(port) == n


@contextmanager
def pages(url: str, n: int) -> Iterator[None]:
    """``n`` headless Chromium processes showing ``url``, for the block; each in its own
    session and profile, all killed (by process group) and their profiles removed after."""
    procs: list[subprocess.Popen[bytes]] = []
    profiles: list[str] = []
    try:
        for _ in range(n):
            profile = tempfile.mkdtemp(prefix="hapair-bench-chromium-")
            profiles.append(profile)
            argv = [CHROMIUM, *HEADLESS, f"--user-data-dir={profile}", url]
            procs.append(
                subprocess.Popen(
                    argv,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        yield
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for profile in profiles:
            shutil.rmtree(profile, ignore_errors=True)


def _window(pids: dict[str, int], seconds: float) -> dict[str, Any]:
    """Both agents' CPU (% of one core) and median RSS over ``seconds``."""
    rss: dict[str, list[float]] = {lb: [] for lb in pids}
    cpu0 = {lb: _cpu_s(pid) for lb, pid in pids.items()}
    t0 = time.monotonic()
    while (left := seconds - (time.monotonic() - t0)) > 0:
        for lb, pid in pids.items():
            rss[lb].append(rss_mib(pid))
        time.sleep(min(1.0, left))
    elapsed = time.monotonic() - t0
    return {
        "cpu_pct": {
            lb: round((_cpu_s(pid) - cpu0[lb]) / elapsed * 100, 3) for lb, pid in pids.items()
        },
        "rss_mib": {lb: round(statistics.median(v), 2) for lb, v in rss.items()},
        "seconds": round(elapsed, 2),
    }


def bench_dashboard(
    rounds: int = 4,
    window_s: float = 20.0,
    counts: Sequence[int] = (1, 8),
    name: str | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Measure the windows (see the module docstring); returns each window and the medians."""
    name = name or bench_name()
    say(f"building lab {name}")
    plan, lab = build(name, "hapair")
    windows: list[dict[str, Any]] = []
    try:
        wait_until("steady state", lambda: is_steady(plan, lab), 30)
        rec = forward.start(name)
        port = int(rec["ports"]["dashboard"])
        url = f"http://{forward.LISTEN}:{port}/"
        say(f"dashboard at {url}")
        agents = _agent_pids(plan, lab)
        pids = dict(zip(LBS, agents, strict=True))
        plan_ = schedule(rounds, counts)
        for i, n in enumerate(plan_):
            with pages(url, n):
                wait_until(f"{n} pages connected", partial(_connected, port, n), 30)
                time.sleep(SETTLE_S)
                w = {"pages": n, **_window(pids, window_s)}
                w["connections"] = _dashboard_connections(port)
            windows.append(w)
            say(
                f"window {i + 1}/{len(plan_)}: {n} pages: "
                + ", ".join(
                    f"{lb} {w['cpu_pct'][lb]:.2f} % {w['rss_mib'][lb]:.1f} MiB" for lb in LBS
                )
            )
    finally:
        say(f"tearing down {name}")
        forward.stop(name)
        LabPlatform("hapair").down(name)
    return {
        "rounds": rounds,
        "window_s": window_s,
        "settle_s": SETTLE_S,
        "counts": [0, *counts],
        "cpus": os.cpu_count(),
        "served_by": "lb1 (VIP1)",
        "windows": windows,
        "medians": summarize(windows),
    }
