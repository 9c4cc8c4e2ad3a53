"""The lab's services: dnsmasq, web apps, HAProxy and the HA agents, each in its namespace under
a supervisor (:mod:`hapair.platforms.lab.supervise`)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from hapair.errors import OperationError
from hapair.haproxy_stats import show_stat
from hapair.plan import Plan, Role
from hapair.platforms.lab import procs, supervise
from hapair.platforms.lab.paths import LabPaths
from hapair.platforms.lab.procs import Proc
from hapair.platforms.lab.system import in_ns, run
from hapair.render.dns import dnsmasq_argv

PYTHON = sys.executable


def child_env() -> dict[str, str]:
    """The environment of the lab's services: ours, without AWS credentials or test switches,
    and unbuffered Python output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HAPAIR_TEST"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


#: The long-running services of each kind of node, in start order. A web node's ``webapp`` is
#: served by the lab's one web app pool (:mod:`hapair.platforms.lab.webpool`).
SERVICES: dict[Role, tuple[str, ...]] = {
    Role.INET: ("dnsmasq",),
    Role.WEB: ("webapp",),
    Role.LB: ("haproxy", "agent"),
}


def services_of(plan: Plan, node: str, engine: str) -> list[str]:
    """The services the lab runs on ``node`` (the agent only with the ``hapair`` engine)."""
    found = SERVICES.get(plan.node(node).role, ())
    return [s for s in found if s != "agent" or engine == "hapair"]


def command(plan: Plan, paths: LabPaths, node: str, service: str) -> list[str]:
    """argv of ``service`` on ``node`` (run inside its namespace, in the foreground)."""
    if service == "dnsmasq":
        return dnsmasq_argv(plan, str(paths.hosts), str(paths.log("inet", "dnsmasq")))
    if service == "haproxy":
        # Master-worker mode, in the foreground; it replaces a stale stats socket itself.
        return ["haproxy", "-W", "-db", "-f", str(paths.haproxy_cfg(node))]
    if service == "agent":
        return [PYTHON, "-m", "hapair.agent", "--config", str(paths.agent_toml(node))]
    raise OperationError(f"no service {service} on {node}")


def start(plan: Plan, paths: LabPaths, node: str, service: str, delay_s: float) -> Proc:
    """Start ``service`` on ``node`` under its supervisor; returns the supervisor."""
    if service == "haproxy":
        paths.haproxy_sock(node).unlink(missing_ok=True)
        paths.server_state(node).unlink(missing_ok=True)  # a fresh start takes over no state
    elif service == "agent":
        paths.agent_sock(node).unlink(missing_ok=True)
    out = paths.log(node, "dnsmasq-out" if service == "dnsmasq" else service)
    env = child_env()
    if service == "agent" and plan.spec.lab.fabric == "aws":
        from hapair.platforms.lab.fabric.lab import service_env

        env = service_env(env)  # the lab's EC2 endpoint, dummy credentials
    return supervise.start(
        plan.node(node).namespace,
        service,
        command(plan, paths, node, service),
        out=out,
        log=paths.log(node, "supervisor"),
        pidfile=paths.pidfile(node, service),
        env=env,
        delay_s=delay_s,
    )


@dataclass(frozen=True)
class Service:
    """One service of a node as the lab's state records it."""

    node: str
    name: str
    supervisor: Proc | None
    #: The service process as last recorded (the supervisor may have restarted it since).
    recorded: Proc | None

    @property
    def key(self) -> str:
        """Its key in the state's ``procs`` table."""
        return f"{self.node}/{self.name}"

    def running(self, paths: LabPaths) -> supervise.Running | None:
        """The service process running now (read live; a process recorded without a
        supervisor, by a lab made before supervision, counts while it lives)."""
        if self.supervisor is None:
            alive = self.recorded is not None and procs.alive(self.recorded)
            return supervise.Running(self.recorded, 0) if alive and self.recorded else None
        return supervise.running(self.supervisor, paths.pidfile(self.node, self.name))

    def supervised(self) -> bool:
        """Whether its supervisor runs."""
        return procs.alive(self.supervisor)


def recorded(table: dict[str, Any], node: str, service: str) -> Service:
    """What the state's ``procs`` table says about ``service`` on ``node``."""
    entry = table.get(f"{node}/{service}") or {}
    return Service(node, service, Proc.from_json(entry.get("supervisor")), Proc.from_json(entry))


def record(table: dict[str, Any], node: str, service: str, sup: Proc, now: Proc) -> None:
    """Write a supervised service into the state's ``procs`` table: ``pid`` and ``start`` are the
    service process (as of now), ``supervisor`` its supervisor."""
    table[f"{node}/{service}"] = {**now.to_json(), "supervisor": sup.to_json()}


def refresh(table: dict[str, Any], paths: LabPaths, node: str, service: str) -> bool:
    """Record the process a live supervisor runs now; returns whether the entry changed."""
    svc = recorded(table, node, service)
    now = svc.running(paths)
    if svc.supervisor is None or now is None or now.proc == svc.recorded:
        return False
    record(table, node, service, svc.supervisor, now.proc)
    return True


def ensure(
    plan: Plan, paths: LabPaths, table: dict[str, Any], node: str, service: str, delay_s: float
) -> str | None:
    """Make ``service`` run on ``node``: ``started`` (a new supervisor), ``restarted`` (its
    supervisor was waiting to restart it: told to do it now) or None (it runs).

    The state's entry is updated by :func:`settle` once the service process is up.
    """
    svc = recorded(table, node, service)
    if svc.supervised():
        if svc.running(paths) is not None:
            return None
        assert svc.supervisor is not None
        supervise.restart_now(svc.supervisor)
        return "restarted"
    # No supervisor: a service still alive is an orphan (one of a lab made before supervision,
    # or setpriv missing): replace it, so that nothing runs unsupervised.
    if procs.alive(svc.recorded):
        assert svc.recorded is not None
        sigkill_all([svc.recorded.pid])
    sup = start(plan, paths, node, service, delay_s)
    table[svc.key] = {"pid": None, "start": None, "supervisor": sup.to_json()}
    return "started"


def settle(
    table: dict[str, Any], paths: LabPaths, node: str, service: str, timeout: float = 10.0
) -> Proc:
    """Wait until the supervisor of ``service`` runs it, and record the process.

    :raises OperationError: it did not start in time (with the end of its log).
    """
    svc = recorded(table, node, service)
    found = None
    if svc.supervisor is not None:
        found = supervise.wait_running(svc.supervisor, paths.pidfile(node, service), timeout)
    if found is None or svc.supervisor is None:
        log = paths.log(node, "dnsmasq-out" if service == "dnsmasq" else service)
        raise OperationError(
            f"{service} on {node} did not start: {_log_tail(log)} (see {log} and "
            f"{paths.log(node, 'supervisor')})"
        )
    record(table, node, service, svc.supervisor, found.proc)
    return found.proc


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
