"""The split-brain arbiter against moto: a take the holder did not consent to is a
compare-and-swap on the association the taker saw (hapair.agent.resources.aws_cas)."""

from __future__ import annotations

import asyncio
from typing import Any

import boto3
from tests.aws import motofix
from tests.aws.test_aws_eip import REGION, Pair, eni_tags, moves, where

from hapair.agent.resources.aws_cas import TakeKind, take_kind
from hapair.errors import ResourceError


def third_lb(ec2: Any, pair: Pair) -> str:
    """Another LB ENI of the cluster (a second taker that saw the same association)."""
    subnet = ec2.describe_network_interfaces(NetworkInterfaceIds=[pair.eni["lb1"]])[
        "NetworkInterfaces"
    ][0]["SubnetId"]
    eni: str = ec2.create_network_interface(
        SubnetId=subnet,
        PrivateIpAddress="10.30.1.13",
        TagSpecifications=eni_tags(pair.cluster, "lb"),
    )["NetworkInterface"]["NetworkInterfaceId"]
    pair.eni["lb3"], pair.ip["lb3"] = eni, ("10.30.1.13", "10.30.1.13")
    return eni


def settled(since: int, alloc: str) -> None:
    """Every DisassociateAddress of ``alloc`` is followed at once by an AssociateAddress of it
    (the winner's), and the log ends with ``alloc`` associated."""
    ours = [
        e
        for e in motofix.EIP_LOG[since:]
        if e.get("allocation") == alloc or e["op"] == "DisassociateAddress"
    ]
    for i, e in enumerate(ours):
        if e["op"] == "DisassociateAddress":
            assert ours[i + 1]["op"] == "AssociateAddress", ours
    assert ours and ours[-1]["op"] == "AssociateAddress"
    assert alloc not in ours[-1]["unassociated"]


def test_take_kind() -> None:
    held = {"AssociationId": "eipassoc-1"}
    assert take_kind({}, home=False, released=False) is TakeKind.CLAIM
    assert take_kind(held, home=False, released=False) is TakeKind.SWAP
    assert take_kind(held, home=True, released=False) is TakeKind.REMAP  # failback
    assert take_kind(held, home=False, released=True) is TakeKind.REMAP  # handover


def test_a_failover_is_a_compare_and_swap_two_mutating_calls(ec2: Any, aws_env: str) -> None:
    pair = Pair(ec2)
    client = boto3.client("ec2", region_name=REGION, endpoint_url=aws_env)
    lb2 = pair.agent("lb2", 1, client, home=False)
    since = len(motofix.EIP_LOG)
    asyncio.run(lb2.start())
    assert where(ec2, pair.alloc) == (pair.eni["lb2"], "10.30.1.112")
    assert lb2.calls.sent.get("disassociate_address") == 1 and moves(lb2) == 1
    assert lb2.lost is None
    settled(since, pair.alloc)


def test_a_taker_with_a_stale_reading_loses_and_says_why(ec2: Any, aws_env: str) -> None:
    pair = Pair(ec2)
    third_lb(ec2, pair)
    clients = [boto3.client("ec2", region_name=REGION, endpoint_url=aws_env) for _ in range(2)]
    lb2 = pair.agent("lb2", 1, clients[0], home=False)
    lb3 = pair.agent("lb3", 0, clients[1], home=False)
    since = len(motofix.EIP_LOG)

    async def scenario() -> None:
        await lb2.reader.read(pair.alloc)  # both saw the EIP on lb1 (one association)
        await lb3.reader.read(pair.alloc)
        await lb2.start()  # lb2 swaps first
        try:
            await lb3.start()  # acts on its reading, now stale
        except ResourceError as exc:
            assert exc.code == "LostRace"
        else:
            raise AssertionError("the stale taker won")

    asyncio.run(scenario())
    assert where(ec2, pair.alloc) == (pair.eni["lb2"], "10.30.1.112")
    assert lb3.lost is not None and "lost the race" in lb3.lost
    assert moves(lb3) == 1  # tried once; refused: nothing moved
    settled(since, pair.alloc)


