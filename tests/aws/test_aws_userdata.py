"""cloud-init user data: what each node needs is in it, and it survives a round trip via EC2."""

from __future__ import annotations

import base64
import gzip
import tomllib
from typing import Any

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError
from tests.aws.conftest import aws_plan, flt

from hapair.errors import CloudError
from hapair.platforms.aws import AwsPlatform
from hapair.platforms.aws.client import Aws
from hapair.platforms.aws.instances import find_ami
from hapair.platforms.aws.userdata import (
    MAX_USER_DATA,
    Secrets,
    lb_user_data,
    pack,
    secrets_from,
    web_user_data,
)


def files_of(text: str) -> tuple[dict[str, Any], dict[str, str]]:
    doc = yaml.safe_load(text)
    files = {f["path"]: base64.b64decode(f["content"]).decode() for f in doc["write_files"]}
    return doc, files


def user_data_of(ec2: Any, cluster: str, node: str) -> str:
    res = ec2.describe_instances(
        Filters=[
            *flt(cluster),
            {"Name": "tag:hapair:node", "Values": [node]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
    )
    iid = res["Reservations"][0]["Instances"][0]["InstanceId"]
    value = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]
    raw = base64.b64decode(value["Value"])
    return (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()


def test_lb_and_web_user_data_from_up(
    platform: AwsPlatform, ec2: Any, ami: str, cluster_name: str
) -> None:
    platform.up(aws_plan(cluster_name, ami, size=2))
    st = platform.status(cluster_name)
    vips = {v["name"]: v for v in st["vips"]}
    enis = {n["name"]: n["eni"] for n in st["nodes"] if n["role"] == "lb"}

    for lb, peer, home, away in (("lb1", "lb2", "vip1", "vip2"), ("lb2", "lb1", "vip2", "vip1")):
        text = user_data_of(ec2, cluster_name, lb)
        assert text.startswith("#cloud-config\n")
        doc, files = files_of(text)
        agent = tomllib.loads(files["/etc/hapair/agent.toml"])
        assert agent["node"] == lb and agent["peer"] == peer and agent["aws_region"] == "us-east-1"
        n = 1 if lb == "lb1" else 2
        p = 3 - n
        assert agent["peer_addresses"] == [f"10.20.1.1{p}", f"10.20.1.11{p}"]
        assert agent["ping_nodes"] == ["10.20.1.1"]
        by_vip = {v["name"]: v for v in agent["vips"]}
        for vip in (home, away):
            assert by_vip[vip]["driver"] == "aws_eip"
            assert by_vip[vip]["allocation_id"] == vips[vip]["allocation_id"]
            assert by_vip[vip]["address"] == vips[vip]["address"]
            assert by_vip[vip]["eni_id"] == enis[lb]
        # The home VIP on the primary address, the peer's on the secondary (as the seed).
        assert by_vip[home]["private_ip"] == f"10.20.1.1{n}"
        assert by_vip[away]["private_ip"] == f"10.20.1.11{n}"
        cfg = files["/etc/hapair/haproxy.cfg"]
        assert "10.20.1.21" in cfg and "10.20.1.22" in cfg and "/run/haproxy/admin.sock" in cfg
        assert f"ip addr replace 10.20.1.11{n}/24" in files["/usr/local/sbin/hapair-secondary-ip"]
        unit = files["/etc/systemd/system/hapair-agent.service"]
        assert "ExecStart=/opt/hapair/bin/hapair agent --config /etc/hapair/agent.toml" in unit
        assert len(files["/etc/hapair/cluster.key"].strip()) == 64
        commands = [" ".join(c) if isinstance(c, list) else c for c in doc["runcmd"]]
        assert any("apt-get install -y haproxy" in c for c in commands)
        assert any('pip install --upgrade "hapair"' in c for c in commands)
        assert "systemctl enable --now hapair-agent.service" in commands
        perms = {f["path"]: f["permissions"] for f in doc["write_files"]}
        assert perms["/etc/hapair/cluster.key"] == perms["/etc/hapair/agent.toml"] == "0600"

    # Both LBs share the cluster's secrets.
    one = secrets_from(user_data_of(ec2, cluster_name, "lb1"))
    assert one is not None and one == secrets_from(user_data_of(ec2, cluster_name, "lb2"))

    web = user_data_of(ec2, cluster_name, "web2")
    doc, files = files_of(web)
    unit = files["/etc/systemd/system/hapair-webapp.service"]
    assert "-m hapair.webapp --node web2 --address 10.20.1.22 --port 80" in unit
    assert secrets_from(web) is None and "cluster.key" not in web
    assert "systemctl enable --now hapair-webapp.service" in [" ".join(c) for c in doc["runcmd"]]

    # A replaced LB gets the same secrets from its peer's user data.
    lb2 = next(n for n in st["nodes"] if n["name"] == "lb2")
    ec2.terminate_instances(InstanceIds=[lb2["instance"]])
    platform.up(aws_plan(cluster_name, ami, size=2))
    assert secrets_from(user_data_of(ec2, cluster_name, "lb2")) == one
    new = next(n for n in platform.status(cluster_name)["nodes"] if n["name"] == "lb2")
    assert new["instance"] != lb2["instance"] and new["eni"] == lb2["eni"]
    platform.down(cluster_name)


def test_pack_compresses_only_when_needed() -> None:
    small = web_user_data(cluster="c", node="web1", address="10.0.0.1", port=80, pip_spec="hapair")
    assert pack(small) == small.encode()
    big = lb_user_data(
        cluster="c",
        node="lb1",
        haproxy_cfg="# filler\n" * 3000,
        agent_toml="x = 1\n",
        secrets=Secrets("k" * 64, "t" * 64, "p" * 24),
        secondary_ip="10.0.0.111",
        prefixlen=24,
        gateway="10.0.0.1",
        pip_spec="hapair",
    )
    packed = pack(big)
    assert len(packed) <= MAX_USER_DATA and gzip.decompress(packed).decode() == big
    assert secrets_from(packed.decode("latin-1")) == Secrets("k" * 64, "t" * 64, "p" * 24)


class FakeSsm:
    def get_parameter(self, **kw: Any) -> Any:
        raise ClientError({"Error": {"Code": "ParameterNotFound", "Message": "no"}}, "GetParameter")


class FakeEc2:
    def __init__(self, images: dict[str, list[dict[str, str]]]) -> None:
        self.images = images

    def describe_images(self, **kw: Any) -> Any:
        return {"Images": self.images.get(kw["Owners"][0], [])}


def fake_aws(ssm: Any, ec2: Any) -> Aws:
    session = boto3.Session(region_name="us-east-1")
    return Aws(session, _clients={"ssm": ssm, "ec2": ec2})


def test_ami_from_ssm_then_name_filter() -> None:
    class Ssm:
        def get_parameter(self, **kw: Any) -> Any:
            assert kw["Name"] == "/aws/service/debian/release/12/latest/amd64"
            return {"Parameter": {"Value": "ami-0debian12"}}

    assert find_ami(fake_aws(Ssm(), FakeEc2({}))) == "ami-0debian12"
    newest = FakeEc2(
        {
            "136693071363": [
                {"ImageId": "ami-old", "CreationDate": "2024-01-01T00:00:00.000Z"},
                {"ImageId": "ami-new", "CreationDate": "2025-01-01T00:00:00.000Z"},
            ]
        }
    )
    assert find_ami(fake_aws(FakeSsm(), newest)) == "ami-new"
    ubuntu = FakeEc2({"099720109477": [{"ImageId": "ami-noble", "CreationDate": "2025"}]})
    assert find_ami(fake_aws(FakeSsm(), ubuntu)) == "ami-noble"
    assert find_ami(fake_aws(FakeSsm(), FakeEc2({})), "ami-given") == "ami-given"
    with pytest.raises(CloudError) as err:
        find_ami(fake_aws(FakeSsm(), FakeEc2({})))
    assert err.value.code == "AmiNotFound"
