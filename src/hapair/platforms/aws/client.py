"""The boto3 boundary of the aws platform: sessions, retries, waiting, and error translation.

Every AWS call of the platform goes through :meth:`Aws.call`, which turns a botocore error into a
:class:`~hapair.errors.CloudError` carrying the AWS error code and the resource concerned, and
retries the codes a caller names (eventual consistency: an id not visible yet, a dependency not
released yet). Throttling is retried by botocore itself (``standard`` retry mode).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from hapair.errors import CloudError

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_ssm import SSMClient
    from mypy_boto3_sts import STSClient

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Tag keys. Every resource carries ``hapair:cluster``; those with a role carry ``hapair:role``.
TAG_CLUSTER = "hapair:cluster"
TAG_ROLE = "hapair:role"
#: Which node (lb1, web3) or VIP (vip1) a resource belongs to.
TAG_NODE = "hapair:node"
TAG_VIP = "hapair:vip"

#: Codes that mean "too many requests": retried with backoff wherever they appear.
THROTTLING = frozenset(
    {"RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled"}
)
#: Codes that mean "the id you were just given is not visible yet".
NOT_VISIBLE_YET = (
    "InvalidInstanceID.NotFound",
    "InvalidNetworkInterfaceID.NotFound",
    "InvalidAllocationID.NotFound",
    "InvalidGroup.NotFound",
    "InvalidVpcID.NotFound",
    "InvalidSubnetID.NotFound",
    "InvalidRouteTableID.NotFound",
    "InvalidInternetGatewayID.NotFound",
)
#: A fresh IAM instance profile takes a few seconds to be usable by EC2.
IAM_PROPAGATION = ("InvalidParameterValue",)
#: Deletes that wait for something else to let go first.
STILL_IN_USE = ("DependencyViolation", "InvalidNetworkInterface.InUse", "IncorrectState")


def cluster_tags(
    cluster: str, name: str, role: str | None = None, **extra: str
) -> list[dict[str, str]]:
    """The tags of a resource of ``cluster``: ``Name`` = ``<cluster>-<name>``, the cluster tag,
    the role tag when it has a role, and ``hapair:<key>`` for each of ``extra`` (node, vip)."""
    tags = {"Name": f"{cluster}-{name}", TAG_CLUSTER: cluster}
    if role:
        tags[TAG_ROLE] = role
    tags.update({f"hapair:{key}": value for key, value in extra.items()})
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def tag_spec(resource_type: str, tags: list[dict[str, str]]) -> list[dict[str, Any]]:
    """``TagSpecifications`` for a create call."""
    return [{"ResourceType": resource_type, "Tags": tags}]


def tags_of(resource: Any) -> dict[str, str]:
    """A resource's tags as a dict (``Tags``, or ``TagSet`` for network interfaces)."""
    tags = resource.get("Tags") or resource.get("TagSet") or []
    return {t["Key"]: t["Value"] for t in tags}


