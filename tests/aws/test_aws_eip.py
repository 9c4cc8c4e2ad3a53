"""The aws_eip resource agent against moto: read before write, one atomic remap, no fight,
backoff per VIP, reads within budget, only onto LB ENIs; and its two pure rules."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from hapair.agent.config import AgentConfig, VipConfig
from hapair.agent.resources.aws_eip import (
    FRESH_S,
    AddressReader,
    AwsEip,
    Backoff,
    Ec2Calls,
    ReadFailed,
    TakeGuard,
    make_aws_eip,
)
from hapair.errors import ResourceError

REGION = "us-east-1"


def eni_tags(cluster: str, role: str) -> list[dict[str, Any]]:
    """TagSpecifications of an ENI of ``cluster`` in ``role`` (lb or web), as `up` tags them."""
    tags = [{"Key": "hapair:cluster", "Value": cluster}, {"Key": "hapair:role", "Value": role}]
    return [{"ResourceType": "network-interface", "Tags": tags}]


class Pair:
    """Two LB ENIs (primary + secondary, tagged as the cluster's LBs), a web ENI, and one EIP
    on lb1's primary address, as `up` leaves them."""

    def __init__(self, ec2: Any, cluster: str = "c") -> None:
        vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.30.1.0/24")["Subnet"]["SubnetId"]
        self.cluster = cluster
        self.eni: dict[str, str] = {}
        self.ip = {"lb1": ("10.30.1.11", "10.30.1.111"), "lb2": ("10.30.1.12", "10.30.1.112")}
        for lb, (primary, secondary) in self.ip.items():
            self.eni[lb] = ec2.create_network_interface(
                SubnetId=subnet,
                PrivateIpAddresses=[
                    {"PrivateIpAddress": primary, "Primary": True},
                    {"PrivateIpAddress": secondary, "Primary": False},
                ],
                TagSpecifications=eni_tags(cluster, "lb"),
            )["NetworkInterface"]["NetworkInterfaceId"]
        self.web_eni = ec2.create_network_interface(
            SubnetId=subnet,
            PrivateIpAddress="10.30.1.21",
            TagSpecifications=eni_tags(cluster, "web"),
        )["NetworkInterface"]["NetworkInterfaceId"]
        eip = ec2.allocate_address(Domain="vpc")
        self.alloc, self.public = eip["AllocationId"], eip["PublicIp"]
        ec2.associate_address(
            AllocationId=self.alloc,
            NetworkInterfaceId=self.eni["lb1"],
            PrivateIpAddress=self.ip["lb1"][0],
        )

    def agent(self, lb: str, slot: int, client: Any, **kw: Any) -> AwsEip:
        # Each agent is its own node here; no read cache, so each sees the other's moves.
        reader = AddressReader(Ec2Calls(lambda: client), ttl=0.0)
        return AwsEip(
            "vip1",
            self.public,
            self.alloc,
            self.eni[lb],
            self.ip[lb][slot],
            cluster=self.cluster,
            reader=reader,
            **kw,
        )


@pytest.fixture
def client(aws_env: str) -> Any:
    return boto3.client("ec2", region_name=REGION, endpoint_url=aws_env)


def where(ec2: Any, alloc: str) -> tuple[str | None, str | None]:
    a = ec2.describe_addresses(AllocationIds=[alloc])["Addresses"][0]
    return a.get("NetworkInterfaceId") or None, a.get("PrivateIpAddress") or None


def moves(agent: AwsEip) -> int:
    return agent.calls.sent.get("associate_address", 0)


def test_read_before_write_one_remap_and_stop_makes_no_call(ec2: Any, client: Any) -> None:
    pair = Pair(ec2)
    lb1 = pair.agent("lb1", 0, client)  # vip1's home: lb1's primary address
    lb2 = pair.agent("lb2", 1, client)  # the peer takes vip1 on its secondary address

    async def scenario() -> None:
        await lb1.start()  # already here: a read, no mutating call
        assert moves(lb1) == 0 and (await lb1.monitor()).held
        await lb2.start()  # failover: one AssociateAddress, the EIP never unassociated
        assert moves(lb2) == 1
        assert where(ec2, pair.alloc) == (pair.eni["lb2"], "10.30.1.112")
        m = await lb1.monitor()  # on the peer: not held here, nothing to repair
        assert not m.held and pair.eni["lb2"] in m.detail and "10.30.1.112" in m.detail
        await lb1.stop()  # not lb1's: a read, no mutating call
        assert lb1.calls.sent.get("disassociate_address", 0) == 0
        assert lb1.calls.sent.get("create_tags", 0) == 0
        assert where(ec2, pair.alloc) == (pair.eni["lb2"], "10.30.1.112")
        await lb2.start()  # announce of an EIP already held: no call
        assert moves(lb2) == 1

    asyncio.run(scenario())


def test_a_repeated_start_yields_to_the_peer_a_new_decision_takes(ec2: Any, client: Any) -> None:
    pair = Pair(ec2)
    lb1 = pair.agent("lb1", 0, client, guard=TakeGuard(quiet_s=0.4, yield_s=30.0))
    lb2 = pair.agent("lb2", 1, client)

    async def scenario() -> None:
        assert (await lb1.monitor()).held
        await lb2.start()  # the peer's decision
        assert not (await lb1.monitor()).held
        # The reconcile loop asks lb1 again and again under the same wish: it yields.
        for _ in range(4):
            with pytest.raises(ResourceError) as err:
                await lb1.start()
            assert err.value.code == "HeldByPeer"
            await asyncio.sleep(0.1)
        assert moves(lb1) == 0
        # The daemon's wish went away and came back (failback): a new decision, one remap.
        await asyncio.sleep(0.5)
        await lb1.start()
        assert moves(lb1) == 1
        assert where(ec2, pair.alloc) == (pair.eni["lb1"], "10.30.1.11")

    asyncio.run(scenario())


def test_a_stop_or_an_unassociated_eip_ends_the_yielding(ec2: Any, client: Any) -> None:
    pair = Pair(ec2)
    lb1 = pair.agent("lb1", 0, client)
    lb2 = pair.agent("lb2", 1, client)

    async def scenario() -> None:
        assert (await lb1.monitor()).held
        await lb2.start()
        assert not (await lb1.monitor()).held
        await lb1.stop()  # the daemon let it go: lb1's next start is a decision
        await lb1.start()
        assert moves(lb1) == 1
        assert not (await lb2.monitor()).held  # lb2 held it and lost it: it yields
        with pytest.raises(ResourceError) as err:
            await lb2.start()
        assert err.value.code == "HeldByPeer"
        # Nobody holds it any more: taking it is always right, whoever held it before.
        assoc = ec2.describe_addresses(AllocationIds=[pair.alloc])["Addresses"][0]
        ec2.disassociate_address(AssociationId=assoc["AssociationId"])
        assert not (await lb2.monitor()).held
        lb2.guard.unassociated_since = time.monotonic() - lb2.guard.quiet_s  # on nobody 3 s
        assert not (await lb2.monitor()).held
        await lb2.start()
        assert moves(lb2) == 2

    asyncio.run(scenario())
    assert where(ec2, pair.alloc) == (pair.eni["lb2"], "10.30.1.112")


def test_a_holder_told_to_let_go_marks_it_and_the_peer_takes_it_at_once(
    ec2: Any, client: Any
) -> None:
    pair = Pair(ec2)
    lb1 = pair.agent("lb1", 0, client)
    lb2 = pair.agent("lb2", 1, client)

    async def scenario() -> None:
        assert (await lb1.monitor()).held and not (await lb2.monitor()).held
        await lb2.start()  # lb2 holds it (a failover)
        assert not (await lb1.monitor()).held  # lb1 lost it: it would yield...
        with pytest.raises(ResourceError):
            await lb1.start()
        await lb2.stop()  # ...until lb2 is told to let go: one CreateTags, no disassociation
        await lb2.stop()
        assert lb2.calls.sent.get("create_tags", 0) == 1
        assert lb2.calls.sent.get("disassociate_address", 0) == 0
        assert where(ec2, pair.alloc) == (pair.eni["lb2"], "10.30.1.112")
        await asyncio.sleep(FRESH_S)  # lb1's next start reads again (the actor retries later)
        await lb1.start()  # the handover: one remap
        assert moves(lb1) == 1
        await lb2.stop()  # not lb2's any more: no call
        assert lb2.calls.sent.get("create_tags", 0) == 1

    asyncio.run(scenario())
    assert where(ec2, pair.alloc) == (pair.eni["lb1"], "10.30.1.11")


def test_never_onto_an_eni_that_is_not_an_lb_of_the_cluster(ec2: Any, client: Any) -> None:
    pair = Pair(ec2)
    reader = AddressReader(Ec2Calls(lambda: client), ttl=0.0)
    web = AwsEip(
        "vip1", pair.public, pair.alloc, pair.web_eni, "10.30.1.21", cluster="c", reader=reader
    )
    with pytest.raises(ResourceError) as err:
        asyncio.run(web.start())
    assert err.value.code == "NotAnLbEni"
    foreign = pair.agent("lb2", 1, client)
    foreign.cluster = "other"
    with pytest.raises(ResourceError) as err:
        asyncio.run(foreign.start())
    assert err.value.code == "NotAnLbEni"
    assert moves(web) == moves(foreign) == 0
    assert where(ec2, pair.alloc) == (pair.eni["lb1"], "10.30.1.11")


class Flaky:
    """An EC2 client that answers ``code`` to the first ``n`` calls of ``op``."""

    def __init__(self, real: Any, op: str, n: int, code: str = "RequestLimitExceeded") -> None:
        self.real, self.op, self.left, self.code, self.calls = real, op, n, code, 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.real, name)
        if name != self.op:
            return method

        def call(**kwargs: Any) -> Any:
            self.calls += 1
            if self.left > 0:
                self.left -= 1
                raise ClientError({"Error": {"Code": self.code, "Message": "no"}}, name)
            return method(**kwargs)

        return call


