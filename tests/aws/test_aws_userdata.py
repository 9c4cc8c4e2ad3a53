"""cloud-init user data: what each node needs is in it, nothing secret is, cloud-init's own
validator accepts every node's, and it survives a round trip via EC2."""

from __future__ import annotations

import base64
import gzip
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError
from tests.aws.conftest import FAKE_BUNDLE, aws_plan, decode_user_data, flt

from hapair.agent.config import AgentConfig
from hapair.errors import CloudError
from hapair.plan import make_plan
from hapair.platforms.aws import AwsPlatform, nodes, userdata
from hapair.platforms.aws.client import Aws
from hapair.platforms.aws.instances import find_ami
from hapair.platforms.aws.layout import make_layout
from hapair.platforms.aws.userdata import MAX_USER_DATA, Install, pack, web_user_data
from hapair.spec import parse


def files_of(text: str) -> tuple[dict[str, Any], dict[str, str]]:
    doc = yaml.safe_load(text)
    files = {f["path"]: base64.b64decode(f["content"]).decode() for f in doc["write_files"]}
    return doc, files


def commands(doc: dict[str, Any]) -> list[str]:
    return [" ".join(c) if isinstance(c, list) else c for c in doc["runcmd"]]


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
    return decode_user_data(value["Value"])


def test_lb_and_web_user_data_from_up(
    platform: AwsPlatform, ec2: Any, ami: str, cluster_name: str
) -> None:
    platform.up(aws_plan(cluster_name, ami, size=2))
    st = platform.status(cluster_name)
    vips = {v["name"]: v for v in st["vips"]}
    enis = {n["name"]: n["eni"] for n in st["nodes"] if n["role"] == "lb"}
    bucket = platform.scope(platform.aws(), cluster_name).bucket

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
        # The AWS timing profile (the spec left [ha] at the lab's defaults).
        assert (agent["interval_ms"], agent["deadtime_ms"], agent["initdead_ms"]) == (
            1000,
            5000,
            600_000,
        )
        assert agent["reconcile_interval_ms"] == 1000 and agent["action_timeout_ms"] == 10_000
        by_vip = {v["name"]: v for v in agent["vips"]}
        for vip in (home, away):
            assert by_vip[vip]["driver"] == "aws_eip"
            assert by_vip[vip]["allocation_id"] == vips[vip]["allocation_id"]
            assert by_vip[vip]["address"] == vips[vip]["address"]
            assert by_vip[vip]["eni_id"] == enis[lb]
        # The home VIP on the primary address, the peer's on the secondary (as the seed).
        assert by_vip[home]["private_ip"] == f"10.20.1.1{n}"
        assert by_vip[away]["private_ip"] == f"10.20.1.11{n}"
        sync = yaml.safe_load(files["/etc/hapair/node.json"])
        assert sync["bucket"] == bucket and sync["desired_key"] == f"desired/{lb}.json"
        assert sync["secrets_path"] == f"/hapair/{cluster_name}"
        assert f"ip addr replace 10.20.1.11{n}/24" in files["/usr/local/sbin/hapair-secondary-ip"]
        unit = files["/etc/systemd/system/hapair-agent.service"]
        assert "ExecStart=/opt/hapair/bin/hapair agent --config /etc/hapair/agent.toml" in unit
        for name in ("hapair-agent.service", "hapair-sync.service"):
            assert "StartLimitIntervalSec=0" in files[f"/etc/systemd/system/{name}"]
        assert "Restart=always" in unit
        # The boot counter outlives the agent's restarts: not in /run/hapair (RuntimeDirectory,
        # emptied at each stop) but in the StateDirectory systemd keeps.
        assert agent["boot_file"] == "/var/lib/hapair/boot"
        assert AgentConfig.model_validate(agent).boot_path() == Path("/var/lib/hapair/boot")
        assert agent["api_socket"] == "/run/hapair/agent.sock"
        assert "StateDirectory=hapair\n" in unit and "RuntimeDirectory=hapair\n" in unit
        assert "OnUnitActiveSec=60s" in files["/etc/systemd/system/hapair-sync.timer"]
        assert files[userdata.S3GET] == userdata.S3GET_SOURCE.read_text()
        cmds = commands(doc)
        assert any("apt-get install -y haproxy" in c for c in cmds)
        assert any(
            f"{bucket} {FAKE_BUNDLE.wheel_key}" in c and FAKE_BUNDLE.wheel_sha256 in c for c in cmds
        )
        assert any(f"{bucket} {FAKE_BUNDLE.requirements_key}" in c for c in cmds)
        assert not any('pip install --upgrade "hapair"' in c for c in cmds)  # never by name
        assert any("hapair.platforms.aws.nodesync" in c for c in cmds)
        assert "systemctl enable --now hapair-sync.timer hapair-agent.service" in cmds
        perms = {f["path"]: f["permissions"] for f in doc["write_files"]}
        assert perms["/etc/hapair/agent.toml"] == perms["/etc/hapair/node.json"] == "0600"
        assert "cluster.key" not in perms and "haproxy.cfg" not in " ".join(perms)

    web = user_data_of(ec2, cluster_name, "web2")
    doc, files = files_of(web)
    unit = files["/etc/systemd/system/hapair-webapp.service"]
    assert "-m hapair.webapp --node web2 --address 10.20.1.22 --port 80" in unit
    assert "StartLimitIntervalSec=0" in unit and "cluster.key" not in web
    assert "systemctl enable --now hapair-webapp.service" in commands(doc)
    # cloud-init is done only once the web app answers (what `apply` waits for).
    assert commands(doc)[-1] == userdata.WEB_READY
    assert files[userdata.WEB_READY] == userdata.web_ready_script("10.20.1.22", 80)
    assert any(FAKE_BUNDLE.wheel_key in c for c in commands(doc))

    # A replaced LB gets the same configuration (its secrets come from SSM, not from user data).
    lb2 = next(n for n in st["nodes"] if n["name"] == "lb2")
    before = user_data_of(ec2, cluster_name, "lb2")
    ec2.terminate_instances(InstanceIds=[lb2["instance"]])
    platform.up(aws_plan(cluster_name, ami, size=2))
    assert user_data_of(ec2, cluster_name, "lb2") == before
    new = next(n for n in platform.status(cluster_name)["nodes"] if n["name"] == "lb2")
    assert new["instance"] != lb2["instance"] and new["eni"] == lb2["eni"]
    platform.down(cluster_name)


