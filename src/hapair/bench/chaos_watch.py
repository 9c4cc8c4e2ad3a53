"""What the chaos suite watches: who carries each VIP (from the kernel's own notifications), the
agents' processes, and what they log.

VIP moves are **counted from the kernel, not sampled**: for each LB, a netlink socket opened
inside its namespace (by a short-lived thread that enters the namespace, so that neither this
process nor anything it starts ever lives there) receives every ``RTM_NEWADDR``/``RTM_DELADDR``
the moment the address changes. Nothing is missed between two samples, and killing every
process of an LB's namespace (``hapair kill lb1``) does not kill the watch.

A VIP's **holder** is the node that most recently added it and still carries it (when it lets
go, the other carrier if any, else nobody); a **move** is a change of holder to another node,
even across a spell when nobody held it. So a failover and its failback are 2 moves; a node
that drops the VIP and adds it back is 0 moves but shows as time *unheld*; a dead node's
interface still carrying the VIP while its peer took it shows as time *held twice*.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hapair.plan import Plan
from hapair.platforms.lab import network, procs

NETLINK_ROUTE = 0
RTMGRP_IPV4_IFADDR = 0x10
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
NLMSG_DONE = 3
IFA_LOCAL = 2
CLONE_NEWNET = 0x40000000


def netlink_socket_in(ns: str) -> socket.socket:
    """A NETLINK_ROUTE socket subscribed to IPv4 address changes, inside namespace ``ns``.

    A thread enters the namespace, opens the socket and ends: the socket stays in ``ns``, this
    process (its other threads) never enters it.
    """
    out: list[socket.socket | BaseException] = []

    def enter() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns({ns}): {os.strerror(e)}")
            finally:
                os.close(fd)
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.bind((0, RTMGRP_IPV4_IFADDR))
            out.append(s)
        except BaseException as exc:
            out.append(exc)

    t = threading.Thread(target=enter, name=f"netns-{ns}")
    t.start()
    t.join()
    got = out[0]
    if isinstance(got, BaseException):
        raise got
    return got


def parse_addr_messages(data: bytes) -> list[tuple[int, str]]:
    """(RTM_NEWADDR or RTM_DELADDR, IPv4 address) of each message in a netlink datagram."""
    found = []
    off = 0
    while off + 16 <= len(data):
        length, mtype = struct.unpack_from("=IH", data, off)
        if length < 16:
            break
        if mtype in (RTM_NEWADDR, RTM_DELADDR) and length >= 24:
            family = data[off + 16]
            a = off + 24
            while family == socket.AF_INET and a + 4 <= off + length:
                alen, atype = struct.unpack_from("=HH", data, a)
                if alen < 4:
                    break
                if atype == IFA_LOCAL and alen >= 8:
                    found.append((mtype, socket.inet_ntoa(data[a + 4 : a + 8])))
                a += (alen + 3) & ~3
        off += (length + 3) & ~3
    return found


@dataclass
class VipTrack:
    """One VIP's history while watched."""

    carriers: set[str] = field(default_factory=set)
    holder: str | None = None
    last_holder: str | None = None
    moves: int = 0
    #: (seconds since the watch started, new holder or "-" for nobody)
    timeline: list[tuple[float, str]] = field(default_factory=list)
    unheld_since: float | None = None
    unheld_max: float = 0.0
    unheld_total: float = 0.0
    twice_since: float | None = None
    twice_total: float = 0.0

    def apply(self, t: float, node: str, added: bool) -> None:
        """An address change on ``node`` at ``t``."""
        if added == (node in self.carriers):
            return  # a notification of what was already known (e.g. during the first dump)
        if added:
            self.carriers.add(node)
            new: str | None = node
        else:
            self.carriers.discard(node)
            new = self.holder if self.holder in self.carriers else next(iter(self.carriers), None)
        if new != self.holder:
            self.holder = new
            if new is not None and self.last_holder is not None and new != self.last_holder:
                self.moves += 1
            if new is not None:
                self.last_holder = new
            self.timeline.append((t, new or "-"))
        self._spells(t)

    def _spells(self, t: float) -> None:
        if not self.carriers and self.unheld_since is None:
            self.unheld_since = t
        elif self.carriers and self.unheld_since is not None:
            spell = t - self.unheld_since
            self.unheld_max = max(self.unheld_max, spell)
            self.unheld_total += spell
            self.unheld_since = None
        if len(self.carriers) > 1 and self.twice_since is None:
            self.twice_since = t
        elif len(self.carriers) <= 1 and self.twice_since is not None:
            self.twice_total += t - self.twice_since
            self.twice_since = None

    def close(self, t: float) -> None:
        """End open spells at ``t``."""
        if self.unheld_since is not None:
            spell = t - self.unheld_since
            self.unheld_max = max(self.unheld_max, spell)
            self.unheld_total += spell
            self.unheld_since = t
        if self.twice_since is not None:
            self.twice_total += t - self.twice_since
            self.twice_since = t


