"""Spec rules for more than a pair: lb.count, network.vips and ha.coordinator (issue 13)."""

from __future__ import annotations

import pytest

from hapair.errors import SpecError
from hapair.plan import make_plan
from hapair.spec import Spec, parse
from hapair.spec_scale import etcd_addresses

FOUR = {
    "lb": {"count": 4},
    "ha": {"coordinator": "etcd"},
    "network": {
        "lb_primary": [f"198.18.0.{11 + i}" for i in range(4)],
        "lb_secondary": [f"198.18.0.{111 + i}" for i in range(4)],
        "vips": [f"198.19.255.{1 + i}" for i in range(8)],
    },
}


def test_defaults_are_the_pair() -> None:
    s = Spec()
    assert (s.lb.count, s.ha.coordinator, len(s.network.vips)) == (2, "peer", 2)
    assert parse({}) == s


def test_four_lbs_eight_vips_with_etcd() -> None:
    s = parse(FOUR)
    plan = make_plan(s)
    assert [lb.name for lb in plan.lbs] == ["lb1", "lb2", "lb3", "lb4"]
    assert [v.home for v in plan.vips] == ["lb1", "lb2", "lb3", "lb4"] * 2
    assert etcd_addresses(s) == ("198.18.0.241", "198.18.0.242", "198.18.0.243")


def test_pair_with_etcd_is_allowed() -> None:
    assert parse({"ha": {"coordinator": "etcd"}}).ha.coordinator == "etcd"


def _with(**changes: object) -> dict[str, object]:
    data = {k: dict(v) for k, v in FOUR.items()}
    for path, value in changes.items():
        table, field = path.split("__")
        data[table][field] = value
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"lb": {"count": 4}},
            'ha.coordinator: "peer" runs exactly 2 LBs (lb.count = 4); set '
            'ha.coordinator = "etcd" for more, or lb.count = 2',
        ),
        (
            {"network": {"vips": ["198.19.255.1", "198.19.255.2", "198.19.255.3"]}},
            'network.vips: ha.coordinator "peer" moves exactly 2 floating IPs (got 3); '
            'list 2, or set ha.coordinator = "etcd" for more',
        ),
        (
            {"lb": {"count": 17}, "ha": {"coordinator": "etcd"}},
            "lb.count: must be between 2 and 16 (got 17)",
        ),
        (
            {"ha": {"coordinator": "raft"}},
            "ha.coordinator: input should be 'peer' or 'etcd' (got 'raft')",
        ),
        (
            _with(network__vips=["198.19.255.1", "198.19.255.2", "198.19.255.3"]),
            'network.vips: with ha.coordinator "etcd", list from lb.count (4) to 64 floating '
            "IPs, so that every LB holds at least one (got 3)",
        ),
        (
            _with(network__lb_secondary=["198.18.0.111", "198.18.0.112"]),
            "network.lb_secondary: must list one address per LB, lb.count = 4 (got 2); add or "
            "remove addresses, or change lb.count",
        ),
        (
            _with(network__gateway="198.18.0.241"),
            "network.gateway: 198.18.0.241 is etcd1's address in the lab (host numbers "
            "241-243 of network.vpc_cidr); pick another address",
        ),
        (
            _with(network__vips=[f"198.19.255.{1 + i}" for i in range(7)] + ["198.19.255.1"]),
            "network.vips.7: must differ from network.vips.0 (both 198.19.255.1); every lab "
            "address is distinct",
        ),
    ],
)
def test_scale_errors_name_the_field_and_fix(data: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse(data)
    assert err.value.problems == [message]


def test_up_builds_more_than_a_pair_on_the_lab_only() -> None:
    from hapair.errors import UsageError
    from hapair.spec_scale import require_buildable

    require_buildable(Spec())
    require_buildable(parse({"ha": {"coordinator": "etcd"}}))
    require_buildable(parse(FOUR))
    on_aws = parse({**FOUR, "cluster": {"platform": "aws"}})
    with pytest.raises(UsageError) as err:
        require_buildable(on_aws)
    assert str(err.value) == (
        'lb.count = 4 with 8 floating IPs is a valid spec, but cluster.platform = "aws" builds '
        '2 LBs with 2 floating IPs only; use cluster.platform = "lab", or set lb.count = 2 and '
        "list 2 network.vips"
    )
