"""Secrets in SSM Parameter Store, never in user data; the LB's node sync (secrets, key rotation
with an overlap, the desired haproxy.cfg); and LBs that follow a web size change."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.aws.conftest import REGION, aws_plan, decode_user_data, flt
from tests.aws.test_aws_iam import lb_session

from hapair.agent.keyring import load_keyset, previous_path
from hapair.platforms.aws import secrets
from hapair.platforms.aws.nodes import desired_key
from hapair.platforms.aws.nodesync import (
    STATS_PASSWORD_PLACEHOLDER,
    NodeConfig,
    service_actions,
    sync_once,
)


def user_data_of(ec2: Any, instance: str) -> str:
    value = ec2.describe_instance_attribute(InstanceId=instance, Attribute="userData")
    return decode_user_data(value["UserData"]["Value"])


def every_text_in(user_data: str) -> str:
    """The user data and every file it writes, decoded."""
    doc = yaml.safe_load(user_data)
    files = [base64.b64decode(f["content"]).decode() for f in doc.get("write_files", [])]
    return "\n".join([user_data, *files])


def test_secrets_are_secure_strings_of_the_cluster_and_never_in_user_data(
    platform: Any, ec2: Any, ami: str, cluster_name: str
) -> None:
    platform.up(aws_plan(cluster_name, ami, size=2))
    ssm = platform.aws().ssm
    params = ssm.describe_parameters(
        ParameterFilters=[
            {"Key": "Path", "Option": "Recursive", "Values": [f"/hapair/{cluster_name}"]}
        ]
    )["Parameters"]
    assert sorted(p["Name"] for p in params) == sorted(
        f"/hapair/{cluster_name}/{s}"
        for s in ("cluster-key", "admin-token", "stats-password", "desired")
    )
    # Every secret is a SecureString; the LBs' desired document holds none (a String).
    assert {p["Name"].rsplit("/", 1)[1]: p["Type"] for p in params} == {
        "cluster-key": "SecureString",
        "admin-token": "SecureString",
        "stats-password": "SecureString",
        "desired": "String",
    }
    for p in params:
        tags = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=p["Name"])["TagList"]
        assert {"Key": "hapair:cluster", "Value": cluster_name} in tags
    values = secrets.read_secrets(platform.aws(), cluster_name)
    stored = ssm.get_parameter(Name=f"/hapair/{cluster_name}/desired")["Parameter"]["Value"]
    assert not any(v in stored for v in values.values())
    assert len(values["cluster-key"]) == 64 and len(values["admin-token"]) == 64
    reservations = ec2.describe_instances(Filters=flt(cluster_name))["Reservations"]
    instances = [i["InstanceId"] for r in reservations for i in r["Instances"]]
    assert len(instances) == 4
    for iid in instances:
        text = every_text_in(user_data_of(ec2, iid))
        for value in values.values():
            assert value not in text
            assert base64.b64encode(value.encode()).decode() not in text
    # A second up keeps the secrets; rotating changes every value.
    platform.up(aws_plan(cluster_name, ami, size=2))
    assert secrets.read_secrets(platform.aws(), cluster_name) == values
    assert platform.rotate_secrets(cluster_name, []) == list(secrets.SECRETS)
    rotated = secrets.read_secrets(platform.aws(), cluster_name)
    assert all(rotated[k] != values[k] for k in values)
    platform.down(cluster_name)
    assert secrets.existing(platform.aws(), cluster_name) == {}


def sync_config(platform: Any, cluster: str, tmp: Path) -> NodeConfig:
    return NodeConfig(
        cluster=cluster,
        node="lb1",
        region=REGION,
        bucket=platform.scope(platform.aws(), cluster).bucket,
        desired_key=desired_key("lb1"),
        secrets_path=secrets.path(cluster),
        key_file=str(tmp / "cluster.key"),
        token_file=str(tmp / "admin.token"),
        haproxy_cfg=str(tmp / "haproxy.cfg"),
        overlap_s=120.0,
    )


@pytest.fixture
def lb1(
    platform: Any, aws_env: str, ami: str, cluster_name: str, tmp_path: Path
) -> Iterator[tuple[NodeConfig, Any, Any]]:
    """A cluster with two webs, and what lb1's node sync has: its config and SSM and S3
    clients with the LB role's credentials."""
    platform.up(aws_plan(cluster_name, ami, size=2))
    role = lb_session(aws_env, cluster_name)
    yield (
        sync_config(platform, cluster_name, tmp_path),
        role.client("ssm", endpoint_url=aws_env),
        role.client("s3", endpoint_url=aws_env),
    )
    platform.down(cluster_name)


