"""The dashboard's document: the whole cluster as one agent sees it, as JSON-ready data.

Built on demand (while a dashboard is open, about twice a second) from the ``/status``
document, the agent's :class:`~hapair.agent.history.History`, the local HAProxy's stats socket
(``show stat`` for the backends, ``show table www`` for the request and error rates per
floating IP) and the peer's ``/haproxy.json`` (:meth:`ClusterView.local` there: its process's
CPU and memory, its HAProxy's view, the failovers it made, which this node may have missed
while it was down), fetched in the background at most once a second while the peer's
heartbeats arrive, so that a dead peer never slows the page.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Final

from hapair.agent.history import CpuMeter, merge_failovers, process_usage, stamp
from hapair.agent.historyfile import record_of
from hapair.agent.serverops import set_server_state
from hapair.agent.statusdoc import status_document
from hapair.errors import OperationError
from hapair.haproxy_stats import command_async, parse_show_table, parse_stat_rows
from hapair.httpget import FAILURES, parse_head

if TYPE_CHECKING:
    from hapair.agent.daemon import Agent

logger = logging.getLogger(__name__)

PEER_EVERY_S: Final = 1.0
"""The peer's ``/status`` is asked at most this often."""
PEER_TIMEOUT_S: Final = 0.5
"""... and must answer within this long."""
MAX_BODY: Final = 1 << 20
"""Largest answer read from the peer's API."""
EVENTS: Final = 60
"""Events of the agent's log shown."""
FAILOVERS: Final = 30
"""Failovers shown (this node's and its peer's)."""
FRONTEND: Final = "www"
"""HAProxy's frontend (and stick table) of the web traffic."""


async def http_call(
    address: str, port: int, method: str, path: str, timeout: float, token: str | None = None
) -> tuple[int, bytes]:
    """One request to an agent's API (``Connection: close``); returns status and body.

    :raises OSError, TimeoutError, ValueError: (see :data:`hapair.httpget.FAILURES`).
    """
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address, port)
            writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Length: 0\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            await writer.drain()
            data = await reader.read(MAX_BODY)
    finally:
        if writer is not None:
            writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status, _ = parse_head(head)
    return status, body


def _int(row: dict[str, str], key: str) -> int | None:
    value = row.get(key, "")
    return int(value) if value.lstrip("-").isdigit() else None


def _codes(row: dict[str, str]) -> dict[str, int | None]:
    return {c: _int(row, f"hrsp_{c}") for c in ("1xx", "2xx", "3xx", "4xx", "5xx", "other")}


def self_card(st: Mapping[str, Any], mine: Mapping[str, Any]) -> dict[str, Any]:
    """This node's card on the page, from its ``/status`` document ``st`` and its own local
    view ``mine`` (process and HAProxy)."""
    health = st["health"]
    return {
        "name": st["self"],
        "self": True,
        "state": "self",
        "alive": True,
        "healthy": health["healthy"],
        "answers": health["answers"],
        "standby": st["standby"],
        "pingable": health["pingable"],
        "summary": health["summary"],
        "stable_ms": health["stable_ms"],
        "heartbeat_age_ms": None,
        "loss": None,
        "held": st["held"],
        "wanted": st["wanted"],
        "process": mine.get("process"),
        "haproxy": mine.get("haproxy"),
    }


def haproxy_view(stat_csv: str, table: str, vips: dict[str, str]) -> dict[str, Any]:
    """The backends, the frontend and the rate per floating IP from ``show stat`` and
    ``show table`` output (pure). ``vips`` maps each VIP's name to its address."""
    servers, frontend = [], None
    for row in parse_stat_rows(stat_csv):
        sv = row.get("svname", "")
        if row.get("pxname") == FRONTEND and sv == "FRONTEND":
            frontend = {
                "sessions": _int(row, "scur"),
                "req_rate": _int(row, "req_rate"),
                "requests": _int(row, "req_tot"),
                "responses": _codes(row),
            }
        elif sv not in ("FRONTEND", "BACKEND", "") and row.get("pxname") != "stats":
            servers.append(
                {
                    "backend": row.get("pxname", ""),
                    "server": sv,
                    "address": row.get("addr", ""),
                    "status": row.get("status", ""),
                    "check": row.get("check_status", ""),
                    "sessions": _int(row, "scur"),
                    "rate": _int(row, "rate"),
                    "total": _int(row, "stot"),
                    "since_s": _int(row, "lastchg"),
                    "responses": _codes(row),
                }
            )
    entries = parse_show_table(table)
    per_vip = {}
    for name, address in vips.items():
        e = entries.get(address, {})
        per_vip[name] = {
            "req_rate": e.get("http_req_rate", 0),
            "err_rate": e.get("http_err_rate", 0) + e.get("http_fail_rate", 0),
            "requests": e.get("http_req_cnt", 0),
            "errors": e.get("http_err_cnt", 0) + e.get("http_fail_cnt", 0),
        }
    return {"answers": True, "frontend": frontend, "servers": servers, "per_vip": per_vip}


async def read_haproxy(sock: str, addresses: dict[str, str]) -> dict[str, Any]:
    """The local HAProxy as the dashboard shows it (:func:`haproxy_view`), or why not.

    :param addresses: each VIP's address by name.
    """
    try:
        stat = await command_async(sock, "show stat", 0.5)
        table = await command_async(sock, f"show table {FRONTEND}", 0.5)
    except OperationError as exc:
        return {"answers": False, "error": str(exc), "servers": [], "per_vip": {}}
    return haproxy_view(stat, table, addresses)