class VipWatch:
    """Follows every VIP on both LBs from the kernel (see the module docstring)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.t0 = time.monotonic()
        self.by_address = {v.address: v.name for v in plan.vips}
        self.tracks = {v.name: VipTrack() for v in plan.vips}
        self.overflows = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._socks = {netlink_socket_in(lb.namespace): lb.name for lb in plan.lbs}
        for lb in plan.lbs:  # the state now; notifications keep it current from here
            for addr in network.addresses(lb.namespace):
                self._apply(lb.name, addr, True)
        self._thread = threading.Thread(target=self._loop, name="vip-watch", daemon=True)
        self._thread.start()

    def _apply(self, node: str, address: str, added: bool) -> None:
        vip = self.by_address.get(address)
        if vip is not None:
            with self._lock:
                self.tracks[vip].apply(time.monotonic() - self.t0, node, added)

    def _resync(self, node: str) -> None:
        """After an overflow (ENOBUFS), read the node's addresses again."""
        self.overflows += 1
        now = set(network.addresses(self.plan.node(node).namespace))
        for address, vip in self.by_address.items():
            with self._lock:
                carried = node in self.tracks[vip].carriers
            if carried != (address in now):
                self._apply(node, address, address in now)

    def _loop(self) -> None:
        socks = list(self._socks)
        while not self._stop.is_set():
            ready, _, _ = select.select(socks, [], [], 0.1)
            for s in ready:
                node = self._socks[s]
                try:
                    data = s.recv(1 << 16)
                except OSError as exc:
                    if exc.errno == errno.ENOBUFS:
                        self._resync(node)
                    continue
                for mtype, address in parse_addr_messages(data):
                    self._apply(node, address, mtype == RTM_NEWADDR)

    def now(self) -> float:
        """Seconds since the watch started (the clock of the timelines)."""
        return time.monotonic() - self.t0

    def stop(self) -> dict[str, VipTrack]:
        """Stop watching; every VIP's track, with open spells ended now."""
        self._stop.set()
        self._thread.join(timeout=2)
        for s in self._socks:
            s.close()
        with self._lock:
            t = self.now()
            for track in self.tracks.values():
                track.close(t)
            return dict(self.tracks)


# ------------------------------------------------------------------------ processes


def cmdline(pid: int) -> list[str]:
    """argv of ``pid`` ([] if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def comm(pid: int) -> str:
    """The command name of ``pid`` ("" if it is gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _live(pid: int) -> bool:
    st = procs.stat(pid)
    return st is not None and st[0] not in ("Z", "X", "x")


def agent_pids(ns: str) -> list[int]:
    """The HA agent processes in namespace ``ns`` (``python -m hapair.agent``; not the
    supervisor whose own argv names the same command)."""
    found = []
    for pid in procs.ns_pids(ns):
        argv = cmdline(pid)
        if (
            len(argv) >= 3
            and Path(argv[0]).name.startswith("python")
            and argv[1:3] == ["-m", "hapair.agent"]
            and _live(pid)
        ):
            found.append(pid)
    return sorted(found)


def agent_pid(ns: str) -> int | None:
    """The agent of namespace ``ns`` (None if none runs; the lowest pid if, wrongly, several)."""
    pids = agent_pids(ns)
    return pids[0] if pids else None


def supervisor_of(pid: int) -> int | None:
    """The lab supervisor (``supervise.sh``) that runs ``pid``, if any."""
    parent = procs.ppid(pid)
    if parent is None or parent <= 1:
        return None
    return parent if any(a.endswith("supervise.sh") for a in cmdline(parent)) else None


def pids_named(ns: str, name: str) -> list[int]:
    """Live processes of namespace ``ns`` whose command name is ``name``."""
    return sorted(p for p in procs.ns_pids(ns) if comm(p) == name and _live(p))


def agent_get(sock: str, url: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """``GET url`` from an agent's API on its unix socket; the JSON body, or None when the
    agent does not answer or answers anything but 200 with a JSON object (never raises, never
    leaks the socket)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(sock)
        s.sendall(f"GET {url} HTTP/1.0\r\nHost: agent\r\nConnection: close\r\n\r\n".encode())
        chunks: list[bytes] = []
        while len(chunks) < 4096:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        s.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    if len(parts) < 2 or parts[1] != b"200":
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# ------------------------------------------------------------------------ logs

PROBLEM_RE = re.compile(r"please report|Traceback \(most recent call last\)|\bfatal: ", re.I)
MOVE_RE = re.compile(r"\b(?:INFO|WARNING) (took|released) (vip\d+)\b")


class LogCursor:
    """What was appended to some log files since the cursor was made."""

    def __init__(self, paths: list[Path]) -> None:
        self.start = {p: (p.stat().st_size if p.exists() else 0) for p in paths}

    def new_text(self, path: Path) -> str:
        """What ``path`` gained (all of it if it shrank: a new file)."""
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                f.seek(self.start.get(path, 0) if size >= self.start.get(path, 0) else 0)
                return f.read().decode(errors="replace")
        except OSError:
            return ""


def problems(text: str, limit: int = 5) -> list[str]:
    """Lines of an agent log that say something went wrong inside the agent."""
    return [line.strip()[:300] for line in text.splitlines() if PROBLEM_RE.search(line)][:limit]


def excerpt(text: str, limit: int = 60) -> list[str]:
    """The agent's decisions in a log (takes, releases, announcements, peer and health
    transitions, start and stop), at most ``limit`` lines, for the raw results."""
    keep = ("took ", "released ", "announc", "peer ", "health", "starting", "stopp", "found ")
    lines = [x.strip()[:240] for x in text.splitlines() if any(k in x for k in keep)]
    return lines[:limit]


def logged_moves(text: str) -> dict[str, int]:
    """``took`` and ``released`` sentences in an agent log, counted."""
    counts = {"took": 0, "released": 0}
    for m in MOVE_RE.finditer(text):
        counts[m.group(1)] += 1
    return counts


def signal_all(pids: list[int], sig: int) -> None:
    """Send ``sig`` to each pid that still exists."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