async def race(alloc: str, takers: list[Any]) -> list[BaseException | None]:
    """Both read (the same association), then both start at once."""
    for t in takers:
        await t.reader.read(alloc)
    return await asyncio.gather(*(t.start() for t in takers), return_exceptions=True)


def test_two_takers_racing_exactly_one_wins(ec2: Any, aws_env: str) -> None:
    for _ in range(3):
        pair = Pair(ec2)
        third_lb(ec2, pair)
        clients = [boto3.client("ec2", region_name=REGION, endpoint_url=aws_env) for _ in "ab"]
        takers = {
            "lb2": pair.agent("lb2", 1, clients[0], home=False),
            "lb3": pair.agent("lb3", 0, clients[1], home=False),
        }
        since = len(motofix.EIP_LOG)

        results = dict(
            zip(takers, asyncio.run(race(pair.alloc, list(takers.values()))), strict=True)
        )
        won = [lb for lb, r in results.items() if r is None]
        lost = [lb for lb, r in results.items() if isinstance(r, ResourceError)]
        assert len(won) == 1 and len(lost) == 1, results
        assert results[lost[0]].code == "LostRace"  # type: ignore[union-attr]
        assert takers[lost[0]].lost is not None
        assert where(ec2, pair.alloc)[0] == pair.eni[won[0]]
        settled(since, pair.alloc)


def test_an_unassociated_eip_is_claimed_by_one_of_two(ec2: Any, aws_env: str) -> None:
    pair = Pair(ec2)
    assoc = ec2.describe_addresses(AllocationIds=[pair.alloc])["Addresses"][0]["AssociationId"]
    ec2.disassociate_address(AssociationId=assoc)
    clients = [boto3.client("ec2", region_name=REGION, endpoint_url=aws_env) for _ in "ab"]
    lb1 = pair.agent("lb1", 0, clients[0])
    lb2 = pair.agent("lb2", 1, clients[1], home=False)

    async def race() -> list[BaseException | None]:
        await lb1.reader.read(pair.alloc)
        await lb2.reader.read(pair.alloc)
        return await asyncio.gather(lb1.start(), lb2.start(), return_exceptions=True)

    results = asyncio.run(race())
    assert sum(r is None for r in results) == 1, results
    assert [r.code for r in results if isinstance(r, ResourceError)] == ["LostRace"]
    assert where(ec2, pair.alloc)[0] in (pair.eni["lb1"], pair.eni["lb2"])
    assert lb1.calls.sent.get("disassociate_address", 0) == 0
    assert lb2.calls.sent.get("disassociate_address", 0) == 0


def test_failback_and_consented_handover_stay_one_atomic_remap(ec2: Any, aws_env: str) -> None:
    pair = Pair(ec2)
    client = boto3.client("ec2", region_name=REGION, endpoint_url=aws_env)
    lb1 = pair.agent("lb1", 0, client)  # home
    lb2 = pair.agent("lb2", 1, client, home=False)
    since = len(motofix.EIP_LOG)

    async def scenario() -> None:
        await lb1.stop()  # standby: lb1 marks its association released
        await lb2.start()  # consented: one remap
        await lb2.stop()  # lb2 lets it go (marked), lb1 fails back
        lb1.reader.forget()  # its own reading, from before the handover, is stale
        await lb1.start()

    asyncio.run(scenario())
    assert where(ec2, pair.alloc) == (pair.eni["lb1"], "10.30.1.11")
    assert lb1.calls.sent.get("disassociate_address", 0) == 0
    assert lb2.calls.sent.get("disassociate_address", 0) == 0
    log = [e for e in motofix.EIP_LOG[since:] if e.get("allocation") == pair.alloc]
    assert [e["op"] for e in log] == ["AssociateAddress"] * 2
    assert all(pair.alloc not in e["unassociated"] for e in log)
