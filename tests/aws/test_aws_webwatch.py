"""A web instance terminated behind hapair's back leaves what the LBs serve at the follower's
next poll (hapair.platforms.aws.webwatch), against moto; an EC2 error changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError
from tests.aws.conftest import REGION, aws_plan, flt
from tests.aws.test_aws_day2 import follower_for
from tests.aws.test_aws_iam import lb_session

from hapair.platforms.aws import AwsPlatform
from hapair.platforms.aws.webwatch import WebWatch, gone_addresses


class Failing:
    """An EC2 client whose DescribeInstances is throttled."""

    def describe_instances(self, **kw: Any) -> Any:
        raise ClientError(
            {"Error": {"Code": "RequestLimitExceeded", "Message": "slow down"}}, "DescribeInstances"
        )


def test_gone_addresses_needs_positive_evidence() -> None:
    def inst(ip: str, state: str) -> dict[str, Any]:
        return {"PrivateIpAddress": ip, "State": {"Name": state}}

    assert gone_addresses([]) == frozenset()
    assert gone_addresses([inst("10.0.0.1", "terminated"), inst("10.0.0.2", "running")]) == {
        "10.0.0.1"
    }
    # A replacement at the same address: served again.
    assert gone_addresses([inst("10.0.0.1", "terminated"), inst("10.0.0.1", "pending")]) == set()
    assert gone_addresses([inst("10.0.0.3", "stopping"), {"State": {"Name": "terminated"}}]) == {
        "10.0.0.3"
    }


def test_a_terminated_web_instance_leaves_the_served_set_at_the_next_poll(
    platform: AwsPlatform, ami: str, cluster_name: str, tmp_path: Path, aws_env: str, lb: Any
) -> None:
    c = cluster_name
    platform.up(aws_plan(c, ami, size=3))
    role = lb_session(aws_env, c)
    log: list[Any] = []
    f = follower_for(c, tmp_path, lb, role.client("ssm", endpoint_url=aws_env), log)
    clock = [0.0]
    f.watch = WebWatch(
        role.client("ec2", endpoint_url=aws_env), c, schedule=f.cfg.schedule, clock=lambda: clock[0]
    )
    assert f.tick().startswith("version 1 applied")
    assert [s.name for s in f.running.servers] == ["web1", "web2", "web3"]  # type: ignore[union-attr]
    assert f.tick() == "version 1 unchanged"

    # An API error changes nothing, and the next look waits (backoff).
    real, f.watch.ec2 = f.watch.ec2, Failing()
    ec2 = boto3.client("ec2", region_name=REGION)
    web2 = ec2.describe_instances(
        Filters=[*flt(c), {"Name": "tag:hapair:node", "Values": ["web2"]}]
    )["Reservations"][0]["Instances"][0]
    ec2.terminate_instances(InstanceIds=[web2["InstanceId"]])
    cfg_before = (tmp_path / "haproxy.cfg").read_text()
    assert f.tick() == "version 1 unchanged"
    assert f.watch.errors == 1 and f.watch.failures == 1 and f.watch.not_before > clock[0]
    assert len(f.running.servers) == 3  # type: ignore[union-attr]
    assert (tmp_path / "haproxy.cfg").read_text() == cfg_before
    assert not any(cmd.startswith("del server") for cmd in lb.commands)
    f.watch.ec2 = real
    assert f.tick() == "version 1 unchanged"  # still backing off: not asked
    assert f.watch.errors == 1

    # The backoff over, the next poll sees web2 terminated: drained and deleted at runtime.
    clock[0] = f.watch.not_before
    line = f.tick()
    assert "gone: 10.20.1.22" in line and "applied" in line, line
    assert [s.name for s in f.running.servers] == ["web1", "web3"]  # type: ignore[union-attr]
    assert "del server web/web2" in lb.commands
    assert "server web2 " not in (tmp_path / "haproxy.cfg").read_text()
    assert ("systemctl", "reload-or-restart", "haproxy.service") not in log[2:]  # no reload
    assert f.tick() == "version 1 unchanged"  # nothing more to do
    platform.down(c)