def cluster_filter(cluster: str, *more: tuple[str, Sequence[str]]) -> list[dict[str, Any]]:
    """``Filters`` that select the resources of ``cluster`` (and ``more`` name/values pairs)."""
    out: list[dict[str, Any]] = [{"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster]}]
    out += [{"Name": n, "Values": list(v)} for n, v in more]
    return out


@dataclass(frozen=True)
class Timing:
    """How long the platform waits and how often it looks.

    :ivar poll: seconds between two reads while waiting for a state.
    :ivar wait: longest wait for one state (instance running, ENI gone, ...).
    :ivar retry: longest time one call is retried for a named code.
    """

    poll: float = 5.0
    wait: float = 900.0
    retry: float = 120.0


@dataclass
class Aws:
    """boto3 clients of one account and region, and the call/wait helpers of the platform."""

    session: boto3.Session
    endpoint_url: str | None = None
    timing: Timing = field(default_factory=Timing)
    _clients: dict[str, Any] = field(default_factory=dict)

    @property
    def region(self) -> str:
        """The region the session resolved (profile, environment or constructor)."""
        region = self.session.region_name
        if not region:
            raise CloudError(
                "no AWS region: set AWS_REGION (or a profile's region), or aws.region in the spec",
                code="NoRegion",
            )
        return region

    def _client(self, service: str) -> Any:
        if service not in self._clients:
            config = Config(
                retries={"mode": "standard", "max_attempts": 8},
                connect_timeout=10,
                read_timeout=60,
                user_agent_extra="hapair",
            )
            self._clients[service] = self.session.client(
                service,  # type: ignore[call-overload]
                region_name=self.region,
                endpoint_url=self.endpoint_url,
                config=config,
            )
        return self._clients[service]

    @property
    def ec2(self) -> EC2Client:
        """The EC2 client."""
        client: EC2Client = self._client("ec2")
        return client

    @property
    def iam(self) -> IAMClient:
        """The IAM client."""
        client: IAMClient = self._client("iam")
        return client

    @property
    def ssm(self) -> SSMClient:
        """The SSM client (the AMI lookup, the cluster's secrets)."""
        client: SSMClient = self._client("ssm")
        return client

    @property
    def s3(self) -> S3Client:
        """The S3 client (the cluster's artifact bucket)."""
        client: S3Client = self._client("s3")
        return client

    @property
    def sts(self) -> STSClient:
        """The STS client (who we are)."""
        client: STSClient = self._client("sts")
        return client

    def account(self) -> str:
        """The 12-digit id of the account the credentials belong to (asked once)."""
        if "account" not in self._clients:
            ident = self.must(self.sts.get_caller_identity, "caller identity")
            self._clients["account"] = str(ident["Account"])
        return str(self._clients["account"])

    def call(
        self,
        fn: Callable[..., T],
        resource: str,
        *,
        retry: Iterable[str] = (),
        ignore: Iterable[str] = (),
        **kwargs: Any,
    ) -> T | None:
        """Call ``fn(**kwargs)``; retry the codes in ``retry`` for up to ``timing.retry``.

        :returns: the response, or ``None`` when the error code is in ``ignore``.
        :raises CloudError: any other AWS error, with its code and ``resource``.
        """
        retry, ignore = frozenset(retry) | THROTTLING, frozenset(ignore)
        deadline = time.monotonic() + self.timing.retry
        attempt = 0
        name = getattr(fn, "__name__", "call")
        while True:
            try:
                return fn(**kwargs)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
                if code in ignore:
                    return None
                msg = str(exc.response.get("Error", {}).get("Message", exc))
                if code in retry and time.monotonic() < deadline:
                    attempt += 1
                    delay = min(self.timing.poll, 0.2 * 2**attempt) * random.uniform(0.5, 1.0)
                    logger.info("%s %s: %s, retrying in %.1f s", name, resource, code, delay)
                    time.sleep(delay)
                    continue
                raise CloudError(
                    f"{resource}: {name} failed: {code}: {msg}", code, resource
                ) from exc
            except BotoCoreError as exc:
                raise CloudError(
                    f"{resource}: {name} failed: {exc}", type(exc).__name__, resource
                ) from exc

    def must(self, fn: Callable[..., T], resource: str, **kwargs: Any) -> T:
        """:meth:`call` for calls whose answer is needed (nothing ignored)."""
        out = self.call(fn, resource, **kwargs)
        assert out is not None
        return out

    def wait_until(
        self, what: str, check: Callable[[], bool], timeout: float | None = None
    ) -> None:
        """Poll ``check`` every ``timing.poll`` until it returns true.

        :raises CloudError: not so within ``timeout`` (default ``timing.wait``), code ``Timeout``.
        """
        deadline = time.monotonic() + (self.timing.wait if timeout is None else timeout)
        while not check():
            if time.monotonic() >= deadline:
                raise CloudError(f"timed out waiting until {what}", "Timeout", what)
            time.sleep(self.timing.poll)


def make_session(region: str | None = None, profile: str | None = None) -> boto3.Session:
    """A boto3 session from the standard AWS configuration (profile, environment, files)."""
    return boto3.Session(region_name=region or None, profile_name=profile or None)
