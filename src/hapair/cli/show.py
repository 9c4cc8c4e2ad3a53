"""Human-readable ``hapair status``."""

from __future__ import annotations

from typing import Any


def _process(name: str, p: Any) -> str:
    """``haproxy up (pid 1234)``, ``agent up (pid 1240, 2 restarts)``, ``agent RESTARTING``
    (its supervisor starts it again), ``agent DOWN`` (until ``hapair revive``)."""
    if isinstance(p, bool):  # a status without supervision: alive or not
        return f"{name} {'up' if p else 'DOWN'}"
    if p.get("running"):
        n = p.get("restarts") or 0
        return f"{name} up (pid {p.get('pid')}" + (
            f", {n} restart{'s' if n > 1 else ''})" if n else ")"
        )
    return f"{name} {'RESTARTING' if p.get('supervised') else 'DOWN'}"


def _vip_line(v: dict[str, Any]) -> str:
    """One VIP: the platform's sentence when it has one (the lab), else owner and where."""
    if v.get("summary"):
        return f"  {v['summary']}"
    owner = v.get("owner") or None
    where = "unserved" if owner is None else "home" if owner == v["home"] else "away"
    return f"  {v['name']} {v['address']} (home {v['home']}): owner {owner or 'NOBODY'} ({where})"


def show_status(st: dict[str, Any]) -> str:
    """Format the status dict as a few aligned tables."""
    out = [
        f"cluster {st['name']} ({st.get('platform', 'lab')}, engine {st.get('engine')}), "
        f"DNS {st.get('domain')}"
    ]
    out.append("\nnodes")
    for n in st["nodes"]:
        addr = n["address"] + (f" + {n['secondary']}" if n.get("secondary") else "")
        procs = [_process(k, v) for k, v in n.get("processes", {}).items()]
        if n.get("link_up") is False:
            procs.append("LINK DOWN")
        out.append(f"  {n['name']:<7} {n['role']:<4} {addr:<28} {', '.join(procs)}".rstrip())
    out.append("\nfloating IPs")
    out += [_vip_line(v) for v in st["vips"]]
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
            if "peers" in a:  # issue 13: an N-node agent sees every other LB
                peers = " ".join(f"{p['name']}:{p['liveness']}" for p in a["peers"])
                etcd = a.get("etcd") or {}
                members = etcd.get("members") or []
                healthy = sum(1 for m in members if m.get("healthy"))
                out.append(
                    f"  {lb}: {a.get('health', {}).get('summary', '?')}; holds "
                    f"{','.join(a.get('held', [])) or '-'}; peers {peers}; etcd lease "
                    f"{etcd.get('lease')}"
                    + (
                        f"; etcd leader {etcd.get('leader') or 'none'}, "
                        f"{healthy}/{len(members)} members healthy"
                        if members
                        else ""
                    )
                    + ("; STANDBY" if a.get("standby") else "")
                )
                for ev in a.get("events", [])[-5:]:
                    out.append(f"      {ev.get('time', '')} {ev.get('message', '')}")
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
