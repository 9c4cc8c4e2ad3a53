"""The ``aws_eip`` floating-IP agent: an Elastic IP associated with this LB's ENI.

An EIP has exactly one association, so the lab's make-before-break (both nodes hold the
address for a moment) does not exist here. What replaces it is an **atomic remap**: one
``AssociateAddress(AllowReassociation=True)`` moves the EIP from wherever it is to this ENI in
a single step; there is never a moment with no association. Around that one call:

- **Read before write.** ``start`` reads first (an answer at most :data:`FRESH_S` old) and
  makes no mutating call when the EIP is already on this ENI and private address.
- **Never a disassociation.** ``stop`` never removes the association: the peer's remap takes
  the EIP atomically; disassociating would leave it on nobody in between. Instead, a node told
  to let go of an EIP it still holds marks it released (the tag :data:`TAG_RELEASED` = the
  current association id, one ``CreateTags``): the handover signal make-before-break needs,
  kept by AWS itself.
- **No fight.** "Associated with another ENI" is "not held here", never drift to repair: once
  this node has held the EIP and sees it elsewhere, the peer took it on its own decision, and
  ``start`` yields (:class:`TakeGuard`, code ``HeldByPeer``, no call) until the holder marks it
  released, a new wish of the daemon's comes (see :class:`TakeGuard` for how that is told
  apart from the reconcile loop's repeats), or :data:`YIELD_S` has passed.
- **An arbiter for split brain.** A take from a peer that did not consent (a failover) is a
  compare-and-swap on the association the taker saw (:mod:`~.aws_cas`): of two takers, or a
  taker with a stale reading, exactly one wins; the loser records why (:attr:`AwsEip.lost`).
- **Back off per VIP.** A failed move makes the next ``start`` of that VIP wait an exponential,
  capped, jittered delay (:class:`Backoff`, code ``BackingOff``, no call).
- **Only onto an LB ENI.** Before its first move the agent checks once that its ENI carries
  ``hapair:role=lb`` and its cluster's tag (the IAM policy's conditions enforce the same).
- **Reads at a rate many clusters can afford.** Both VIPs of a node share one
  ``DescribeAddresses``, cached :data:`READ_TTL` seconds for ``monitor``: the reconcile loop
  costs at most one call per node per :data:`READ_TTL` (docs/aws.md has the arithmetic).

boto3 runs in a thread (``asyncio.to_thread``) and every call has a time limit. A read that
fails raises :class:`ReadFailed`, which is also an ``OSError``: the daemon's reconcile loop
skips that round, as for any I/O failure of ``monitor``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from hapair.agent.resources.aws_api import (
    READ_TTL,
    RETRYABLE,
    TAG_CLUSTER,
    TAG_ROLE,
    AddressReader,
    Backoff,
    ClientFactory,
    Ec2Calls,
    ReadFailed,
    ec2_client_factory,
)
from hapair.agent.resources.aws_cas import take, take_kind
from hapair.agent.resources.aws_guard import (
    FRESH_S,
    QUIET_S,
    TAG_RELEASED,
    YIELD_S,
    TakeGuard,
    released,
    where,
)
from hapair.agent.resources.base import FloatingIP, MonitorResult
from hapair.errors import ResourceError

if TYPE_CHECKING:
    from hapair.agent.config import AgentConfig, VipConfig

__all__ = [
    "FRESH_S",
    "QUIET_S",
    "READ_TTL",
    "TAG_CLUSTER",
    "TAG_RELEASED",
    "TAG_ROLE",
    "YIELD_S",
    "AddressReader",
    "AwsEip",
    "Backoff",
    "Ec2Calls",
    "ReadFailed",
    "TakeGuard",
    "make_aws_eip",
    "released",
    "where",
]

logger = logging.getLogger(__name__)


class AwsEip(FloatingIP):
    """One EIP, held by this node when associated with ``eni_id`` at ``private_ip``.

    :param private_ip: which of this node's ENI addresses: the primary for its home VIP, the
        secondary for the peer's VIP (as the seed).
    :param cluster: the ENI must carry this ``hapair:cluster`` tag (and ``hapair:role=lb``);
        empty: not checked (tests of the resource agent alone).
    :param client_factory: makes the boto3 EC2 client (ignored when ``reader`` is given).
    :param reader: a reader shared with the node's other VIP (default: a private one).
    :param deadline: bound on a whole ``start`` (the call, its retries and the check).
    :param poll_interval: time between two reads while checking a move.
    :param guard: when ``start`` yields to the peer (default: :data:`QUIET_S`, :data:`YIELD_S`).
    :param backoff: the per-VIP backoff after a failed move (default: 1 s doubling to 30 s).
    :param home: this node is the EIP's home (its takes are failbacks: one atomic remap);
        else a take the holder did not consent to is a compare-and-swap (:mod:`~.aws_cas`).
    """

    def __init__(
        self,
        name: str,
        address: str,
        allocation_id: str,
        eni_id: str,
        private_ip: str,
        client_factory: ClientFactory | None = None,
        *,
        cluster: str = "",
        reader: AddressReader | None = None,
        deadline: float = 4.5,
        poll_interval: float = 0.25,
        guard: TakeGuard | None = None,
        backoff: Backoff | None = None,
        home: bool = True,
    ) -> None:
        self.name = name
        self.home = home
        #: Why the last take lost a race (``None``: none lost yet).
        self.lost: str | None = None
        self.address = address
        self.allocation_id = allocation_id
        self.eni_id = eni_id
        self.private_ip = private_ip
        self.cluster = cluster
        if reader is None:
            if client_factory is None:
                raise ValueError("AwsEip needs a client_factory or a reader")
            reader = AddressReader(Ec2Calls(client_factory))
        self.reader = reader
        self.calls = reader.calls
        self.deadline = deadline
        self.poll_interval = poll_interval
        self.guard = guard or TakeGuard()
        self.backoff = backoff or Backoff()
        reader.register(allocation_id)

    def _what(self) -> str:
        return f"{self.name} ({self.address}, {self.allocation_id})"

    def is_mine(self, record: dict[str, Any] | None) -> bool:
        """Allocation, ENI and private address all equal to this node's, exactly."""
        return (
            record is not None
            and record.get("AllocationId") == self.allocation_id
            and record.get("NetworkInterfaceId") == self.eni_id
            and record.get("PrivateIpAddress") == self.private_ip
        )

    def _note(self, record: dict[str, Any] | None) -> bool:
        """Tell the guard what a reading says; returns whether the EIP is here."""
        here = self.is_mine(record)
        elsewhere = bool(record and record.get("NetworkInterfaceId")) and not here
        self.guard.seen(here, elsewhere, time.monotonic())
        return here

    async def start(self) -> None:
        """Make this node hold the EIP with one atomic remap, unless it is here already
        (no call), the peer took it and the daemon has not decided again (``HeldByPeer``, no
        call), or a recent failure asks to wait (``BackingOff``, no call).

        :raises ResourceError: the move is refused, failed, or not visible within the deadline.
        """
        end = time.monotonic() + self.deadline
        wait = self.backoff.wait(time.monotonic())
        if wait > 0:
            raise ResourceError(
                f"{self._what()}: backing off after {self.backoff.failures} failed move(s); "
                f"next try in {wait:.1f} s",
                "BackingOff",
            )
        record = await self.reader.read(self.allocation_id, max_age=FRESH_S)
        if self._note(record):
            logger.debug("%s: already here, %s: no call", self._what(), where(record))
            return
        if record is None:
            raise ResourceError(f"{self._what()}: no such elastic ip", "NotFound")
        consented = released(record)
        if consented:
            self.guard.released()  # the holder let it go: taking it is the handover
        refusal = self.guard.refusal(time.monotonic())
        if refusal is not None:
            raise ResourceError(f"{self._what()}: {where(record)}: {refusal}", "HeldByPeer")
        if self.cluster:
            problem = await self.reader.eni_problem(self.eni_id, self.cluster)
            if problem is not None:
                raise ResourceError(f"{self._what()}: refusing to move it: {problem}", "NotAnLbEni")
        try:
            await self._move(record, end, consented)
        except ResourceError as exc:
            if exc.code == "LostRace":
                self.lost = str(exc)
                self.reader.forget()
                logger.info("%s", exc)
            elif exc.code != "HeldByPeer":
                delay = self.backoff.fail(time.monotonic())
                logger.info("%s: move failed (%s); next try in %.1f s", self._what(), exc, delay)
            raise
        self.backoff.ok()

    async def _move(self, before: dict[str, Any], end: float, consented: bool) -> None:
        """The take (:func:`~.aws_cas.take`), then reads until DescribeAddresses shows it."""
        kind = take_kind(before, self.home, consented)
        target = {
            "AllocationId": self.allocation_id,
            "NetworkInterfaceId": self.eni_id,
            "PrivateIpAddress": self.private_ip,
        }
        res = await take(self.calls, self._what(), before, kind, target, end)
        self.guard.took()
        logger.info(
            "%s: associated with %s %s (was %s; %s)",
            self._what(),
            self.eni_id,
            self.private_ip,
            where(before),
            kind.value,
        )
        seen: dict[str, Any] | None = None
        while True:
            remaining = end - time.monotonic()
            try:
                seen = await self.reader.read(
                    self.allocation_id,
                    max_age=0.0,
                    timeout=min(self.calls.call_timeout, max(0.05, remaining)),
                )
            except ReadFailed as exc:
                if exc.code not in RETRYABLE and exc.code != "BackingOff":
                    raise
            else:
                if self._note(seen):
                    return
                if seen is not None and seen.get("NetworkInterfaceId"):
                    # Remapped again since our call: the peer's decision. Do not fight.
                    raise ResourceError(
                        f"{self._what()}: taken again at once, now {where(seen)}", "HeldByPeer"
                    )
            if time.monotonic() + self.poll_interval >= end:
                if seen is None and res.get("AssociationId"):
                    # The call succeeded and nothing says otherwise: trust it until monitor.
                    self.reader.remember(
                        {
                            "AllocationId": self.allocation_id,
                            "AssociationId": res["AssociationId"],
                            "NetworkInterfaceId": self.eni_id,
                            "PrivateIpAddress": self.private_ip,
                        }
                    )
                    return
                raise ResourceError(
                    f"{self._what()}: associated, but DescribeAddresses still shows it "
                    f"{where(seen)} after {self.deadline:.1f} s",
                    "AssociationNotVisible",
                )
            await asyncio.sleep(self.poll_interval)

    async def stop(self) -> None:
        """Let the EIP go, without ever disassociating it (the peer takes it with its own
        atomic remap; a disassociation would only leave it on nobody in between). If it is
        still here, mark this association released (one ``CreateTags``, once) so that the peer
        takes it at once. Marking is best effort: if it fails, the peer's next decision or
        :data:`YIELD_S` ends its wait."""
        self.guard.released()
        try:
            record = await self.reader.read(self.allocation_id, max_age=0.0)
        except ReadFailed as exc:
            logger.info("%s: released; not marked (%s)", self._what(), exc)
            return
        if not self.is_mine(record) or released(record):
            return
        assert record is not None
        mark = {"Key": TAG_RELEASED, "Value": record["AssociationId"]}
        try:
            await self.calls.once(
                self._what(), "create_tags", Resources=[self.allocation_id], Tags=[mark]
            )
        except ResourceError as exc:
            logger.warning("%s: released; could not mark it so (%s)", self._what(), exc)
            return
        tags = [t for t in record.get("Tags", []) if t["Key"] != TAG_RELEASED]
        self.reader.remember({**record, "Tags": [*tags, mark]})
        logger.info(
            "%s: released on %s %s, marked for the peer", self._what(), self.eni_id, self.private_ip
        )

    async def monitor(self) -> MonitorResult:
        """Whether the EIP is associated with exactly this ENI and private address (an answer
        at most :data:`READ_TTL` old). On another ENI it is not held here: nothing to repair.

        :raises ReadFailed: no answer (also an ``OSError``: the reconcile loop skips a round).
        """
        record = await self.reader.read(self.allocation_id)
        if self._note(record):
            return MonitorResult(True, f"{self.address} {where(record)}")
        return MonitorResult(
            False, f"{self.address} {where(record)}, not {self.eni_id} {self.private_ip}"
        )


#: Readers shared by the VIPs of one node, per (region, endpoint, cluster, node).
_READERS: dict[tuple[str, str, str, str], AddressReader] = {}


def make_aws_eip(
    cfg: AgentConfig, vip: VipConfig, client_factory: ClientFactory | None = None
) -> AwsEip:
    """The ``aws_eip`` agent of ``vip`` from the agent config; both VIPs of a node share one
    reader (one DescribeAddresses for both)."""
    key = (cfg.aws_region, cfg.aws_endpoint_url, cfg.cluster, cfg.node)
    reader = _READERS.get(key)
    if reader is None:
        factory = client_factory or ec2_client_factory(cfg.aws_region, cfg.aws_endpoint_url)
        reader = _READERS[key] = AddressReader(Ec2Calls(factory))
    return AwsEip(
        vip.name,
        vip.address,
        vip.allocation_id,
        vip.eni_id,
        vip.private_ip,
        cluster=cfg.cluster,
        reader=reader,
        deadline=max(0.5, cfg.action_timeout_ms / 1000 * 0.9),
        home=vip.home == cfg.node,
    )
