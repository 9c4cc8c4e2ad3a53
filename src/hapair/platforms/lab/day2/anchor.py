"""The day-2 benchmark's second anchor: an HAProxy reload *without* socket passing, what a
``systemctl reload`` of a configuration that does not expose its listeners does.

The lab's haproxy.cfg has ``expose-fd listeners`` on its stats socket: on a reload (SIGUSR2 to
the master) the new worker takes the listening sockets over from the old one, so no SYN finds a
port closed. Here the configuration is first rewritten without it, so the new worker binds new
sockets of its own while the old one closes its own, connections waiting in the old sockets'
accept queues included. The running configuration is put back on disk afterwards; the workers
then run without ``expose-fd``, so the next reload is not seamless either: run it last, or
restart HAProxy (``hapair restart``).
"""

from __future__ import annotations

import signal
import time

from hapair import haproxy_runtime as rt
from hapair.errors import OperationError
from hapair.fileio import write_atomic
from hapair.platforms.lab import procs
from hapair.platforms.lab.day2.haproxy import master, serves
from hapair.platforms.lab.day2.target import Target

EXPOSE = " expose-fd listeners"


def plain_reload(t: Target, lb: str, timeout: float = 20.0) -> float:
    """Reload ``lb``'s HAProxy without passing its listening sockets; returns the seconds it
    took (until the new worker serves).

    :raises OperationError: the configuration has no ``expose-fd listeners`` to take out, or no
        new worker serves within ``timeout``.
    """
    cfg = t.paths.haproxy_cfg(lb)
    text = cfg.read_text()
    mode = cfg.stat().st_mode & 0o777
    if EXPOSE not in text:
        raise OperationError(f"{cfg}: no '{EXPOSE.strip()}' to take out")
    sock = str(t.paths.haproxy_sock(lb))
    proc = master(t, lb)
    old = rt.worker_pid(sock)
    t0 = time.monotonic()
    write_atomic(cfg, text.replace(EXPOSE, ""), mode=mode)
    try:
        procs.signal_proc(proc, signal.SIGUSR2)
        deadline = t0 + timeout
        while True:
            try:
                if rt.worker_pid(sock, timeout=0.5) != old and serves(t, lb):
                    break
            except OperationError:
                pass
            if time.monotonic() > deadline:
                raise OperationError(f"no new HAProxy worker serves on {lb} after {timeout:g} s")
            time.sleep(0.02)
    finally:
        write_atomic(cfg, text, mode=mode)
    return time.monotonic() - t0
