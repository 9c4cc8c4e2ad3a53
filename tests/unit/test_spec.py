"""The spec: defaults are the seed's values; every invalid field gives its own message."""

from __future__ import annotations

from pathlib import Path

import pytest

from hapair.errors import SpecError
from hapair.plan import make_plan
from hapair.spec import Spec, load, parse, with_overrides


def test_defaults_are_the_seeds() -> None:
    s = Spec()
    assert s.web.size == 3
    assert s.lb.count == 2
    assert s.haproxy.http_port == 80
    assert s.haproxy.https_port == 443
    assert s.ha.port == 694
    assert s.haproxy.stats_port == 9022
    assert s.admin.port == 9023
    assert s.haproxy.balance == "roundrobin"
    assert s.haproxy.cookie == "SERVERID insert indirect nocache"
    assert s.admin.cidrs == ("0.0.0.0/0",)
    assert s.ha.auto_failback is True
    assert s.cluster.platform == "lab"


def test_empty_file_is_the_default(tmp_path: Path) -> None:
    f = tmp_path / "hapair.toml"
    f.write_text("")
    assert load(f) == Spec()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"web": {"size": 0}}, "web.size: must be between 1 and 250 (got 0)"),
        ({"web": {"size": 251}}, "web.size: must be between 1 and 250 (got 251)"),
        (
            {"lb": {"count": 3}},
            "lb.count: must be 2; hapair runs exactly one active-active pair, as the original "
            "stack (got 3)",
        ),
        ({"web": {"port": 0}}, "web.port: must be between 1 and 65535 (got 0)"),
        ({"ha": {"port": 70000}}, "ha.port: must be between 1 and 65535 (got 70000)"),
        (
            {"web": {"sise": 3}},
            "web.sise: unknown field; see `hapair check --help` and the README's spec reference "
            "for valid fields",
        ),
        (
            {"cluster": {"name": "Demo_1"}},
            "cluster.name: must be 1-8 lowercase letters or digits, starting with a letter "
            "(got 'Demo_1')",
        ),
        (
            {"cluster": {"platform": "gcp"}},
            "cluster.platform: input should be 'lab' or 'aws' (got 'gcp')",
        ),
        (
            {"network": {"vips": ["10.0.0.1", "198.19.255.2"]}},
            "network.vips: must lie in 198.18.0.0/15, the only range the lab uses (got 10.0.0.1)",
        ),
        (
            {"network": {"gateway": "not-an-ip"}},
            "network.gateway: must be an IPv4 address (got 'not-an-ip')",
        ),
        (
            {"ha": {"interval_ms": 200}},
            "ha: need interval_ms < warntime_ms <= deadtime_ms (got 200, 100, 150)",
        ),
        (
            {"ha": {"interval_ms": 80, "warntime_ms": 100, "deadtime_ms": 150}},
            "ha.deadtime_ms: must be at least twice interval_ms (160) so that one lost heartbeat "
            "is not a death (got 150)",
        ),
        (
            {"haproxy": {"balance": "random"}},
            "haproxy.balance: input should be 'roundrobin', 'leastconn', 'source' or 'first' "
            "(got 'random')",
        ),
        (
            {"admin": {"cidrs": ["10.0.0.0/33"]}},
            "admin.cidrs.0: must be an IPv4 network such as 198.18.0.0/23 (got '10.0.0.0/33')",
        ),
    ],
)
def test_each_invalid_field_names_itself(data: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse(data)
    assert err.value.problems == [message]


def test_web_nodes_must_fit_the_subnet() -> None:
    with pytest.raises(SpecError) as err:
        parse(
            {
                "network": {
                    "vpc_cidr": "198.18.0.0/24",
                    "gateway": "198.18.0.1",
                    "web_first": "198.18.0.200",
                },
                "web": {"size": 100},
            }
        )
    assert err.value.problems == [
        "web.size: 100 web nodes from network.web_first 198.18.0.200 do not fit in "
        "network.vpc_cidr 198.18.0.0/24"
    ]


def test_not_toml(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("web = [")
    with pytest.raises(SpecError, match="not valid TOML"):
        load(f)


def test_overrides_are_validated() -> None:
    s = with_overrides(Spec(), name="two", web_size=5)
    assert (s.cluster.name, s.web.size) == ("two", 5)
    with pytest.raises(SpecError, match=r"web.size: must be between 1 and 250 \(got 0\)"):
        with_overrides(Spec(), web_size=0)


def test_plan_of_the_default() -> None:
    plan = make_plan(Spec())
    assert [n.name for n in plan.lbs] == ["lb1", "lb2"]
    assert [n.address for n in plan.webs] == ["198.18.1.1", "198.18.1.2", "198.18.1.3"]
    assert [(v.name, v.home) for v in plan.vips] == [("vip1", "lb1"), ("vip2", "lb2")]
    assert plan.node("lb1").secondary == "198.18.0.111"
    assert plan.peer_of("lb1").name == "lb2"
    assert plan.ping_nodes == ("198.18.0.1",)
    assert plan.node("web3").namespace == "demo-web3"
    assert plan.namespaces[0] == "demo-vpc"


def test_plan_of_250_web_nodes_stays_in_the_lab_range() -> None:
    plan = make_plan(parse({"web": {"size": 250}}))
    assert plan.webs[-1].address == "198.18.1.250"
