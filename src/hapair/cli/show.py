"""Human-readable ``hapair status``."""

from __future__ import annotations

from typing import Any


def _mark(ok: bool) -> str:
    return "ok" if ok else "DEAD"


def show_status(st: dict[str, Any]) -> str:
    """Format the status dict as a few aligned tables."""
    out = [
        f"cluster {st['name']} ({st.get('platform', 'lab')}, engine {st.get('engine')}), "
        f"DNS {st.get('domain')}"
    ]
    out.append("\nnodes")
    for n in st["nodes"]:
        addr = n["address"] + (f" + {n['secondary']}" if n.get("secondary") else "")
        procs = " ".join(f"{k}:{_mark(v)}" for k, v in sorted(n.get("processes", {}).items()))
        out.append(f"  {n['name']:<7} {n['role']:<4} {addr:<28} {procs}")
    out.append("\nfloating IPs")
    for v in st["vips"]:
        owner = v.get("owner") or "NOBODY"
        where = "home" if owner == v["home"] else ("SPLIT" if "," in owner else "away")
        if owner == "NOBODY":
            where = "unserved"
        out.append(
            f"  {v['name']:<5} {v['address']:<15} home {v['home']}  owner {owner:<8} ({where})"
        )
    out.append("\nbackends (as each HAProxy sees them)")
    by_lb: dict[str, list[str]] = {}
    for b in st["backends"]:
        if "error" in b:
            by_lb.setdefault(b["lb"], []).append(f"ERROR {b['error']}")
        else:
            by_lb.setdefault(b["lb"], []).append(f"{b['server']}:{b['status']}")
    for lb, items in by_lb.items():
        out.append(f"  {lb}: " + " ".join(items))
    agents = st.get("agents") or {}
    if agents:
        out.append("\nagents")
        for lb, a in agents.items():
            if "error" in a:
                out.append(f"  {lb}: {a['error']}")
                continue
            peer = a.get("peer", {})
            out.append(
                f"  {lb}: {a.get('health', {}).get('summary', '?')}; holds "
                f"{','.join(a.get('held', [])) or '-'} "
                f"wants {','.join(a.get('wanted', [])) or '-'}; "
                f"peer {peer.get('name')} {peer.get('state')} (last heartbeat "
                f"{peer.get('last_heartbeat_ms', '?')} ms ago)"
                + ("; STANDBY" if a.get("standby") else "")
            )
            for ev in a.get("events", [])[-5:]:
                out.append(f"      {ev.get('time', '')} {ev.get('message', '')}")
    return "\n".join(out)
