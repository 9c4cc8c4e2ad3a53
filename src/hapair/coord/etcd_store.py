"""VIP ownership agreed through etcd: leases, takeover transactions and self-fencing.

Each VIP's owner is the key ``/hapair/<cluster>/vips/<vip>``, whose value is the owner's node
name, written under the owner's lease. So:

- a node that dies, or is cut off from etcd, loses its keys when its lease expires, and no
  sooner: nobody else is granted its VIPs before then;
- a takeover is **one** transaction conditioned on the key's ``mod_revision`` as the taker
  last read it (or on its absence): of two nodes racing for a VIP, at most one is granted it,
  and a node that read a stale owner is refused;
- a node whose lease cannot be renewed fences itself: :class:`LeaseKeeper` sets ``fenced``
  before the lease can have expired on the etcd side, and the node must then release every
  VIP it holds (the agent's job) and say so.

Heartbeats remain the fast detector; etcd is the safety net and the fence. How the agent uses
this module is in docs/scale.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from hapair.coord.etcd_client import EtcdClient, EtcdError, Event, KeyValue, b64

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Owner:
    """Who holds a VIP according to etcd, and the revision that said so."""

    node: str
    lease: int
    mod_revision: int

    @classmethod
    def from_kv(cls, kv: KeyValue) -> Owner:
        """From the VIP's key."""
        return cls(kv.value, kv.lease, kv.mod_revision)


@dataclass(frozen=True)
class Grant:
    """The outcome of :meth:`VipStore.acquire`: ``owner`` is who holds the VIP now."""

    vip: str
    granted: bool
    owner: Owner | None
    reason: str


class VipStore:
    """The ownership keys of one cluster, seen by ``node``."""

    def __init__(self, client: EtcdClient, cluster: str, node: str) -> None:
        self.client = client
        self.cluster = cluster
        self.node = node

    @property
    def prefix(self) -> str:
        """Where the cluster's VIP keys live."""
        return f"/hapair/{self.cluster}/vips/"

    def key(self, vip: str) -> str:
        """The ownership key of ``vip``."""
        return f"{self.prefix}{vip}"

    async def owners(self) -> tuple[dict[str, Owner], int]:
        """Every VIP's owner (VIPs nobody holds are absent) and the revision read at."""
        kvs, revision = await self.client.get(self.prefix, prefix=True)
        return {kv.key[len(self.prefix) :]: Owner.from_kv(kv) for kv in kvs}, revision

    async def acquire(self, vip: str, lease: int, expected: Owner | None) -> Grant:
        """Take ``vip`` under ``lease`` if its owner is still ``expected`` (None: nobody).

        One transaction: compare the key's ``mod_revision`` with the expected owner's (or its
        ``create_revision`` with 0, i.e. absence), then put this node's name under ``lease``;
        otherwise read the key, to say who holds it instead.

        :raises EtcdUnavailable: no answer in time (quorum lost): nothing was granted that
            this node knows of; read :meth:`owners` again before trying anew.
        """
        key = b64(self.key(vip))
        if expected is None:
            compare = {"key": key, "target": "CREATE", "create_revision": "0"}
        else:
            compare = {"key": key, "target": "MOD", "mod_revision": str(expected.mod_revision)}
        put = {"request_put": {"key": key, "value": b64(self.node), "lease": str(lease)}}
        ok, responses, revision = await self.client.txn(
            [compare], [put], [{"request_range": {"key": key}}]
        )
        if ok:
            owner = Owner(self.node, lease, revision)
            was = expected.node if expected else "nobody"
            return Grant(vip, True, owner, f"{vip}: granted to {self.node} (was {was})")
        now = _owner_in(responses)
        if now is not None and now.node == self.node and now.lease == lease:
            # A retried call whose first attempt had been applied: it is ours.
            return Grant(vip, True, now, f"{vip}: already held by {self.node}")
        holder = now.node if now else "nobody"
        return Grant(
            vip, False, now, f"{vip}: refused, the owner changed (now {holder}); read again"
        )

    async def release(self, vip: str, mine: Owner) -> bool:
        """Delete ``vip``'s key if it still is ``mine`` (same revision); True if deleted."""
        key = b64(self.key(vip))
        ok, _, _ = await self.client.txn(
            [{"key": key, "target": "MOD", "mod_revision": str(mine.mod_revision)}],
            [{"request_delete_range": {"key": key}}],
        )
        return ok

    async def changes(self, start_revision: int) -> AsyncIterator[list[Event]]:
        """Watch the cluster's VIP keys from ``start_revision`` on (see
        :meth:`EtcdClient.watch`); poll :meth:`owners` instead when a watch cannot be kept."""
        async for batch in self.client.watch(self.prefix, start_revision):
            yield batch


