"""The AWS timing profile: picked when the spec leaves [ha] at the lab's defaults, and what it
means for a peer that is still installing (the real controller, in the simulator)."""

from __future__ import annotations

import pytest

from hapair.agent.simulate import World
from hapair.errors import SpecError
from hapair.platforms.aws.timing import AWS_PROFILE, effective_ha
from hapair.spec import HaSpec, parse


def spec(**sections: dict[str, object]) -> object:
    return parse({"cluster": {"platform": "aws"}, **sections})


def test_the_profile_replaces_only_what_the_spec_left_at_the_lab_default() -> None:
    ha = effective_ha(spec())  # type: ignore[arg-type]
    assert {k: getattr(ha, k) for k in AWS_PROFILE} == AWS_PROFILE
    mine = effective_ha(spec(ha={"failback_delay_ms": 5000, "auto_failback": False}))  # type: ignore[arg-type]
    assert mine.failback_delay_ms == 5000 and mine.auto_failback is False
    assert mine.deadtime_ms == AWS_PROFILE["deadtime_ms"]
    lab = effective_ha(spec(aws={"timing_profile": "spec"}))  # type: ignore[arg-type]
    assert lab == HaSpec()
    with pytest.raises(SpecError) as err:
        effective_ha(spec(ha={"deadtime_ms": 2500}))  # type: ignore[arg-type]
    assert "aws.timing_profile" in str(err.value) and "warntime_ms" in str(err.value)


def test_a_never_heard_peer_is_not_robbed_before_initdead() -> None:
    ha = effective_ha(spec())  # type: ignore[arg-type]
    world = World(ha=ha)
    # As `up` leaves them: each LB holds its home EIP when its agent starts; lb2 is still
    # installing (its agent never runs during this test).
    world.kill("lb2", haproxy=True)
    world.restart("lb1", keep_held=False)
    lb1 = world.nodes["lb1"]
    lb1.held = {"vip1"}
    lb1.controller.found({"vip1"})
    world.run(ha.initdead_ms - 2 * ha.interval_ms)
    assert world.holders("vip2") == set(), "took the EIP of a peer still installing"
    assert world.holders("vip1") == {"lb1"}
    world.run(ha.deadtime_ms + 4 * ha.interval_ms)
    assert world.holders("vip2") == {"lb1"}  # after initdead the silent peer is dead