def rendered(spec: dict[str, Any], install: Install) -> dict[str, str]:
    plan = make_plan(parse({"cluster": {"name": "c1", "platform": "aws"}, **spec}))
    layout = make_layout(plan)
    where = nodes.Placement(
        "eu-west-3",
        "hapair-c1-123456789012-eu-west-3",
        {
            "vip1": {"AllocationId": "eipalloc-1", "PublicIp": "198.51.100.1"},
            "vip2": {"AllocationId": "eipalloc-2", "PublicIp": "198.51.100.2"},
        },
        {"lb1": "eni-1", "lb2": "eni-2"},
        install,
    )
    out = {lb.name: nodes.lb_user_data(plan, layout, lb.name, where) for lb in layout.lbs}
    out |= {w.name: nodes.web_user_data(plan, layout, w.name, where) for w in layout.webs}
    return out


BUCKET_INSTALL = Install(
    "eu-west-3",
    "hapair-c1-123456789012-eu-west-3",
    wheel_key="artifacts/0123456789abcdef/hapair-0.1.0-py3-none-any.whl",
    wheel_sha256="ab" * 32,
    requirements_key="artifacts/0123456789abcdef/requirements.txt",
)


def test_pip_spec_is_an_explicit_override() -> None:
    out = rendered({"web": {"size": 1}}, Install("eu-west-3", "b", pip_spec="hapair==0.1.0"))
    for text in out.values():
        doc, files = files_of(text)
        assert any('pip install --upgrade "hapair==0.1.0"' in c for c in commands(doc))
        assert userdata.S3GET not in files


