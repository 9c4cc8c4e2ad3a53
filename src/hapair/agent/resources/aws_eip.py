"""The ``aws_eip`` floating-IP agent: an Elastic IP associated with this LB's ENI.

As the seed's ``updateEIP1``/``updateEIP2`` scripts, the home VIP goes on this node's primary
private address and the peer's VIP on its secondary one, with ``AllowReassociation`` so a move
is one call. Unlike them, every move is checked: ``start`` polls ``DescribeAddresses`` until the
association is really this ENI and address; ``stop`` only ever removes this node's own
association (never the peer's); ``monitor`` compares allocation, ENI and private address
exactly. boto3 runs in a thread (``asyncio.to_thread``) and every call has a time limit.

Reads are shared by both VIPs of a node and cached for :data:`READ_TTL`, so the reconcile
loop stays far within EC2's describe budget (about 20 calls per second per account).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from hapair.agent.resources.base import FloatingIP, MonitorResult
from hapair.errors import ResourceError

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

    from hapair.agent.config import AgentConfig, VipConfig

logger = logging.getLogger(__name__)

#: Codes retried with backoff: EC2 throttling and transient server errors.
RETRYABLE = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
    }
)
#: How long one DescribeAddresses answer is reused by both VIPs of the node (seconds).
READ_TTL = 0.25

ClientFactory = Callable[[], "EC2Client"]


def ec2_client_factory(region: str = "", endpoint_url: str = "") -> ClientFactory:
    """A factory of EC2 clients with short timeouts and no botocore retries (the agent
    retries itself, within its deadline)."""

    def make() -> EC2Client:
        config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=2,
            read_timeout=3,
            user_agent_extra="hapair-agent",
        )
        client: EC2Client = boto3.session.Session().client(
            "ec2", region_name=region or None, endpoint_url=endpoint_url or None, config=config
        )
        return client

    return make


class Ec2Calls:
    """One EC2 client (made on first use, in a thread) and bounded calls through it."""

    def __init__(self, factory: ClientFactory, call_timeout: float = 2.0) -> None:
        self.factory = factory
        self.call_timeout = call_timeout
        self._client: EC2Client | None = None
        self._make_lock = threading.Lock()
        #: How many calls were sent, by operation (tests and metrics read it).
        self.sent: dict[str, int] = {}

    def _invoke(self, op: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        with self._make_lock:
            if self._client is None:
                self._client = self.factory()
            client = self._client
        out: dict[str, Any] = getattr(client, op)(**kwargs)
        return out

    async def once(
        self, what: str, op: str, timeout: float | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """One call of ``op`` bounded by ``timeout`` (default ``call_timeout``).

        :raises ResourceError: with the AWS error code, or ``Timeout``.
        """
        limit = self.call_timeout if timeout is None else max(0.05, timeout)
        self.sent[op] = self.sent.get(op, 0) + 1
        try:
            async with asyncio.timeout(limit):
                return await asyncio.to_thread(self._invoke, op, kwargs)
        except TimeoutError:
            raise ResourceError(f"{what}: {op} timed out after {limit:.1f} s", "Timeout") from None
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code", "Unknown"))
            raise ResourceError(
                f"{what}: {op} failed: {code}: {err.get('Message', '')}", code
            ) from exc
        except BotoCoreError as exc:
            raise ResourceError(f"{what}: {op} failed: {exc}", type(exc).__name__) from exc

    async def retrying(
        self,
        what: str,
        op: str,
        deadline: float,
        *,
        base: float = 0.1,
        cap: float = 1.0,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """:meth:`once`, retried on throttling and transient errors with exponential backoff and
        full jitter until the monotonic ``deadline``.

        :raises ResourceError: a code not worth retrying, or the deadline has passed.
        """
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            try:
                return await self.once(what, op, min(self.call_timeout, remaining), **kwargs)
            except ResourceError as exc:
                if exc.code not in RETRYABLE and exc.code != "Timeout":
                    raise
                delay = random.uniform(0, min(cap, base * 2**attempt))
                if time.monotonic() + delay >= deadline:
                    raise
                attempt += 1
                logger.info("%s: %s got %s, retry %d in %.2f s", what, op, exc.code, attempt, delay)
                await asyncio.sleep(delay)


class AddressReader:
    """``DescribeAddresses`` for every EIP of one node in one call, cached for ``ttl``."""

    def __init__(self, calls: Ec2Calls, ttl: float = READ_TTL) -> None:
        self.calls = calls
        self.ttl = ttl
        self._ids: set[str] = set()
        self._cache: dict[str, dict[str, Any]] = {}
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    def register(self, allocation_id: str) -> None:
        """Read this allocation too from now on."""
        self._ids.add(allocation_id)
        self.invalidate()

    def invalidate(self) -> None:
        """Forget the cached answer (after a move)."""
        self._at = float("-inf")

    async def read(
        self, allocation_id: str, *, fresh: bool = False, timeout: float | None = None
    ) -> dict[str, Any] | None:
        """The address record of ``allocation_id`` (``None``: not found).

        :param fresh: do not use a cached answer (polling after a move).
        """
        async with self._lock:
            now = time.monotonic()
            if fresh or now - self._at >= self.ttl or allocation_id not in self._cache:
                self._ids.add(allocation_id)
                res = await self.calls.once(
                    f"eip {allocation_id}",
                    "describe_addresses",
                    timeout,
                    AllocationIds=sorted(self._ids),
                )
                self._cache = {a["AllocationId"]: a for a in res.get("Addresses", [])}
                self._at = time.monotonic()
            return self._cache.get(allocation_id)


def where(record: dict[str, Any] | None) -> str:
    """Where an address record says the EIP is, as words."""
    if record is None:
        return "not found"
    if not record.get("NetworkInterfaceId"):
        return "not associated"
    return f"on {record['NetworkInterfaceId']} {record.get('PrivateIpAddress', '?')}"


class AwsEip(FloatingIP):
    """One EIP, held by this node when associated with ``eni_id`` at ``private_ip``.

    :param private_ip: which of this node's ENI addresses: the primary for its home VIP, the
        secondary for the peer's VIP (as the seed).
    :param client_factory: makes the boto3 EC2 client (ignored when ``reader`` is given).
    :param reader: a reader shared with the node's other VIP (default: a private one).
    :param deadline: bound on a whole ``start``/``stop`` (retries and polling included).
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
        reader: AddressReader | None = None,
        deadline: float = 4.5,
        poll_interval: float = 0.2,
    ) -> None:
        self.name = name
        self.address = address
        self.allocation_id = allocation_id
        self.eni_id = eni_id
        self.private_ip = private_ip
        if reader is None:
            if client_factory is None:
                raise ValueError("AwsEip needs a client_factory or a reader")
            reader = AddressReader(Ec2Calls(client_factory))
        self.reader = reader
        self.calls = reader.calls
        self.deadline = deadline
        self.poll_interval = poll_interval
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

    async def start(self) -> None:
        """Associate the EIP with this ENI and address (taking it from wherever it is), then
        wait until DescribeAddresses shows it here."""
        end = time.monotonic() + self.deadline
        await self.calls.retrying(
            self._what(),
            "associate_address",
            end,
            AllocationId=self.allocation_id,
            NetworkInterfaceId=self.eni_id,
            PrivateIpAddress=self.private_ip,
            AllowReassociation=True,
        )
        self.reader.invalidate()
        seen: dict[str, Any] | None = None
        while True:
            remaining = end - time.monotonic()
            try:
                seen = await self.reader.read(
                    self.allocation_id, fresh=True, timeout=min(self.calls.call_timeout, remaining)
                )
            except ResourceError as exc:
                if exc.code not in RETRYABLE and exc.code != "Timeout":
                    raise
            if self.is_mine(seen):
                logger.info("%s: associated with %s %s", self._what(), self.eni_id, self.private_ip)
                return
            if time.monotonic() + self.poll_interval >= end:
                raise ResourceError(
                    f"{self._what()}: associated, but DescribeAddresses still shows it "
                    f"{where(seen)} after {self.deadline:.1f} s",
                    "AssociationNotVisible",
                )
            await asyncio.sleep(self.poll_interval)

    async def stop(self) -> None:
        """Disassociate the EIP if, and only if, it is associated with this ENI and address."""
        end = time.monotonic() + self.deadline
        record = await self.reader.read(self.allocation_id, fresh=True)
        if not self.is_mine(record):
            logger.debug("%s: stop: nothing to do, it is %s", self._what(), where(record))
            return
        assert record is not None
        try:
            await self.calls.retrying(
                self._what(), "disassociate_address", end, AssociationId=record["AssociationId"]
            )
        except ResourceError as exc:
            # Gone already, or moved by the peer since we read it: either way not ours now.
            if exc.code != "InvalidAssociationID.NotFound":
                raise
        self.reader.invalidate()
        logger.info("%s: disassociated from %s %s", self._what(), self.eni_id, self.private_ip)

    async def monitor(self) -> MonitorResult:
        """Whether the EIP is associated with exactly this ENI and private address."""
        record = await self.reader.read(self.allocation_id)
        if self.is_mine(record):
            return MonitorResult(True, f"{self.address} {where(record)}")
        return MonitorResult(
            False, f"{self.address} {where(record)}, not {self.eni_id} {self.private_ip}"
        )


#: Readers shared by the VIPs of one agent, per (region, endpoint).
_READERS: dict[tuple[str, str], AddressReader] = {}


def make_aws_eip(cfg: AgentConfig, vip: VipConfig) -> AwsEip:
    """The ``aws_eip`` agent of ``vip`` from the agent config; both VIPs share one reader."""
    key = (cfg.aws_region, cfg.aws_endpoint_url)
    reader = _READERS.get(key)
    if reader is None:
        calls = Ec2Calls(ec2_client_factory(cfg.aws_region, cfg.aws_endpoint_url))
        reader = _READERS[key] = AddressReader(calls)
    return AwsEip(
        vip.name,
        vip.address,
        vip.allocation_id,
        vip.eni_id,
        vip.private_ip,
        reader=reader,
        deadline=max(0.5, cfg.action_timeout_ms / 1000 * 0.9),
    )
