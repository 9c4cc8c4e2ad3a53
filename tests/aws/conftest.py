"""A moto server on 127.0.0.1 for the whole session, and boto3 pointed at it with fake credentials.

Nothing here can reach a real AWS endpoint: every test gets ``AWS_ENDPOINT_URL`` set to the
local server, fake keys, region us-east-1, and no profile or config file.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.ec2.models.elastic_ip_addresses import ElasticAddress
from moto.ec2.responses.elastic_ip_addresses import ElasticIPAddresses
from moto.server import ThreadedMotoServer

from hapair.plan import Plan, make_plan
from hapair.platforms.aws import AwsPlatform
from hapair.platforms.aws.client import Timing
from hapair.spec import parse

REGION = "us-east-1"
FAST = Timing(poll=0.02, wait=30.0, retry=5.0)
_names = itertools.count(1)


def _honour_private_ip() -> None:
    """moto 5.2 ignores ``PrivateIpAddress`` in AssociateAddress and always reports the ENI's
    primary address. Real EC2 associates the address asked for; the aws_eip agent depends on
    that (the peer's VIP goes on the secondary address). Teach the in-process server to keep it."""
    if getattr(ElasticIPAddresses, "_hapair_patched", False):
        return
    original = ElasticIPAddresses.associate_address

    def associate_address(self: Any) -> Any:
        result = original(self)
        wanted = self._get_param("PrivateIpAddress")
        alloc = self._get_param("AllocationId")
        if alloc:
            for eip in self.ec2_backend.address_by_allocation([alloc]):
                eip._hapair_private_ip = wanted
        return result

    def private_ip_address(self: Any) -> str | None:
        if not self.eni:
            return None
        return getattr(self, "_hapair_private_ip", None) or self.eni.private_ip_address

    ElasticIPAddresses.associate_address = associate_address  # type: ignore[method-assign]
    ElasticAddress.private_ip_address = property(private_ip_address)  # type: ignore[assignment,method-assign]
    ElasticIPAddresses._hapair_patched = True  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """The local moto server's URL (loopback only)."""
    _honour_private_ip()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def aws_env(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> str:
    """Fake credentials, the local endpoint, and no shared config or profile."""
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return moto_url


@pytest.fixture
def ec2(aws_env: str) -> Any:
    """A plain EC2 client on the moto server."""
    return boto3.client("ec2", region_name=REGION, endpoint_url=aws_env)


@pytest.fixture
def iam(aws_env: str) -> Any:
    """A plain IAM client on the moto server."""
    return boto3.client("iam", region_name=REGION, endpoint_url=aws_env)


@pytest.fixture
def ami(ec2: Any) -> str:
    """An AMI moto knows."""
    return str(ec2.describe_images()["Images"][0]["ImageId"])


@pytest.fixture
def cluster_name() -> str:
    """A cluster name no other test of the session uses (moto's state lives for the session)."""
    return f"t{next(_names)}"


@pytest.fixture
def platform(aws_env: str) -> AwsPlatform:
    """The aws platform on the moto server, with short waits."""
    return AwsPlatform(region=REGION, endpoint_url=aws_env, timing=FAST)


def aws_plan(name: str, ami: str, size: int = 3, **aws: Any) -> Plan:
    """An aws plan with the given web size and ``aws`` fields; admin_cidrs narrowed."""
    return make_plan(
        parse(
            {
                "cluster": {"name": name, "platform": "aws"},
                "web": {"size": size},
                "aws": {"ami": ami, **aws},
                "admin": {"cidrs": ["192.0.2.0/24"]},
            }
        )
    )


def flt(name: str) -> list[dict[str, Any]]:
    """Filters selecting the resources of cluster ``name``."""
    return [{"Name": "tag:hapair:cluster", "Values": [name]}]
