"""HAProxy on the lab's LBs, as day-2 operations drive it: the seamless master-worker reload,
a service restart under its supervisor (and the plain stop/start the original stack's Ansible
re-run did), and the check that an LB serves.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from hapair import haproxy_runtime as rt
from hapair.errors import OperationError
from hapair.httpget import FAILURES, get_head
from hapair.netns import call_in
from hapair.platforms.lab import procs, services
from hapair.platforms.lab.day2.target import Target
from hapair.platforms.lab.procs import Proc


def master(t: Target, lb: str) -> Proc:
    """The HAProxy master process running on ``lb`` now.

    :raises OperationError: HAProxy does not run there.
    """
    svc = services.recorded(t.state.get("procs", {}), lb, "haproxy")
    now = svc.running(t.paths)
    if now is None:
        raise OperationError(f"HAProxy does not run on {lb} (`hapair revive {lb}` first)")
    return now.proc


def serves(t: Target, lb: str, timeout: float = 2.0) -> bool:
    """Whether ``lb``'s HAProxy answers ``GET /`` with a 200 from itself, asked from inside the
    LB's namespace on its own address (no VIP needed)."""
    node = t.plan.node(lb)
    port = t.plan.spec.haproxy.http_port
    host = t.plan.spec.cluster.domain

    def ask(_ns: str) -> bool:
        try:
            status, headers = asyncio.run(
                get_head(node.address, port, "/", host, timeout, "hapair-day2")
            )
        except FAILURES:
            return False
        return status == 200 and headers.get("x-lb") == lb

    return call_in([node.namespace], ask)[node.namespace] is True


def _wait(what: str, pred: Callable[[], bool], timeout: float, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise OperationError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def seamless_reload(t: Target, lb: str, timeout: float = 20.0) -> float:
    """Reload ``lb``'s HAProxy with its haproxy.cfg as written now; returns the seconds it took.

    First the servers' state goes to the ``server-state-file`` (``show servers state``), so the
    new worker keeps each server's drain/maintenance state and health; the file is removed once
    the new worker serves (a later fresh start must not take over stale state). Then SIGUSR2
    to the master: it re-executes itself on the new configuration and forks a new worker,
    which takes the listening sockets over from the old one through the stats socket
    (``expose-fd listeners``), so no SYN finds the port closed; the old worker stops accepting
    and finishes its connections (``hard-stop-after``). Done when the new worker answers on the
    stats socket and serves a request.

    :raises OperationError: the master is gone, or no new worker serves within ``timeout``
        (the old one keeps serving: HAProxy keeps it when the new configuration fails).
    """
    sock = str(t.paths.haproxy_sock(lb))
    proc = master(t, lb)
    old = rt.worker_pid(sock)
    t0 = time.monotonic()
    state = t.paths.server_state(lb)
    rt.dump_server_state(sock, state)
    procs.signal_proc(proc, signal.SIGUSR2)

    def new_worker() -> bool:
        if not procs.alive(proc):
            raise OperationError(f"HAProxy's master on {lb} exited during the reload")
        try:
            return rt.worker_pid(sock, timeout=0.5) != old
        except OperationError:
            return False

    try:
        _wait(f"a new HAProxy worker on {lb}", new_worker, timeout)
        _wait(f"{lb}'s new HAProxy worker to serve", lambda: serves(t, lb), timeout, 0.05)
    except OperationError as exc:
        log = t.paths.log(lb, "haproxy")
        raise OperationError(f"reload of HAProxy on {lb} failed: {exc} (see {log})") from None
    finally:
        state.unlink(missing_ok=True)
    return time.monotonic() - t0


def stop_service(t: Target, node: str, service: str, grace: float = 15.0) -> float:
    """Stop ``service`` on ``node``: its supervisor passes SIGTERM on, waits for it and exits
    (for HAProxy, the master stops its workers at once: connections in flight are cut); after
    ``grace`` seconds, SIGKILL. Returns the seconds it took."""
    table = t.state.setdefault("procs", {})
    svc = services.recorded(table, node, service)
    t0 = time.monotonic()
    for proc in (svc.supervisor, svc.recorded):
        if proc is not None:
            procs.terminate(proc, grace=grace)
    table.pop(svc.key, None)
    return time.monotonic() - t0


def start_service(t: Target, node: str, service: str) -> None:
    """Start ``service`` on ``node`` under a new supervisor and wait until it runs (HAProxy:
    until it sees every backend UP); the state records it."""
    table = t.state.setdefault("procs", {})
    try:
        services.ensure(t.plan, t.paths, table, node, service, t.delay)
        proc = services.settle(table, t.paths, node, service)
    finally:
        t.save()
    if service == "haproxy":
        services.wait_haproxy_ready(t.plan, t.paths, node, proc)


def restart_service(t: Target, node: str, service: str) -> float:
    """``systemctl restart``: :func:`stop_service`, then :func:`start_service` at once; returns
    the seconds the stop took."""
    took = stop_service(t, node, service)
    start_service(t, node, service)
    return took


def restart_together(t: Target, lbs: Sequence[str], service: str) -> None:
    """Restart ``service`` on every LB of ``lbs`` at the same time, as a configuration tool run
    on all hosts at once does (stop them together, then start them together)."""
    with ThreadPoolExecutor(max_workers=len(lbs)) as pool:
        list(pool.map(lambda lb: stop_service(t, lb, service), lbs))
    table = t.state.setdefault("procs", {})
    started = []
    try:
        for lb in lbs:
            services.ensure(t.plan, t.paths, table, lb, service, t.delay)
        for lb in lbs:
            started.append((lb, services.settle(table, t.paths, lb, service)))
    finally:
        t.save()
    if service == "haproxy":
        for lb, proc in started:
            services.wait_haproxy_ready(t.plan, t.paths, lb, proc)
