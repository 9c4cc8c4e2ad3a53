"""The lab's processes: dnsmasq, web apps, HAProxy and the HA agents, each in its namespace."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

from hapair.errors import OperationError
from hapair.haproxy_stats import show_stat
from hapair.plan import Plan
from hapair.platforms.lab import procs
from hapair.platforms.lab.paths import LabPaths
from hapair.platforms.lab.procs import Proc
from hapair.platforms.lab.system import in_ns, run
from hapair.render.dns import dnsmasq_argv

PYTHON = sys.executable


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HAPAIR_TEST"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_dnsmasq(plan: Plan, paths: LabPaths) -> Proc:
    """dnsmasq on the Internet side, answering the cluster's name with both VIPs."""
    ns = plan.node("inet").namespace
    argv = dnsmasq_argv(plan, str(paths.hosts), str(paths.log("inet", "dnsmasq")))
    return procs.spawn(ns, argv, paths.log("inet", "dnsmasq-out"), _env())


def start_webapp(plan: Plan, paths: LabPaths, node: str) -> Proc:
    """The demo web app on a web node."""
    n = plan.node(node)
    argv = [
        PYTHON,
        "-m",
        "hapair.webapp",
        "--node",
        n.name,
        "--address",
        n.address,
        "--port",
        str(plan.spec.web.port),
    ]
    return procs.spawn(n.namespace, argv, paths.log(node, "webapp"), _env())


def start_haproxy(plan: Plan, paths: LabPaths, node: str) -> Proc:
    """HAProxy in master-worker mode, in the foreground of its own session."""
    n = plan.node(node)
    paths.haproxy_sock(node).unlink(missing_ok=True)
    argv = ["haproxy", "-W", "-db", "-f", str(paths.haproxy_cfg(node))]
    return procs.spawn(n.namespace, argv, paths.log(node, "haproxy"), _env())


def start_agent(plan: Plan, paths: LabPaths, node: str) -> Proc:
    """The hapair HA agent of an LB node."""
    n = plan.node(node)
    paths.agent_sock(node).unlink(missing_ok=True)
    argv = [PYTHON, "-m", "hapair.agent", "--config", str(paths.agent_toml(node))]
    return procs.spawn(n.namespace, argv, paths.log(node, "agent"), _env())


def place_static(plan: Plan, node: str) -> None:
    """Static placement (no agent): each LB holds its home VIP through the l2 resource agent."""
    n = plan.node(node)
    for vip in plan.vips:
        if vip.home == node:
            run(
                in_ns(
                    n.namespace, [PYTHON, "-m", "hapair.agent.resources.l2", "start", vip.address]
                ),
                timeout=15,
            )


def _log_tail(path: object, lines: int = 5) -> str:
    try:
        with open(str(path)) as f:
            return " | ".join(x.strip() for x in f.readlines()[-lines:])
    except OSError:
        return ""


def wait_haproxy_ready(
    plan: Plan, paths: LabPaths, node: str, proc: Proc | None = None, timeout: float = 60.0
) -> None:
    """Wait until HAProxy answers on its stats socket and sees every backend UP.

    :raises OperationError: not ready in time (names the backends still down).
    """
    deadline = time.monotonic() + timeout
    last = "stats socket not answering"
    while time.monotonic() < deadline:
        if proc is not None and not procs.alive(proc):
            log = paths.log(node, "haproxy")
            raise OperationError(f"HAProxy on {node} exited: {_log_tail(log)} (see {log})")
        try:
            servers = show_stat(str(paths.haproxy_sock(node)), timeout=1.0)
        except OperationError as exc:
            last = str(exc)
        else:
            down = [s.server for s in servers if not s.up]
            if servers and not down:
                return
            last = f"backends not UP yet: {', '.join(down[:10])}"
        time.sleep(0.1)
    raise OperationError(
        f"HAProxy on {node} not ready after {timeout:.0f} s ({last}); "
        f"see {paths.log(node, 'haproxy')}"
    )


def node_procs(plan: Plan, ns: str, comm: str) -> list[int]:
    """PIDs in namespace ``ns`` whose command name is ``comm``."""
    out = []
    for pid in procs.ns_pids(ns):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == comm:
                    out.append(pid)
        except OSError:
            continue
    return out


def sigkill_all(pids: list[int]) -> None:
    """SIGSTOP every pid first (so none reacts to the others dying), then SIGKILL them."""
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
