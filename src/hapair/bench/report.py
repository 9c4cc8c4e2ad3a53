"""Markdown tables from failover results (pure formatting of the JSON ``bench failover`` writes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

HEADER = (
    "| engine, settings | fault on lb1 | n | failover gap ms | failed req. | "
    "failback: lb1 serves again after ms | failback: longest client gap ms | "
    "failback failed req. | DNS-aware client failed req. | VIP moves (hapair) |\n"
    "|---|---|---|---|---|---|---|---|---|---|\n"
)
SETTINGS = {
    ("hapair", "default"): "hapair (interval 50 ms, deadtime 150 ms, failback_delay 3 s)",
    ("keepalived", "default"): "keepalived VRRPv2 advert_int 1",
    ("keepalived", "tuned"): "keepalived VRRPv3 advert_int 0.1",
    ("heartbeat", "default"): "heartbeat keepalive 2 deadtime 15 initdead 60",
    ("heartbeat", "tuned"): "heartbeat keepalive 10ms deadtime 50ms initdead 10",
}
FAULTS = {
    "crash": "crash: SIGKILL HA daemon + HAProxy (VIP left on lb1)",
    "reboot": "reboot: crash, VIPs gone on restore",
    "link": "link: switch port down",
    "haproxy": "haproxy: SIGKILL HAProxy only",
    "planned": "planned: standby lb1, then online lb1",
    "partition": "partition: udp/694 dropped between the LBs for 10 s",
}


def cell(d: dict[str, Any], scale: float = 1.0) -> str:
    """``min / median / max``; ``never`` where no run saw the event."""
    if d.get("min") is None:
        return "never" if d.get("missing") else "-"
    out = " / ".join(f"{d[k] * scale:.0f}" for k in ("min", "median", "max"))
    return out + (f" ({d['missing']} never)" if d.get("missing") else "")


def row(r: dict[str, Any]) -> str:
    """One table row for a ``bench failover`` result."""
    moves = [x.get("vip_moves") for x in r["runs"]]
    # In crash and reboot, lb1's agent restarts and its counters with it: no honest count.
    counted = r["scenario"] not in ("crash", "reboot") and any(m is not None for m in moves)
    mv = " / ".join(str(m) for m in moves) if counted else "-"
    gap = cell(r["gap_ms"]) if r["scenario"] != "partition" else "no move expected"
    return (
        f"| {SETTINGS.get((r['engine'], r['variant']), r['engine'])} "
        f"| {FAULTS.get(r['scenario'], r['scenario'])} | {len(r['runs'])} | {gap} "
        f"| {cell(r['failed'])} | {cell(r['failback_after_ms'])} "
        f"| {cell(r['failback_longest_gap_ms'])} | {cell(r['failback_failed'])} "
        f"| {cell(r['dns_failed'])} | {mv} |"
    )


def table(results: Sequence[dict[str, Any]]) -> str:
    """The failover table of ``docs/benchmarks.md``."""
    return HEADER + "\n".join(row(r) for r in results) + "\n"
