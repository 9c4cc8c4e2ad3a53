"""The lab's 3-member etcd in its own namespaces (issue 13): ownership is granted through it,
one member's death changes nothing, the loss of quorum refuses takeovers with a clear error,
and everything is cleaned up. Needs root and Debian's etcd-server."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Iterator

import pytest
from tests.lab.conftest import lab_name, require_root

from hapair.coord.etcd_client import EtcdClient, EtcdError, EtcdUnavailable
from hapair.coord.etcd_store import LeaseKeeper, Owner, VipStore
from hapair.plan import Plan, make_plan
from hapair.platforms.lab import etcd, network
from hapair.platforms.lab.paths import LabPaths
from hapair.platforms.lab.platform import LabPlatform
from hapair.platforms.lab.system import run
from hapair.spec import parse

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def plan() -> Iterator[Plan]:
    """Only what etcd needs: the VPC bridge, lb1 and lb2 plugged into it (as clients), and the
    3 members; ``down`` removes it all."""
    require_root()
    p = make_plan(
        parse({"cluster": {"name": lab_name()}, "web": {"size": 1}, "ha": {"coordinator": "etcd"}})
    )
    lbs = [p.node("lb1"), p.node("lb2")]
    try:
        network.create_namespaces(p, only=[p.vpc_namespace, *(n.namespace for n in lbs)])
        run(
            ["ip", "-n", p.vpc_namespace, "-batch", "-"],
            input="link add br0 type bridge\nlink set br0 up\n",
        )
        network.wire_nodes(p, lbs)
        etcd.start(p, LabPaths(p.name), delay_s=0.2)
        yield p
    finally:
        LabPlatform().down(p.name)
        assert not etcd.namespaces(p.name)
        assert not network.lab_namespaces(p.name)
        assert not LabPaths(p.name).root.exists()


def password(p: Plan) -> str:
    return etcd.password_file(LabPaths(p.name)).read_text().strip()


def client(p: Plan, timeout: float = 2.0) -> EtcdClient:
    return EtcdClient(etcd.endpoints(p), user="root", password=password(p), timeout=timeout)


def test_members_run_with_auth_and_private_data(plan: Plan) -> None:
    paths = LabPaths(plan.name)
    assert etcd.namespaces(plan.name) == [f"{plan.name}-etcd{i}" for i in (1, 2, 3)]
    assert stat.S_IMODE(etcd.password_file(paths).stat().st_mode) == 0o600
    assert stat.S_IMODE((paths.root / "etcd").stat().st_mode) == 0o700
    assert all((paths.root / "etcd" / f"etcd{i}" / "member").is_dir() for i in (1, 2, 3))

    async def check() -> list[str]:
        async with EtcdClient(etcd.endpoints(plan), timeout=2.0) as anon:
            with pytest.raises(EtcdError, match="user name is empty"):
                await anon.get("/hapair/")
        async with client(plan) as cli:
            return sorted(m["name"] for m in await cli.members())

    assert etcd.run_in(plan.node("lb1").namespace, check) == ["etcd1", "etcd2", "etcd3"]


def test_grant_then_lose_one_member_then_quorum(plan: Plan) -> None:
    lb1, lb2 = plan.node("lb1").namespace, plan.node("lb2").namespace
    state: dict[str, int] = {}

    async def grant_vip1() -> Owner:
        async with client(plan) as cli:
            keeper = LeaseKeeper(cli, 10)
            lease = await keeper.grant()
            state["lease"] = lease
            got = await VipStore(cli, plan.name, "lb1").acquire("vip1", lease, None)
            assert got.granted, got.reason
            assert got.owner is not None
            return got.owner

    vip1 = etcd.run_in(lb1, grant_vip1)

    async def owners() -> dict[str, Owner]:
        async with client(plan) as cli:
            return (await VipStore(cli, plan.name, "lb2").owners())[0]

    # One member dies: the quorum (2 of 3) stands, nothing changes, grants go on.
    assert etcd.kill_member(plan, "etcd1") > 0
    assert etcd.run_in(lb2, owners) == {"vip1": vip1}

    async def still_works() -> None:
        async with client(plan) as cli:
            keeper = LeaseKeeper(cli, 10)
            keeper.lease, keeper.expires = state["lease"], 1e18
            assert await keeper.renew()
            lease, _ = await cli.grant(10)
            store = VipStore(cli, plan.name, "lb2")
            assert (await store.acquire("vip2", lease, None)).granted
            stale = await store.acquire("vip1", lease, None)  # lb1 still holds it
            assert not stale.granted and stale.owner == vip1
            state["lease2"] = lease

    etcd.run_in(lb2, still_works)

    # A second member dies: quorum lost. A takeover fails with a clear error, not a grant.
    assert etcd.kill_member(plan, "etcd2") > 0

    async def takeover() -> str:
        async with client(plan, timeout=3.0) as cli:
            store = VipStore(cli, plan.name, "lb2")
            with pytest.raises(EtcdUnavailable) as err:
                await store.acquire("vip1", state["lease2"], vip1)
            return str(err.value)

    message = etcd.run_in(lb2, takeover)
    assert message.startswith("no etcd member answered within 3.0 s (quorum lost or unreachable)")

    async def fence() -> str:
        async with client(plan, timeout=1.0) as cli:
            keeper = LeaseKeeper(cli, 3, margin_s=1.0)
            keeper.lease = state["lease"]
            keeper.expires = keeper.clock() + 3
            task = asyncio.create_task(keeper.run(), name="keeper")
            async with asyncio.timeout(5):
                await keeper.fenced.wait()
            await task
            return keeper.reason

    assert "not renewed before its TTL" in etcd.run_in(lb1, fence)
