"""Heartbeat keys with an overlap: rotating the cluster key without losing a heartbeat.

The daemon verifies heartbeats with a :class:`Keyring` and signs with its current signing key,
and reads the files again every few seconds and on SIGHUP: a rotated key is taken without a
restart (see "Wiring" below).

Files: the key file as today (the current key in hex, mode 0600, read by
:func:`~hapair.agent.protocol.load_key`); next to it, while a rotation lasts,
``<key file>.previous`` (the previous key, in the same format) and ``<key file>.previous.times``
(``<switch_at> <drop_at>``, Unix seconds, not secret), written by :func:`write_rotation` when a
new key arrives (on AWS, by the node sync that reads SSM).

The rule, on each node, with ``t`` the time the node received the new key and ``overlap`` the
configured overlap:

- until ``switch_at = t + overlap``: sign with the previous key; accept both;
- until ``drop_at = t + 2 * overlap``: sign with the new key; accept both;
- then: the new key only.

Why no heartbeat is lost: let node A receive the new key at ``a`` and node B at ``b``, with
``|a - b| < overlap`` (both fetch on the same schedule). A signs the old key until
``a + overlap``; B accepts the old key until ``b + 2 * overlap > a + overlap``. A signs the new
key from ``a + overlap``; B has it from ``b < a + overlap``. The same holds with A and B swapped,
and before a node receives the new key it signs and accepts the old one, which the other
accepts until its own ``drop_at``.

Wiring (as the daemon does it): build a :class:`Keyring` on the key file; ``Decoder`` checks a tag
with :meth:`KeySet.verify` against ``keyring.keys`` at ``time.time()`` instead of its one key;
``encode`` signs with ``keyring.keys.signing_key(time.time())``; call
:meth:`Keyring.refresh` every few seconds (and on SIGHUP) so a rotated key is taken without a
restart.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from hapair.agent.protocol import KEY_MIN_BYTES, load_key
from hapair.errors import FatalError
from hapair.fileio import write_atomic

#: Default overlap (seconds): more than the skew between two nodes' fetches of a new key
#: (both fetch every 60 s).
OVERLAP_S = 120.0
PREVIOUS_SUFFIX = ".previous"


@dataclass(frozen=True)
class KeySet:
    """The keys of one moment of a rotation.

    :ivar current: the newest key.
    :ivar previous: the key it replaces, while it still counts (``None``: no rotation).
    :ivar switch_at: until then (Unix seconds), sign with ``previous``.
    :ivar drop_at: from then on, ``previous`` is not accepted any more.
    """

    current: bytes
    previous: bytes | None = None
    switch_at: float = 0.0
    drop_at: float = 0.0

    def signing_key(self, now: float) -> bytes:
        """The key to sign a heartbeat with at ``now``."""
        if self.previous is not None and now < self.switch_at:
            return self.previous
        return self.current

    def verification_keys(self, now: float) -> tuple[bytes, ...]:
        """The keys a heartbeat may be signed with at ``now``, the likeliest first."""
        if self.previous is None or now >= self.drop_at:
            return (self.current,)
        if now < self.switch_at:
            return (self.previous, self.current)
        return (self.current, self.previous)

    def verify(self, signed: bytes, tag: bytes, now: float) -> bool:
        """Whether ``tag`` is the HMAC-SHA256 of ``signed`` under a key accepted at ``now``
        (each comparison in constant time)."""
        ok = False
        for key in self.verification_keys(now):
            expected = hmac.new(key, signed, hashlib.sha256).digest()
            ok = hmac.compare_digest(tag, expected) or ok
        return ok


def previous_path(key_file: Path) -> Path:
    """Where the previous key of ``key_file`` lives."""
    return key_file.with_name(key_file.name + PREVIOUS_SUFFIX)


def _times_path(key_file: Path) -> Path:
    return key_file.with_name(key_file.name + PREVIOUS_SUFFIX + ".times")


def load_keyset(key_file: Path) -> KeySet:
    """The current key and, while a rotation lasts, the previous one.

    :raises FatalError: a file is missing, open to others, or malformed.
    """
    current = load_key(key_file)
    prev_file, times_file = previous_path(key_file), _times_path(key_file)
    if not prev_file.exists():
        return KeySet(current)
    previous = load_key(prev_file)
    try:
        switch_at, drop_at = (float(x) for x in times_file.read_text().split())
    except (OSError, ValueError):
        raise FatalError(f"{times_file}: expected '<switch_at> <drop_at>'") from None
    if drop_at < switch_at:
        raise FatalError(f"{times_file}: drop_at is before switch_at")
    return KeySet(current, previous, switch_at, drop_at)


def write_rotation(
    key_file: Path, new_key_hex: str, now: float, overlap: float = OVERLAP_S
) -> bool:
    """Install ``new_key_hex`` as the current key; the key signing at ``now`` (the one it
    replaces, or during an unfinished overlap the older key still signing) becomes the
    previous one, signed with until ``now + overlap`` and accepted until ``now + 2 * overlap``.

    :returns: whether the key changed (a first key has no previous one).
    :raises ValueError: ``new_key_hex`` is not hex of at least :data:`KEY_MIN_BYTES` bytes.
    """
    new = bytes.fromhex(new_key_hex.strip())
    if len(new) < KEY_MIN_BYTES:
        raise ValueError(f"the cluster key is too short ({len(new)} bytes)")
    old: bytes | None = None
    if key_file.exists():
        try:
            keys: KeySet | None = load_keyset(key_file)
        except FatalError:
            try:  # a broken rotation's files: the current key alone
                keys = KeySet(load_key(key_file))
            except FatalError:
                keys = None
        if keys is not None:
            if keys.current == new:
                return False
            # A new key during an overlap: the key still signing now stays accepted (a key
            # nobody signs with yet is the one to forget).
            old = keys.signing_key(now)
    if old is not None:
        write_atomic(_times_path(key_file), f"{now + overlap:.3f} {now + 2 * overlap:.3f}\n")
        write_atomic(previous_path(key_file), old.hex() + "\n", mode=0o600)
    write_atomic(key_file, new.hex() + "\n", mode=0o600)
    return True


class Keyring:
    """The key set of one key file, read again when either file changes."""

    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        self._stamp = self._stat()
        self.keys = load_keyset(key_file)

    def _stat(self) -> tuple[float, float, float]:
        def mtime(p: Path) -> float:
            try:
                return p.stat().st_mtime_ns / 1e9
            except FileNotFoundError:
                return -1.0

        return (
            mtime(self.key_file),
            mtime(previous_path(self.key_file)),
            mtime(_times_path(self.key_file)),
        )

    def verify(self, signed: bytes, tag: bytes, now: float) -> bool:
        """Whether ``tag`` signs ``signed`` under a key accepted at ``now`` (Unix seconds)."""
        return self.keys.verify(signed, tag, now)

    def signing_key(self, now: float) -> bytes:
        """The key to sign a heartbeat with at ``now`` (Unix seconds)."""
        return self.keys.signing_key(now)

    def refresh(self) -> bool:
        """Read the files again if they changed; returns whether the keys changed.

        :raises FatalError: the new files are unreadable (the old keys stay in use).
        """
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        keys = load_keyset(self.key_file)
        self._stamp = stamp
        changed = keys != self.keys
        self.keys = keys
        return changed
