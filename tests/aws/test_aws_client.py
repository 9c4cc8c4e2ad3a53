"""The boto3 boundary: retries where they make sense, errors with AWS code and resource."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from tests.aws.conftest import aws_plan

from hapair.errors import CloudError
from hapair.platforms.aws import AwsPlatform
from hapair.platforms.aws.client import Aws, Timing


def failing(codes: list[str]) -> Any:
    calls = []

    def create_thing(**kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        if codes:
            code = codes.pop(0)
            raise ClientError({"Error": {"Code": code, "Message": f"says {code}"}}, "CreateThing")
        return {"ok": True}

    create_thing.calls = calls  # type: ignore[attr-defined]
    return create_thing


def aws() -> Aws:
    return Aws(boto3.Session(region_name="us-east-1"), timing=Timing(poll=0.01, retry=2.0))


def test_throttling_is_retried() -> None:
    fn = failing(["RequestLimitExceeded", "Throttling"])
    assert aws().call(fn, "thing t1", Name="x") == {"ok": True}
    assert len(fn.calls) == 3


def test_named_codes_are_retried_and_others_reported() -> None:
    fn = failing(["DependencyViolation"])
    assert aws().call(fn, "vpc vpc-1", retry=("DependencyViolation",)) == {"ok": True}
    fn = failing(["UnauthorizedOperation"])
    with pytest.raises(CloudError) as err:
        aws().call(fn, "vpc vpc-1", retry=("DependencyViolation",))
    assert err.value.code == "UnauthorizedOperation" and err.value.resource == "vpc vpc-1"
    assert str(err.value) == (
        "vpc vpc-1: create_thing failed: UnauthorizedOperation: says UnauthorizedOperation"
    )
    assert len(fn.calls) == 1
    assert aws().call(failing(["X.NotFound"]), "r", ignore=("X.NotFound",)) is None


def test_retrying_is_bounded() -> None:
    fn = failing(["DependencyViolation"] * 1000)
    a = Aws(boto3.Session(region_name="us-east-1"), timing=Timing(poll=0.01, retry=0.2))
    with pytest.raises(CloudError) as err:
        a.call(fn, "subnet s-1", retry=("DependencyViolation",))
    assert err.value.code == "DependencyViolation"


def test_a_foreign_iam_role_is_not_taken_over(
    platform: AwsPlatform, iam: Any, ami: str, cluster_name: str
) -> None:
    iam.create_role(RoleName=f"hapair-{cluster_name}-lb", AssumeRolePolicyDocument="{}")
    with pytest.raises(CloudError) as err:
        platform.up(aws_plan(cluster_name, ami, size=1))
    assert err.value.code == "EntityAlreadyExists"
    assert err.value.resource == f"iam role hapair-{cluster_name}-lb"
    assert platform.down(cluster_name) is True  # cleans what the failed up made
    iam.delete_role(RoleName=f"hapair-{cluster_name}-lb")
