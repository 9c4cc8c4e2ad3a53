"""The lab on the aws fabric (``lab.fabric = "aws"``): the agents' real ``aws_eip`` resource
agent against the lab's moto EC2 API, and the igw translating each EIP to the private address
the API says it is associated with (propagation delay 0 here; the benchmark measures with
EC2's). One lab for the module, about a minute in all.

Every AssociateAddress is counted where the API handles it (the fabric's call log) and, after
each, no EIP may be left associated with nothing. The bounds: a crash of lb1 costs exactly one
call (lb2 takes EIP1) and its return exactly one (the failback); standby and online one each;
a heartbeat partition (udp/694 dropped, both LBs serving) none: the agents hear each other's
HAProxy serve and nothing moves (the test allows at most one call per EIP, so that a single
probe lost on a loaded CI machine does not fail it, and states what it saw).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.lab.conftest import Lab, lab_name, start_lab

from hapair.bench.faults import partition
from hapair.platforms.lab import network
from hapair.platforms.lab.fabric import lab as fabric
from hapair.platforms.lab.paths import LabPaths
from hapair.spec import parse

HOME = {"vip1": ["lb1"], "vip2": ["lb2"]}


@pytest.fixture(scope="module")
def aws() -> Iterator[Lab]:
    spec = parse(
        {"cluster": {"name": lab_name()}, "lab": {"fabric": "aws", "eip_propagation_ms": 0}}
    )
    lab = start_lab(spec)
    try:
        yield lab
    finally:
        lab.platform.down(lab.name)


def served_by(lab: Lab, vip: int) -> str | None:
    code, headers, _ = lab.get(f"http://{lab.vip(vip)}/", timeout=1)
    return headers.get("x-lb") if code == 0 and headers.get(":status") == "200" else None


def agent_calls(lab: Lab) -> list[dict[str, Any]]:
    """The agents' AssociateAddress calls so far (``up``'s own two are not the agents')."""
    return [c for c in fabric.calls(lab.name) if c["agent"]]


def never_unassociated(lab: Lab) -> None:
    """An EIP is unassociated only between the two calls of a take's compare-and-swap
    (hapair.agent.resources.aws_cas: DisassociateAddress of the association the taker saw,
    then its AssociateAddress), never after an AssociateAddress."""
    every = fabric.calls(lab.name) + fabric.calls(lab.name, "DisassociateAddress")
    every.sort(key=lambda c: c["at"])
    pending: set[str] = set()
    before: set[str] = set()
    for c in every:
        now = set(c["unassociated"])
        if c["op"] == "DisassociateAddress":
            assert c["agent"], c
            pending |= now - before
        else:
            pending.discard(c["allocation"])
            assert now <= pending, c
        before = now
    assert pending == set() and before == set()


def settle(lab: Lab, timeout: float = 20) -> None:
    lab.wait_for("both EIPs home", lambda: lab.owners() == HOME, timeout)


@pytest.fixture(autouse=True)
def _steady(aws: Lab) -> Iterator[None]:
    settle(aws)
    yield
    for lb in ("lb1", "lb2"):
        aws.platform.revive(aws.name, lb)
    partition(aws.plan, False)
    settle(aws)


def test_up_associates_each_eip_with_its_home_lb_and_no_lb_carries_a_vip(aws: Lab) -> None:
    assert served_by(aws, 1) == "lb1"
    assert served_by(aws, 2) == "lb2"
    for lb in aws.plan.lbs:
        assert not {v.address for v in aws.plan.vips} & set(network.addresses(lb.namespace))
        toml = LabPaths(aws.name).agent_toml(lb.name).read_text()
        assert 'driver = "aws_eip"' in toml
        assert 'aws_endpoint_url = "http://198.18.0.250:5000"' in toml
    seeded = fabric.calls(aws.name)
    assert [(c["ip"], c["agent"]) for c in seeded[:2]] == [
        ("198.18.0.11", False),
        ("198.18.0.12", False),
    ]
    assert agent_calls(aws) == []  # the agents found their EIPs home: no call


def test_crash_of_lb1_moves_eip1_with_one_call_and_fails_back_with_one(aws: Lab) -> None:
    before = len(agent_calls(aws))
    t0 = time.monotonic()
    aws.platform.kill(aws.name, "lb1", "machine")
    aws.wait_for("EIP1 served by lb2", lambda: served_by(aws, 1) == "lb2", 5)
    took = time.monotonic() - t0
    aws.wait_for("the igw to say so", lambda: aws.owners()["vip1"] == ["lb2"], 1)
    assert served_by(aws, 2) == "lb2"
    calls = agent_calls(aws)[before:]
    assert [(c["ip"], c["from"]) for c in calls] == [("198.18.0.112", "198.18.0.12")], calls
    aws.platform.revive(aws.name, "lb1")
    aws.wait_for("EIP1 back on lb1", lambda: aws.owners()["vip1"] == ["lb1"], 20)
    assert served_by(aws, 1) == "lb1"
    calls = agent_calls(aws)[before:]
    assert [c["ip"] for c in calls] == ["198.18.0.112", "198.18.0.11"], calls
    never_unassociated(aws)
    print(f"EIP1 served by lb2 {took:.2f} s after the crash")


def test_standby_and_online_move_eip1_with_one_call_each(aws: Lab) -> None:
    before = len(agent_calls(aws))
    proc = aws.cli("standby", "--name", aws.name, "lb1")
    assert proc.returncode == 0, proc.stderr
    aws.wait_for("EIP1 on lb2", lambda: aws.owners()["vip1"] == ["lb2"], 10)
    assert served_by(aws, 1) == "lb2"
    proc = aws.cli("online", "--name", aws.name, "lb1")
    assert proc.returncode == 0, proc.stderr
    aws.wait_for("EIP1 back on lb1", lambda: aws.owners()["vip1"] == ["lb1"], 20)
    assert served_by(aws, 1) == "lb1"
    calls = agent_calls(aws)[before:]
    assert [c["ip"] for c in calls] == ["198.18.0.112", "198.18.0.11"], calls
    never_unassociated(aws)


def test_heartbeat_partition_makes_no_remap_fight(aws: Lab) -> None:
    before = len(agent_calls(aws))
    partition(aws.plan, True)
    try:
        deadline = time.monotonic() + 10
        checks = 0
        while time.monotonic() < deadline:
            assert set(aws.owners()["vip1"] + aws.owners()["vip2"]) <= {"lb1", "lb2"}
            checks += 1
            time.sleep(0.5)
    finally:
        partition(aws.plan, False)
    settle(aws)
    time.sleep(2)  # heartbeats back: anything the partition started has settled
    calls = agent_calls(aws)[before:]
    print(f"AssociateAddress calls during a 10 s heartbeat partition: {len(calls)}")
    per_eip: dict[str, int] = {}
    for c in calls:
        per_eip[c["allocation"]] = per_eip.get(c["allocation"], 0) + 1
    assert all(n <= 2 for n in per_eip.values()), calls  # at most one take and one return
    assert len(calls) <= 4, calls
    assert aws.owners() == HOME
    assert checks >= 10
    never_unassociated(aws)