def test_a_failed_move_backs_off_per_vip(ec2: Any, client: Any) -> None:
    pair = Pair(ec2)
    flaky = Flaky(client, "associate_address", 1)
    lb2 = pair.agent("lb2", 1, flaky, backoff=Backoff(base=0.3, cap=0.3, rng=random.Random(1)))

    async def scenario() -> None:
        with pytest.raises(ResourceError) as err:
            await lb2.start()
        assert err.value.code == "RequestLimitExceeded"
        wait = lb2.backoff.wait(time.monotonic())
        assert 0 < wait <= 0.3
        with pytest.raises(ResourceError) as err:
            await lb2.start()  # within the backoff: refused without any call
        assert err.value.code == "BackingOff" and flaky.calls == 1
        await asyncio.sleep(wait + 0.01)
        await lb2.start()
        assert flaky.calls == 2 and lb2.backoff.failures == 0

    asyncio.run(scenario())
    assert where(ec2, pair.alloc) == (pair.eni["lb2"], "10.30.1.112")


def test_reads_back_off_and_read_failures_are_os_errors(ec2: Any, client: Any) -> None:
    pair = Pair(ec2)
    flaky = Flaky(client, "describe_addresses", 1)
    lb1 = pair.agent("lb1", 0, flaky)
    with pytest.raises(ReadFailed) as err:
        asyncio.run(lb1.monitor())
    assert isinstance(err.value, OSError) and err.value.code == "RequestLimitExceeded"
    with pytest.raises(ReadFailed) as err:
        asyncio.run(lb1.monitor())  # the shared reader backs off: no call
    assert err.value.code == "BackingOff" and flaky.calls == 1


