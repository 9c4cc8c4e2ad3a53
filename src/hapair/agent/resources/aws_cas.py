"""The split-brain arbiter of the ``aws_eip`` agent: the EIP's association as compare-and-swap.

EC2 keeps exactly one association per EIP and gives each a new id. A take without the
holder's consent (a failover from a silent peer: the peer's home EIP, not marked released)
is made conditional on the association the taker saw:

1. ``DisassociateAddress(AssociationId=<the id it saw>)``: removes that association only. If
   it is gone already, another taker moved first: EC2 ignores a stale id (the call is
   idempotent) or answers ``InvalidAssociationID.NotFound`` (moto); either way nothing moves.
2. ``AssociateAddress(AllowReassociation=False)``: succeeds only while the EIP has no
   association. Whoever associates first wins; every other taker gets
   ``Resource.AlreadyAssociated`` and loses, with nothing changed.

So of two takers that saw the same association, exactly one wins, and a taker acting on a
stale reading (the holder or the other taker moved since) loses without a remap. A winner
whose associate fails for a transient reason retries it (still conditional) within its
deadline, so it does not leave the EIP unassociated; an EIP found unassociated is taken by
the same conditional associate (one call).

A handover the holder consented to (it marked the association released) and the home node's
failback (it takes its own EIP back; the peer keeps it until then: make-before-break) stay
one atomic ``AssociateAddress(AllowReassociation=True)``: no moment without an association.

:func:`take_kind` is pure; :func:`take` makes the calls.
"""

from __future__ import annotations

import asyncio
import time
from enum import Enum
from typing import Any

from hapair.agent.resources.aws_api import RETRYABLE, Ec2Calls
from hapair.errors import ResourceError

#: The codes that say "another taker moved first".
LOST = frozenset({"Resource.AlreadyAssociated", "InvalidAssociationID.NotFound"})


class TakeKind(Enum):
    """How a take is made."""

    #: One ``AssociateAddress(AllowReassociation=True)``: consented, or this node's home EIP.
    REMAP = "remap"
    #: ``DisassociateAddress`` of the association seen, then a conditional associate.
    SWAP = "compare-and-swap"
    #: The EIP is on nobody: one conditional associate.
    CLAIM = "claim"


def take_kind(record: dict[str, Any], home: bool, released: bool) -> TakeKind:
    """How to take the EIP ``record`` describes. Pure.

    :param home: this node is the EIP's home node (a failback, or its own EIP on its return).
    :param released: the holder marked its current association released (a handover).
    """
    if not record.get("AssociationId"):
        return TakeKind.CLAIM
    if home or released:
        return TakeKind.REMAP
    return TakeKind.SWAP


async def take(
    calls: Ec2Calls,
    what: str,
    record: dict[str, Any],
    kind: TakeKind,
    target: dict[str, str],
    end: float,
    *,
    retry_pause: float = 0.1,
) -> dict[str, Any]:
    """Associate the EIP with ``target`` (``AllocationId``, ``NetworkInterfaceId``,
    ``PrivateIpAddress``) the way ``kind`` says; returns AssociateAddress's answer.

    :raises ResourceError: code ``LostRace`` when another taker moved first (nothing changed
        by this node but, for a swap, the association it saw, already replaced), else the
        AWS error of the failed call.
    """

    def left() -> float:
        return min(calls.call_timeout, max(0.05, end - time.monotonic()))

    if kind is TakeKind.REMAP:
        return await calls.once(
            what, "associate_address", left(), **target, AllowReassociation=True
        )
    seen = record.get("AssociationId", "")
    if kind is TakeKind.SWAP:
        try:
            await calls.once(what, "disassociate_address", left(), AssociationId=seen)
        except ResourceError as exc:
            if exc.code not in LOST:
                raise
            # Gone already: someone moved first. The conditional associate below settles it
            # (it also takes the EIP should that someone have left it on nobody).
    while True:
        try:
            return await calls.once(
                what, "associate_address", left(), **target, AllowReassociation=False
            )
        except ResourceError as exc:
            if exc.code in LOST:
                raise ResourceError(
                    f"{what}: lost the race: the association it saw ({seen or 'none'}) was "
                    "replaced by another taker's first; nothing moved",
                    "LostRace",
                ) from exc
            if exc.code not in RETRYABLE or time.monotonic() + retry_pause >= end:
                raise
        await asyncio.sleep(retry_pause)
