"""Our own code for the instances: the real wheel and its pinned requirements, the private bucket
they live in (and its removal), and the standard-library fetch the instances use."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from tests.aws.conftest import FAKE_BUNDLE, aws_plan
from tests.aws.motofix import PermissionResult, policy_decision
from tests.aws.test_aws_iam import lb_session

from hapair.platforms.aws import s3get
from hapair.platforms.aws.artifacts import (
    cached_bundle,
    dependency_closure,
    pinned_requirements,
    project_root,
)
from hapair.platforms.aws.iam import bucket_policy

S3GET = Path(s3get.__file__)


def test_requirements_pin_the_runtime_closure_only() -> None:
    meta = {
        "hapair": ["boto3>=1.34", "typer>=0.12", 'matplotlib>=3.8; extra == "bench"'],
        "boto3": ["botocore<2,>=1.44", "s3transfer"],
        "botocore": ["jmespath", "python-dateutil; python_version >= '3'"],
        "typer": ["click>=8"],
    }
    closure = dependency_closure(requires=lambda name: meta.get(name, []))
    assert closure == {
        "boto3",
        "botocore",
        "s3transfer",
        "jmespath",
        "python-dateutil",
        "typer",
        "click",
    }
    freeze = (
        "boto3==1.44.8\nbotocore==1.44.8\nclick==8.5.1\n# Editable install\n-e /work/main\n"
        "jmespath==1.1.0\nmatplotlib==3.11.2\nmoto==5.2.5\npython_dateutil==2.9.0\n"
        "s3transfer==0.16.0\ntyper==0.20.0\n"
    )
    assert pinned_requirements(freeze, closure).splitlines() == [
        "boto3==1.44.8",
        "botocore==1.44.8",
        "click==8.5.1",
        "jmespath==1.1.0",
        "python_dateutil==2.9.0",
        "s3transfer==0.16.0",
        "typer==0.20.0",
    ]


def test_the_real_wheel_builds_once_from_a_copy(tmp_path: Path) -> None:
    root = project_root()
    assert root is not None and (root / "pyproject.toml").is_file()
    before = sorted(p.name for p in root.iterdir())
    bundle = cached_bundle(tmp_path)
    assert bundle.wheel_name.startswith("hapair-") and bundle.wheel_name.endswith(".whl")
    assert bundle.wheel[:2] == b"PK"  # a zip
    pins = dict(line.split("==") for line in bundle.requirements.splitlines())
    for dep in ("boto3", "pydantic", "typer", "Jinja2", "pyroute2", "prometheus_client"):
        assert any(
            name.lower().replace("_", "-") == dep.lower().replace("_", "-") for name in pins
        ), dep
    for tool in ("pytest", "moto", "mypy", "ruff", "hypothesis", "matplotlib"):
        assert tool not in {n.lower() for n in pins}
    assert sorted(p.name for p in root.iterdir()) == before  # no build/ nor egg-info left
    again = cached_bundle(tmp_path)  # the second call reads the cache
    assert again == bundle and len(list(tmp_path.iterdir())) == 1


def test_the_bucket_is_private_encrypted_readable_only_by_the_roles_and_down_removes_it(
    platform: Any, aws_env: str, ami: str, cluster_name: str
) -> None:
    platform.up(aws_plan(cluster_name, ami, size=1))
    aws = platform.aws()
    s3 = aws.s3
    scope = platform.scope(aws, cluster_name)
    bucket = scope.bucket
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]}
    assert tags["hapair:cluster"] == cluster_name
    roles = [f"arn:aws:iam::123456789012:role/hapair-{cluster_name}-{k}" for k in ("lb", "web")]
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    assert policy == bucket_policy(scope, roles)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == sorted(
        [
            FAKE_BUNDLE.wheel_key,
            FAKE_BUNDLE.requirements_key,
            "desired/lb1.json",
            "desired/lb2.json",
        ]
    )
    # The operator uploads but cannot read; the LB and web roles read the artifacts.
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key=FAKE_BUNDLE.wheel_key)
    assert err.value.response["Error"]["Code"] in ("AccessDenied", "403")
    for kind in ("lb", "web"):
        role = lb_session(aws_env, cluster_name, kind).client("s3", endpoint_url=aws_env)
        got = role.get_object(Bucket=bucket, Key=FAKE_BUNDLE.wheel_key)
        assert got["Body"].read() == FAKE_BUNDLE.wheel and got["ServerSideEncryption"] == "AES256"
    # The policy denies every request without TLS, whoever makes it.
    plain = {"aws:SecureTransport": "false", "aws:PrincipalArn": roles[0]}
    obj = f"arn:aws:s3:::{bucket}/{FAKE_BUNDLE.wheel_key}"
    assert policy_decision(policy, "s3:GetObject", obj, plain) == PermissionResult.DENIED
    assert policy_decision(policy, "s3:PutObject", obj, plain) == PermissionResult.DENIED
    # down empties it, old versions included, and deletes it.
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for body in (b"one", b"two"):
        s3.put_object(Bucket=bucket, Key="desired/lb1.json", Body=body)
    assert len(s3.list_object_versions(Bucket=bucket)["Versions"]) >= 6
    platform.down(cluster_name)
    assert bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}


def test_instances_fetch_with_their_role_and_check_the_sha256(
    platform: Any, aws_env: str, ami: str, cluster_name: str, tmp_path: Path
) -> None:
    platform.up(aws_plan(cluster_name, ami, size=1))
    bucket = platform.scope(platform.aws(), cluster_name).bucket
    creds = lb_session(aws_env, cluster_name, "web").get_credentials()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": creds.access_key,
        "AWS_SECRET_ACCESS_KEY": creds.secret_key,
        "AWS_SESSION_TOKEN": creds.token or "",
        "S3GET_ATTEMPTS": "1",
    }

    def fetch(sha: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, str(S3GET), "us-east-1", bucket, FAKE_BUNDLE.wheel_key]
        return subprocess.run(
            [*argv, str(tmp_path / "w.whl"), sha], env=environ, capture_output=True, text=True
        )

    ok = fetch(FAKE_BUNDLE.wheel_sha256, env)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "w.whl").read_bytes() == FAKE_BUNDLE.wheel
    bad = fetch("0" * 64, env)
    assert bad.returncode == 1 and "SHA-256 mismatch" in bad.stderr
    operator = fetch(FAKE_BUNDLE.wheel_sha256, {**os.environ, "S3GET_ATTEMPTS": "1"})
    assert operator.returncode == 1 and "403" in operator.stderr
    platform.down(cluster_name)


def test_the_signature_is_botocores(monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: now.replace(tzinfo=None))
    creds = {"AccessKeyId": "AKIDEXAMPLE", "SecretAccessKey": "secret", "Token": "tok"}
    url = "http://hapair-c-1-eu-west-3.s3.eu-west-3.amazonaws.com/artifacts/ab/hapair-0.1.0.whl"
    ours = s3get.sign(url, "eu-west-3", creds, now)
    request = AWSRequest(method="GET", url=url)
    botocore.auth.S3SigV4Auth(
        Credentials("AKIDEXAMPLE", "secret", "tok"), "s3", "eu-west-3"
    ).add_auth(request)
    assert ours["Authorization"] == request.headers["Authorization"]
    assert ours["x-amz-content-sha256"] == hashlib.sha256(b"").hexdigest()