class ClusterView:
    """Builds the dashboard's document for one agent, and talks to its peer's API."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.cpu = CpuMeter()
        self.peer_cpu = CpuMeter()
        #: what the peer's ``/haproxy.json`` said last (None: nothing recent)
        self.peer_local: dict[str, Any] | None = None
        #: the failovers the peer made itself, as its ``/haproxy.json`` said last (kept while
        #: it is silent: they are history)
        self.peer_failovers: list[dict[str, Any]] = []
        self._peer_asked = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ the peer
    @property
    def peer_api(self) -> tuple[str, int]:
        """Where the peer's API listens."""
        return self.agent.cfg.peer_probe_address, self.agent.cfg.api_port

    async def peer_request(self, method: str, path: str, token: str) -> tuple[int, bytes]:
        """Pass an operator's request on to the peer's API, with the operator's token.

        :raises OperationError: the peer does not answer.
        """
        address, port = self.peer_api
        try:
            return await http_call(address, port, method, path, 3.0, token=token)
        except FAILURES as exc:
            raise OperationError(f"{self.agent.cfg.peer} does not answer: {exc!r}") from exc

    def _ask_peer(self, alive: bool) -> None:
        """Refresh what the peer reports in the background (not while it is silent)."""
        if not alive:
            self.peer_local = None
            return
        now = time.monotonic()
        if self._tasks or now - self._peer_asked < PEER_EVERY_S:
            return
        self._peer_asked = now
        task = asyncio.get_running_loop().create_task(self._fetch_peer(), name="dashboard-peer")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch_peer(self) -> None:
        address, port = self.peer_api
        try:
            status, body = await http_call(address, port, "GET", "/haproxy.json", PEER_TIMEOUT_S)
            doc = json.loads(body) if status == 200 else None
        except (*FAILURES, UnicodeDecodeError):
            doc = None
        proc = doc.get("process") if isinstance(doc, dict) else None
        if not isinstance(doc, dict) or not isinstance(proc, dict):
            self.peer_local = None
            return
        fails = doc.get("failovers")
        if isinstance(fails, list):
            records = (record_of(f) for f in fails[-FAILOVERS:])
            self.peer_failovers = [asdict(r) for r in records if r is not None]
        cpu = proc.get("cpu_seconds")
        percent = self.peer_cpu.add(float(cpu)) if isinstance(cpu, int | float) else None
        self.peer_local = {**doc, "process": {**proc, "cpu_percent": percent}}

    async def server_state(self, server: str, state: str) -> str:
        """A backend button on this node (:func:`~hapair.agent.serverops.set_server_state`)."""
        cfg = self.agent.cfg
        return await set_server_state(cfg.stats_socket, cfg.node, server, state)

    def close(self) -> None:
        """Cancel a fetch under way."""
        for task in self._tasks:
            task.cancel()

    # ------------------------------------------------------------------ the document
    async def _haproxy(self) -> dict[str, Any]:
        vips = {v.name: v.address for v in self.agent.cfg.vips}
        return await read_haproxy(self.agent.cfg.stats_socket, vips)

    async def local(self) -> dict[str, Any]:
        """What this node tells its peer's dashboard (``/haproxy.json``): its process's CPU
        and memory, its HAProxy's view, its failovers."""
        proc = process_usage()
        proc["cpu_percent"] = self.cpu.add(proc["cpu_seconds"])
        return {
            "node": self.agent.cfg.node,
            "process": proc,
            "haproxy": await self._haproxy(),
            "failovers": self.agent.history.failovers()[-FAILOVERS:],
        }

    async def document(self) -> dict[str, Any]:
        """The dashboard's document (see the module docstring)."""
        agent = self.agent
        st = status_document(agent)
        mine = await self.local()
        peer = st["peer"]
        view = peer["view"] or {}
        alive = peer["state"] in ("up", "warn")
        self._ask_peer(alive)
        theirs = self.peer_local if alive else None
        health = st["health"]
        lbs = [
            {**self_card(st, mine), "flap_penalty_ms": health["flap_penalty_ms"]},
            {
                "name": peer["name"],
                "self": False,
                "state": peer["state"],
                "alive": alive,
                "healthy": view.get("healthy"),
                "answers": view.get("answers"),
                "standby": view.get("standby"),
                "pingable": view.get("pingable"),
                "summary": None,
                "stable_ms": view.get("stable_ms"),
                "flap_penalty_ms": None,
                "heartbeat_age_ms": peer["last_heartbeat_ms"],
                "loss": peer["loss"],
                "effective_deadtime_ms": peer["effective_deadtime_ms"],
                "serving": peer["serving"],
                "held": view.get("held", []) if alive else [],
                "wanted": view.get("wanted", []) if alive else [],
                "process": theirs["process"] if theirs else None,
                "haproxy": theirs.get("haproxy") if theirs else None,
            },
        ]
        vips = []
        for v in agent.cfg.vips:
            holders = [lb["name"] for lb in lbs if v.name in lb["held"]]
            traffic = None
            for lb in lbs:
                if lb["name"] in holders and lb["haproxy"]:
                    traffic = lb["haproxy"].get("per_vip", {}).get(v.name)
                    break
            vips.append(
                {
                    "name": v.name,
                    "address": v.address,
                    "home": v.home,
                    "holders": holders,
                    "owner": holders[0] if len(holders) == 1 else None,
                    "reason": st["reasons"].get(v.name, ""),
                    "traffic": traffic,
                    "timeline": agent.history.timeline(v.name)[-20:],
                }
            )
        t = time.time()
        return {
            "self": st["self"],
            "cluster": st["cluster"],
            "time": stamp(t),
            "t": t,
            "uptime_s": st["uptime_s"],
            "lbs": lbs,
            "vips": vips,
            "failovers": merge_failovers(agent.history.failovers(), self.peer_failovers)[
                -FAILOVERS:
            ],
            "events": list(agent.events)[-EVENTS:],
            "config": st["config"],
            "counters": st["counters"],
        }
