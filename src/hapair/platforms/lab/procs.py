"""Processes of the lab: started detached inside a namespace, tracked by pid and start time.

Liveness is read from ``/proc/PID/stat`` (state and start time), never from ``kill -0``: on these
machines PID 1 reaps orphans about a second late, and a zombie answers ``kill -0``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hapair.errors import OperationError
from hapair.platforms.lab.system import in_ns, run


@dataclass(frozen=True)
class Proc:
    """A process we started: pid plus its kernel start time (guards against pid reuse)."""

    pid: int
    start: int

    def to_json(self) -> dict[str, int]:
        """As stored in the state file."""
        return {"pid": self.pid, "start": self.start}

    @classmethod
    def from_json(cls, data: object) -> Proc | None:
        """From the state file (None when absent or not a recorded process)."""
        if not isinstance(data, dict):
            return None
        pid, start = data.get("pid"), data.get("start")
        if not isinstance(pid, int) or not isinstance(start, int):
            return None
        return cls(pid, start)


def stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in ticks) of ``pid``, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = raw[raw.rfind(")") + 2 :].split()
    return rest[0], int(rest[19])


def ppid(pid: int) -> int | None:
    """The parent of ``pid``, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return int(raw[raw.rfind(")") + 2 :].split()[1])


def alive(p: Proc | None) -> bool:
    """Whether ``p`` runs: exists, is not a zombie or dead, and is the same process we started."""
    if p is None:
        return False
    st = stat(p.pid)
    return st is not None and st[0] not in ("Z", "X", "x") and st[1] == p.start


#: Children this process started: kept so that they are reaped (no zombies pile up in a
#: long-lived caller such as the test suite) and not reported as leaked by the interpreter.
_CHILDREN: list[subprocess.Popen[bytes]] = []


def _reap() -> None:
    _CHILDREN[:] = [c for c in _CHILDREN if c.poll() is None]


atexit.register(_reap)


def spawn(ns: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    """Start ``argv`` inside namespace ``ns``, detached, output appended to ``log``."""
    _reap()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        try:
            child = subprocess.Popen(
                in_ns(ns, argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env=env,
            )
        except OSError as exc:
            raise OperationError(f"cannot start {argv[0]} in {ns}: {exc}") from exc
    _CHILDREN.append(child)
    st = stat(child.pid)
    if st is None:
        raise OperationError(f"{argv[0]} in {ns} exited at once; see {log}")
    return Proc(child.pid, st[1])


def signal_proc(p: Proc, sig: int) -> bool:
    """Send ``sig`` to ``p`` if it is still the process we started."""
    if not alive(p):
        return False
    try:
        os.kill(p.pid, sig)
    except ProcessLookupError:
        return False
    return True


def terminate(p: Proc, grace: float = 5.0) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL."""
    if not signal_proc(p, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive(p):
            return
        time.sleep(0.02)
    signal_proc(p, signal.SIGKILL)


def ns_pids(ns: str) -> list[int]:
    """Every process whose network namespace is ``ns`` (``ip netns pids``)."""
    out = run(["ip", "netns", "pids", ns], check=False).stdout
    return [int(x) for x in out.split() if x.isdigit()]


def kill_namespace(ns: str, grace: float = 3.0, first: int = signal.SIGTERM) -> int:
    """Send ``first`` (SIGTERM), then SIGKILL after ``grace`` s, to every process in ``ns``;
    returns how many there were."""
    pids = ns_pids(ns)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, first)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        left = [p for p in ns_pids(ns) if (st := stat(p)) is not None and st[0] not in "ZXx"]
        if not left:
            break
        time.sleep(0.05)
    for pid in ns_pids(ns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)
