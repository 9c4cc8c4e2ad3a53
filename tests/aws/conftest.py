"""A moto server on 127.0.0.1 for the whole session, and boto3 pointed at it with fake credentials.

Nothing here can reach a real AWS endpoint: every test gets ``AWS_ENDPOINT_URL`` set to the
local server (HTTPS with a throwaway certificate, trusted through ``AWS_CA_BUNDLE``), fake keys,
region us-east-1, and no profile or config file. ``tests/aws/motofix.py`` says what the server
is taught so that it behaves as AWS does where hapair depends on it.
"""

from __future__ import annotations

import base64
import gzip
import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from tests.aws import motofix
from tests.aws.fakehaproxy import FakeHaproxy

from hapair.plan import Plan, make_plan
from hapair.platforms.aws import AwsPlatform
from hapair.platforms.aws.artifacts import Bundle
from hapair.platforms.aws.client import Timing
from hapair.spec import parse

REGION = "us-east-1"
FAST = Timing(poll=0.02, wait=30.0, retry=5.0)
_names = itertools.count(1)


@pytest.fixture(scope="session")
def moto_tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway certificate and key for the local server (127.0.0.1)."""
    return motofix.make_certificate(tmp_path_factory.mktemp("moto-tls"))


@pytest.fixture(scope="session")
def moto_url(moto_tls: tuple[Path, Path]) -> Iterator[str]:
    """The local moto server's URL: HTTPS on loopback only."""
    motofix.honour_private_ip()
    motofix.evaluate_bucket_policies()
    motofix.print_cloud_init()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = motofix.TlsMotoServer(*moto_tls)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    yield f"https://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def aws_env(
    moto_url: str, moto_tls: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> str:
    """Fake credentials, the local endpoint (its certificate trusted), no config or profile."""
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
    monkeypatch.setenv("AWS_CA_BUNDLE", str(moto_tls[0]))
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


#: A stand-in for the wheel `up` builds (tests/aws/test_aws_artifacts.py builds the real one).
FAKE_BUNDLE = Bundle("hapair-0.1.0-py3-none-any.whl", b"PK\x05\x06" + b"\0" * 18, "boto3==1.0\n")


@pytest.fixture
def platform(aws_env: str) -> AwsPlatform:
    """The aws platform on the moto server, with short waits and a stand-in wheel."""
    return AwsPlatform(region=REGION, endpoint_url=aws_env, timing=FAST, bundle=lambda: FAKE_BUNDLE)


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


def decode_user_data(value: str) -> str:
    """User data as DescribeInstanceAttribute returns it (base64), gunzipped when ``up``
    compressed it (a large one: :func:`hapair.platforms.aws.userdata.pack`)."""
    raw = base64.b64decode(value)
    return (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()


@pytest.fixture
def lb(tmp_path: Path) -> Iterator[FakeHaproxy]:
    """An LB's HAProxy as the follower sees it, and the stats password file beside it."""
    fake = FakeHaproxy(tmp_path / "admin.sock")
    (tmp_path / "stats.password").write_text("pw\n")
    yield fake
    fake.close()
