"""VIP ownership through a real etcd on 127.0.0.1 (random ports, temporary data): the takeover
transaction refuses a stale owner, only one of two racing nodes is granted, leases and fencing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.etcd_server import etcd_on_loopback, free_port

from hapair.coord.etcd_client import EtcdClient, EtcdError, EtcdUnavailable
from hapair.coord.etcd_store import LeaseKeeper, VipStore


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with etcd_on_loopback(tmp_path_factory.mktemp("etcd")) as url:
        yield url


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_takeover_refuses_a_stale_owner(etcd: str) -> None:
    async def scenario() -> None:
        async with EtcdClient([etcd]) as a_cli, EtcdClient([etcd]) as b_cli:
            a, b = VipStore(a_cli, "stale", "lb1"), VipStore(b_cli, "stale", "lb2")
            la, _ = await a_cli.grant(5)
            lb, _ = await b_cli.grant(5)
            got = await a.acquire("vip1", la, None)
            assert got.granted and got.reason == "vip1: granted to lb1 (was nobody)"
            seen, _ = await b.owners()  # lb2 reads: lb1 holds vip1
            assert seen["vip1"].node == "lb1"
            # lb1 lets go and takes it again: the key's revision moves on.
            assert await a.release("vip1", got.owner)  # type: ignore[arg-type]
            again = await a.acquire("vip1", la, None)
            assert again.granted
            stale = await b.acquire("vip1", lb, seen["vip1"])
            assert not stale.granted
            assert stale.reason == "vip1: refused, the owner changed (now lb1); read again"
            assert stale.owner is not None and stale.owner.node == "lb1"
            # Nor may a node take a VIP it believes unheld while someone holds it.
            assert not (await b.acquire("vip1", lb, None)).granted
            # With the current revision, the takeover is granted.
            fresh, _ = await b.owners()
            took = await b.acquire("vip1", lb, fresh["vip1"])
            assert took.granted and took.reason == "vip1: granted to lb2 (was lb1)"
            # lb1's release of what it no longer holds deletes nothing.
            assert not await a.release("vip1", again.owner)  # type: ignore[arg-type]
            assert (await a.owners())[0]["vip1"].node == "lb2"

    run(scenario())


def test_two_racing_nodes_never_both_granted(etcd: str) -> None:
    async def scenario() -> None:
        clients = [EtcdClient([etcd]) for _ in range(4)]
        stores = [VipStore(c, "race", f"lb{i + 1}") for i, c in enumerate(clients)]
        leases = [(await c.grant(5))[0] for c in clients]
        for round_ in range(10):
            vip = f"vip{round_}"
            grants = await asyncio.gather(
                *(s.acquire(vip, lease, None) for s, lease in zip(stores, leases, strict=True))
            )
            assert sum(g.granted for g in grants) == 1
            owners, _ = await stores[0].owners()
            winner = next(g for g in grants if g.granted)
            assert owners[vip].node == winner.owner.node  # type: ignore[union-attr]
        for c in clients:
            await c.aclose()

    run(scenario())


def test_lease_expiry_frees_the_vips(etcd: str) -> None:
    async def scenario() -> None:
        async with EtcdClient([etcd]) as cli:
            store = VipStore(cli, "expiry", "lb1")
            keeper = LeaseKeeper(cli, 2)
            lease = await keeper.grant()
            assert (await store.acquire("vip1", lease, None)).granted
            assert await keeper.renew() and keeper.valid()
            await keeper.revoke()
            assert (await store.owners())[0] == {}

    run(scenario())


def test_watch_sees_ownership_changes(etcd: str) -> None:
    async def scenario() -> None:
        async with EtcdClient([etcd]) as cli, EtcdClient([etcd]) as watcher:
            store = VipStore(cli, "watch", "lb1")
            _, rev = await store.owners()
            lease, _ = await cli.grant(5)

            async def first() -> list[str]:
                async for batch in VipStore(watcher, "watch", "lb2").changes(rev + 1):
                    return [f"{e.kind} {e.kv.key} {e.kv.value}" for e in batch]
                return []

            task = asyncio.create_task(first(), name="watch")
            await asyncio.sleep(0.2)
            assert (await store.acquire("vip3", lease, None)).granted
            async with asyncio.timeout(5):
                assert await task == ["PUT /hapair/watch/vips/vip3 lb1"]

    run(scenario())


def test_keeper_fences_itself_when_etcd_is_gone(etcd: str) -> None:
    now = [0.0]

    async def scenario() -> None:
        dead = f"http://127.0.0.1:{free_port()}"
        async with EtcdClient([etcd], timeout=0.5) as cli:
            keeper = LeaseKeeper(cli, 3, clock=lambda: now[0])
            await keeper.grant()
            assert keeper.fence_at == 2.0
            cli.endpoints = [dead]  # etcd becomes unreachable
            now[0] = 1.0
            assert not await keeper.renew()
            assert not keeper.fenced.is_set() and keeper.valid()
            now[0] = 2.0
            assert not await keeper.renew()
            assert keeper.fenced.is_set() and not keeper.valid()
            assert keeper.reason.startswith("fencing: lease ")
            assert keeper.reason.endswith("release every VIP and take none")

    run(scenario())


def test_unreachable_cluster_is_a_clear_error() -> None:
    async def scenario() -> None:
        async with EtcdClient([f"http://127.0.0.1:{free_port()}"], timeout=0.3) as cli:
            with pytest.raises(EtcdUnavailable, match=r"no etcd member answered within 0\.3 s"):
                await cli.grant(5)

    run(scenario())


def test_auth_with_a_root_password(tmp_path: Path) -> None:
    async def scenario(url: str) -> None:
        async with EtcdClient([url]) as cli:
            await cli.enable_auth("s3cret")
        async with EtcdClient([url]) as anon:
            with pytest.raises(EtcdError) as refused:
                await anon.get("/hapair/auth/vips/vip1")
            assert "user name is empty" in str(refused.value)
        async with EtcdClient([url], user="root", password="wrong") as bad:
            with pytest.raises(EtcdError, match="authentication failed"):
                await bad.get("/hapair/auth/vips/vip1")
        async with EtcdClient([url], user="root", password="s3cret") as root:
            lease, _ = await root.grant(5)
            assert (await VipStore(root, "auth", "lb1").acquire("vip1", lease, None)).granted
            assert (await root.endpoint_status(url, 1.0))["leader"]  # the dashboard's reads
            assert 0 < await root.time_to_live(lease) <= 5
            assert [m["name"] for m in await root.members()] != []

    with etcd_on_loopback(tmp_path) as url:
        run(scenario(url))


def test_members_health_leader_and_lease_ttl_as_the_dashboard_reads_them(etcd: str) -> None:
    from hapair.agent.netcdinfo import EtcdInfo
    from hapair.coord.etcd_store import Owner

    async def scenario() -> None:
        dead = f"http://127.0.0.1:{free_port()}"
        async with EtcdClient([etcd, dead], timeout=1.0) as cli:
            lease, _ = await cli.grant(30)
            owners = {"vip1": Owner("lb1", lease, 5), "vip2": Owner("lb2", 0x7777, 6)}
            info = EtcdInfo(cli, [etcd, dead], lambda: owners)
            await info.refresh()
            doc = info.document(["vip1", "vip2", "vip3"])
            up, down = doc["members"]
            assert (up["endpoint"], up["healthy"], up["leader"]) == (etcd, True, True)
            assert up["version"] and up["raft_term"] >= 1 and up["error"] is None
            assert (down["endpoint"], down["answers"], down["healthy"]) == (dead, False, False)
            assert doc["leader"] == up["name"] and doc["healthy_members"] == 1
            v1, v2, v3 = doc["leases"]
            assert v1["owner"] == "lb1" and 25 <= v1["ttl_left_s"] <= 30 and not v1["expired"]
            assert v2["expired"] and v2["ttl_left_s"] == 0.0  # a lease etcd does not know
            assert v3["owner"] is None and v3["ttl_left_s"] is None

    run(scenario())