def test_errors_carry_the_aws_code_and_calls_are_bounded(ec2: Any, client: Any) -> None:
    pair = Pair(ec2)
    bad = AwsEip(
        "vip1",
        pair.public,
        "eipalloc-0000000000000dead",
        pair.eni["lb1"],
        "10.30.1.11",
        lambda: client,
    )
    with pytest.raises(ResourceError) as err:
        asyncio.run(bad.monitor())
    assert err.value.code == "InvalidAllocationID.NotFound"

    class Slow:
        def describe_addresses(self, **kwargs: Any) -> Any:
            time.sleep(1.0)
            return client.describe_addresses(**kwargs)

    slow = AwsEip(
        "vip1",
        pair.public,
        pair.alloc,
        pair.eni["lb1"],
        "10.30.1.11",
        reader=AddressReader(Ec2Calls(lambda: Slow(), call_timeout=0.2)),
    )
    with pytest.raises(ReadFailed) as err:
        asyncio.run(slow.monitor())
    assert err.value.code == "Timeout"


def test_both_vips_share_one_read_per_ttl(ec2: Any, client: Any) -> None:
    pair = Pair(ec2)
    eip2 = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(
        AllocationId=eip2["AllocationId"],
        NetworkInterfaceId=pair.eni["lb2"],
        PrivateIpAddress="10.30.1.12",
    )
    reader = AddressReader(Ec2Calls(lambda: client), ttl=0.5)
    vip1 = AwsEip("vip1", pair.public, pair.alloc, pair.eni["lb1"], "10.30.1.11", reader=reader)
    vip2 = AwsEip(
        "vip2",
        eip2["PublicIp"],
        eip2["AllocationId"],
        pair.eni["lb1"],
        "10.30.1.111",
        reader=reader,
    )

    async def scenario() -> None:
        t0 = time.monotonic()
        seen = set()
        while time.monotonic() - t0 < 2.0:  # the reconcile loop, much faster than on AWS
            seen.add(((await vip1.monitor()).held, (await vip2.monitor()).held))
            await asyncio.sleep(0.01)
        assert seen == {(True, False)}
        # About 2 s / 0.5 s: one DescribeAddresses per TTL for the node, both VIPs included.
        assert 3 <= reader.calls.sent["describe_addresses"] <= 6

    asyncio.run(scenario())


