"""``hapair status --watch``: the dashboard's picture in the terminal, refreshed live (rich).

Each refresh reads the platform's status (in the lab: the kernel, the supervisors, HAProxy and
both agents) and, in the lab, each live agent's dashboard document over its unix socket (rates,
failovers, CPU). Ctrl-C leaves with exit status 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from hapair.errors import HapairError, OperationError

LB_COLUMNS = ("LB", "link", "haproxy", "agent", "healthy", "standby", "holds", "peer", "CPU", "RSS")
VIP_COLUMNS = ("VIP", "address", "home", "served by", "state", "req/s", "err/s", "why")
BACKEND_COLUMNS = ("LB", "server", "status", "check", "sessions", "req/s", "2xx", "5xx")


def _ok(flag: object, good: object = True) -> Text:
    if flag is None:
        return Text("?", style="yellow")
    return Text("yes" if flag else "no", style="green" if flag == good else "red")


def _num(v: object, unit: str = "") -> str:
    return "-" if v is None else f"{v}{unit}"


def _process(p: dict[str, Any] | None) -> tuple[str, str]:
    if not p:
        return "-", "-"
    cpu = p.get("cpu_percent")
    rss = p.get("rss_bytes")
    return ("-" if cpu is None else f"{cpu:.1f}%"), ("-" if not rss else f"{rss / 2**20:.0f} MiB")


def _service(p: object) -> Text:
    if not isinstance(p, dict):
        return Text("-")
    if p.get("running"):
        n = p.get("restarts") or 0
        return Text(f"up, {n} restarts" if n else "up", style="green")
    if p.get("supervised"):
        return Text("RESTARTING", style="yellow")
    return Text("DOWN", style="bold red")


def _table(title: str, *columns: str) -> Table:
    t = Table(title=title, title_justify="left", expand=True)
    for col in columns:
        t.add_column(col)
    return t


def lb_table(st: dict[str, Any], docs: dict[str, dict[str, Any]]) -> Table:
    """Both LBs: their services (the platform's view) and their agents' views."""
    t = _table("Load balancers", *LB_COLUMNS)
    for n in st.get("nodes", []):
        if n.get("role") != "lb":
            continue
        name = n["name"]
        a = (st.get("agents") or {}).get(name) or {}
        doc = docs.get(name) or {}
        me = next((lb for lb in doc.get("lbs", []) if lb.get("self")), None)
        peer = a.get("peer") or {}
        hb = peer.get("last_heartbeat_ms")
        peer_text = "-"
        if peer:
            loss = peer.get("loss") or 0.0
            peer_text = (
                f"{peer.get('name')} {peer.get('state')} ({_num(hb, ' ms')}, loss {loss:.1%})"
            )
        cpu, rss = _process(me.get("process") if me else None)
        procs = n.get("processes", {})
        t.add_row(
            name,
            _ok(n.get("link_up")),
            _service(procs.get("haproxy")),
            _service(procs.get("agent")),
            _ok(a.get("health", {}).get("healthy"))
            if "health" in a
            else Text(a.get("error", "-"), style="red"),
            _ok(a.get("standby"), False) if a else Text("-"),
            ", ".join(a.get("held", [])) or "-",
            peer_text,
            cpu,
            rss,
        )
    return t


def vip_table(st: dict[str, Any], docs: dict[str, dict[str, Any]]) -> Table:
    """Each VIP: who serves it (read from the kernel), its traffic and the holder's reason."""
    t = _table(
        "Floating IPs", "VIP", "address", "home", "served by", "state", "req/s", "err/s", "why"
    )
    for v in st.get("vips", []):
        served = v.get("served_by") or ([v["owner"]] if v.get("owner") else [])
        holder = docs.get(served[0]) if served else None
        dv: dict[str, Any] = next(
            (x for x in (holder or {}).get("vips", []) if x["name"] == v["name"]), {}
        )
        traffic = dv.get("traffic") or {}
        state = v.get("state", "home" if v.get("owner") == v.get("home") else "away")
        style = {"home": "green", "away": "yellow"}.get(state, "bold red")
        t.add_row(
            v["name"],
            v["address"],
            v["home"],
            ", ".join(served) or "NOBODY",
            Text(state, style=style),
            _num(traffic.get("req_rate")),
            _num(traffic.get("err_rate")),
            dv.get("reason") or v.get("summary", ""),
        )
    return t


def backend_table(st: dict[str, Any], docs: dict[str, dict[str, Any]]) -> Table:
    """The web servers as each HAProxy sees them."""
    t = _table("Backends (as each HAProxy sees them)", *BACKEND_COLUMNS)
    for b in st.get("backends", []):
        if "error" in b:
            t.add_row(b["lb"], Text(b["error"], style="red"))
            continue
        lb = next((x for x in (docs.get(b["lb"]) or {}).get("lbs", []) if x.get("self")), None)
        servers = ((lb or {}).get("haproxy") or {}).get("servers", [])
        s: dict[str, Any] = next((x for x in servers if x["server"] == b["server"]), {})
        codes = s.get("responses") or {}
        up = str(b["status"]).startswith("UP")
        t.add_row(
            b["lb"],
            b["server"],
            Text(b["status"], style="green" if up else "bold red"),
            b.get("check", ""),
            _num(s.get("sessions")),
            _num(s.get("rate")),
            _num(codes.get("2xx")),
            _num(codes.get("5xx")),
        )
    return t


def failover_table(docs: dict[str, dict[str, Any]]) -> Table:
    """Failovers either agent made or saw, newest first."""
    t = _table("Failovers", "time", "VIP", "taken by", "kind", "gap", "reason")
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for doc in docs.values():
        for f in doc.get("failovers", []):
            key = (f["time"][:8], f["vip"], f["node"])
            if key not in seen or f.get("label") != "seen":
                seen[key] = f
    for f in sorted(seen.values(), key=lambda f: f["t"], reverse=True)[:8]:
        gap = f.get("gap_ms")
        t.add_row(
            f["time"],
            f["vip"],
            f["node"],
            f["label"],
            "-" if gap is None else f"{gap:.0f} ms",
            f["reason"],
        )
    return t


def events_table(st: dict[str, Any], limit: int = 10) -> Table:
    """The agents' latest events, both merged by time."""
    t = Table(title="Agent events", title_justify="left", expand=True, show_header=False)
    t.add_column("time", no_wrap=True)
    t.add_column("node")
    t.add_column("event")
    rows = [
        (e.get("time", ""), lb, e.get("message", ""))
        for lb, a in (st.get("agents") or {}).items()
        for e in a.get("events", [])
    ]
    for row in sorted(rows)[-limit:]:
        t.add_row(*row)
    return t


def others(st: dict[str, Any]) -> Text:
    """One line for the nodes that are not LBs."""
    parts = []
    for n in st.get("nodes", []):
        if n.get("role") == "lb":
            continue
        procs = n.get("processes", {})
        down = [k for k, p in procs.items() if isinstance(p, dict) and not p.get("running")]
        bad = down or n.get("link_up") is False
        what = (
            "LINK DOWN"
            if n.get("link_up") is False
            else ("DOWN " + ",".join(down) if down else "up")
        )
        parts.append(Text(f"{n['name']} {what}", style="bold red" if bad else "green"))
    return Text("  ").join(parts)


def picture(st: dict[str, Any], docs: dict[str, dict[str, Any]], interval: float) -> RenderableType:
    """The whole screen for a status ``st`` and the agents' dashboard documents (pure)."""
    head = Text(
        f"hapair cluster {st.get('name')} ({st.get('platform', 'lab')}, DNS {st.get('domain')}) "
        f"at {time.strftime('%H:%M:%S')}; every {interval:g} s; Ctrl-C to leave",
        style="bold",
    )
    return Group(
        head,
        lb_table(st, docs),
        vip_table(st, docs),
        backend_table(st, docs),
        failover_table(docs),
        events_table(st),
        others(st),
    )


def lab_docs(name: str, st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each answering agent's dashboard document, over its unix socket."""
    from hapair.agent.client import agent_request
    from hapair.platforms.lab.paths import LabPaths

    out = {}
    for lb, a in (st.get("agents") or {}).items():
        if "error" in a:
            continue
        try:
            code, body = agent_request(
                str(LabPaths(name).agent_sock(lb)), "GET", "/dashboard.json", timeout=2.0
            )
        except OperationError:
            continue
        if code == 200 and isinstance(body, dict):
            out[lb] = body
    return out


def watch(
    fetch: Callable[[], dict[str, Any]],
    docs: Callable[[dict[str, Any]], dict[str, dict[str, Any]]],
    interval: float = 1.0,
    console: Console | None = None,
) -> int:
    """Refresh the picture every ``interval`` s until Ctrl-C; returns 0."""
    console = console or Console()

    def frame() -> RenderableType:
        try:
            st = fetch()
        except HapairError as exc:
            return Text(f"status failed: {exc} (retrying)", style="bold red")
        return picture(st, docs(st), interval)

    try:
        with Live(frame(), console=console, refresh_per_second=4, screen=False) as live:
            while True:
                time.sleep(interval)
                live.update(frame())
    except KeyboardInterrupt:
        return 0


def watch_cluster(s: Any, lab: Callable[[], Any], aws: Callable[[Any], Any]) -> int:
    """``status --watch`` for the cluster of spec ``s`` (the lab every second, with its agents'
    documents; aws every 5 s, from its API alone)."""
    name = s.cluster.name
    if s.cluster.platform == "aws":
        platform = aws(s)
        return watch(lambda: dict(platform.status(name)), lambda st: {}, interval=5.0)
    lab_platform = lab()
    return watch(lambda: dict(lab_platform.status(name)), lambda st: lab_docs(name, st))
