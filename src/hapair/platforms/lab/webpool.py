"""The lab's web apps: one supervised process (:mod:`hapair.webapp.pool`) serves every web node.

The pool runs in the lab's switch namespace (``<c>-vpc``, which has no address of its own) under
a supervisor like every service, recorded in the state's ``procs`` table as ``vpc/webpool``; it
listens inside each web node's namespace. So ``down`` finds and stops it like any process of the
lab. A web node's "machine death" (``kill webN``) stops its serving (listener and connections
closed, as when its process died): the nodes killed that way are kept in the state's
``webs_down`` until ``revive`` (or ``up``) serves them again.

Each change writes the pool's configuration, signals it (SIGHUP) and waits until its status file
says it applied that generation.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hapair.errors import HapairError, OperationError
from hapair.fileio import write_atomic
from hapair.plan import Plan
from hapair.platforms.lab import procs, services, supervise
from hapair.platforms.lab.paths import LabPaths
from hapair.webapp.pool import PoolConfig, PoolNode

#: The pool's pseudo node (its folder, pidfile and logs) and service name in the state.
NODE = "vpc"
SERVICE = "webpool"
#: Seconds to wait for the pool to apply a configuration (250 nodes take well under one).
APPLY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class WebView:
    """What ``status`` shows for one web node's web app."""

    running: bool
    pid: int | None
    supervised: bool
    restarts: int | None

    def to_json(self) -> dict[str, Any]:
        """As in ``status``'s ``processes``."""
        return {
            "running": self.running,
            "pid": self.pid,
            "supervised": self.supervised,
            "restarts": self.restarts,
        }


def config_path(paths: LabPaths) -> Path:
    """The pool's configuration file."""
    return paths.node(NODE) / "webpool.json"


def status_path(paths: LabPaths) -> Path:
    """The file where the pool reports what it serves."""
    return paths.node(NODE) / "webpool.status.json"


def read_status(paths: LabPaths) -> dict[str, Any]:
    """The pool's last report (empty when there is none yet)."""
    try:
        data: dict[str, Any] = json.loads(status_path(paths).read_text())
    except (OSError, ValueError):
        return {}
    return data


def _current(paths: LabPaths) -> PoolConfig | None:
    try:
        return PoolConfig.from_json(config_path(paths).read_text())
    except (OSError, HapairError):
        return None


def desired(plan: Plan, state: dict[str, Any]) -> tuple[PoolNode, ...]:
    """The web nodes the pool should serve: every web node of the plan not killed by chaos."""
    down = set(state.get("webs_down", []))
    return tuple(PoolNode(w.name, w.namespace, w.address) for w in plan.webs if w.name not in down)


def _command(paths: LabPaths) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hapair.webapp.pool",
        "--config",
        str(config_path(paths)),
        "--status",
        str(status_path(paths)),
    ]


def _wait_applied(paths: LabPaths, pid: int, generation: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        st = read_status(paths)
        if st.get("pid") == pid and int(st.get("generation", -1)) >= generation:
            return st
        if time.monotonic() > deadline:
            raise OperationError(
                f"the web app pool did not apply its configuration within {timeout:.0f} s "
                f"(see {paths.log(NODE, SERVICE)})"
            )
        time.sleep(0.02)


def ensure(plan: Plan, paths: LabPaths, state: dict[str, Any], delay_s: float) -> bool:
    """Make the pool run and serve :func:`desired`; returns whether anything changed.

    The caller saves the state (its ``procs`` entry for the pool may be new).

    :raises OperationError: the pool did not start, did not apply its configuration in time,
        or cannot serve a node (named, with the reason).
    """
    table: dict[str, Any] = state.setdefault("procs", {})
    nodes = desired(plan, state)
    old = _current(paths)
    base = old.generation if old is not None else 0
    changed = old is None or old.nodes != nodes or old.port != plan.spec.web.port
    generation = base + 1 if changed else base
    if changed:
        config = PoolConfig(generation, plan.spec.web.port, nodes)
        write_atomic(config_path(paths), config.to_json())
    svc = services.recorded(table, NODE, SERVICE)
    now = svc.running(paths)
    if now is None:
        if svc.supervised():
            assert svc.supervisor is not None
            supervise.restart_now(svc.supervisor)
        else:
            sup = supervise.start(
                plan.vpc_namespace,
                SERVICE,
                _command(paths),
                out=paths.log(NODE, SERVICE),
                log=paths.log(NODE, "supervisor"),
                pidfile=paths.pidfile(NODE, SERVICE),
                env=services.child_env(),
                delay_s=delay_s,
            )
            table[svc.key] = {"pid": None, "start": None, "supervisor": sup.to_json()}
        pid = services.settle(table, paths, NODE, SERVICE).pid
        st = _wait_applied(paths, pid, generation, APPLY_TIMEOUT_S)
        changed = True
    else:
        services.refresh(table, paths, NODE, SERVICE)
        # Its first report comes after its signal handlers are in place: only then SIGHUP.
        st = _wait_applied(paths, now.proc.pid, base, APPLY_TIMEOUT_S)
        if changed:
            procs.signal_proc(now.proc, signal.SIGHUP)
            st = _wait_applied(paths, now.proc.pid, generation, APPLY_TIMEOUT_S)
    failed = {k: v for k, v in st.get("nodes", {}).items() if v}
    if failed or st.get("error"):
        why = st.get("error") or "; ".join(f"{k}: {v}" for k, v in sorted(failed.items()))
        raise OperationError(f"the web app pool cannot serve: {why}")
    return changed


def set_down(
    plan: Plan, paths: LabPaths, state: dict[str, Any], node: str, down: bool, delay_s: float
) -> bool:
    """Stop (``down``) or start serving one web node; returns whether that changed anything."""
    webs_down = set(state.get("webs_down", []))
    was = node in webs_down
    (webs_down.add if down else webs_down.discard)(node)
    state["webs_down"] = sorted(webs_down)
    changed = ensure(plan, paths, state, delay_s)
    return was != down or changed


def web_views(paths: LabPaths, state: dict[str, Any]) -> dict[str, WebView]:
    """For each web node the pool reports, whether its web app serves now (read live: the
    pool's process from its supervisor, then its status file)."""
    svc = services.recorded(state.get("procs", {}), NODE, SERVICE)
    now = svc.running(paths)
    supervised = svc.supervised()
    st = read_status(paths) if now is not None else {}
    if now is None or st.get("pid") != now.proc.pid:
        return {}
    return {
        name: WebView(True, now.proc.pid, supervised, now.restarts)
        for name, error in st.get("nodes", {}).items()
        if error == ""
    }


def down_view(paths: LabPaths, state: dict[str, Any], node: str) -> WebView:
    """What a web node that the pool does not serve shows: restarting while the pool's
    supervisor restarts the pool, down when the node was killed (until ``revive``)."""
    svc = services.recorded(state.get("procs", {}), NODE, SERVICE)
    killed = node in state.get("webs_down", [])
    return WebView(False, None, svc.supervised() and not killed, None)
