"""The aws fabric's pure parts: the propagation delay, the igw's nftables scripts, the spec."""

from __future__ import annotations

import pytest

from hapair.errors import SpecError
from hapair.platforms.lab.fabric.edge import TABLE, Propagation, maps_script, table_script
from hapair.spec import parse
from hapair.spec_fabric import endpoint_url, fabric_address

E1, E2 = "198.19.255.1", "198.19.255.2"
P1, P2, S2 = "198.18.0.11", "198.18.0.12", "198.18.0.112"


def test_first_reading_applies_at_once_and_changes_wait_the_delay() -> None:
    p = Propagation(delay_s=5.0)
    assert sorted(p.observe(0.0, {E1: P1, E2: P2})) == [E1, E2]
    assert p.applied == {E1: P1, E2: P2}
    assert p.observe(1.0, {E1: S2, E2: P2}) == [E1]
    assert p.due(5.9) == {}
    assert p.next_due() == 6.0
    assert p.applied[E1] == P1
    assert p.due(6.0) == {E1: S2}
    assert p.applied == {E1: S2, E2: P2}
    assert p.next_due() is None


def test_changes_apply_in_order_and_a_flip_back_within_the_delay_changes_nothing() -> None:
    p = Propagation(delay_s=1.0)
    p.observe(0.0, {E1: P1})
    p.observe(0.1, {E1: S2})
    p.observe(0.2, {E1: P1})
    assert p.due(1.15) == {E1: S2}
    assert p.due(1.25) == {E1: P1}
    p.observe(2.0, {E1: None})
    p.observe(2.1, {E1: P1})
    assert p.due(5.0) == {}  # gone and back: the data plane ends where it was
    assert p.applied == {E1: P1}


def test_zero_delay_applies_on_the_same_round() -> None:
    p = Propagation(delay_s=0.0)
    p.observe(0.0, {E1: P1})
    p.observe(1.0, {E1: None})
    assert p.due(1.0) == {E1: None}


def test_maps_script_translates_associated_eips_only() -> None:
    script = maps_script({E1: S2, E2: None})
    assert f"flush map ip {TABLE} dnat_to" in script
    assert f"add element ip {TABLE} dnat_to {{ {E1} : {S2} }}" in script
    assert f"add element ip {TABLE} snat_to {{ {S2} : {E1} }}" in script
    assert E2 not in script
    assert "add element" not in maps_script({E1: None})


def test_table_script_replaces_the_table_and_drops_unassociated_eips() -> None:
    script = table_script([E1, E2], "inet0", {E1: P1})
    assert script.startswith(f"table ip {TABLE}\ndelete table ip {TABLE}\n")
    assert 'iif "inet0" dnat to ip daddr map @dnat_to' in script
    assert 'oif "inet0" snat to ip saddr map @snat_to' in script
    assert "ip daddr @eips counter name unassociated_dropped drop" in script
    assert f"dnat_to {{ {E1} : {P1} }}" in script


def test_spec_fabric_defaults_and_address() -> None:
    spec = parse({})
    assert spec.lab.fabric == "l2"
    assert spec.lab.eip_propagation_ms == 5000
    aws = parse({"lab": {"fabric": "aws", "eip_propagation_ms": 0}})
    assert fabric_address(aws) == "198.18.0.250"
    assert endpoint_url(aws) == "http://198.18.0.250:5000"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"lab": {"fabric": "gre"}}, "lab.fabric: input should be 'l2' or 'aws' (got 'gre')"),
        (
            {"lab": {"fabric": "aws"}, "cluster": {"platform": "aws"}},
            'lab.fabric: "aws" is the lab\'s imitation of EC2; with cluster.platform = "aws" '
            'the real EC2 is used: remove lab.fabric or set cluster.platform = "lab"',
        ),
        (
            {"lab": {"eip_propagation_ms": 60001}},
            "lab.eip_propagation_ms: must be between 0 and 60000 (got 60001)",
        ),
        (
            {
                "lab": {"fabric": "aws"},
                "network": {"lb_secondary": ["198.18.0.111", "198.18.0.250"]},
            },
            'network.lb_secondary.1: 198.18.0.250 is the address of lab.fabric = "aws"\'s EC2 '
            "endpoint (host number 250 of network.vpc_cidr); pick another address",
        ),
    ],
)
def test_spec_fabric_errors_name_the_field_and_the_fix(data: dict, message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse(data)
    assert message in err.value.problems


class _Ec2:
    def __init__(self, addresses: list[dict]) -> None:
        self.addresses = addresses
        self.asked: list[list[str]] = []

    def describe_addresses(self, AllocationIds: list[str]) -> dict:
        self.asked.append(AllocationIds)
        return {"Addresses": self.addresses}


def test_read_targets_reads_both_eips_in_one_call() -> None:
    from hapair.platforms.lab.fabric.controller import read_targets

    ec2 = _Ec2(
        [
            {"AllocationId": "a1", "NetworkInterfaceId": "eni-2", "PrivateIpAddress": S2},
            {"AllocationId": "a2", "PublicIp": E2},  # associated with nothing
        ]
    )
    assert read_targets(ec2, {"a1": E1, "a2": E2}) == {E1: S2, E2: None}  # type: ignore[arg-type]
    assert ec2.asked == [["a1", "a2"]]
