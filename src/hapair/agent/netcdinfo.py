"""What an N-node agent knows of the etcd cluster itself, for ``/status`` and the dashboard:
each member's health and the leader, and how long each VIP owner's lease has left.

:func:`members_view` and :func:`lease_rows` are pure (the answers in, JSON-ready rows out).
:class:`EtcdInfo` asks etcd: every :data:`EVERY_S` on its own, and at most once per
:data:`ASKED_EVERY_S` while someone reads the status or the dashboard (so an open page is
fresh and an unwatched agent costs etcd a few calls every few seconds). Nothing here takes
part in a decision: :mod:`hapair.agent.nnode` never reads it.

A member is *healthy* when it answered its own status within the deadline, reported no
errors and follows a leader (etcd without a quorum has none after its election timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from hapair.coord.etcd_client import EtcdClient, EtcdError
from hapair.coord.etcd_store import Owner

logger = logging.getLogger(__name__)

EVERY_S: Final = 5.0
"""The members and leases are read this often with nobody looking."""
ASKED_EVERY_S: Final = 1.0
"""... and at most this often while the status or the dashboard is read."""
STATUS_TIMEOUT_S: Final = 0.5
"""One member's status must answer within this long."""


def _int(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def members_view(
    members: Sequence[Mapping[str, Any]],
    statuses: Mapping[str, Mapping[str, Any] | str],
    endpoints: Sequence[str],
) -> list[dict[str, Any]]:
    """One row per etcd member, in name order (pure).

    :param members: ``/v3/cluster/member/list``'s ``members`` (empty: the list could not be
        read; then one row per endpoint, named by it).
    :param statuses: endpoint -> its ``/v3/maintenance/status`` answer, or why it had none.
    :param endpoints: the endpoints this agent uses, in order.
    """
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    listed = sorted(
        (str(m.get("name") or m.get("ID", "?")), _int(m.get("ID")), list(m.get("clientURLs", [])))
        for m in members
    )
    if not listed:
        listed = [(e, 0, [e]) for e in endpoints]
    for name, member_id, urls in listed:
        endpoint = next((u for u in urls if u in statuses), urls[0] if urls else "")
        seen.add(endpoint)
        rows.append(_row(name, member_id, endpoint, statuses.get(endpoint, "not asked")))
    for endpoint in endpoints:  # an endpoint that no member lists (a stale agent.toml)
        if endpoint not in seen:
            rows.append(_row(endpoint, 0, endpoint, statuses.get(endpoint, "not asked")))
    return rows


def _row(name: str, member_id: int, endpoint: str, st: Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(st, str):
        return {
            "name": name,
            "id": f"{member_id:x}",
            "endpoint": endpoint,
            "answers": False,
            "healthy": False,
            "leader": False,
            "follows": None,
            "version": None,
            "raft_term": None,
            "db_size": None,
            "error": st,
        }
    own = _int(st.get("header", {}).get("member_id")) or member_id
    leader = _int(st.get("leader"))
    errors = [str(e) for e in st.get("errors", [])]
    problem = "; ".join(errors) or ("" if leader else "no leader (quorum lost?)")
    return {
        "name": name,
        "id": f"{own:x}",
        "endpoint": endpoint,
        "answers": True,
        "healthy": not problem,
        "leader": bool(leader) and leader == own,
        "follows": f"{leader:x}" if leader else None,
        "version": st.get("version"),
        "raft_term": _int(st.get("raftTerm")),
        "db_size": _int(st.get("dbSize")),
        "error": problem or None,
    }


def leader_of(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """The leader's name, when a member that answered says it is the leader."""
    return next((str(r["name"]) for r in rows if r["leader"]), None)


def lease_rows(
    vips: Sequence[str],
    owners: Mapping[str, Owner],
    ttl_s: Mapping[int, int],
    read_at: float | None,
    now: float,
) -> list[dict[str, Any]]:
    """Each VIP's owner and what its lease has left (pure).

    :param ttl_s: lease id -> seconds left as etcd said at ``read_at`` (time.monotonic()).
    :returns: rows with ``ttl_left_s``: etcd's figure (whole seconds, -1: expired) minus the
        time since it was read, never below 0; None when it was not read.
    """
    age = None if read_at is None else max(0.0, now - read_at)
    out = []
    for vip in vips:
        o = owners.get(vip)
        left = None if o is None or age is None else ttl_s.get(o.lease)
        out.append(
            {
                "vip": vip,
                "owner": o.node if o else None,
                "lease": f"{o.lease:x}" if o else None,
                "mod_revision": o.mod_revision if o else None,
                "ttl_left_s": None if left is None else max(0.0, round(left - (age or 0.0), 1)),
                "expired": left is not None and left < 0,
            }
        )
    return out


class EtcdInfo:
    """Reads the members' status and the owners' leases (see the module docstring).

    :param owners: the owners as the agent knows them now.
    """

    def __init__(
        self,
        client: EtcdClient,
        endpoints: Sequence[str],
        owners: Callable[[], Mapping[str, Owner]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.endpoints = list(endpoints)
        self.owners = owners
        self.clock = clock
        self.members: list[dict[str, Any]] = []
        self.ttl_s: dict[int, int] = {}
        self.read_at: float | None = None
        self._asked = -1e9
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Read the member list, each member's status and each owner's lease once."""
        try:
            listed = await self.client.members()
        except EtcdError as exc:
            logger.debug("etcd member list: %s", exc)
            listed = []
        endpoints = list(self.endpoints)
        for m in listed:
            endpoints += [u for u in m.get("clientURLs", []) if u not in endpoints]
        answers = await asyncio.gather(*(self._status(e) for e in endpoints))
        self.members = members_view(listed, dict(zip(endpoints, answers, strict=True)), endpoints)
        ttl: dict[int, int] = {}
        for lease in sorted({o.lease for o in self.owners().values()}):
            try:
                ttl[lease] = await self.client.time_to_live(lease)
            except EtcdError as exc:
                logger.debug("etcd lease %x: %s", lease, exc)
        self.ttl_s, self.read_at = ttl, self.clock()

    async def _status(self, endpoint: str) -> dict[str, Any] | str:
        try:
            return await self.client.endpoint_status(endpoint, STATUS_TIMEOUT_S)
        except EtcdError as exc:
            return str(exc)

    async def loop(self) -> None:
        """Refresh every :data:`EVERY_S` (the agent owns and cancels this task)."""
        while True:
            await self._guarded()
            await asyncio.sleep(EVERY_S)

    async def _guarded(self) -> None:
        try:
            await self.refresh()
        except asyncio.CancelledError:
            raise
        except Exception:  # a view for operators must never take the agent down
            logger.exception("reading etcd's members failed, please report")

    def ask(self) -> None:
        """Someone reads the status: refresh in the background if the last is old."""
        now = self.clock()
        if (self._task is not None and not self._task.done()) or now - self._asked < ASKED_EVERY_S:
            return
        self._asked = now
        with contextlib.suppress(RuntimeError):  # no running loop: a synchronous caller
            self._task = asyncio.get_running_loop().create_task(self._guarded(), name="etcd-info")

    def close(self) -> None:
        """Cancel a refresh under way."""
        if self._task is not None:
            self._task.cancel()

    def document(self, vips: Sequence[str]) -> dict[str, Any]:
        """``members``, ``leader``, ``healthy_members``, ``leases`` (one row per VIP) and
        ``read_ms_ago`` (None: never read yet)."""
        now = self.clock()
        return {
            "members": self.members,
            "leader": leader_of(self.members),
            "healthy_members": sum(1 for m in self.members if m["healthy"]),
            "leases": lease_rows(vips, self.owners(), self.ttl_s, self.read_at, now),
            "read_ms_ago": None if self.read_at is None else int((now - self.read_at) * 1000),
        }
