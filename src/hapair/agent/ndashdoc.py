"""The dashboard's document for an N-node agent (``coordinator = "etcd"``): every LB, every
VIP, and an ``etcd`` panel (members, their health, the leader, each VIP's owner and what its
lease has left), in the shape the page (``static/dashboard.js``) already reads for the pair.

:func:`node_document` and :func:`etcd_panel` are pure: the ``/status`` document
(:mod:`hapair.agent.nstatus`) and the LBs' HAProxy views in, the document out.
:class:`NodeClusterView` is the :class:`~hapair.agent.dashboard.Source` of the agent: it adds
this node's HAProxy view and fetches every live peer's ``/haproxy.json`` in the background (at
most once a second each, never from a silent peer, so a dead LB never slows the page).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from hapair.agent.api import NODE_ACTION, SERVER_ACTION
from hapair.agent.dashdoc import (
    EVENTS,
    PEER_EVERY_S,
    PEER_TIMEOUT_S,
    http_call,
    read_haproxy,
    self_card,
)
from hapair.agent.history import CpuMeter, process_usage, stamp
from hapair.agent.nstatus import node_status
from hapair.agent.serverops import set_server_state
from hapair.errors import OperationError
from hapair.httpget import FAILURES

if TYPE_CHECKING:
    from hapair.agent.ndaemon import NodeAgent

ALIVE: Final = ("up", "warn")
"""Peer states whose heartbeats are heard."""


def etcd_panel(etcd: Mapping[str, Any]) -> dict[str, Any]:
    """The etcd panel from ``/status``'s ``etcd`` section (pure).

    ``quorum`` is whether a majority of the members listed is healthy (None: none listed yet).
    """
    members = list(etcd.get("members") or [])
    healthy = sum(1 for m in members if m.get("healthy"))
    mine = etcd.get("lease")
    return {
        "available": bool(etcd.get("available")),
        "leader": etcd.get("leader"),
        "members": members,
        "healthy_members": healthy,
        "quorum": None if not members else healthy >= len(members) // 2 + 1,
        "lease": mine,
        "lease_valid": bool(etcd.get("lease_valid")),
        "lease_left_ms": etcd.get("lease_left_ms"),
        "fenced": etcd.get("fenced"),
        "last_error": etcd.get("last_error"),
        "read_ms_ago": etcd.get("read_ms_ago"),
        "vips": [
            {**row, "mine": row.get("lease") is not None and row.get("lease") == mine}
            for row in etcd.get("leases") or []
        ],
    }


def node_document(
    st: Mapping[str, Any],
    mine: Mapping[str, Any],
    peers_local: Mapping[str, Mapping[str, Any]],
    vips: Sequence[tuple[str, str, str]],
    t: float,
) -> dict[str, Any]:
    """The dashboard's document (pure).

    :param st: this agent's ``/status`` document.
    :param mine: this node's ``/haproxy.json`` (process, HAProxy view).
    :param peers_local: each live peer's ``/haproxy.json``, when fetched.
    :param vips: (name, address, home) of each VIP, in order.
    :param t: the wall clock (seconds).
    """
    lbs: list[dict[str, Any]] = [self_card(st, mine)]
    for p in st["peers"]:
        alive = p["state"] in ALIVE
        theirs = peers_local.get(p["name"]) if alive else None
        lbs.append(
            {
                "name": p["name"],
                "self": False,
                "state": p["state"],
                "liveness": p["liveness"],
                "alive": alive,
                "healthy": p["healthy"],
                "answers": None,
                "standby": p["standby"],
                "summary": None,
                "heartbeat_age_ms": p["last_heartbeat_ms"],
                "loss": p["loss"],
                "held": p["held"] if alive else [],
                "wanted": [],
                "process": theirs.get("process") if theirs else None,
                "haproxy": theirs.get("haproxy") if theirs else None,
            }
        )
    owners = st["etcd"].get("owners") or {}
    out_vips = []
    for name, address, home in vips:
        holders = [lb["name"] for lb in lbs if name in lb["held"]]
        traffic = next(
            (
                lb["haproxy"].get("per_vip", {}).get(name)
                for lb in lbs
                if lb["name"] in holders and lb["haproxy"]
            ),
            None,
        )
        out_vips.append(
            {
                "name": name,
                "address": address,
                "home": home,
                "holders": holders,
                "owner": holders[0] if len(holders) == 1 else None,
                "granted_to": (owners.get(name) or {}).get("node"),
                "reason": st["reasons"].get(name, ""),
                "traffic": traffic,
                "timeline": [],
            }
        )
    return {
        "self": st["self"],
        "cluster": st["cluster"],
        "coordinator": "etcd",
        "time": stamp(t),
        "t": t,
        "uptime_s": st["uptime_s"],
        "decision": st["decision"],
        "lbs": lbs,
        "vips": out_vips,
        "failovers": [],
        "events": list(st["events"])[-EVENTS:],
        "config": st["config"],
        "counters": st["counters"],
        "etcd": etcd_panel(st["etcd"]),
    }


class NodeClusterView:
    """The dashboard's :class:`~hapair.agent.dashboard.Source` for an N-node agent."""

    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent
        self.cpu = CpuMeter()
        self.peer_cpu = {p.name: CpuMeter() for p in agent.cfg.peers}
        #: each peer's ``/haproxy.json`` as last fetched (absent: nothing recent)
        self.peers_local: dict[str, dict[str, Any]] = {}
        self._asked: dict[str, float] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def _address(self, node: str) -> str | None:
        return next((p.probe_address for p in self.agent.cfg.peers if p.name == node), None)

    async def peer_request(self, method: str, path: str, token: str) -> tuple[int, bytes]:
        """An operator's call on another LB, with the operator's (checked) token: ``path`` is
        ``/node/<name>/<standby|online>``, which goes to that LB's API as ``/<action>``, or
        ``/node/<name>/server/<server>/<state>``, which goes to it as it is.

        :raises OperationError: no such peer, or it does not answer.
        """
        named = NODE_ACTION.fullmatch(path) or SERVER_ACTION.fullmatch(path)
        address = self._address(named.group(1)) if named else None
        if named is None or address is None:
            raise OperationError(f"{path}: no such LB among {self.agent.cfg.node}'s peers")
        node = named.group(1)
        there = f"/{named.group(2)}" if named.re is NODE_ACTION else path
        try:
            return await http_call(
                address, self.agent.cfg.api_port, method, there, 3.0, token=token
            )
        except FAILURES as exc:
            raise OperationError(f"{node} does not answer: {exc!r}") from exc

    def _ask_peers(self, states: Mapping[str, str]) -> None:
        now = time.monotonic()
        for name, state in states.items():
            if state not in ALIVE:
                self.peers_local.pop(name, None)
                continue
            if name in self._tasks or now - self._asked.get(name, -1e9) < PEER_EVERY_S:
                continue
            self._asked[name] = now
            task = asyncio.get_running_loop().create_task(
                self._fetch(name), name=f"dashboard-{name}"
            )
            self._tasks[name] = task
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task.get_name().removeprefix("dashboard-"), None)

    async def _fetch(self, name: str) -> None:
        address = self._address(name)
        doc = None
        if address is not None:
            try:
                status, body = await http_call(
                    address, self.agent.cfg.api_port, "GET", "/haproxy.json", PEER_TIMEOUT_S
                )
                doc = json.loads(body) if status == 200 else None
            except (*FAILURES, UnicodeDecodeError):
                doc = None
        proc = doc.get("process") if isinstance(doc, dict) else None
        if not isinstance(doc, dict) or not isinstance(proc, dict):
            self.peers_local.pop(name, None)
            return
        cpu = proc.get("cpu_seconds")
        meter = self.peer_cpu[name]
        percent = meter.add(float(cpu)) if isinstance(cpu, int | float) else None
        self.peers_local[name] = {**doc, "process": {**proc, "cpu_percent": percent}}

    async def server_state(self, server: str, state: str) -> str:
        """A backend button on this node (:func:`~hapair.agent.serverops.set_server_state`)."""
        cfg = self.agent.cfg
        return await set_server_state(cfg.stats_socket, cfg.node, server, state)

    def close(self) -> None:
        """Cancel the fetches under way."""
        for task in list(self._tasks.values()):
            task.cancel()

    async def _haproxy(self) -> dict[str, Any]:
        vips = {v.name: v.address for v in self.agent.cfg.vips}
        return await read_haproxy(self.agent.cfg.stats_socket, vips)

    async def local(self) -> dict[str, Any]:
        """What this node tells the other LBs' dashboards (``/haproxy.json``)."""
        proc = process_usage()
        proc["cpu_percent"] = self.cpu.add(proc["cpu_seconds"])
        return {"node": self.agent.cfg.node, "process": proc, "haproxy": await self._haproxy()}

    async def document(self) -> dict[str, Any]:
        """The dashboard's document (see :func:`node_document`)."""
        st = node_status(self.agent)
        mine = await self.local()
        self._ask_peers({p["name"]: p["state"] for p in st["peers"]})
        vips = [(v.name, v.address, v.home) for v in self.agent.cfg.vips]
        return node_document(st, mine, self.peers_local, vips, time.time())
