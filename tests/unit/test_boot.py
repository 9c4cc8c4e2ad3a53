"""The boot counter and the agent config's own refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from hapair.agent.boot import next_boot_id
from hapair.agent.config import AgentConfig, VipConfig, dump_toml
from hapair.agent.protocol import Decoder, Heartbeat, encode
from hapair.errors import FatalError, SpecError

KEY = b"k" * 32


def test_first_boot_takes_the_clock_then_counts_up_whatever_the_clock_does(
    tmp_path: Path,
) -> None:
    f = tmp_path / "state" / "boot"
    first = next_boot_id(f, clock_ns=1_800_000_000_000_000_000)
    assert first == 1_800_000_000_000_000_000
    # The clock stepped back a day: the next boot is still larger.
    assert next_boot_id(f, clock_ns=1_799_913_600_000_000_000) == first + 1
    assert next_boot_id(f) == first + 2
    assert f.stat().st_mode & 0o777 == 0o600


def test_a_restart_after_a_clock_step_is_not_a_replay(tmp_path: Path) -> None:
    f = tmp_path / "boot"
    dec = Decoder(KEY, "c", "lb2", {"lb1"})

    def hb(boot: int, seq: int) -> bytes:
        return encode(
            Heartbeat(
                cluster="c",
                node="lb1",
                boot_id=boot,
                seq=seq,
                healthy=True,
                pingable=True,
                stable_ms=0,
            ),
            KEY,
        )

    old = next_boot_id(f, clock_ns=2_000_000_000_000_000_000)
    assert dec.decode(hb(old, 500)) is not None
    new = next_boot_id(f, clock_ns=1_000_000_000_000_000_000)  # the clock went back
    assert dec.decode(hb(new, 1)) is not None and dec.dropped["replay"] == 0


def test_garbage_or_an_unwritable_counter_refuses_to_start(tmp_path: Path) -> None:
    f = tmp_path / "boot"
    f.write_text("not a number\n")
    with pytest.raises(FatalError, match="the boot counter is not a number"):
        next_boot_id(f)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the state directory should be\n")
    with pytest.raises(FatalError, match=r"cannot (read|store) the boot counter"):
        next_boot_id(blocker / "boot")
    full = tmp_path / "full"
    full.mkdir()
    (full / "boot").mkdir()  # the counter's own name is taken by a directory: cannot replace
    with pytest.raises(FatalError, match="cannot store the boot counter"):
        next_boot_id(full / "boot2" / ".." / "boot")


def _cfg(**kw: object) -> AgentConfig:
    base: dict[str, object] = {
        "cluster": "demo",
        "node": "lb1",
        "peer": "lb2",
        "peer_addresses": ["198.18.0.12"],
        "peer_probe_address": "198.18.0.12",
        "key_file": "/k",
        "admin_token_file": "/t",
        "stats_socket": "/s",
        "vips": [VipConfig(name="vip1", address="198.19.255.1", home="lb1")],
    }
    base.update(kw)
    return AgentConfig.model_validate(base)


def test_agent_config_refuses_disordered_timings_and_control_characters() -> None:
    with pytest.raises(ValueError, match="interval_ms < warntime_ms"):
        _cfg(warntime_ms=10)
    with pytest.raises(ValueError, match="control characters"):
        _cfg(check_path="/health\nlisten x")
    cfg = _cfg()
    assert cfg.boot_path() == Path("/var/lib/hapair/demo-lb1.boot")
    with pytest.raises(SpecError, match="control characters"):
        dump_toml(cfg.model_copy(update={"stats_socket": "/s\n[evil]"}))
