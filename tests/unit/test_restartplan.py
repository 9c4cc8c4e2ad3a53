"""``hapair restart``, the pure half: who may take a restarting LB's VIPs and when each wait
is over, for a pair and for N LBs (etcd)."""

from __future__ import annotations

from typing import Any

import pytest

from hapair.bench.nlabs import nspec
from hapair.plan import make_plan
from hapair.platforms.lab.day2 import restartplan as rp
from hapair.spec import parse


def agent(healthy: bool = True, standby: bool = False, lease: bool = True, **more: Any) -> Any:
    return {
        "health": {"healthy": healthy},
        "standby": standby,
        "etcd": {"lease_valid": lease},
        **more,
    }


N4 = ["lb1", "lb2", "lb3", "lb4"]


def test_a_pair_needs_its_peer_healthy_and_online() -> None:
    ready = rp.takers("lb1", {"lb1": agent(), "lb2": agent(standby=True)}, False)
    assert ready == []
    assert rp.refusal("lb1", ["lb1", "lb2"], ready, False) == (
        "restart lb1: its peer lb2 is not healthy and online, so it cannot serve both "
        "floating IPs; nothing was done"
    )
    ready = rp.takers("lb1", {"lb1": agent(), "lb2": agent(lease=False)}, False)
    assert ready == ["lb2"] and rp.refusal("lb1", ["lb1", "lb2"], ready, False) is None


def test_n_lbs_need_one_other_lb_with_a_lease_and_take_every_ready_one() -> None:
    statuses = {
        "lb1": agent(),
        "lb2": agent(healthy=False),
        "lb3": {},  # did not answer
        "lb4": agent(lease=False),
    }
    ready = rp.takers("lb3", statuses, True)
    assert ready == ["lb1"]  # lb3 itself is never a taker, even when ready
    assert rp.refusal("lb3", N4, ready, True) is None
    ready = rp.takers("lb1", statuses, True)
    assert ready == []
    assert rp.refusal("lb1", N4, ready, True) == (
        "restart lb1: no other LB (lb2, lb3, lb4) is healthy, online and holding an etcd "
        "lease, so nobody could take its floating IPs; nothing was done"
    )


def test_drained_when_every_vip_is_on_exactly_one_taker() -> None:
    ready = ["lb1", "lb2", "lb4"]
    h = {"vip1": ["lb1"], "vip2": ["lb2"], "vip3": ["lb4"], "vip4": ["lb1"]}
    assert rp.drained("lb3", h, ready)
    assert not rp.drained("lb3", {**h, "vip3": ["lb3", "lb4"]}, ready)  # mid hand-over
    assert not rp.drained("lb3", {**h, "vip3": []}, ready)
    assert not rp.drained("lb3", {**h, "vip3": ["lb5"]}, ready)  # not a taker
    assert rp.drained("lb1", {"vip1": ["lb2"], "vip2": ["lb2"]}, ["lb2"])  # the pair


def test_rejoined_hears_every_taker_and_holds_a_lease() -> None:
    peers = [{"name": "lb1", "state": "up"}, {"name": "lb2", "state": "up"}]
    st = agent(peers=[*peers, {"name": "lb4", "state": "dead"}])
    assert rp.rejoined(st, ["lb1", "lb2"], True)
    assert not rp.rejoined(st, ["lb1", "lb2", "lb4"], True)
    assert not rp.rejoined(agent(lease=False, peers=peers), ["lb1", "lb2"], True)
    assert not rp.rejoined(agent(healthy=False, peers=peers), ["lb1"], True)
    assert rp.rejoined(agent(peer={"state": "up"}), ["lb2"], False)
    assert not rp.rejoined(agent(peer={"state": "warn"}), ["lb2"], False)


@pytest.mark.parametrize(
    ("holders", "back"),
    [
        ({"vip1": ["lb1"], "vip2": ["lb2"]}, True),
        ({"vip1": ["lb2"], "vip2": ["lb2"]}, False),
        ({"vip1": ["lb1", "lb2"], "vip2": ["lb2"]}, False),
    ],
)
def test_a_pair_is_back_when_it_holds_its_homes(holders: dict[str, list[str]], back: bool) -> None:
    assert rp.back("lb1", holders, ["lb2"], ["vip1"], False) is back


def test_n_lbs_are_back_when_balanced_with_the_restarted_lb_carrying_its_share() -> None:
    ready = ["lb1", "lb2", "lb4"]
    base = {f"vip{i}": [N4[(i - 1) % 4]] for i in range(1, 9)}  # 2 each
    assert rp.back("lb3", base, ready, [], True)
    moved = {**base, "vip3": ["lb1"]}  # lb3 has 1 of 8, lb1 has 3
    assert not rp.back("lb3", moved, ready, [], True)
    assert not rp.back("lb3", {**base, "vip3": ["lb3", "lb1"]}, ready, [], True)
    # 7 VIPs over 4 LBs: 2, 2, 2, 1 is balanced, lb3's share is at least 1
    seven = {v: h for v, h in base.items() if v != "vip7"}
    assert rp.back("lb3", seven, ready, [], True)
    # a taker that left meanwhile (lb4 not among the ready ones) is not counted as live
    assert not rp.back("lb3", base, ["lb1", "lb2"], [], True)


def test_carried() -> None:
    assert rp.carried("lb3", {"vip2": ["lb3"], "vip1": ["lb1", "lb3"], "vip3": []}) == [
        "vip1",
        "vip2",
    ]


def test_peer_of_is_a_pair_s_notion_and_errors_name_every_lb() -> None:
    pair = make_plan(parse({"cluster": {"name": "t1"}}))
    assert pair.peer_of("lb2").name == "lb1" and pair.lb_hint == "lb1 or lb2"
    n4 = make_plan(parse(nspec("t1", 4)))
    assert n4.lb_hint == "lb1..lb4"
    with pytest.raises(ValueError, match="4 LBs have no single peer"):
        n4.peer_of("lb3")
