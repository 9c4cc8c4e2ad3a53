"""``hapair bench day2``: each day-2 operation under load, side by side with the anchor.

One lab (3 web nodes, HTTPS on, hapair agents) runs the operations one after the other; before
each, the lab must be steady (each VIP served by its home LB). Around each operation the
failover benchmark's clients run from the client host: an open-loop client per VIP (a new
connection every ``1/rate`` s, 1 s deadline: the strict profile), a keep-alive client on VIP1
(one connection, reconnecting once on error, 10 s deadline) and an open-loop HTTPS client per
VIP (new TLS connection, ``https_rate``). They start 2 s before the operation and stop 3 s after
it ends. Reported per operation: its duration, the failed requests of each client, and the
longest time any client went without a successful completion during the operation (from 1 s
before it to 3 s after).

The operations: scale 3 -> 8, scale 8 -> 2, apply of a changed timeout and balance algorithm,
apply of a changed agent timing, a rolling restart, a certificate rotation, and two anchors:
an HAProxy reload on both LBs without socket passing (a ``systemctl reload`` of a configuration
that does not expose its listeners), and HAProxy stopped and started on both LBs at once, what
the original stack's Ansible re-run did.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from hapair.bench import analysis
from hapair.bench.failover import ORDINARY_TIMEOUT
from hapair.bench.labs import bench_name, is_steady, wait_until
from hapair.bench.probe import Sample
from hapair.bench.runner import BackgroundProbe
from hapair.plan import make_plan
from hapair.platforms.lab.day2 import apply as applying
from hapair.platforms.lab.day2.anchor import plain_reload
from hapair.platforms.lab.day2.cert import rotate
from hapair.platforms.lab.day2.haproxy import restart_together
from hapair.platforms.lab.day2.restart import restart_lb
from hapair.platforms.lab.day2.scale import scale
from hapair.platforms.lab.day2.target import Target, open_lab
from hapair.platforms.lab.platform import LabPlatform
from hapair.spec import Spec, parse

BEFORE_S = 2.0
AFTER_S = 3.0
#: The longest an operation may take (the probes run this much longer than needed at most).
OP_MAX_S = 120.0
ANCHOR = "anchor: HAProxy stop/start on both LBs (no socket passing)"
RELOAD_ANCHOR = "anchor: HAProxy reload on both LBs without socket passing (systemctl reload)"

Say = Callable[[str], None]


def _changed(spec: Spec, **sections: dict[str, Any]) -> Spec:
    data = spec.model_dump(mode="python")
    for section, fields in sections.items():
        data[section].update(fields)
    return parse(data)


def _apply(t: Target, new: Spec, say: Say) -> None:
    applying.apply_spec(t, new, applying.plan_for(t, new), say, 30.0)


def _scale_up(t: Target, say: Say) -> None:
    scale(t, 8, say)


def _scale_down(t: Target, say: Say) -> None:
    scale(t, 2, say)


def _haproxy_settings(t: Target, say: Say) -> None:
    _apply(
        t, _changed(t.plan.spec, haproxy={"timeout_client_ms": 30000, "balance": "leastconn"}), say
    )


def _agent_timing(t: Target, say: Say) -> None:
    _apply(t, _changed(t.plan.spec, ha={"failback_delay_ms": 2000}), say)


def _rolling(t: Target, say: Say) -> None:
    for lb in t.plan.lbs:
        restart_lb(t, lb.name, say)


def _rotate(t: Target, say: Say) -> None:
    rotate(t, None, say)


def _reload_anchor(t: Target, say: Say) -> None:
    lbs = [lb.name for lb in t.plan.lbs]
    with ThreadPoolExecutor(max_workers=len(lbs)) as pool:
        took = list(pool.map(lambda lb: plain_reload(t, lb), lbs))
    say(f"HAProxy reloaded without socket passing on {', '.join(lbs)} ({max(took):.1f} s)")


def _anchor(t: Target, say: Say) -> None:
    restart_together(t, [lb.name for lb in t.plan.lbs], "haproxy")
    say("HAProxy stopped and started on lb1 and lb2")


#: The operations, in the order they run (the anchor last).
OPERATIONS: tuple[tuple[str, Callable[[Target, Say], None]], ...] = (
    ("scale web 3 -> 8", _scale_up),
    ("scale web 8 -> 2", _scale_down),
    (
        "apply: haproxy timeout_client_ms 50000 -> 30000, balance roundrobin -> leastconn",
        _haproxy_settings,
    ),
    ("apply: agent failback_delay_ms 3000 -> 2000", _agent_timing),
    ("restart --rolling (lb1, then lb2)", _rolling),
    ("cert rotate (new self-signed certificate)", _rotate),
    (RELOAD_ANCHOR, _reload_anchor),  # leaves workers without expose-fd: the stop/start next
    (ANCHOR, _anchor),
)


@dataclass
class Clients:
    """The clients running around one operation, on one clock."""

    probes: dict[str, BackgroundProbe]

    @classmethod
    def start(cls, t: Target, rate: float, https_rate: float) -> Clients:
        plan = t.plan
        v1, v2 = (v.address for v in plan.vips)
        epoch = time.monotonic()
        run = BEFORE_S + OP_MAX_S + AFTER_S
        probes = {
            "vip1": BackgroundProbe(plan, [v1], rate, run, 1.0, epoch=epoch, stream=True),
            "vip2": BackgroundProbe(plan, [v2], rate, run, 1.0, epoch=epoch, stream=True),
            "keepalive": BackgroundProbe(
                plan, [v1], rate, run, ORDINARY_TIMEOUT, epoch=epoch, keepalive=True
            ),
        }
        if plan.spec.haproxy.https and https_rate > 0:
            for name, vip in (("https1", v1), ("https2", v2)):
                probes[name] = BackgroundProbe(
                    plan, [vip], https_rate, run, 1.0, epoch=epoch, stream=True, tls=True
                )
        return cls(probes)

    def now(self) -> float:
        """Seconds on the clients' clock."""
        return next(iter(self.probes.values())).now()

    def stop(self) -> dict[str, list[Sample]]:
        """Stop every client; their samples."""
        return {name: p.stop() for name, p in self.probes.items()}