def test_boot_loads_haproxy_once() -> None:
    # Boot rehearsal, findings 1 and 3: the package started HAProxy with its default config,
    # then the sync, the follower and runcmd each reloaded (or restarted) it. Now apt starts
    # no service (policy-rc.d, removed right after), the sync and the follower only write
    # haproxy.cfg (--boot), and runcmd starts HAProxy once, after both.
    for install in (BUCKET_INSTALL, Install("eu-west-3", "b", pip_spec="hapair==0.1.0")):
        out = rendered({"web": {"size": 1}}, install)
        for lb in ("lb1", "lb2"):
            doc, files = files_of(out[lb])
            assert files[userdata.POLICY_RC_D].splitlines()[-1] == "exit 101"
            cmds = commands(doc)
            apt = next(i for i, c in enumerate(cmds) if "apt-get install -y haproxy" in c)
            assert cmds[apt + 1] == f"rm -f {userdata.POLICY_RC_D}"
            haproxy = [c for c in cmds if "haproxy" in c and "systemctl" in c]
            assert haproxy == ["systemctl enable --now haproxy"], haproxy
            sync = next(i for i, c in enumerate(cmds) if "aws.nodesync" in c)
            follower = next(i for i, c in enumerate(cmds) if "follower" in c and "--once" in c)
            assert "--boot" in cmds[sync] and "--boot" in cmds[follower]
            assert cmds.index("systemctl enable --now haproxy") > max(sync, follower)


def test_boot_sync_and_follower_reload_nothing() -> None:
    from hapair.platforms.aws.nodesync import SyncResult, service_actions

    changed = SyncResult(key=False, token=True, haproxy=True, generation="1", backends=1)
    assert ["systemctl", "reload-or-restart", "haproxy.service"] in service_actions(changed)
    assert service_actions(changed, boot=True) == [
        ["systemctl", "try-restart", "hapair-agent.service"]
    ]


