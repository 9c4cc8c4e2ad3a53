"""The chaos suite's table (markdown) and raw results (JSON), and ``hapair bench chaos``."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hapair.agent
from hapair.bench.chaos import (
    AFTER_MAX,
    CONVERGE_S,
    RATE,
    UNHELD_MAX_S,
    ChaosLab,
    Scenario,
    pick,
)
from hapair.errors import OperationError

HEADER = (
    "| scenario | fault | VIP moves (bound) | failed vip1 (bound) | failed vip2 (bound) "
    "| failed once served again vip1 / vip2 | longest unheld ms | converged after s "
    "| after convergence | result |\n"
    "|---|---|---|---|---|---|---|---|---|---|\n"
)


def _bound(b: Any) -> str:
    return "-" if b is None else f"≤ {b}"


def _failed(v: dict[str, Any], bound: Any) -> str:
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(v["errors"].items()))
    return f"{v['failed']} ({_bound(bound)})" + (f": {kinds}" if kinds else "")


def _after(r: dict[str, Any]) -> str:
    final = r.get("final") or {}
    owners = final.get("owners") or {}
    where = ", ".join(f"{vip} {'+'.join(o) or 'nobody'}" for vip, o in owners.items())
    agents = []
    for lb, a in (final.get("agents") or {}).items():
        restarted = r["agents"][lb]["pid_before"] != a["pid"]
        agents.append(
            f"{lb} {'down' if a['pid'] is None else 'restarted' if restarted else 'same pid'}"
            f" peer {a['peer']}"
        )
    return "; ".join([where, *agents])


def row(r: dict[str, Any]) -> str:
    """One scenario as a markdown table row."""
    b = r["bounds"]
    if "vips" not in r:
        dashes = "| - " * 7
        return f"| {r['scenario']} | {r['title']} {dashes}| **not run**: {r['error']} |\n"
    v1, v2 = r["vips"]["vip1"], r["vips"]["vip2"]
    conv = r.get("converged_after_s")
    bad = r["violations"]
    verdict = "ok" if not bad else "**FAIL**: " + "; ".join(bad)
    unheld = max(v1["unheld_max_ms"], v2["unheld_max_ms"])
    return (
        f"| {r['scenario']} | {r['title']} | {r['moves']} (≤ {b['moves']}) "
        f"| {_failed(v1, b['failed']['vip1'])} | {_failed(v2, b['failed']['vip2'])} "
        f"| {v1['failed_after_restore']} / {v2['failed_after_restore']} "
        f"| {unheld:.0f} | {'never' if conv is None else f'{conv:.1f}'} | {_after(r)} "
        f"| {verdict.replace('|', '/')} |\n"
    )


def table(results: list[dict[str, Any]]) -> str:
    """The markdown table of some results."""
    return HEADER + "".join(row(r) for r in results)


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The whole report: what was run, the table, the bounds every scenario shares."""
    failing = [r["scenario"] for r in results if r.get("violations")]
    return (
        f"# hapair chaos run, {meta['date']}\n\n"
        f"Lab {meta['lab']}, fault hold {meta['hold_s']:g} s, probes {meta['rate']:g} req/s per "
        f"VIP (new connection each, 1 s deadline), {meta['wall_s']:.0f} s in all; git "
        f"{meta.get('git_head', '?')}, agent sources {meta.get('agent_sources_sha256', '?')}"
        f"{', lab rebuilt ' + str(meta['rebuilds']) + ' times' if meta['rebuilds'] else ''}.\n\n"
        + table(results)
        + f"\nEvery scenario: after convergence each VIP on its home node alone (bounded wait "
        f"{CONVERGE_S:g} s), never held by nobody longer than {UNHELD_MAX_S * 1000:.0f} ms, at "
        f"most {AFTER_MAX} failed requests per VIP once it serves again after the fault is "
        'undone, no agent restart it did not cause, no traceback or "please report" in an '
        "agent's log. VIP moves are "
        "counted from the kernel's address notifications in both LBs (a move = another node "
        "becomes the holder; failover + failback = 2).\n\n"
        + (f"Outside their bounds: {', '.join(failing)}.\n" if failing else "All within bounds.\n")
    )


def fingerprint() -> dict[str, str]:
    """What was measured: the git HEAD and a hash of the agent's sources as they are on disk
    (the working tree may differ from HEAD)."""
    root = Path(hapair.agent.__file__).parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    head = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {"git_head": head or "?", "agent_sources_sha256": h.hexdigest()[:16]}


def bench_chaos(
    scenarios: list[Scenario],
    hold: float,
    rate: float = RATE,
    name: str | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Build one lab, run the scenarios in order, tear it down; (results, run facts)."""
    started = time.monotonic()
    chaos = ChaosLab(name, say)
    results: list[dict[str, Any]] = []
    try:
        for sc in scenarios:
            try:
                r = chaos.run(sc, hold, rate)
            except OperationError as exc:
                say(f"  stopping: {exc}")
                break
            results.append(r)
            say(f"  {summary(r)}")
    finally:
        chaos.close()
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "lab": chaos.name,
        "hold_s": hold,
        "rate": rate,
        "wall_s": time.monotonic() - started,
        "rebuilds": chaos.rebuilds,
        "host": platform.node(),
        "kernel": platform.release(),
        **fingerprint(),
    }
    return results, meta


def summary(r: dict[str, Any]) -> str:
    """One line: moves, failed requests, verdict."""
    if "vips" not in r:
        return f"{r['scenario']}: not run ({r['error']})"
    v1, v2 = r["vips"]["vip1"], r["vips"]["vip2"]
    bad = r["violations"]
    return (
        f"{r['scenario']}: {r['moves']} moves, failed {v1['failed']} / {v2['failed']}, "
        f"converged after {r.get('converged_after_s')} s: "
        + ("ok" if not bad else "OUTSIDE BOUNDS: " + "; ".join(bad))
    )


def write(out: Path, results: list[dict[str, Any]], meta: dict[str, Any]) -> list[Path]:
    """``chaos.md`` and ``chaos.json`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "chaos.md", out / "chaos.json"
    md.write_text(markdown(results, meta))
    js.write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=str) + "\n")
    return [md, js]


def main(scenario: str, hold: float, out: Path | None, rate: float, name: str | None,
         say: Callable[[str], None]) -> int:  # fmt: skip
    """``hapair bench chaos``: returns the exit status (1 if a scenario could not be run)."""
    results, meta = bench_chaos(pick(scenario), hold, rate, name, say)
    say("")
    say(markdown(results, meta))
    if out is not None:
        for p in write(out, results, meta):
            say(f"wrote {p}")
    ran = len(results) == len(pick(scenario)) and all("vips" in r for r in results)
    return 0 if ran else 1
