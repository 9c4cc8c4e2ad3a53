"""Supervision in the lab: systemd's ``Restart=always`` for every long-running service.

Each service (HAProxy, the agent, a web app, dnsmasq) runs under ``supervise.sh``, a POSIX sh
loop run with dash *inside the node's namespace*: about 1.8 MB RSS, 0.5 MB PSS per service
(dash's pages are shared). So a machine death (every process of the namespace killed) takes the
supervisor with it, while a service that dies alone is started again after the restart delay
(1 s, doubling up to 60 s while it keeps dying within 10 s of its start), each restart logged with
its exit status in ``logs/<node>-supervisor.log`` and in the service's own log.

The supervisor writes ``<node>/<service>.pid`` (``PID RESTARTS``); the running service is the
process named there *whose parent is the supervisor*, so a stale file is never believed. The
service starts under ``setpriv --pdeathsig KILL``: if its supervisor is killed, it dies too, and
nothing ever runs unsupervised and unseen. Signals to the supervisor: TERM stops the service
(SIGTERM, waits for it) and then the supervisor; HUP is passed on; USR1 ends a restart wait.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hapair.platforms.lab import procs
from hapair.platforms.lab.procs import Proc

SCRIPT = Path(__file__).with_name("supervise.sh")
#: Seconds between a service's death and its restart (systemd's RestartSec).
RESTART_DELAY_S = 1.0


@dataclass(frozen=True)
class Running:
    """The process a supervisor runs now, and how many times it restarted the service."""

    proc: Proc
    restarts: int


def argv(name: str, pidfile: Path, log: Path, delay_s: float, command: Sequence[str]) -> list[str]:
    """The supervisor's argv for ``command`` (dash when installed, else the system's sh)."""
    shell = shutil.which("dash") or "/bin/sh"
    wrap = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
    delay_ms = str(max(1, round(delay_s * 1000)))
    return [shell, str(SCRIPT), name, str(pidfile), str(log), delay_ms, "--", *wrap, *command]


def start(
    ns: str,
    name: str,
    command: Sequence[str],
    *,
    out: Path,
    log: Path,
    pidfile: Path,
    env: dict[str, str] | None = None,
    delay_s: float = RESTART_DELAY_S,
) -> Proc:
    """Start ``command`` under a supervisor in namespace ``ns``; returns the supervisor.

    ``out`` gets the service's output (and the supervisor's restart lines), ``log`` the restart
    lines alone. The service itself is found with :func:`running` (or :func:`wait_running`).
    """
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.unlink(missing_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    return procs.spawn(ns, argv(name, pidfile, log, delay_s, command), out, env)


def running(supervisor: Proc | None, pidfile: Path) -> Running | None:
    """The service ``supervisor`` runs now; None when the supervisor is gone or waits to
    restart it."""
    if supervisor is None or not procs.alive(supervisor):
        return None
    try:
        fields = pidfile.read_text().split()
        pid, restarts = int(fields[0]), int(fields[1])
    except (OSError, ValueError, IndexError):
        return None
    st = procs.stat(pid)
    if st is None or st[0] in ("Z", "X", "x") or procs.ppid(pid) != supervisor.pid:
        return None
    return Running(Proc(pid, st[1]), restarts)


def wait_running(supervisor: Proc, pidfile: Path, timeout: float = 10.0) -> Running | None:
    """:func:`running`, waiting up to ``timeout`` s for the supervisor to (re)start it."""
    deadline = time.monotonic() + timeout
    while True:
        found = running(supervisor, pidfile)
        if found is not None or not procs.alive(supervisor) or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def restart_now(supervisor: Proc) -> bool:
    """Ask a supervisor that waits to restart its service to do it now (SIGUSR1)."""
    return procs.signal_proc(supervisor, signal.SIGUSR1)