def test_web_nodes_install_hapair_without_the_lbs_dependencies() -> None:
    # Boot rehearsal, finding 4: the demo web app needs the standard library only.
    for install in (BUCKET_INSTALL, Install("eu-west-3", "b", pip_spec="hapair==0.1.0")):
        out = rendered({"web": {"size": 2}}, install)
        for web in ("web1", "web2"):
            cmds = commands(files_of(out[web])[0])
            assert not any("requirements" in c for c in cmds), cmds
            assert not any("haproxy" in c for c in cmds)
            pips = [c for c in cmds if "/opt/hapair/bin/pip install" in c]
            assert pips and all("--no-deps" in c or "PIP_NO_DEPS=1 " in c for c in pips), pips
        lb_cmds = commands(files_of(out["lb1"])[0])
        if not install.pip_spec:
            assert any("pip install -r /opt/hapair/requirements.txt" in c for c in lb_cmds)
    # What a web node runs imports nothing but the standard library and hapair itself.
    code = (
        "import sys, hapair.webapp.__main__; "
        "bad = sorted(m.split('.')[0] for m in sys.modules if m.split('.')[0] in "
        "{'boto3', 'botocore', 'pydantic', 'jinja2', 'typer', 'httpx', 'pyroute2', "
        "'prometheus_client', 'rich'}); "
        "print(','.join(bad))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr


def test_every_node_runs_with_the_c_utf8_locale() -> None:
    # Boot rehearsal, finding 5: cloud-init's default locale (en_US.UTF-8) is not generated
    # on a minimal Debian; C.UTF-8 always is.
    for text in rendered({"web": {"size": 2}}, BUCKET_INSTALL).values():
        assert files_of(text)[0]["locale"] == "C.UTF-8"


@pytest.mark.skipif(
    shutil.which("cloud-init") is None, reason="cloud-init is not installed (make setup)"
)
@pytest.mark.parametrize(
    ("spec", "install"),
    [
        ({"web": {"size": 2}}, BUCKET_INSTALL),
        (
            {"web": {"size": 1}, "haproxy": {"https": True}, "aws": {"second_az": True}},
            BUCKET_INSTALL,
        ),
        ({"web": {"size": 1}}, Install("eu-west-3", "b", pip_spec="hapair==0.1.0")),
    ],
    ids=["bucket", "https-second-az", "pip-spec"],
)
def test_cloud_init_validates_every_nodes_user_data(
    spec: dict[str, Any], install: Install, tmp_path: Path
) -> None:
    for node, text in rendered(spec, install).items():
        path = tmp_path / f"{node}.yaml"
        path.write_text(text)
        proc = subprocess.run(
            ["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True
        )
        assert proc.returncode == 0, f"{node}: {proc.stdout}{proc.stderr}"
        assert "Valid cloud-config" in proc.stdout
        assert len(pack(text)) <= MAX_USER_DATA


def test_pack_compresses_only_when_needed() -> None:
    small = web_user_data(
        cluster="c", node="web1", address="10.0.0.1", port=80, install=BUCKET_INSTALL
    )
    assert pack(small) == small.encode()
    big = small + "# filler\n" * 3000
    packed = pack(big)
    assert len(packed) <= MAX_USER_DATA and gzip.decompress(packed).decode() == big


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


def test_lbs_load_the_silence_rule_before_haproxy_and_webs_do_not(tmp_path: Path) -> None:
    # A crashed HAProxy on a live kernel must drop, not refuse, new connections to the
    # private addresses the EC2 edge translates the EIPs to (ordinary clients retry a SYN,
    # never a reset); the peer LB's probe is still refused.
    out = rendered({"web": {"size": 1}}, BUCKET_INSTALL)
    layout = make_layout(make_plan(parse({"cluster": {"name": "c1", "platform": "aws"}})))
    me = layout.node("lb1")
    group = [a for n in layout.lbs for a in (n.private_ip, n.secondary_ip) if a]
    doc, files = files_of(out["lb1"])
    rules = files[userdata.SILENCE_NFT]
    assert f"elements = {{ {me.private_ip}, {me.secondary_ip} }}" in rules
    assert f"elements = {{ {', '.join(group)} }}" in rules
    assert "ip saddr != @lb_group tcp dport { 80 } ct state new counter name silenced drop" in rules
    unit = files["/etc/systemd/system/hapair-silence.service"]
    assert f"ExecStart=/usr/sbin/nft -f {userdata.SILENCE_NFT}" in unit
    assert "Before=haproxy.service" in unit
    cmds = commands(doc)
    assert any("apt-get install -y" in c and "nftables" in c for c in cmds)
    silence = cmds.index("systemctl enable --now hapair-silence.service")
    assert silence < cmds.index("systemctl enable --now haproxy")
    _, web_files = files_of(out["web1"])
    assert userdata.SILENCE_NFT not in web_files
    # nftables itself accepts the ruleset (checked, not applied).
    if shutil.which("nft"):
        path = tmp_path / "silence.nft"
        path.write_text(rules)
        check = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_the_web_ready_step_ends_once_the_web_app_answers(tmp_path: Path) -> None:
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    def run(port: int, tries: int) -> subprocess.CompletedProcess[str]:
        text = userdata.web_ready_script("127.0.0.1", port, tries)
        script = tmp_path / "ready"
        script.write_text(text.replace(f"{userdata.VENV}/bin/python", sys.executable))
        return subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=60)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert run(server.server_address[1], 3).returncode == 0
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    done = run(free, 2)
    assert done.returncode == 1
    assert done.stderr == f"hapair: the web app does not answer http://127.0.0.1:{free}/health\n"
