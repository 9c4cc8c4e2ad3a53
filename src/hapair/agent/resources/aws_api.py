"""The EC2 side of the ``aws_eip`` resource agent: bounded calls, one shared and cached read of a
node's EIPs, and exponential backoff with jitter. See :mod:`hapair.agent.resources.aws_eip`.

boto3 runs in a thread (``asyncio.to_thread``) and every call has a time limit. A read that
fails raises :class:`ReadFailed`, which is also an ``OSError``: for the daemon, an I/O failure
of ``monitor`` that skips one round of its reconcile loop.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from hapair.errors import ResourceError

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

#: Codes worth another try later: EC2 throttling and transient server errors.
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
        "Timeout",
    }
)
#: How long one DescribeAddresses answer serves ``monitor`` (both VIPs of the node), seconds.
READ_TTL = 5.0
#: Tags an ENI must carry to receive an EIP.
TAG_ROLE = "hapair:role"
TAG_CLUSTER = "hapair:cluster"
ClientFactory = Callable[[], "EC2Client"]


class ReadFailed(ResourceError, OSError):
    """A DescribeAddresses (or DescribeNetworkInterfaces) failed or is backing off.

    Also an ``OSError``: for the daemon, an I/O failure of ``monitor`` that skips one round.
    """


def ec2_client_factory(region: str = "", endpoint_url: str = "") -> ClientFactory:
    """A factory of EC2 clients with short timeouts and no botocore retries (the agent
    retries itself, with its own backoff)."""

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


@dataclass
class Backoff:
    """Exponential backoff with full jitter: after ``n`` failures in a row, the next attempt
    waits ``uniform(0, min(cap, base * 2**(n-1)))`` seconds. Pure; times are monotonic seconds.
    """

    base: float = 1.0
    cap: float = 30.0
    failures: int = 0
    not_before: float = 0.0
    rng: random.Random = field(default_factory=random.Random)

    def fail(self, now: float) -> float:
        """Record a failure at ``now``; returns the delay before the next attempt."""
        self.failures += 1
        delay = self.rng.uniform(0, min(self.cap, self.base * 2 ** (self.failures - 1)))
        self.not_before = now + delay
        return delay

    def ok(self) -> None:
        """Record a success: the next attempt may come at once."""
        self.failures = 0
        self.not_before = 0.0

    def wait(self, now: float) -> float:
        """Seconds left before the next attempt (0: now)."""
        return max(0.0, self.not_before - now)


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


class AddressReader:
    """``DescribeAddresses`` for every EIP of one node in one call, cached; failed reads back
    off (shared by the node's VIPs, so a throttled account is not asked again at once)."""

    def __init__(self, calls: Ec2Calls, ttl: float = READ_TTL) -> None:
        self.calls = calls
        self.ttl = ttl
        self.backoff = Backoff(base=0.5, cap=30.0)
        self._ids: set[str] = set()
        self._cache: dict[str, dict[str, Any]] = {}
        self._at = float("-inf")
        self._lock = asyncio.Lock()
        self._eni_ok: dict[str, str | None] = {}

    def register(self, allocation_id: str) -> None:
        """Read this allocation too from now on."""
        self._ids.add(allocation_id)
        self._at = float("-inf")

    def age(self) -> float:
        """Seconds since the last answer."""
        return time.monotonic() - self._at

    def forget(self) -> None:
        """The cached answer is known to be stale: the next read asks EC2."""
        self._at = float("-inf")

    def remember(self, record: dict[str, Any]) -> None:
        """Keep ``record`` as the newest reading of its allocation (after a move of ours)."""
        self._cache[record["AllocationId"]] = record

    async def read(
        self, allocation_id: str, *, max_age: float | None = None, timeout: float | None = None
    ) -> dict[str, Any] | None:
        """The address record of ``allocation_id`` (``None``: not found), at most ``max_age``
        seconds old (default :attr:`ttl`).

        :raises ReadFailed: the call failed, or failed recently and is backing off.
        """
        limit = self.ttl if max_age is None else max_age
        async with self._lock:
            now = time.monotonic()
            if now - self._at <= limit and allocation_id in self._cache:
                return self._cache.get(allocation_id)
            wait = self.backoff.wait(now)
            if wait > 0:
                raise ReadFailed(
                    f"eip {allocation_id}: DescribeAddresses backing off for {wait:.1f} s",
                    "BackingOff",
                )
            self._ids.add(allocation_id)
            try:
                res = await self.calls.once(
                    f"eip {allocation_id}",
                    "describe_addresses",
                    timeout,
                    AllocationIds=sorted(self._ids),
                )
            except ResourceError as exc:
                if exc.code in RETRYABLE:
                    self.backoff.fail(time.monotonic())
                raise ReadFailed(str(exc), exc.code) from exc
            self.backoff.ok()
            self._cache = {a["AllocationId"]: a for a in res.get("Addresses", [])}
            self._at = time.monotonic()
            return self._cache.get(allocation_id)

    async def eni_problem(self, eni_id: str, cluster: str) -> str | None:
        """Why ``eni_id`` must not receive an EIP (``None``: it is an LB ENI of ``cluster``).
        Read once per ENI; a failed read is not remembered.

        :raises ReadFailed: the read failed.
        """
        if eni_id in self._eni_ok:
            return self._eni_ok[eni_id]
        try:
            res = await self.calls.once(
                f"eni {eni_id}", "describe_network_interfaces", NetworkInterfaceIds=[eni_id]
            )
        except ResourceError as exc:
            raise ReadFailed(str(exc), exc.code) from exc
        found = res.get("NetworkInterfaces", [])
        tags = {t["Key"]: t["Value"] for t in (found[0].get("TagSet", []) if found else [])}
        problem = None
        if tags.get(TAG_ROLE) != "lb" or tags.get(TAG_CLUSTER) != cluster:
            problem = (
                f"{eni_id} is not an LB network interface of cluster {cluster} "
                f"(tags {TAG_ROLE}={tags.get(TAG_ROLE)!r}, {TAG_CLUSTER}={tags.get(TAG_CLUSTER)!r})"
            )
        self._eni_ok[eni_id] = problem
        return problem
