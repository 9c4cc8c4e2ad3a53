"""Heartbeat wire format: round trip, forgery, truncation, replay, fuzzing, key files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hapair.agent.protocol import (
    DROP_REASONS,
    MAX_DATAGRAM,
    STABLE_CAP_MS,
    Decoder,
    Heartbeat,
    encode,
    generate_key,
    load_key,
)
from hapair.errors import FatalError, UsageError

KEY = bytes(range(32))


def hb(**kw: object) -> Heartbeat:
    fields: dict[str, object] = {
        "cluster": "demo",
        "node": "lb2",
        "boot_id": 1_700_000_000_000_000_000,
        "seq": 1,
        "healthy": True,
        "pingable": True,
        "stable_ms": 1234,
        "standby": False,
        "held": frozenset({"vip2"}),
        "wanted": frozenset({"vip2", "vip1"}),
    }
    fields.update(kw)
    return Heartbeat(**fields)  # type: ignore[arg-type]


def decoder(node: str = "lb1", peers: tuple[str, ...] = ("lb2",)) -> Decoder:
    return Decoder(KEY, "demo", node, peers)


def test_drop_reasons_are_the_metric_names() -> None:
    assert DROP_REASONS == (
        "malformed",
        "bad_mac",
        "foreign_cluster",
        "unknown_node",
        "self",
        "replay",
    )


def test_round_trip() -> None:
    sent = hb(standby=True, healthy=False, answers=False)
    data = encode(sent, KEY)
    assert data[:4] == b"HPHB" and data[4] == 2
    assert len(data) < 512
    dec = decoder()
    assert dec.decode(data) == sent
    assert dec.accepted == 1 and not dec.dropped


def test_empty_sets_and_flags_round_trip() -> None:
    sent = hb(held=frozenset(), wanted=frozenset(), pingable=False, stable_ms=0)
    assert decoder().decode(encode(sent, KEY)) == sent


def test_the_coordinated_bit_round_trips() -> None:
    sent = hb(coordinated=True)
    data = encode(sent, KEY)
    assert data[7] & 16  # the flags byte follows magic, version and length
    assert decoder().decode(data) == sent
    assert decoder().decode(encode(hb(), KEY)) == hb(coordinated=False)


def test_stable_ms_is_capped() -> None:
    got = decoder().decode(encode(hb(stable_ms=10 * STABLE_CAP_MS), KEY))
    assert got is not None and got.stable_ms == STABLE_CAP_MS


def test_encode_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="too large"):
        encode(hb(held=frozenset(f"vip{i:03d}" for i in range(80))), KEY)
    with pytest.raises(ValueError, match="1-255 bytes"):
        encode(hb(node=""), KEY)
    with pytest.raises(ValueError, match="unsigned"):
        encode(hb(seq=-1), KEY)


def test_every_single_byte_flip_is_rejected() -> None:
    data = encode(hb(), KEY)
    dec = decoder()
    for i in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            assert dec.decode(bytes(bad)) is None, (i, bit)
    assert set(dec.dropped) <= {"bad_mac", "malformed"}
    assert sum(dec.dropped.values()) == 8 * len(data)
    assert dec.dropped["bad_mac"] > 0 and dec.dropped["malformed"] > 0
    assert dec.accepted == 0


def test_truncation_at_every_length_is_malformed() -> None:
    data = encode(hb(), KEY)
    dec = decoder()
    for n in range(len(data)):
        assert dec.decode(data[:n]) is None
    assert dec.dropped == {"malformed": len(data)}


def test_oversized_and_padded_datagrams_are_malformed() -> None:
    data = encode(hb(), KEY)
    dec = decoder()
    assert dec.decode(data + b"\0") is None
    assert dec.decode(data + b"\0" * MAX_DATAGRAM) is None
    assert dec.dropped == {"malformed": 2}


def test_wrong_key_is_bad_mac() -> None:
    dec = decoder()
    assert dec.decode(encode(hb(), b"k" * 32)) is None
    assert dec.dropped == {"bad_mac": 1}


@settings(max_examples=500)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise_and_are_counted(data: bytes) -> None:
    dec = decoder()
    assert dec.decode(data) is None
    assert sum(dec.dropped.values()) == 1
    assert set(dec.dropped) <= set(DROP_REASONS)


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=40), st.integers(min_value=0, max_value=200))
def test_valid_header_with_random_body_is_dropped(junk: bytes, cut: int) -> None:
    data = bytearray(encode(hb(), KEY))
    start = min(cut, len(data) - 1)
    data[start : start + len(junk)] = junk
    dec = decoder()
    got = dec.decode(bytes(data))
    if got is None:
        assert set(dec.dropped) <= {"bad_mac", "malformed"}
    else:  # the junk happened to equal the original bytes
        assert bytes(data) == encode(hb(), KEY)


def test_replay_of_an_old_sequence_is_dropped() -> None:
    dec = decoder()
    assert dec.decode(encode(hb(seq=5), KEY)) is not None
    assert dec.decode(encode(hb(seq=5), KEY)) is None
    assert dec.decode(encode(hb(seq=4), KEY)) is None
    assert dec.decode(encode(hb(seq=6), KEY)) is not None
    assert dec.dropped == {"replay": 2}


def test_older_boot_rejected_newer_boot_resets_sequence() -> None:
    dec = decoder()
    assert dec.decode(encode(hb(boot_id=100, seq=50), KEY)) is not None
    assert dec.decode(encode(hb(boot_id=99, seq=51), KEY)) is None
    assert dec.dropped == {"replay": 1}
    assert dec.decode(encode(hb(boot_id=200, seq=1), KEY)) is not None
    assert dec.decode(encode(hb(boot_id=100, seq=52), KEY)) is None
    assert dec.dropped == {"replay": 2}


def test_foreign_cluster_unknown_node_and_self() -> None:
    dec = decoder()
    assert dec.decode(encode(hb(cluster="other"), KEY)) is None
    assert dec.decode(encode(hb(node="lb9"), KEY)) is None
    assert dec.decode(encode(hb(node="lb1"), KEY)) is None
    assert dec.dropped == {"foreign_cluster": 1, "unknown_node": 1, "self": 1}


def test_rejected_datagrams_do_not_advance_the_replay_window() -> None:
    dec = decoder()
    assert dec.decode(encode(hb(seq=10, cluster="other"), KEY)) is None
    assert dec.decode(encode(hb(seq=3), KEY)) is not None


def test_generate_then_load_key(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    key = generate_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == key.hex()
    assert load_key(path) == key
    assert [p.name for p in tmp_path.iterdir()] == ["cluster.key"]


def test_generate_key_does_not_replace_silently(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    first = generate_key(path)
    with pytest.raises(UsageError, match="exists already"):
        generate_key(path)
    assert load_key(path) == first
    assert generate_key(path, overwrite=True) != first


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_load_key_refuses_group_or_other_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "cluster.key"
    generate_key(path)
    os.chmod(path, mode)
    with pytest.raises(FatalError) as err:
        load_key(path)
    assert str(err.value) == (
        f"{path}: the cluster key is open to group or others (mode {mode:04o}); "
        f"run `chmod 600 {path}`"
    )


def test_load_key_refuses_missing_short_and_non_hex(tmp_path: Path) -> None:
    with pytest.raises(FatalError, match="cannot open the cluster key"):
        load_key(tmp_path / "missing")
    short = tmp_path / "short"
    short.write_text("abcd\n")
    short.chmod(0o600)
    with pytest.raises(FatalError, match=r"too short \(2 bytes, need 16\)"):
        load_key(short)
    junk = tmp_path / "junk"
    junk.write_text("not hex at all\n")
    junk.chmod(0o600)
    with pytest.raises(FatalError, match="must be hex text"):
        load_key(junk)


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)


@settings(max_examples=200)
@given(
    boot_id=st.integers(min_value=0, max_value=2**64 - 1),
    seq=st.integers(min_value=0, max_value=2**64 - 1),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    stable_ms=st.integers(min_value=0, max_value=STABLE_CAP_MS),
    held=st.frozensets(names, max_size=4),
    wanted=st.frozensets(names, max_size=4),
)
def test_any_heartbeat_round_trips(
    boot_id: int,
    seq: int,
    flags: tuple[bool, bool, bool],
    stable_ms: int,
    held: frozenset[str],
    wanted: frozenset[str],
) -> None:
    sent = hb(
        boot_id=boot_id,
        seq=seq,
        healthy=flags[0],
        pingable=flags[1],
        standby=flags[2],
        stable_ms=stable_ms,
        held=held,
        wanted=wanted,
    )
    data = encode(sent, KEY)
    assert len(data) <= MAX_DATAGRAM
    assert decoder().decode(data) == sent


def test_answers_flag_round_trips_and_healthy_implies_it() -> None:
    dec = decoder()
    degraded = hb(healthy=False, answers=True, seq=1)
    assert dec.decode(encode(degraded, KEY)) == degraded
    implied = dec.decode(encode(hb(healthy=True, answers=False, seq=2), KEY))
    assert implied is not None and implied.answers


def test_version_1_is_still_accepted_and_has_no_answers_bit() -> None:
    """A peer not yet upgraded (rolling upgrade) sends version 1: answers = healthy."""
    import hashlib
    import hmac

    for healthy in (True, False):
        signed = bytearray(encode(hb(healthy=healthy, seq=3 if healthy else 4), KEY)[:-32])
        signed[4] = 1
        signed[7] &= ~8  # no answers bit in version 1
        data = bytes(signed) + hmac.new(KEY, bytes(signed), hashlib.sha256).digest()
        got = decoder().decode(data)
        assert got is not None and got.answers is healthy
    signed = bytearray(encode(hb(healthy=False, answers=True), KEY)[:-32])
    signed[4] = 1  # version 1 with bit 3 set: unknown flag
    data = bytes(signed) + hmac.new(KEY, bytes(signed), hashlib.sha256).digest()
    dec = decoder()
    assert dec.decode(data) is None and dec.dropped["malformed"] == 1
