"""The N-node agent's side of etcd: its lease, the owners it has read, and its acquisitions.

:class:`Ownership` is the node's picture of every VIP's owner, fed by the watch, the periodic
read and the node's own grants; each key keeps the highest revision seen, so an older read can
never overwrite a newer change. :class:`EtcdLink` runs the loops (lease, watch, poll), each
bounded by the client's deadline, and carries out one acquisition at a time per VIP. It only
reports: the decisions are :mod:`hapair.agent.nnode`'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from hapair.agent.nnode import Acquire, EtcdView
from hapair.coord.etcd_client import EtcdClient, EtcdError, Event
from hapair.coord.etcd_store import Grant, LeaseKeeper, Owner, VipStore
from hapair.errors import FatalError

logger = logging.getLogger(__name__)

#: Pause after a failed etcd call before the loop tries again (seconds).
RETRY_S = 0.2


class Ownership:
    """Each VIP's owner as last learnt, with the revision that said so.

    :param me: this node's name.
    :param vips: the cluster's VIP names (other keys are ignored).
    """

    def __init__(self, me: str, vips: Iterable[str]) -> None:
        self.me = me
        self.vips = frozenset(vips)
        self.owners: dict[str, Owner] = {}
        self.known = False
        #: VIPs granted here whose key now names another node, and when that was seen (ms)
        self.lost_at: dict[str, float] = {}
        self._rev: dict[str, int] = {}

    def set(
        self, vip: str, owner: Owner | None, rev: int, now_ms: float, lease: int | None
    ) -> bool:
        """Record ``vip``'s owner as of revision ``rev``; returns whether it changed."""
        if vip not in self.vips or rev < self._rev.get(vip, 0):
            return False
        self._rev[vip] = rev
        before = self.owners.get(vip)
        if owner is None:
            self.owners.pop(vip, None)
        else:
            self.owners[vip] = owner
        if self._mine(owner, lease):
            self.lost_at.pop(vip, None)
        elif self._mine(before, lease) and vip not in self.lost_at:
            self.lost_at[vip] = now_ms
        return before != owner

    def snapshot(
        self, owners: Mapping[str, Owner], rev: int, now_ms: float, lease: int | None
    ) -> bool:
        """A full read at revision ``rev`` (absent keys: nobody); returns whether anything
        changed."""
        changed = False
        for vip in self.vips:
            o = owners.get(vip)
            changed |= self.set(vip, o, o.mod_revision if o else rev, now_ms, lease)
        self.known = True
        return changed

    def apply(self, prefix: str, batch: list[Event], now_ms: float, lease: int | None) -> bool:
        """Watch events under ``prefix``; returns whether anything changed."""
        changed = False
        for ev in batch:
            vip = ev.kv.key[len(prefix) :]
            owner = None if ev.kind == "DELETE" else Owner.from_kv(ev.kv)
            changed |= self.set(vip, owner, ev.kv.mod_revision, now_ms, lease)
        return changed

    def _mine(self, o: Owner | None, lease: int | None) -> bool:
        return o is not None and lease is not None and o.node == self.me and o.lease == lease

    def granted(self, lease: int | None) -> frozenset[str]:
        """The VIPs whose key names this node under ``lease``."""
        return frozenset(v for v, o in self.owners.items() if self._mine(o, lease))


class Keeper(LeaseKeeper):
    """The lease keeper, renewing every sixth of the TTL (not every third): the last renewal
    is then at most TTL/6 old when etcd's leader dies, which leaves the election (about a
    second in the lab) time to finish before this node would have to fence itself."""

    async def run(self) -> None:
        """Renew until fenced or cancelled (see :meth:`LeaseKeeper.run`)."""
        while not self.fenced.is_set():
            ok = await self.renew()
            if self.fenced.is_set():
                return
            pause = self.ttl_s / 6 if ok else 0.1
            await asyncio.sleep(max(0.0, min(pause, self.fence_at - self.clock())))
            if not ok and self.clock() >= self.fence_at:
                self._fence(f"lease {self.lease or 0:x} not renewed before its TTL")