def test_node_sync_installs_secrets_and_config_and_rotates_the_key_with_an_overlap(
    platform: Any, cluster_name: str, lb1: tuple[NodeConfig, Any, Any]
) -> None:
    cfg, ssm, s3 = lb1
    checked: list[str] = []
    first = sync_once(cfg, ssm, s3, now=1000.0, check=checked.append)
    values = secrets.read_secrets(platform.aws(), cluster_name)
    assert first.haproxy and not first.key and not first.token and first.backends == 2
    assert service_actions(first) == [["systemctl", "reload-or-restart", "haproxy.service"]]
    cfg_text = Path(cfg.haproxy_cfg).read_text()
    assert checked == [cfg_text]  # checked (haproxy -c) before it was installed
    assert STATS_PASSWORD_PLACEHOLDER not in cfg_text and values["stats-password"] in cfg_text
    assert Path(cfg.key_file).read_text().strip() == values["cluster-key"]
    assert Path(cfg.token_file).read_text().strip() == values["admin-token"]
    for f in (cfg.key_file, cfg.token_file, cfg.haproxy_cfg):
        assert Path(f).stat().st_mode & 0o777 == 0o600
    again = sync_once(cfg, ssm, s3, now=1060.0, check=checked.append)
    assert not (again.haproxy or again.key or again.token) and service_actions(again) == []
    # A rotation: the new key is installed, the old one kept for the overlap.
    platform.rotate_secrets(cluster_name, ["cluster-key"])
    new = secrets.read_secrets(platform.aws(), cluster_name)["cluster-key"]
    rotated = sync_once(cfg, ssm, s3, now=2000.0, check=checked.append)
    assert rotated.key and not rotated.token and not rotated.haproxy
    assert service_actions(rotated) == []  # the agent takes a new key without a restart
    keys = load_keyset(Path(cfg.key_file))
    assert keys.current.hex() == new and keys.previous is not None
    assert keys.previous.hex() == values["cluster-key"]
    assert (keys.switch_at, keys.drop_at) == (2120.0, 2240.0)
    assert previous_path(Path(cfg.key_file)).stat().st_mode & 0o777 == 0o600


def test_a_web_size_change_updates_what_the_lbs_serve(
    platform: Any, ami: str, cluster_name: str, lb1: tuple[NodeConfig, Any, Any]
) -> None:
    cfg, ssm, s3 = lb1

    def desired() -> dict[str, Any]:
        body = s3.get_object(Bucket=cfg.bucket, Key=cfg.desired_key)["Body"].read()
        return dict(json.loads(body))

    doc = desired()
    assert [b["address"] for b in doc["backends"]] == ["10.20.1.21", "10.20.1.22"]
    sync_once(cfg, ssm, s3, check=lambda text: None)
    assert "10.20.1.23" not in Path(cfg.haproxy_cfg).read_text()
    platform.up(aws_plan(cluster_name, ami, size=3))
    bigger = desired()
    assert [b["name"] for b in bigger["backends"]] == ["web1", "web2", "web3"]
    assert bigger["generation"] != doc["generation"]
    applied = sync_once(cfg, ssm, s3, check=lambda text: None)
    assert applied.haproxy and applied.backends == 3
    assert "10.20.1.23" in Path(cfg.haproxy_cfg).read_text()
    platform.up(aws_plan(cluster_name, ami, size=1))
    assert [b["name"] for b in desired()["backends"]] == ["web1"]
    assert sync_once(cfg, ssm, s3, check=lambda text: None).backends == 1
    assert "10.20.1.22" not in Path(cfg.haproxy_cfg).read_text()


def test_an_lb_that_follows_the_desired_document_gets_the_stats_password_in_a_file(
    platform: Any, ami: str, cluster_name: str, lb1: tuple[NodeConfig, Any, Any], tmp_path: Path
) -> None:
    cfg, ssm, s3 = lb1
    follow = replace(
        cfg,
        desired_parameter=f"/hapair/{cluster_name}/desired",
        stats_password_file=str(tmp_path / "stats.password"),
    )
    res = sync_once(follow, ssm, s3, check=lambda text: None)
    assert not res.haproxy and not Path(cfg.haproxy_cfg).exists()  # the follower owns it
    password = secrets.read_secrets(platform.aws(), cluster_name)["stats-password"]
    assert Path(follow.stats_password_file).read_text() == password + "\n"
    assert Path(follow.stats_password_file).stat().st_mode & 0o777 == 0o600
