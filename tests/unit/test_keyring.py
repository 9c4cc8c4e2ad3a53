"""The heartbeat keyring: a rotated cluster key overlaps the old one so that no heartbeat of
either node is dropped, whichever node learns the new key first."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

import pytest

from hapair.agent.keyring import Keyring, KeySet, load_keyset, previous_path, write_rotation
from hapair.agent.protocol import Heartbeat, encode
from hapair.errors import FatalError

OLD, NEW = "11" * 32, "22" * 32
OVERLAP = 120.0


def tag(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def test_sign_and_accept_through_a_rotation() -> None:
    ks = KeySet(bytes.fromhex(NEW), bytes.fromhex(OLD), switch_at=100.0, drop_at=200.0)
    old, new = bytes.fromhex(OLD), bytes.fromhex(NEW)
    assert ks.signing_key(99.9) == old and ks.signing_key(100.0) == new
    assert ks.verification_keys(50.0) == (old, new)
    assert ks.verification_keys(150.0) == (new, old)
    assert ks.verification_keys(200.0) == (new,)
    assert ks.verify(b"x", tag(old, b"x"), 199.0) and not ks.verify(b"x", tag(old, b"x"), 200.0)
    assert ks.verify(b"x", tag(new, b"x"), 0.0)
    assert not ks.verify(b"x", tag(b"k" * 32, b"x"), 150.0)
    plain = KeySet(new)
    assert plain.signing_key(0) == new and plain.verification_keys(1e12) == (new,)


def test_files(tmp_path: Path) -> None:
    key = tmp_path / "cluster.key"
    assert write_rotation(key, OLD, now=1000.0) is True  # the first key has no previous
    assert not previous_path(key).exists() and load_keyset(key) == KeySet(bytes.fromhex(OLD))
    assert write_rotation(key, OLD, now=1010.0) is False
    assert write_rotation(key, NEW, now=2000.0, overlap=OVERLAP) is True
    ks = load_keyset(key)
    assert ks == KeySet(bytes.fromhex(NEW), bytes.fromhex(OLD), 2120.0, 2240.0)
    for f in (key, previous_path(key)):
        assert f.stat().st_mode & 0o777 == 0o600
    ring = Keyring(key)
    assert ring.refresh() is False
    write_rotation(key, "33" * 32, now=3000.0, overlap=OVERLAP)
    os.utime(key, ns=(5_000_000_000_000, 5_000_000_000_000))  # whatever the clock's resolution
    assert ring.refresh() is True and ring.keys.previous == bytes.fromhex(NEW)
    previous_path(key).write_text("zz 1 2\n")
    previous_path(key).chmod(0o600)
    os.utime(previous_path(key), ns=(6_000_000_000_000, 6_000_000_000_000))
    with pytest.raises(FatalError):
        ring.refresh()
    assert ring.keys.current == bytes.fromhex("33" * 32)  # the old keys stay in use
    previous_path(key).chmod(0o644)
    with pytest.raises(FatalError):
        load_keyset(key)
    with pytest.raises(ValueError):
        write_rotation(key, "ab", now=0)


@pytest.mark.parametrize("skew", [0.0, 1.0, 59.0, 119.0])
@pytest.mark.parametrize("a_first", [True, False])
def test_two_nodes_never_drop_a_heartbeat_through_a_rotation(
    tmp_path: Path, skew: float, a_first: bool
) -> None:
    """Node A and node B receive the new key ``skew`` seconds apart (less than the overlap);
    every second from before the first until after both dropped the old key, each accepts the
    other's heartbeat."""
    files = {n: tmp_path / n / "cluster.key" for n in "AB"}
    for f in files.values():
        f.parent.mkdir()
        write_rotation(f, OLD, now=0.0)
    t_first, t_second = 1000.0, 1000.0 + skew
    when = {"A": t_first, "B": t_second} if a_first else {"A": t_second, "B": t_first}
    hb = {
        n: Heartbeat(
            cluster="c", node=f"lb{i}", boot_id=1, seq=1, healthy=True, pingable=True, stable_ms=0
        )
        for i, n in ((1, "A"), (2, "B"))
    }
    t = 900.0
    while t < t_second + 3 * OVERLAP:
        for n, f in files.items():
            if when[n] <= t and load_keyset(f).current != bytes.fromhex(NEW):
                write_rotation(f, NEW, now=when[n], overlap=OVERLAP)
        keys = {n: load_keyset(f) for n, f in files.items()}
        for sender, receiver in (("A", "B"), ("B", "A")):
            data = encode(hb[sender], keys[sender].signing_key(t))
            signed, mac = data[:-32], data[-32:]
            assert keys[receiver].verify(signed, mac, t), (sender, receiver, t)
        t += 1.0
    assert all(load_keyset(f).verification_keys(t) == (bytes.fromhex(NEW),) for f in files.values())


def test_a_second_rotation_within_the_overlap_keeps_the_key_still_signing(
    tmp_path: Path,
) -> None:
    key = tmp_path / "cluster.key"
    write_rotation(key, OLD, 0.0)
    assert write_rotation(key, NEW, 1000.0, overlap=100.0)  # signs OLD until 1100
    third = "33" * 32
    assert write_rotation(key, third, 1050.0, overlap=100.0)
    keys = load_keyset(key)
    # OLD was still signing at 1050: it stays accepted; NEW, never signed with, is forgotten.
    assert keys.current.hex() == third and keys.previous is not None
    assert keys.previous.hex() == OLD
    assert keys.signing_key(1100.0).hex() == OLD
    assert keys.signing_key(1150.0).hex() == third
    # After the overlap, a new key replaces the one signing by then.
    assert write_rotation(key, NEW, 1400.0, overlap=100.0)
    assert load_keyset(key).previous == bytes.fromhex(third)
    assert not write_rotation(key, NEW, 1500.0)  # the same key again: nothing to do