class EtcdLink:
    """This node's lease, watch, periodic read and acquisitions.

    :param on_change: called (in the loop) when something a decision reads changed.
    :param event: logs a sentence (and keeps it for ``/status``).
    """

    def __init__(
        self,
        *,
        endpoints: list[str],
        user: str,
        password_file: str,
        timeout_s: float,
        ttl_s: int,
        poll_s: float,
        cluster: str,
        me: str,
        vips: Iterable[str],
        now_ms: Callable[[], float],
        on_change: Callable[[], None],
        event: Callable[[str, int], None],
    ) -> None:
        try:
            password = Path(password_file).read_text().strip()
        except OSError as exc:
            raise FatalError(
                f"{password_file}: cannot read the etcd password ({exc.strerror}); "
                "check etcd_password_file in agent.toml"
            ) from exc
        self.endpoints = endpoints
        self.client = EtcdClient(endpoints, user=user, password=password, timeout=timeout_s)
        self.store = VipStore(self.client, cluster, me)
        self.keeper = Keeper(self.client, ttl_s)
        self.ownership = Ownership(me, vips)
        self.poll_s = poll_s
        self.available = False
        self.last_error = ""
        self.pending: set[str] = set()
        self._now_ms = now_ms
        self._on_change = on_change
        self._event = event

    # ------------------------------------------------------------------ the view
    def view(self) -> EtcdView:
        """The snapshot :func:`hapair.agent.nnode.decide` reads."""
        k = self.keeper
        return EtcdView(
            known=self.ownership.known,
            available=self.available,
            lease=k.lease,
            valid=k.valid(),
            fenced=k.reason if k.fenced.is_set() else "",
            owners=dict(self.ownership.owners),
        )

    def usable(self) -> bool:
        """A lease that cannot have expired: the node may take VIPs (its heartbeat says so)."""
        return self.keeper.valid()

    def _ok(self) -> None:
        if not self.available:
            self.available = True
            if self.last_error:
                self._event("etcd answers again", logging.INFO)
            self._on_change()

    def _failed(self, exc: Exception) -> None:
        self.last_error = str(exc)
        if self.available:
            self.available = False
            self._event(f"etcd unavailable: {exc}", logging.WARNING)
            self._on_change()

    # ------------------------------------------------------------------ loops
    async def start(self, within_s: float) -> None:
        """Grant a lease and read the owners once, giving up after ``within_s`` (the loops
        keep trying): a node that heartbeats before it can take VIPs looks ineligible."""
        try:
            async with asyncio.timeout(within_s):
                while self.keeper.lease is None or not self.ownership.known:
                    try:
                        if self.keeper.lease is None:
                            await self.keeper.grant()
                        await self.read()
                    except EtcdError as exc:
                        self._failed(exc)
                        await asyncio.sleep(RETRY_S)
        except TimeoutError:
            self._event(f"etcd not ready after {within_s:.0f} s: starting anyway", logging.WARNING)

    async def lease_loop(self) -> None:
        """Keep the lease; after a fence, report it and grant a new one."""
        while True:
            if self.keeper.lease is None or self.keeper.fenced.is_set():
                try:
                    lease = await self.keeper.grant()
                except EtcdError as exc:
                    self._failed(exc)
                    await asyncio.sleep(RETRY_S)
                    continue
                self._ok()
                self._event(
                    f"etcd lease {lease:x} granted (ttl {self.keeper.ttl_s} s)", logging.INFO
                )
                self._on_change()
            await self.keeper.run()
            if self.keeper.fenced.is_set():
                self._event(self.keeper.reason, logging.WARNING)
                self._on_change()

    async def read(self) -> None:
        """Read every owner once."""
        owners, rev = await self.store.owners()
        self._ok()
        if self.ownership.snapshot(owners, rev, self._now_ms(), self.keeper.lease):
            self._on_change()

    async def poll_loop(self) -> None:
        """Read the owners every ``poll_s`` (the watch may break without a word)."""
        while True:
            try:
                await self.read()
            except EtcdError as exc:
                self._failed(exc)
            await asyncio.sleep(self.poll_s)

    async def watch_loop(self) -> None:
        """Follow every change of the owners; start again from a fresh read when it breaks."""
        while True:
            try:
                owners, rev = await self.store.owners()
                self._ok()
                self.ownership.snapshot(owners, rev, self._now_ms(), self.keeper.lease)
                self._on_change()
                async for batch in self.store.changes(rev + 1):
                    lease = self.keeper.lease
                    if self.ownership.apply(self.store.prefix, batch, self._now_ms(), lease):
                        self._on_change()
            except EtcdError as exc:
                logger.debug("etcd watch ended: %s", exc)
            await asyncio.sleep(RETRY_S)

    # ------------------------------------------------------------------ acquisitions
    async def acquire(self, a: Acquire) -> Grant | None:
        """Ask etcd for ``a.vip`` under this node's lease; None when etcd did not answer or
        there is no valid lease. The owners are updated from the answer either way."""
        lease = self.keeper.lease
        self.pending.add(a.vip)
        failed: EtcdError | None = None
        grant = None
        try:
            if lease is None or not self.keeper.valid():
                return None
            grant = await self.store.acquire(a.vip, lease, a.expected)
            rev = grant.owner.mod_revision if grant.owner else 0
            self.ownership.set(a.vip, grant.owner, rev, self._now_ms(), self.keeper.lease)
        except EtcdError as exc:
            failed = exc
        finally:
            self.pending.discard(a.vip)
        if failed is not None:
            self._failed(failed)
            return None
        self._ok()
        return grant

    async def close(self, revoke: bool) -> None:
        """A clean stop: revoke the lease (every key under it goes) if ``revoke``, then close."""
        if revoke:
            try:
                await self.keeper.revoke()
            except EtcdError as exc:
                logger.warning("etcd lease not revoked (%s): it expires with its TTL", exc)
        await self.client.aclose()
