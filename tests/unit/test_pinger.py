"""The ping verdict (hapair.agent.pingverdict), pure: rounds sent and replies read by hand, on
an explicit clock in ms; and the raw-socket Pinger feeding it (no socket: the reply is handed
to its reader)."""

from __future__ import annotations

import struct

from hapair.agent.health import Pinger
from hapair.agent.pingverdict import REQUESTS_KEPT, PingVerdict, ping_window_ms

NODE = "198.18.0.1"


def test_a_reply_counts_for_one_window() -> None:
    v = PingVerdict([NODE], interval_ms=50)
    assert not v.pingable(100_000)
    v.replied(NODE, v.sent(100_000), 100_000)
    assert v.pingable(100_000) and v.pingable(101_000)
    assert not v.pingable(101_500)


def test_the_window_is_three_rounds_when_rounds_are_far_apart() -> None:
    """The AWS profile pings every 2 s: just before the next round the last reply must still
    count (with a fixed 1 s window the node looked cut off half of the time and its VIPs went
    back and forth, found on the aws fabric with the AWS timings)."""
    assert ping_window_ms(50) == 1000  # the lab: a round every 100 ms, ten per window
    v = PingVerdict([NODE], interval_ms=1000)
    v.replied(NODE, v.sent(0), 0)
    assert v.pingable(1900)  # just before the next round (every 2 s)
    assert v.pingable(6000) and not v.pingable(6001)  # three rounds lost
    v.interval_ms = 50  # a reload to the lab's timings: back to one second
    assert not v.pingable(1900)


def test_only_a_request_sent_after_the_heartbeat_was_due_proves_the_path() -> None:
    v = PingVerdict([NODE], interval_ms=50)
    assert v.pingable_now(0) == v.pingable(0)  # never heard the peer: the plain verdict
    seq = v.sent(1000)
    v.heard(1000)  # the peer's next heartbeat is due at 1050
    v.replied(NODE, seq, 1010)  # a reply that may have crossed just before the cut
    assert v.pingable(1100)
    assert not v.pingable_now(1100)
    v.replied(NODE, v.sent(1050), 1060)  # sent when it was due: proof
    assert v.pingable_now(1100)
    v.heard(1060)
    assert not v.pingable_now(1100)  # heard again: due at 1110, the last proof is older


def test_a_stall_of_the_agent_is_not_the_ping_nodes_silence() -> None:
    v = PingVerdict([NODE], interval_ms=50)
    v.heard(0)
    v.replied(NODE, v.sent(100), 100)
    assert v.pingable_now(100)
    now = 5100.0  # SIGSTOP for 5 s
    assert not v.pingable(now)
    v.blind(5000, now)
    assert v.pingable(now)
    # ... but it proves nothing about the present for a node judging a silent peer
    v.heard(now - 1000)
    assert not v.pingable_now(now)
    v.blind(60_000, now)
    assert v.last_reply[NODE] == now  # never later than now


def test_replies_that_prove_nothing() -> None:
    v = PingVerdict([NODE], interval_ms=50)
    v.heard(0)
    v.replied("198.18.0.99", v.sent(100), 100)  # not a ping node
    assert not v.pingable(100)
    first = v.sent(200)
    for t in range(REQUESTS_KEPT):
        v.sent(201 + t)
    v.replied(NODE, first, 300)  # its round is forgotten: a reply, but of unknown age
    assert v.pingable(300) and not v.pingable_now(300)


def test_no_ping_node_means_reachable() -> None:
    v = PingVerdict([], interval_ms=50)
    v.heard(0)
    assert v.pingable(10_000) and v.pingable_now(10_000)


class FakeSocket:
    """What the pinger's reader reads: queued datagrams, then "would block"."""

    def __init__(self, frames: list[tuple[bytes, tuple[str, int]]]) -> None:
        self.frames = frames

    def recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]]:
        if not self.frames:
            raise BlockingIOError
        return self.frames.pop(0)


def test_the_pinger_feeds_its_verdict() -> None:
    """The raw socket's reader hands every echo reply of its own to the verdict, on the
    agent's clock (another process's replies and short frames are ignored)."""
    clock = [0.0]
    v = PingVerdict([NODE], interval_ms=50)
    p = Pinger(v, lambda: clock[0])
    ident = p._ident
    seq = v.sent(0)
    clock[0] = 20.0
    ip = bytes([0x45]) + bytes(19)  # an IPv4 header of 20 bytes
    sock = FakeSocket(
        [
            (ip + struct.pack("!BBHHH", 0, 0, 0, ident ^ 1, seq), (NODE, 0)),  # not ours
            (ip + b"\0\0", (NODE, 0)),  # too short
            (ip + struct.pack("!BBHHH", 8, 0, 0, ident, seq), (NODE, 0)),  # a request
        ]
    )
    p._sock = sock  # type: ignore[assignment]
    p._on_readable()
    assert v.last_reply == {}
    sock.frames.append((ip + struct.pack("!BBHHH", 0, 0, 0, ident, seq), (NODE, 0)))
    p._on_readable()
    assert v.last_reply == {NODE: 20.0}
    assert v.last_reply_sent == {NODE: 0.0}
