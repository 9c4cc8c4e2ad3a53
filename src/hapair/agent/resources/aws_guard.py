"""The pure rules of the ``aws_eip`` agent (:mod:`~.aws_eip`): when ``start`` may take an EIP
that sits on another ENI, what the holder's "released" mark is, and how a record reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: How old an answer ``start`` may act on before it writes, seconds.
FRESH_S = 1.0
#: A ``start`` that comes this long after the last one is a new wish of the daemon's, not a
#: repeat of the same one: longer than the actor's longest retry delay (2 s, actor.py) and
#: than a reconcile round, shorter than a deadtime on AWS (5 s).
QUIET_S = 3.0
#: Longest time ``start`` yields an EIP the peer took while the daemon's wish stays the same
#: (a split brain remaps at most once per VIP per this many seconds).
YIELD_S = 30.0
#: Set on an EIP by the node that holds it and was told to let it go: the association id.
TAG_RELEASED = "hapair:released"


@dataclass
class TakeGuard:
    """Whether ``start`` may take the EIP from another ENI now. Pure; monotonic seconds.

    Once this node has held the EIP (seen it on its own ENI, or associated it) and then sees
    it on another ENI, the peer took it by a decision of its own. The daemon's reconcile loop
    will then call ``start`` again and again under the same wish; taking it back each time is
    the fight this guard prevents. The resource agent is not told whether a ``start`` is a new
    decision or a repeat, so it tells them apart by time: repeats of one wish come at most
    ``quiet_s`` apart (the actor's retry delay, the reconcile interval); a ``start`` after a
    quiet gap means the wish went away and came back (the daemon decided again: failover,
    failback). A wish that never changes is yielded to for ``yield_s`` at most, which bounds
    a split brain to one remap per VIP per ``yield_s``. A ``stop`` (the daemon let it go) and
    an unassociated EIP (nobody serves it) end the yielding at once.
    """

    quiet_s: float = QUIET_S
    yield_s: float = YIELD_S
    held: bool = False
    lost_at: float | None = None
    last_refused: float | None = None
    unassociated_since: float | None = None

    def seen(self, here: bool, elsewhere: bool, now: float) -> None:
        """Record a reading: the EIP is ``here``, on another ENI (``elsewhere``) or on none.
        On none, it may be the middle of the peer's compare-and-swap (:mod:`~.aws_cas`): a
        node that held it counts it as taken; the yielding ends once it has stayed on nobody
        for ``quiet_s`` (nobody serves it: taking it is right, whoever held it before)."""
        if here:
            self.held, self.lost_at, self.last_refused = True, None, None
            self.unassociated_since = None
            return
        if elsewhere:
            self.unassociated_since = None
        elif self.unassociated_since is None:
            self.unassociated_since = now
        if self.held:
            self.held, self.lost_at = False, now
        elif not elsewhere and now - (self.unassociated_since or now) >= self.quiet_s:
            self.lost_at = self.last_refused = None

    def took(self) -> None:
        """This node just associated the EIP."""
        self.held, self.lost_at, self.last_refused = True, None, None

    def released(self) -> None:
        """The daemon let the EIP go: whoever takes it next does so by decision."""
        self.held, self.lost_at, self.last_refused = False, None, None

    def refusal(self, now: float) -> str | None:
        """``None`` when a take is allowed now, else why this ``start`` yields."""
        if self.lost_at is None:
            return None
        since = now - max(self.lost_at, self.last_refused or self.lost_at)
        if since >= self.quiet_s or now - self.lost_at >= self.yield_s:
            self.lost_at = self.last_refused = None
            return None
        self.last_refused = now
        return (
            f"the peer took it {now - self.lost_at:.1f} s ago; not taking it back without a "
            f"new decision (at most {self.yield_s:.0f} s)"
        )


def released(record: dict[str, Any] | None) -> bool:
    """Whether the node that holds the EIP marked its current association released."""
    if record is None or not record.get("AssociationId"):
        return False
    tags = {t["Key"]: t["Value"] for t in record.get("Tags", [])}
    return bool(tags.get(TAG_RELEASED) == record["AssociationId"])


def where(record: dict[str, Any] | None) -> str:
    """Where an address record says the EIP is, as words."""
    if record is None:
        return "not found"
    if not record.get("NetworkInterfaceId"):
        return "not associated"
    return f"on {record['NetworkInterfaceId']} {record.get('PrivateIpAddress', '?')}"
