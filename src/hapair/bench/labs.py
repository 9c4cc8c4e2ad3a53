"""Labs for benchmarks: build one for an engine, look at it from the client, wait for it."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from hapair.errors import OperationError
from hapair.plan import Plan, make_plan
from hapair.platforms.lab.paths import LabPaths
from hapair.platforms.lab.platform import Engine, LabPlatform, client_run
from hapair.platforms.lab.state import load_state
from hapair.spec import parse

HOME = {"vip1": ["lb1"], "vip2": ["lb2"]}


def bench_name() -> str:
    """A unique lab name (``hp`` + 6 hex, swept by ``make clean-lab``)."""
    return "hp" + secrets.token_hex(3)


def build(
    name: str,
    engine: Engine,
    web_size: int = 3,
    fabric: str = "l2",
    eip_propagation_ms: int | None = None,
    eip_api_latency_ms: int | None = None,
    ha: dict[str, int] | None = None,
) -> tuple[Plan, LabPlatform]:
    """Build a lab (``fabric``: the spec's ``lab.fabric``, with its propagation delay and API
    latency when given; ``ha``: ``[ha]`` timings); on failure nothing is left behind."""
    lab_spec: dict[str, object] = {"fabric": fabric}
    if eip_propagation_ms is not None:
        lab_spec["eip_propagation_ms"] = eip_propagation_ms
    if eip_api_latency_ms is not None:
        lab_spec["eip_api_latency_ms"] = eip_api_latency_ms
    doc: dict[str, object] = {"cluster": {"name": name}, "web": {"size": web_size}}
    plan = make_plan(parse({**doc, "lab": lab_spec, "ha": dict(ha or {})}))
    lab = LabPlatform(engine)
    try:
        lab.up(plan)
    except BaseException:
        lab.down(name)
        raise
    return plan, lab


def served_by(plan: Plan, address: str, timeout: float = 1.0) -> str | None:
    """Which LB served ``GET /`` on ``address`` from the client host (None: no 200)."""
    argv = ["curl", "-sS", "--max-time", str(timeout), "-H", f"Host: {plan.spec.cluster.domain}"]
    argv += ["-o", "/dev/null", "-D", "-", "-w", "%{http_code}", f"http://{address}/"]
    proc = client_run(plan, argv, timeout + 5)
    if proc.returncode != 0 or not proc.stdout.endswith("200"):
        return None
    for line in proc.stdout.splitlines():
        k, _, v = line.partition(":")
        if k.lower() == "x-lb":
            return v.strip()
    return None


def is_steady(plan: Plan, lab: LabPlatform) -> bool:
    """VIP1 only on lb1, VIP2 only on lb2, and each answers through its home LB."""
    if lab.vip_owners(plan) != HOME:
        return False
    return served_by(plan, plan.vips[0].address) == "lb1" and (
        served_by(plan, plan.vips[1].address) == "lb2"
    )


def wait_until(what: str, pred: Callable[[], bool], timeout: float, step: float = 0.2) -> float:
    """Poll ``pred`` until true; returns the seconds it took.

    :raises OperationError: not true within ``timeout``.
    """
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(step)
    raise OperationError(f"timed out after {timeout:.0f} s waiting for {what}")


def haproxy_pid(name: str, lb: str) -> int:
    """PID of the HAProxy master the lab started on ``lb`` (from the lab's state)."""
    state = load_state(name) or {}
    entry = state.get("procs", {}).get(f"{lb}/haproxy")
    if not entry:
        raise OperationError(f"no HAProxy recorded for {lb} in lab {name}")
    return int(entry["pid"])


def keep_logs(name: str, say: Callable[[str], None]) -> None:
    """Before a benchmark's lab is torn down: copy its logs to ``$HAPAIR_BENCH_LOGS/<name>``
    when that variable is set (the agents' own account of a run that went wrong)."""
    dest = os.environ.get("HAPAIR_BENCH_LOGS")
    src = LabPaths(name).root / "logs"
    if not dest or not src.is_dir():
        return
    target = Path(dest) / name
    shutil.copytree(src, target, dirs_exist_ok=True)
    say(f"logs kept in {target}")