def measure(
    t: Target, op: Callable[[Target, Say], None], rate: float, https_rate: float, say: Say
) -> dict[str, Any]:
    """Run ``op`` under the clients; its metrics (see the module docstring)."""
    clients = Clients.start(t, rate, https_rate)
    error = ""
    try:
        time.sleep(BEFORE_S)
        t0 = clients.now()
        try:
            op(t, say)
        except Exception as exc:  # the benchmark reports a failed operation, then goes on
            error = f"{type(exc).__name__}: {exc}"
            say(f"operation failed: {error}")
        t1 = clients.now()
        time.sleep(AFTER_S)
    finally:
        samples = clients.stop()
    window = (t0 - 1.0, t1 + AFTER_S)
    out: dict[str, Any] = {"duration_s": round(t1 - t0, 2), "error": error, "clients": {}}
    for name, ss in samples.items():
        inside = [s for s in ss if window[0] <= s.start]
        out["clients"][name] = {
            "requests": len(ss),
            "failed": sum(1 for s in ss if not s.ok),
            "longest_gap_s": round(analysis.longest_gap(inside, window[0], window[1]), 4),
            "errors": sorted({s.error.split(":")[0] for s in ss if not s.ok}),
        }
    out["failed"] = sum(c["failed"] for c in out["clients"].values())
    out["longest_gap_s"] = max(c["longest_gap_s"] for c in out["clients"].values())
    return out


def bench_day2(
    rate: float = 100.0,
    https_rate: float = 20.0,
    name: str | None = None,
    say: Say = lambda _: None,
) -> dict[str, Any]:
    """Build a lab, run every operation under load, tear the lab down; the report."""
    name = name or bench_name()
    spec = parse({"cluster": {"name": name}, "web": {"size": 3}, "haproxy": {"https": True}})
    plan = make_plan(spec)
    lab = LabPlatform("hapair")
    say(f"building lab {name} (3 web nodes, HTTPS on)")
    rows = []
    started = time.time()
    try:
        lab.up(plan)
        for label, op in OPERATIONS:
            wait_until("steady state (each VIP on its home LB)", lambda: is_steady(plan, lab), 60)
            say(f"{label} ...")
            with open_lab(name) as t:
                m = measure(t, op, rate, https_rate, lambda line: say(f"    {line}"))
            m["operation"] = label
            rows.append(m)
            say(
                f"  {label}: {m['duration_s']:.1f} s, failed {m['failed']}, longest gap "
                f"{m['longest_gap_s'] * 1000:.0f} ms"
            )
    finally:
        say(f"tearing down {name}")
        lab.down(name)
    return {"rate": rate, "https_rate": https_rate, "started": started, "rows": rows}


def table(report: dict[str, Any]) -> str:
    """The markdown table of a report (failed requests per client, longest gap, duration)."""
    names = ["vip1", "vip2", "keepalive", "https1", "https2"]
    head = (
        "| operation | duration s | failed: VIP1 / VIP2 / keep-alive / HTTPS VIP1 / HTTPS VIP2 "
        "| longest client gap ms |\n|---|---|---|---|\n"
    )
    lines = []
    for r in report["rows"]:
        failed = " / ".join(str(r["clients"].get(n, {}).get("failed", "-")) for n in names)
        note = f" (failed: {r['error']})" if r["error"] else ""
        lines.append(
            f"| {r['operation']}{note} | {r['duration_s']:.1f} | {failed} | "
            f"{r['longest_gap_s'] * 1000:,.0f} |"
        )
    return head + "\n".join(lines) + "\n"