def test_made_from_the_agent_config(ec2: Any, aws_env: str) -> None:
    pair = Pair(ec2, cluster="cfg")
    vips = [
        VipConfig(
            name="vip1",
            address=pair.public,
            home="lb2",
            driver="aws_eip",
            allocation_id=pair.alloc,
            eni_id=pair.eni["lb2"],
            private_ip="10.30.1.12",
        ),
        VipConfig(
            name="vip2",
            address=pair.public,
            home="lb1",
            driver="aws_eip",
            allocation_id=pair.alloc,
            eni_id=pair.eni["lb2"],
            private_ip="10.30.1.112",
        ),
    ]
    cfg = AgentConfig(
        cluster="cfg",
        node="lb2",
        peer="lb1",
        peer_addresses=["10.30.1.11"],
        peer_probe_address="10.30.1.11",
        key_file="/k",
        admin_token_file="/t",
        stats_socket="/s",
        aws_region=REGION,
        aws_endpoint_url=aws_env,
        action_timeout_ms=10_000,
        vips=vips,
    )
    a, b = make_aws_eip(cfg, vips[0]), make_aws_eip(cfg, vips[1])
    assert a.reader is b.reader and a.cluster == "cfg"
    assert a.deadline == pytest.approx(9.0)

    async def scenario() -> None:
        await a.start()
        assert (await a.monitor()).held and not (await b.monitor()).held

    asyncio.run(scenario())
    assert where(ec2, pair.alloc) == (pair.eni["lb2"], "10.30.1.12")


# ---------------------------------------------------------------------------- pure rules
def test_take_guard() -> None:
    g = TakeGuard(quiet_s=3.0, yield_s=30.0)
    assert g.refusal(0.0) is None  # never held: every start is a decision
    g.seen(here=True, elsewhere=False, now=0.0)
    g.seen(here=False, elsewhere=True, now=10.0)  # the peer took it
    assert g.refusal(10.1) is not None  # the reconcile loop's repeat
    assert g.refusal(12.0) is not None  # repeats every 2 s (the actor's longest retry)...
    assert g.refusal(14.0) is not None
    assert g.refusal(17.5) is None  # ...a start after a 3.5 s gap is a new wish
    g.took()
    g.seen(here=False, elsewhere=True, now=20.0)
    # A wish that never changes (a split brain) is yielded to for yield_s (30 s) at most.
    allowed = next(t for t in range(21, 99, 2) if g.refusal(float(t)) is None)
    assert allowed == 51
    g.seen(here=False, elsewhere=True, now=60.0)
    g.released()  # the daemon let it go
    assert g.refusal(60.1) is None
    g.took()
    g.seen(here=False, elsewhere=True, now=70.0)
    g.seen(here=False, elsewhere=False, now=70.5)  # unassociated: a swap under way, maybe
    assert g.refusal(70.6) is not None
    g.seen(here=False, elsewhere=False, now=73.6)  # still on nobody: nobody serves it
    assert g.refusal(73.7) is None
    # A holder that sees its EIP on nobody (the peer's compare-and-swap between its two
    # calls) counts it as taken and does not claim it back.
    g.took()
    g.seen(here=False, elsewhere=False, now=80.0)
    assert g.refusal(80.1) is not None
    g.seen(here=False, elsewhere=True, now=80.2)  # the peer's associate landed
    assert g.refusal(80.3) is not None


def test_backoff_is_exponential_capped_and_jittered() -> None:
    b = Backoff(base=1.0, cap=8.0, rng=random.Random(7))
    delays = [b.fail(0.0) for _ in range(8)]
    caps = [1, 2, 4, 8, 8, 8, 8, 8]
    assert all(0 <= d <= c for d, c in zip(delays, caps, strict=True))
    assert len(set(delays)) == len(delays)  # jittered
    assert b.wait(0.0) == pytest.approx(delays[-1])
    b.ok()
    assert b.wait(0.0) == 0 and b.failures == 0
