"""Carrying out a :class:`~hapair.day2.follow.FollowPlan` on one HAProxy: the runtime-API
steps, and the seamless reload that keeps servers' state. Effects only, thin; the decisions
are in :mod:`hapair.day2.follow`.

Used by an AWS LB's follower (:mod:`hapair.platforms.aws.follower`); the lab drives its
HAProxies through :mod:`hapair.platforms.lab.day2` with the same runtime-API builders.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from hapair import haproxy_runtime as rt
from hapair.day2.desired import DesiredDoc
from hapair.day2.follow import Op, Step
from hapair.errors import OperationError
from hapair.render.haproxy import server_options

logger = logging.getLogger(__name__)

BACKEND = "web"
#: Seconds a server removed without a drain first is given to finish its sessions.
REMOVE_DRAIN_S = 10.0
#: Seconds ``del server`` is retried while HAProxy still holds a connection to the server.
DELETE_RETRY_S = 5.0


def cookie_key(material: str) -> str:
    """The dynamic-cookie key both LBs derive from the same cluster secret (letters and
    digits, as HAProxy wants): HAProxy 2.6 refuses ``cookie`` on a server added at runtime."""
    return hashlib.sha256(b"hapair-dynamic-cookie:" + material.encode()).hexdigest()[:32]


def run_steps(
    sock: str,
    doc: DesiredDoc,
    steps: Sequence[Step],
    key: str,
    *,
    remove_drain_s: float = REMOVE_DRAIN_S,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Carry out ``steps`` on the HAProxy behind ``sock``; returns one line per step done.

    :param doc: the new document (a new server's port and check options come from it).
    :param key: the dynamic-cookie key (see :func:`cookie_key`).
    :raises RuntimeApiError: HAProxy refused a step (the caller falls back to a reload).
    :raises OperationError: the socket does not answer.
    """
    done = []
    dynamic = False
    opts = server_options(doc.haproxy)
    for st in steps:
        if st.op is Op.ADD:
            dynamic |= _add(
                sock, rt.NewServer(BACKEND, st.name, st.address, doc.web_port, opts, st.name)
            )
            if st.drain:
                rt.call(sock, rt.set_state(BACKEND, st.name, "drain"))
        elif st.op in (Op.DRAIN, Op.READY):
            rt.call(sock, rt.set_state(BACKEND, st.name, st.op.value))
        else:
            _remove(sock, st.name, remove_drain_s, sleep)
        done.append(st.line())
    if dynamic:
        rt.call(sock, rt.set_dynamic_cookie_key(BACKEND, key))
        rt.call(sock, rt.enable_dynamic_cookie(BACKEND))
    return done


def _add(sock: str, new: rt.NewServer) -> bool:
    """``add server`` (without ``cookie`` when HAProxy refuses it: returns True then),
    ``enable health``, ``enable server``; a server already there is left as it is."""
    if new.name in rt.servers(sock, BACKEND):
        return False
    return rt.add_and_enable(sock, new)


def _remove(sock: str, name: str, drain_s: float, sleep: Callable[[float], None]) -> None:
    """Drain (bounded), maintenance, close what is left, ``del server``."""
    have = rt.servers(sock, BACKEND)
    if name not in have:
        return
    rt.call(sock, rt.set_state(BACKEND, name, "drain"))
    deadline = time.monotonic() + drain_s
    left = have[name].sessions
    while left and time.monotonic() < deadline:
        sleep(0.2)
        left = rt.servers(sock, BACKEND).get(name, have[name]).sessions
    rt.call(sock, rt.set_state(BACKEND, name, "maint"))
    if left:
        rt.call(sock, rt.shutdown_sessions(BACKEND, name))
    deadline = time.monotonic() + DELETE_RETRY_S
    while True:
        try:
            rt.call(sock, rt.del_server(BACKEND, name), "Server deleted")
            return
        except rt.RuntimeApiError:
            if time.monotonic() > deadline:
                raise
            sleep(0.1)


def reload_keeping_state(
    sock: str,
    state_file: Path,
    reload: Callable[[], None],
    doc: DesiredDoc,
    *,
    timeout: float = 20.0,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Dump the servers' state into ``state_file``, call ``reload`` (a master-worker seamless
    reload: the new worker takes the listening sockets over), wait until a new worker answers,
    set again every server ``doc`` lists in drain, then remove the state file (a later fresh
    start must not take stale state over). When HAProxy does not answer yet (boot), ``reload``
    starts it and nothing is dumped. Returns a sentence saying what happened.

    :raises OperationError: the reload command failed, or no new worker answered in time.
    """
    try:
        old: int | None = rt.worker_pid(sock)
    except OperationError:
        old = None
    kept = 0
    try:
        if old is not None:
            kept = rt.dump_server_state(sock, state_file)
        reload()
        deadline = time.monotonic() + timeout
        while True:
            try:
                if rt.worker_pid(sock, timeout=0.5) != old:
                    break
            except OperationError:
                pass
            if time.monotonic() > deadline:
                raise OperationError(f"no new HAProxy worker answered on {sock} in {timeout:g} s")
            sleep(0.1)
        for s in doc.servers:
            if s.state == "drain":
                rt.call(sock, rt.set_state(BACKEND, s.name, "drain"))
    finally:
        state_file.unlink(missing_ok=True)
    if old is None:
        return "haproxy started"
    return f"haproxy reloaded seamlessly, {kept} servers' state kept"