def _owner_in(responses: list[dict[str, Any]]) -> Owner | None:
    for r in responses:
        kvs = r.get("response_range", {}).get("kvs", [])
        if kvs:
            return Owner.from_kv(KeyValue.from_json(kvs[0]))
    return None


class LeaseKeeper:
    """Grants this node's lease and keeps it alive; sets :attr:`fenced` when it cannot.

    The lease's expiry is counted from the moment a keepalive was *sent* (etcd counts from
    when it received it, later), so this node always believes its lease ends before etcd does.
    When no renewal has succeeded by ``expiry - margin_s``, :attr:`fenced` is set and
    :attr:`reason` says why: the node must stop taking VIPs and release those it holds.

    :param ttl_s: the lease's TTL (``ha.etcd_lease_ttl_ms``, rounded up to seconds).
    :param margin_s: how long before the expiry to fence (time to remove addresses);
        default a third of the TTL.
    :param clock: monotonic seconds (injected by tests).
    """

    def __init__(
        self,
        client: EtcdClient,
        ttl_s: int,
        *,
        margin_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.margin_s = ttl_s / 3 if margin_s is None else margin_s
        self.clock = clock
        self.lease: int | None = None
        self.expires = 0.0
        self.fenced = asyncio.Event()
        self.reason = ""

    async def grant(self) -> int:
        """Grant a new lease (after a fence, a node starts over with a new one)."""
        sent = self.clock()
        lease, ttl = await self.client.grant(self.ttl_s)
        self.lease, self.expires = lease, sent + ttl
        self.fenced.clear()
        self.reason = ""
        logger.info("etcd lease %x granted, ttl %d s", lease, ttl)
        return lease

    def valid(self) -> bool:
        """Whether this node may still act on its grants (its lease cannot have expired)."""
        return self.lease is not None and not self.fenced.is_set() and self.clock() < self.fence_at

    @property
    def fence_at(self) -> float:
        """When this node fences itself unless a renewal succeeds first."""
        return self.expires - self.margin_s

    async def renew(self) -> bool:
        """One keepalive; True on success. Sets :attr:`fenced` when the lease is gone or its
        fence time has passed."""
        if self.lease is None:
            raise EtcdError("no lease to renew: grant one first")
        sent = self.clock()
        try:
            # Never wait past the fence time: a renewal that answers later is no use.
            async with asyncio.timeout(max(0.01, self.fence_at - sent)):
                ttl = await self.client.keepalive(self.lease)
        except (EtcdError, TimeoutError) as exc:
            if self.clock() >= self.fence_at:
                self._fence(f"lease {self.lease:x} not renewed before its TTL ({exc})")
            else:
                logger.warning("etcd lease %x: renewal failed (%s)", self.lease, exc)
            return False
        if ttl <= 0:
            self._fence(f"lease {self.lease:x} expired on etcd")
            return False
        self.expires = sent + ttl
        return True

    def _fence(self, why: str) -> None:
        if not self.fenced.is_set():
            self.reason = f"fencing: {why}; release every VIP and take none"
            logger.warning("%s", self.reason)
            self.fenced.set()

    async def run(self) -> None:
        """Renew every third of the TTL (more often after a failure) until fenced or
        cancelled; the fence time is also checked between renewals."""
        while not self.fenced.is_set():
            ok = await self.renew()
            if self.fenced.is_set():
                return
            pause = self.ttl_s / 3 if ok else min(0.2, self.ttl_s / 10)
            pause = max(0.0, min(pause, self.fence_at - self.clock()))
            await asyncio.sleep(pause)
            if self.clock() >= self.fence_at and not ok:
                self._fence(f"lease {self.lease:x} not renewed before its TTL")

    async def revoke(self) -> None:
        """Give the lease up (a clean stop): every VIP key under it goes at once."""
        if self.lease is not None:
            await self.client.revoke(self.lease)
            logger.info("etcd lease %x revoked", self.lease)
            self.lease = None
