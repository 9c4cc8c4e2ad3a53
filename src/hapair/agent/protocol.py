"""The heartbeat wire format: versioned binary datagrams with an HMAC-SHA256 tag. Pure.

One datagram, network byte order::

    magic   4s  b"HPHB"
    version B   2 (version 1, which has no ``answers`` bit, is still accepted)
    length  H   total datagram length, tag included (a truncated datagram is malformed)
    flags   B   bit 0 healthy, bit 1 pingable, bit 2 standby, bit 3 answers (version 2:
                HAProxy answers, if only with an error page), bit 4 coordinated (version 2,
                N-node mode: the sender's last etcd call answered); other bits must be 0
    boot_id Q   sender's boot counter: larger for every start of the agent (see
                :func:`next_boot_id`), so a peer whose clock stepped back is no replay
    seq     Q   increments per datagram within one boot
    stable  I   ms the sender has been continuously healthy, pingable and hearing its peer
    cluster     u8 length + UTF-8
    node        u8 length + UTF-8
    held        u8 count, then u8 length + UTF-8 per VIP name (sorted)
    wanted      u8 count, then u8 length + UTF-8 per VIP name (sorted)
    tag     32s HMAC-SHA256(key, everything before it)

The tag is checked (in constant time) before any field after the header is read. A datagram is
never acted on unless its tag, cluster, node and sequence are all good; every drop is counted in
:attr:`Decoder.dropped` under one of :data:`DROP_REASONS`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hapair.errors import FatalError, UsageError
from hapair.fileio import write_atomic

MAGIC = b"HPHB"
VERSION = 2
ACCEPTED_VERSIONS = frozenset({1, 2})
TAG_LEN = 32
MAX_DATAGRAM = 511
"""Largest datagram encoded or accepted (bytes)."""
STABLE_CAP_MS = 3_600_000
"""``stable_ms`` is capped at one hour on the wire."""
KEY_MIN_BYTES = 16

DROP_REASONS: tuple[str, ...] = (
    "malformed",
    "bad_mac",
    "foreign_cluster",
    "unknown_node",
    "self",
    "replay",
)
"""Why :meth:`Decoder.decode` drops a datagram; the metric labels use these names."""

_HEADER = struct.Struct("!4sBH")
_FIXED = struct.Struct("!BQQI")
_MIN_LEN = _HEADER.size + _FIXED.size + 4 + TAG_LEN
_HEALTHY, _PINGABLE, _STANDBY, _ANSWERS, _COORDINATED = 1, 2, 4, 8, 16
_KNOWN_FLAGS = {
    1: _HEALTHY | _PINGABLE | _STANDBY,
    2: _HEALTHY | _PINGABLE | _STANDBY | _ANSWERS | _COORDINATED,
}


@dataclass(frozen=True)
class Heartbeat:
    """One node's view of itself, as sent to its peer every interval.

    :ivar cluster: the cluster's name.
    :ivar node: the sender (``lb1`` or ``lb2``).
    :ivar boot_id: the sender's boot counter (larger at every start).
    :ivar seq: sequence number within the boot, incremented per datagram.
    :ivar healthy: the sender's HAProxy answers on its stats socket and serves a real request.
    :ivar pingable: the sender reaches at least one ping node.
    :ivar stable_ms: how long the sender has been healthy, pingable and hearing its peer.
    :ivar standby: an operator put the sender in standby.
    :ivar held: VIP names the sender holds now (read from the kernel or the cloud).
    :ivar wanted: VIP names the sender wants.
    :ivar answers: the sender's HAProxy answers (it can at least return an error page), even
        when it is not ``healthy``; always true when ``healthy``.
    :ivar coordinated: N-node mode only: the sender's last etcd call answered (a node that
        lost etcd learns from it whether it is the one cut off, or etcd is down for all).
    """

    cluster: str
    node: str
    boot_id: int
    seq: int
    healthy: bool
    pingable: bool
    stable_ms: int
    standby: bool = False
    held: frozenset[str] = frozenset()
    wanted: frozenset[str] = frozenset()
    answers: bool = True
    coordinated: bool = False


class _Malformed(Exception):
    pass


def _put_str(out: bytearray, value: str) -> None:
    raw = value.encode()
    if not 0 < len(raw) <= 255:
        raise ValueError(f"name must be 1-255 bytes of UTF-8 (got {value!r})")
    out.append(len(raw))
    out += raw


def _put_names(out: bytearray, names: Iterable[str]) -> None:
    ordered = sorted(names)
    if len(ordered) > 255:
        raise ValueError(f"at most 255 VIP names per set (got {len(ordered)})")
    out.append(len(ordered))
    for name in ordered:
        _put_str(out, name)


def encode(hb: Heartbeat, key: bytes) -> bytes:
    """Serialise and sign a heartbeat.

    ``stable_ms`` is capped at :data:`STABLE_CAP_MS`.

    :param hb: the heartbeat.
    :param key: the cluster key.
    :returns: the datagram, at most :data:`MAX_DATAGRAM` bytes.
    :raises ValueError: a field does not fit (negative or too large numbers, names too long).
    """
    if not (0 <= hb.boot_id < 2**64 and 0 <= hb.seq < 2**64 and hb.stable_ms >= 0):
        raise ValueError("boot_id and seq must be unsigned 64-bit, stable_ms >= 0")
    flags = (
        (_HEALTHY if hb.healthy else 0)
        | (_PINGABLE if hb.pingable else 0)
        | (_STANDBY if hb.standby else 0)
        | (_ANSWERS if hb.answers or hb.healthy else 0)
        | (_COORDINATED if hb.coordinated else 0)
    )
    body = bytearray(_FIXED.pack(flags, hb.boot_id, hb.seq, min(hb.stable_ms, STABLE_CAP_MS)))
    _put_str(body, hb.cluster)
    _put_str(body, hb.node)
    _put_names(body, hb.held)
    _put_names(body, hb.wanted)
    length = _HEADER.size + len(body) + TAG_LEN
    if length > MAX_DATAGRAM:
        raise ValueError(f"heartbeat too large: {length} bytes > {MAX_DATAGRAM}")
    signed = _HEADER.pack(MAGIC, VERSION, length) + bytes(body)
    return signed + hmac.new(key, signed, hashlib.sha256).digest()


class _Reader:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _Malformed
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def string(self) -> str:
        n = self.take(1)[0]
        if n == 0:
            raise _Malformed
        try:
            return self.take(n).decode()
        except UnicodeDecodeError:
            raise _Malformed from None

    def names(self) -> frozenset[str]:
        count = self.take(1)[0]
        return frozenset(self.string() for _ in range(count))


def _parse(signed: bytes, version: int) -> Heartbeat:
    reader = _Reader(signed, _HEADER.size)
    flags, boot_id, seq, stable_ms = _FIXED.unpack(reader.take(_FIXED.size))
    if flags & ~_KNOWN_FLAGS[version]:
        raise _Malformed
    # Version 1 has no answers bit: a healthy sender answers, an unhealthy one may not.
    answers = bool(flags & (_ANSWERS if version >= 2 else _HEALTHY))
    cluster = reader.string()
    node = reader.string()
    held = reader.names()
    wanted = reader.names()
    hb = Heartbeat(
        cluster=cluster,
        node=node,
        boot_id=boot_id,
        seq=seq,
        healthy=bool(flags & _HEALTHY),
        pingable=bool(flags & _PINGABLE),
        stable_ms=stable_ms,
        standby=bool(flags & _STANDBY),
        held=held,
        wanted=wanted,
        answers=answers or bool(flags & _HEALTHY),
        coordinated=bool(flags & _COORDINATED),
    )
    if reader.pos != len(signed):
        raise _Malformed
    return hb


class Verifier(Protocol):
    """Keys that may have signed a heartbeat at a given moment (a rotation's overlap:
    :class:`hapair.agent.keyring.Keyring`)."""

    def verify(self, signed: bytes, tag: bytes, now: float) -> bool:
        """Whether ``tag`` is the HMAC-SHA256 of ``signed`` under a key accepted at ``now``."""
        ...


class Decoder:
    """Checks and decodes heartbeats from the peer, keeping a replay window per sender.

    :param key: the cluster key, or a :class:`Verifier` (the keys of a rotation).
    :param cluster: this cluster's name.
    :param node: this node's name (its own datagrams are dropped as ``self``).
    :param peers: node names allowed to send heartbeats.
    :param clock: Unix time, for a :class:`Verifier`.
    """

    def __init__(
        self,
        key: bytes | Verifier,
        cluster: str,
        node: str,
        peers: Iterable[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key
        self._clock = clock
        self.cluster = cluster
        self.node = node
        self.peers = frozenset(peers)
        self.dropped: Counter[str] = Counter()
        self.accepted = 0
        self._newest: dict[str, tuple[int, int]] = {}

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    def decode(self, data: bytes) -> Heartbeat | None:
        """Check one datagram and return its heartbeat, or ``None`` (counted in ``dropped``).

        :param data: the datagram as received.
        :returns: the heartbeat, or ``None`` when it must not be acted on.
        """
        if not _MIN_LEN <= len(data) <= MAX_DATAGRAM:
            self._drop("malformed")
            return None
        magic, version, length = _HEADER.unpack_from(data)
        if magic != MAGIC or version not in ACCEPTED_VERSIONS or length != len(data):
            self._drop("malformed")
            return None
        signed, tag = data[:-TAG_LEN], data[-TAG_LEN:]
        if isinstance(self._key, bytes):
            expected = hmac.new(self._key, signed, hashlib.sha256).digest()
            good = hmac.compare_digest(tag, expected)
        else:
            good = self._key.verify(signed, tag, self._clock())
        if not good:
            self._drop("bad_mac")
            return None
        try:
            hb = _parse(signed, version)
        except (_Malformed, struct.error):
            self._drop("malformed")
            return None
        if hb.cluster != self.cluster:
            self._drop("foreign_cluster")
            return None
        if hb.node == self.node:
            self._drop("self")
            return None
        if hb.node not in self.peers:
            self._drop("unknown_node")
            return None
        newest = self._newest.get(hb.node)
        if newest is not None and (hb.boot_id, hb.seq) <= newest:
            self._drop("replay")
            return None
        self._newest[hb.node] = (hb.boot_id, hb.seq)
        self.accepted += 1
        return hb


def load_key(path: str | os.PathLike[str]) -> bytes:
    """Read the cluster key (hex text, as :func:`generate_key` writes it).

    :param path: the key file; it must be a regular file with no group or other access.
    :returns: the key bytes.
    :raises FatalError: the file is missing, unreadable, too open, not hex, or too short.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise FatalError(f"{path}: cannot open the cluster key ({exc.strerror})") from exc
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise FatalError(f"{path}: the cluster key must be a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise FatalError(
                f"{path}: the cluster key is open to group or others (mode {mode:04o}); "
                f"run `chmod 600 {path}`"
            )
        text = f.read().strip()
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise FatalError(f"{path}: the cluster key must be hex text") from None
    if len(key) < KEY_MIN_BYTES:
        raise FatalError(
            f"{path}: the cluster key is too short ({len(key)} bytes, need {KEY_MIN_BYTES})"
        )
    return key


def generate_key(path: str | os.PathLike[str], *, overwrite: bool = False) -> bytes:
    """Write a new random 32-byte cluster key as hex, atomically, with mode 0600.

    :param path: where to write it; the directory must exist.
    :param overwrite: replace an existing key (both nodes must then get the new one).
    :returns: the key bytes.
    :raises UsageError: the file exists and ``overwrite`` is false.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise UsageError(f"{target}: a cluster key exists already; refusing to replace it")
    key = secrets.token_bytes(32)
    write_atomic(target, key.hex() + "\n", mode=0o600)
    return key
