"""The aws_eip resource agent against moto: moves, exact monitor, safe stop, throttling."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from hapair.agent.config import AgentConfig, VipConfig
from hapair.agent.resources.aws_eip import AddressReader, AwsEip, Ec2Calls, make_aws_eip
from hapair.errors import ResourceError

REGION = "us-east-1"


class Pair:
    """Two LB ENIs (primary + secondary) in one subnet and one EIP on lb1's primary."""

    def __init__(self, ec2: Any) -> None:
        vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.30.1.0/24")["Subnet"]["SubnetId"]
        self.eni: dict[str, str] = {}
        self.ip = {"lb1": ("10.30.1.11", "10.30.1.111"), "lb2": ("10.30.1.12", "10.30.1.112")}
        for lb, (primary, secondary) in self.ip.items():
            self.eni[lb] = ec2.create_network_interface(
                SubnetId=subnet,
                PrivateIpAddresses=[
                    {"PrivateIpAddress": primary, "Primary": True},
                    {"PrivateIpAddress": secondary, "Primary": False},
                ],
            )["NetworkInterface"]["NetworkInterfaceId"]
        eip = ec2.allocate_address(Domain="vpc")
        self.alloc, self.public = eip["AllocationId"], eip["PublicIp"]
        ec2.associate_address(
            AllocationId=self.alloc,
            NetworkInterfaceId=self.eni["lb1"],
            PrivateIpAddress=self.ip["lb1"][0],
        )

    def agent(self, lb: str, slot: int, client: Any, **kw: Any) -> AwsEip:
        # Each agent is its own node here: no read cache, so each sees the other's moves at once.
        reader = AddressReader(Ec2Calls(lambda: client), ttl=0.0)
        return AwsEip(
            "vip1", self.public, self.alloc, self.eni[lb], self.ip[lb][slot], reader=reader, **kw
        )


@pytest.fixture
def client(aws_env: str) -> Any:
    return boto3.client("ec2", region_name=REGION, endpoint_url=aws_env)


def where(ec2: Any, alloc: str) -> tuple[str | None, str | None]:
    a = ec2.describe_addresses(AllocationIds=[alloc])["Addresses"][0]
    return a.get("NetworkInterfaceId") or None, a.get("PrivateIpAddress") or None


def test_moves_eip1_to_lb2_secondary_and_back(ec2: Any, client: Any) -> None:
    pair = Pair(ec2)
    lb1 = pair.agent("lb1", 0, client)  # vip1's home: lb1's primary address
    lb2 = pair.agent("lb2", 1, client)  # the peer takes vip1 on its secondary address

    async def scenario() -> None:
        assert (await lb1.monitor()).held
        assert not (await lb2.monitor()).held
        await lb2.start()
        assert where(ec2, pair.alloc) == (pair.eni["lb2"], "10.30.1.112")
        assert (await lb2.monitor()).held
        m = await lb1.monitor()
        assert not m.held and pair.eni["lb2"] in m.detail and "10.30.1.112" in m.detail
        # lb1 stopping must not take the address away from lb2.
        await lb1.stop()
        assert where(ec2, pair.alloc) == (pair.eni["lb2"], "10.30.1.112")
        # Failback: lb1 takes it back (make-before-break: no disassociate in between).
        await lb1.start()
        assert where(ec2, pair.alloc) == (pair.eni["lb1"], "10.30.1.11")
        assert (await lb1.monitor()).held and not (await lb2.monitor()).held
        await lb2.stop()  # not lb2's: nothing happens
        assert where(ec2, pair.alloc) == (pair.eni["lb1"], "10.30.1.11")
        await lb1.start()  # idempotent
        assert (await lb1.monitor()).held
        await lb1.stop()
        assert where(ec2, pair.alloc) == (None, None)
        assert not (await lb1.monitor()).held
        await lb1.stop()  # idempotent

    asyncio.run(scenario())


def test_monitor_compares_the_private_address_exactly(ec2: Any, client: Any) -> None:
    pair = Pair(ec2)
    primary = pair.agent("lb1", 0, client)
    secondary = pair.agent("lb1", 1, client)  # same ENI, other private address

    async def scenario() -> None:
        assert (await primary.monitor()).held
        assert not (await secondary.monitor()).held
        await secondary.start()
        assert where(ec2, pair.alloc) == (pair.eni["lb1"], "10.30.1.111")
        assert (await secondary.monitor()).held
        assert not (await primary.monitor()).held
        await primary.stop()  # the association is on the same ENI, but not on its address
        assert where(ec2, pair.alloc) == (pair.eni["lb1"], "10.30.1.111")

    asyncio.run(scenario())


