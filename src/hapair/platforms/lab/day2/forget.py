"""Before a node is given a floating IP, drop what its kernel still remembers of connections to
that address from the last time it held it.

Why: an HAProxy closes the client connections it answered, so *it* keeps their TIME_WAIT
sockets (60 s) and conntrack their entries (120 s), while the client may reuse the same port at
once. When the address moves back, a client connection made meanwhile with the other node can
have the very 4-tuple of one of those stale entries: its packets are then judged against the old
connection, found out of window, and dropped as ``ct state invalid`` (measured: a keep-alive
client stalled 3-10 s, until its own timeout, in 3 of 10 rolling restarts). Without them, such a
packet meets only the listening socket and gets a reset, and the client reconnects at once.

Only safe on a node that does not hold the addresses (nothing live is to them); the rolling
restart calls it on the peer before ``standby`` and on the restarted node before its failback.
TIME_WAIT sockets go with ``ss -K``; conntrack entries are read from the namespace's
``nf_conntrack`` table and deleted with one ctnetlink message each, sent in batches without
waiting for acknowledgements (tens of thousands take well under a second).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import struct
from collections.abc import Iterable, Sequence

from hapair.netns import call_in
from hapair.platforms.lab.system import in_ns, run

NETLINK_NETFILTER = 12
_CT_DELETE = (1 << 8) | 2  # NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE
_NLM_F_REQUEST = 1
_NESTED = 0x8000
# One conntrack line's original direction (the first src/dst/sport/dport of the line).
_ORIG = re.compile(
    r"^ipv4\s+2\s+tcp\s+6\s.*?src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)", re.MULTILINE
)

Tuple = tuple[str, str, int, int]


def _attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def delete_message(t: Tuple, seq: int) -> bytes:
    """The ctnetlink request deleting the TCP entry whose original tuple is ``t`` (src, dst,
    sport, dport), without asking for an acknowledgement."""
    src, dst, sport, dport = t
    ip = _attr(1, ipaddress.IPv4Address(src).packed) + _attr(2, ipaddress.IPv4Address(dst).packed)
    proto = _attr(1, bytes([6])) + _attr(2, struct.pack("!H", sport))
    proto += _attr(3, struct.pack("!H", dport))
    body = _attr(1 | _NESTED, _attr(1 | _NESTED, ip) + _attr(2 | _NESTED, proto))
    nfgen = struct.pack("=BBH", socket.AF_INET, 0, 0)
    payload = nfgen + body
    return struct.pack("=IHHII", 16 + len(payload), _CT_DELETE, _NLM_F_REQUEST, seq, 0) + payload


def stale_tuples(table: str, addresses: Iterable[str]) -> list[Tuple]:
    """The original TCP tuples of ``nf_conntrack`` text whose destination is in ``addresses``."""
    wanted = set(addresses)
    return [
        (src, dst, int(sport), int(dport))
        for src, dst, sport, dport in _ORIG.findall(table)
        if dst in wanted
    ]


def _delete_all(tuples: Sequence[Tuple], batch: int = 200) -> None:
    """Send the deletions from the calling thread's namespace (see :func:`call_in`)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as nl:
        nl.bind((0, 0))
        nl.setblocking(False)
        for start in range(0, len(tuples), batch):
            chunk = tuples[start : start + batch]
            nl.send(b"".join(delete_message(t, start + i) for i, t in enumerate(chunk)))
            with contextlib.suppress(BlockingIOError):  # errors for entries gone meanwhile
                while nl.recv(65536):
                    pass


def forget_connections(namespace: str, addresses: Sequence[str]) -> int:
    """Kill the TIME_WAIT sockets from ``addresses`` and delete the TCP conntrack entries to
    them in ``namespace``; returns how many conntrack entries were deleted."""
    for address in addresses:
        argv = ["ss", "-K", "-t", "-n", "state", "time-wait", "src", address]
        run(in_ns(namespace, argv), check=False)

    def purge(_ns: str) -> int:
        try:
            with open("/proc/thread-self/net/nf_conntrack") as f:
                tuples = stale_tuples(f.read(), addresses)
        except FileNotFoundError:  # no connection tracking in this namespace: nothing stale
            return 0
        _delete_all(tuples)
        return len(tuples)

    result = call_in([namespace], purge)[namespace]
    return result if isinstance(result, int) else 0