class Throttled:
    """An EC2 client that answers ``RequestLimitExceeded`` to the first ``n`` calls of ``op``."""

    def __init__(self, real: Any, op: str, n: int) -> None:
        self.real, self.op, self.left, self.calls = real, op, n, 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.real, name)
        if name != self.op:
            return method

        def call(**kwargs: Any) -> Any:
            self.calls += 1
            if self.left > 0:
                self.left -= 1
                raise ClientError(
                    {
                        "Error": {
                            "Code": "RequestLimitExceeded",
                            "Message": "Request limit exceeded.",
                        }
                    },
                    name,
                )
            return method(**kwargs)

        return call


def test_start_retries_throttling_with_backoff(ec2: Any, client: Any) -> None:
    pair = Pair(ec2)
    throttled = Throttled(client, "associate_address", 2)
    lb2 = pair.agent("lb2", 1, throttled)
    asyncio.run(lb2.start())
    assert throttled.calls == 3
    assert where(ec2, pair.alloc) == (pair.eni["lb2"], "10.30.1.112")


def test_throttling_beyond_the_deadline_is_reported(ec2: Any, client: Any) -> None:
    pair = Pair(ec2)
    throttled = Throttled(client, "associate_address", 10_000)
    lb2 = pair.agent("lb2", 1, throttled, deadline=0.6)
    t0 = time.monotonic()
    with pytest.raises(ResourceError) as err:
        asyncio.run(lb2.start())
    assert err.value.code == "RequestLimitExceeded"
    assert time.monotonic() - t0 < 2.0
    assert throttled.calls >= 2
    assert where(ec2, pair.alloc) == (pair.eni["lb1"], "10.30.1.11")


def test_errors_carry_the_aws_code(ec2: Any, client: Any) -> None:
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
    wrong_eni = AwsEip(
        "vip1", pair.public, pair.alloc, "eni-0000000000000dead", "10.30.1.11", lambda: client
    )
    with pytest.raises(ResourceError) as err:
        asyncio.run(wrong_eni.start())
    assert err.value.code == "InvalidNetworkInterfaceID.NotFound"


def test_calls_are_bounded_by_a_timeout(ec2: Any, client: Any) -> None:
    pair = Pair(ec2)

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
    with pytest.raises(ResourceError) as err:
        asyncio.run(slow.monitor())
    assert err.value.code == "Timeout"


def test_both_vips_share_one_cached_read(ec2: Any, client: Any) -> None:
    pair = Pair(ec2)
    eip2 = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(
        AllocationId=eip2["AllocationId"],
        NetworkInterfaceId=pair.eni["lb2"],
        PrivateIpAddress="10.30.1.12",
    )
    reader = AddressReader(Ec2Calls(lambda: client), ttl=0.25)
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
        results = []
        while time.monotonic() - t0 < 1.0:
            results.append(((await vip1.monitor()).held, (await vip2.monitor()).held))
            await asyncio.sleep(0.01)
        assert set(results) == {(True, False)}
        describes = reader.calls.sent["describe_addresses"]
        # about 1 s / 0.25 s: well within EC2's ~20 describe calls per second.
        assert 2 <= describes <= 6, describes

    asyncio.run(scenario())


def test_made_from_the_agent_config(ec2: Any, aws_env: str) -> None:
    pair = Pair(ec2)
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
        cluster="c",
        node="lb2",
        peer="lb1",
        peer_addresses=["10.30.1.11"],
        peer_probe_address="10.30.1.11",
        key_file="/k",
        admin_token_file="/t",
        stats_socket="/s",
        aws_region=REGION,
        aws_endpoint_url=aws_env,
        vips=vips,
    )
    a, b = make_aws_eip(cfg, vips[0]), make_aws_eip(cfg, vips[1])
    assert a.reader is b.reader
    assert a.deadline == pytest.approx(4.5)

    async def scenario() -> None:
        await a.start()
        assert (await a.monitor()).held and not (await b.monitor()).held

    asyncio.run(scenario())
    assert where(ec2, pair.alloc) == (pair.eni["lb2"], "10.30.1.12")
