"""Day 2 on AWS against moto: `apply` changes the web fleet and the desired document the LBs
follow (drain before terminate); an LB's follower fetches it with the LB role and applies each
new version once, refuses a bad one and keeps what runs, and backs off when throttled."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from tests.aws import motofix
from tests.aws.conftest import REGION, aws_plan, flt
from tests.aws.fakehaproxy import FakeHaproxy
from tests.aws.test_aws_iam import lb_session

from hapair.day2.desired import decode
from hapair.day2.follow import Schedule
from hapair.errors import OperationError, UsageError
from hapair.plan import Plan, make_plan
from hapair.platforms.aws import AwsPlatform, desired
from hapair.platforms.aws.day2 import plan_apply, run_apply
from hapair.platforms.aws.follower import Follower, FollowerConfig
from hapair.platforms.aws.layout import make_layout
from hapair.render.haproxy import check_haproxy
from hapair.spec import parse

HAPAIR = str(Path(sys.executable).parent / "hapair")


def running_webs(ec2: Any, cluster: str) -> list[str]:
    """Names of the cluster's web instances that are pending or running."""
    res = ec2.describe_instances(
        Filters=[
            *flt(cluster),
            {"Name": "tag:hapair:role", "Values": ["web"]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
    )
    names = [
        {t["Key"]: t["Value"] for t in i["Tags"]}["hapair:node"]
        for r in res["Reservations"]
        for i in r["Instances"]
    ]
    return sorted(names, key=lambda n: int(n[3:]))


def stored(cluster: str) -> tuple[list[list[str]], int]:
    """The servers of the published document and its version."""
    ssm = boto3.client("ssm", region_name=REGION)
    p = ssm.get_parameter(Name=f"/hapair/{cluster}/desired")["Parameter"]
    return json.loads(p["Value"])["servers"], int(p["Version"])


def test_apply_adds_and_removes_web_instances_and_the_document_follows(
    platform: AwsPlatform, ec2: Any, ami: str, cluster_name: str
) -> None:
    c = cluster_name
    platform.up(aws_plan(c, ami, size=3))
    servers, v1 = stored(c)
    assert [s[0] for s in servers] == ["web1", "web2", "web3"] and v1 == 1
    lbs_before = platform.status(c)["nodes"][:2]

    # Up to 5: two instances launched and running before the new version lists them.
    said: list[str] = []
    plan5 = aws_plan(c, ami, size=5)
    ap = plan_apply(platform, plan5)
    assert [n.name for n in ap.add] == ["web4", "web5"] and ap.remove == ()
    assert "runtime api: servers: add web4" in "\n".join(ap.lines(30))
    version = run_apply(platform, plan5, ap, said.append, 30, sleep=lambda s: None)
    servers, v2 = stored(c)
    assert v2 == version == 2
    assert [s for s in servers] == [[f"web{i}", f"10.20.1.{20 + i}", "ready"] for i in range(1, 6)]
    assert running_webs(ec2, c) == ["web1", "web2", "web3", "web4", "web5"]

    # Down to 2: web3..5 drained in a published version, still running while it is served,
    # then terminated, then the final version without them.
    seen: dict[str, Any] = {}

    def wait(seconds: float) -> None:
        seen["servers"], seen["version"] = stored(c)
        seen["running"] = running_webs(ec2, c)
        seen["seconds"] = seen.get("seconds", 0) + seconds  # LBs that never acknowledge:
        # one poll interval, then the drain timeout (the fixed wait of before)

    plan2 = aws_plan(c, ami, size=2)
    ap = plan_apply(platform, plan2)
    assert [x.name for x in ap.remove] == ["web3", "web4", "web5"] and ap.add == ()
    version = run_apply(platform, plan2, ap, said.append, 7, poll_bound_s=30, sleep=wait)
    assert seen["version"] == 3 and seen["seconds"] == 37
    assert [s[2] for s in seen["servers"]] == ["ready", "ready", "drain", "drain", "drain"]
    assert seen["running"] == ["web1", "web2", "web3", "web4", "web5"]
    servers, v4 = stored(c)
    assert v4 == version == 4 and [s[0] for s in servers] == ["web1", "web2"]
    assert running_webs(ec2, c) == ["web1", "web2"]
    assert platform.status(c)["nodes"][:2] == lbs_before  # the LBs were not touched
    assert any("in drain" in s for s in said) and any("terminated web3" in s for s in said)

    # The same spec again: nothing to change, no new version.
    again = plan_apply(platform, plan2)
    assert again.empty
    platform.down(c)


def lb_ingress(ec2: Any, cluster: str) -> set[tuple[int, str]]:
    """(from port, CIDR) of every CIDR rule of the cluster's LB security group."""
    res = ec2.describe_security_groups(
        Filters=[*flt(cluster), {"Name": "tag:Name", "Values": [f"{cluster}-lb-sg"]}]
    )
    (group,) = res["SecurityGroups"]
    return {
        (perm.get("FromPort", -1), r["CidrIp"])
        for perm in group["IpPermissions"]
        for r in perm.get("IpRanges", [])
    }


def with_changes(plan: Plan, section: str, **fields: Any) -> Plan:
    """``plan`` with ``fields`` of ``section`` changed."""
    data = plan.spec.model_dump(mode="python")
    data[section].update(fields)
    return make_plan(parse(data))


def test_apply_of_admin_cidrs_alone_changes_the_security_groups(
    platform: AwsPlatform, ec2: Any, ami: str, cluster_name: str
) -> None:
    c = cluster_name
    platform.up(aws_plan(c, ami, size=1))
    assert (9022, "192.0.2.0/24") in lb_ingress(ec2, c)
    new = with_changes(aws_plan(c, ami, size=1), "admin", cidrs=["198.51.100.0/24"])
    ap = plan_apply(platform, new)
    assert not ap.empty and not ap.add and not ap.remove and ap.follow.empty
    text = "\n".join(ap.lines(30))
    assert "nothing to change" not in text
    assert (
        f"1. security group {c}-lb-sg: allow tcp 9022-9023 from 198.51.100.0/24; "
        "revoke tcp 9022-9023 from 192.0.2.0/24"
    ) in text
    _, version = stored(c)
    assert run_apply(platform, new, ap, lambda s: None, 30, sleep=lambda s: None) == version
    rules = lb_ingress(ec2, c)
    assert (9022, "198.51.100.0/24") in rules and (9022, "192.0.2.0/24") not in rules
    assert plan_apply(platform, new).empty
    assert stored(c)[1] == version  # no new document: the LBs had nothing to do
    platform.down(c)


def test_a_config_haproxy_refuses_stops_apply_before_anything_changes(
    platform: AwsPlatform, ec2: Any, ami: str, cluster_name: str
) -> None:
    c = cluster_name
    platform.up(aws_plan(c, ami, size=2))
    before = (stored(c), running_webs(ec2, c), lb_ingress(ec2, c))
    checked: list[str] = []

    def refused(text: str) -> None:  # the real haproxy -c, on a config it cannot accept
        checked.append(text)
        check_haproxy(text + "    no-such-keyword\n")

    new = with_changes(aws_plan(c, ami, size=4), "admin", cidrs=["198.51.100.0/24"])
    with pytest.raises(UsageError) as err:
        plan_apply(platform, new, check=refused)
    msg = str(err.value)
    assert msg.startswith("apply: the haproxy.cfg lb1 would render from this spec is refused")
    assert "nothing was changed" in msg and "no-such-keyword" in msg
    assert len(checked) == 1 and "server web4 10.20.1.24:80" in checked[0]
    assert (stored(c), running_webs(ec2, c), lb_ingress(ec2, c)) == before
    # By default the real haproxy -c checks each LB's file (HTTPS with a stand-in certificate).
    ap = plan_apply(platform, with_changes(new, "haproxy", https=True))
    assert ap.checked == "haproxy -c accepts the haproxy.cfg of lb1, lb2"
    assert "  check: haproxy -c accepts the haproxy.cfg of lb1, lb2" in ap.lines(30)
    platform.down(c)


def test_new_web_instances_are_published_only_once_they_serve(
    platform: AwsPlatform, ami: str, cluster_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = cluster_name
    platform.up(aws_plan(c, ami, size=1))
    reads: Counter[str] = Counter()

    def finishes_at_third_read(instance_id: str) -> str:
        reads[instance_id] += 1
        return motofix.CLOUD_INIT_DONE if reads[instance_id] >= 3 else motofix.CLOUD_INIT_RUNNING

    monkeypatch.setattr(motofix, "console", finishes_at_third_read)
    slept: list[tuple[float, int]] = []
    said: list[str] = []
    plan2 = aws_plan(c, ami, size=2)
    ap = plan_apply(platform, plan2)
    version = run_apply(
        platform, plan2, ap, said.append, 30, sleep=lambda s: slept.append((s, stored(c)[1]))
    )
    assert list(reads.values()) == [3]  # web2's console, read until cloud-init was done
    assert slept == [(10.0, 1), (10.0, 1)]  # no new version while web2 did not serve
    assert version == 2 and [s[0] for s in stored(c)[0]] == ["web1", "web2"]
    assert "web2 serves (cloud-init done, web app answers)" in said

    # Never ready: a bounded wait, then a clear error; nothing published.
    clock = [0.0]

    def tick(seconds: float) -> None:
        clock[0] += seconds

    monkeypatch.setattr(motofix, "console", lambda i: motofix.CLOUD_INIT_RUNNING)
    plan3 = aws_plan(c, ami, size=3)
    ap = plan_apply(platform, plan3)
    with pytest.raises(OperationError) as err:
        run_apply(
            platform,
            plan3,
            ap,
            said.append,
            30,
            sleep=tick,
            clock=lambda: clock[0],
            ready_timeout=60,
        )
    assert str(err.value) == (
        "new web instance(s) web3: not ready after 60 s:\n"
        "  web3: cloud-init running modules:final\n"
        "no LB sends them traffic yet; run `hapair apply` again once they serve, "
        "or with a smaller web.size to remove them"
    )
    assert clock[0] == 60 and stored(c)[1] == 2

    # Again: web3 runs but was never published, so it is waited for again, not published
    # blindly. A failed cloud-init cannot get better: no waiting, the failure named.
    failed = motofix.CLOUD_INIT_RUNNING + "\nFailed to run module scripts-user\n"
    monkeypatch.setattr(motofix, "console", lambda i: failed)
    again = plan_apply(platform, plan3)
    assert again.add == () and [n for n, _ in again.unserved] == ["web3"]
    assert "  1. wait until web3 (launched before, never published) serve" in again.lines(30)
    with pytest.raises(OperationError, match="a cloud-init failed:\n  web3: cloud-init error"):
        run_apply(platform, plan3, again, said.append, 30, sleep=tick, clock=lambda: clock[0])
    assert clock[0] == 60 and stored(c)[1] == 2
    monkeypatch.setattr(motofix, "console", lambda i: motofix.CLOUD_INIT_DONE)
    assert run_apply(platform, plan3, again, said.append, 30, sleep=tick) == 3
    assert [s[0] for s in stored(c)[0]] == ["web1", "web2", "web3"]
    platform.down(c)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HAPAIR, *args], capture_output=True, text=True, timeout=300)


def test_dry_run_and_an_invalid_spec_change_nothing(
    platform: AwsPlatform, ec2: Any, ami: str, cluster_name: str, tmp_path: Path
) -> None:
    c = cluster_name
    platform.up(
        aws_plan(
            c,
            ami,
            size=2,
        )
    )
    before = (stored(c), running_webs(ec2, c))
    spec = tmp_path / "hapair.toml"
    base = f'[cluster]\nname = "{c}"\nplatform = "aws"\n[aws]\nami = "{ami}"\n'
    spec.write_text(base + '[web]\nsize = 4\n[admin]\ncidrs = ["192.0.2.0/24"]\n')
    dry = _cli("apply", "--spec", str(spec), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "launch web3, web4 and wait until they run and serve" in dry.stdout
    assert f"/hapair/{c}/desired in us-east-1: version 1" in dry.stdout
    scale = _cli("scale", "--web", "1", "--spec", str(spec), "--dry-run")
    assert scale.returncode == 0, scale.stderr
    assert "publish a version with web2 in drain" in scale.stdout
    spec.write_text(base + '[web]\nsize = 4\n[haproxy]\nbalance = "random"\n')
    bad = _cli("apply", "--spec", str(spec))
    assert bad.returncode == 2 and "haproxy.balance" in bad.stderr, bad.stderr
    assert (stored(c), running_webs(ec2, c)) == before
    platform.down(c)


def follower_for(c: str, tmp_path: Path, fake: FakeHaproxy, ssm: Any, log: list[Any]) -> Follower:
    cfg = FollowerConfig(
        cluster=c,
        node="lb1",
        region=REGION,
        parameter=desired.parameter(c),
        haproxy_cfg=str(tmp_path / "haproxy.cfg"),
        stats_socket=str(fake.path),
        server_state_file=str(tmp_path / "server-state"),
        stats_password_file=str(tmp_path / "stats.password"),
        agent_toml=str(tmp_path / "agent.toml"),
        schedule=Schedule(10, 30, 300),
    )

    def run(argv: tuple[str, ...]) -> None:
        log.append(argv)
        if "haproxy.service" in argv:
            text = (tmp_path / "haproxy.cfg").read_text()
            fake.reload([ln.split()[1] for ln in text.splitlines() if ln.startswith("    server ")])

    return Follower(cfg, ssm, check=lambda text: log.append("haproxy -c"), run=run)


def test_the_follower_applies_each_new_version_once_and_refuses_bad_ones(
    platform: AwsPlatform, ami: str, cluster_name: str, tmp_path: Path, aws_env: str, lb: Any
) -> None:
    c = cluster_name
    platform.up(aws_plan(c, ami, size=2))
    ssm = lb_session(aws_env, c).client("ssm", endpoint_url=aws_env)
    log: list[Any] = []
    f = follower_for(c, tmp_path, lb, ssm, log)
    assert f.tick().startswith("version 1 applied")
    assert log == ["haproxy -c", ("systemctl", "reload-or-restart", "haproxy.service")]
    cfg = (tmp_path / "haproxy.cfg").read_text()
    assert "server web2 10.20.1.22:80 cookie web2 check" in cfg and "pw" in cfg
    assert "server-state-file" in cfg
    assert f.tick() == "version 1 unchanged" and len(log) == 2

    # A third web server: added through the runtime API, no reload; haproxy.cfg follows.
    aws = platform.aws()
    plan3 = aws_plan(c, ami, size=3)
    ap = plan_apply(platform, plan3)
    run_apply(platform, plan3, ap, lambda s: None, 1, sleep=lambda s: None)
    line = f.tick()
    assert line.startswith("version 2 applied") and "runtime api: servers: add web3" in line
    assert len(log) == 3  # haproxy -c only: no reload
    assert any(cmd.startswith("add server web/web3 10.20.1.23:80") for cmd in lb.commands)
    assert "server web3 10.20.1.23:80" in (tmp_path / "haproxy.cfg").read_text()

    # A malformed, then an oversized (inflates too much) version: refused once each, counted,
    # and what runs stays; the next good version applies.
    good = (tmp_path / "haproxy.cfg").read_text()
    raw = boto3.client("ssm", region_name=REGION)
    name = desired.parameter(c)
    raw.put_parameter(Name=name, Value='{"schema": 1}', Type="String", Overwrite=True)
    assert "version 3 rejected" in f.tick() and f.tick().startswith("version 3 was rejected")
    bomb = "z1:" + base64.b64encode(zlib.compress(b" " * 2_000_000, 9)).decode()
    raw.put_parameter(Name=name, Value=bomb, Type="String", Overwrite=True)
    assert "inflates to more than" in f.tick()
    assert f.counters["rejected"] == 2 and f.version == 2
    assert (tmp_path / "haproxy.cfg").read_text() == good and len(log) == 3
    # A changed setting: a seamless reload, the servers' state dumped first and removed after.
    data = aws_plan(c, ami, size=3).spec.model_dump(mode="python")
    data["haproxy"]["balance"] = "leastconn"
    plan_lc = make_plan(parse(data))
    v = desired.publish(aws, c, desired.document(plan_lc, make_layout(plan_lc)))
    line = f.tick()
    assert line.startswith(f"version {v} applied") and "seamless reload" in line
    assert "show servers state" in lb.commands and not (tmp_path / "server-state").exists()
    assert log[-1] == ("systemctl", "reload-or-restart", "haproxy.service")
    assert "balance leastconn" in (tmp_path / "haproxy.cfg").read_text()
    assert decode(raw.get_parameter(Name=name)["Parameter"]["Value"], c) == f.running
    platform.down(c)


def test_the_first_run_as_a_service_does_not_reload_what_the_boot_run_wrote(
    platform: AwsPlatform, ami: str, cluster_name: str, tmp_path: Path, aws_env: str, lb: Any
) -> None:
    # Boot rehearsal, finding 3: the boot run writes haproxy.cfg, HAProxy starts with it, and
    # the follower's first run as a service used to reload it once more for nothing.
    c = cluster_name
    platform.up(aws_plan(c, ami, size=2))
    ssm = lb_session(aws_env, c).client("ssm", endpoint_url=aws_env)
    log: list[Any] = []
    boot = follower_for(c, tmp_path, lb, ssm, log)
    boot.boot = True
    assert boot.tick().startswith("version 1 applied")
    assert log == ["haproxy -c"]  # written, nothing reloaded
    service = follower_for(c, tmp_path, lb, ssm, log)
    assert service.tick().startswith("version 1 applied")
    assert log == ["haproxy -c", "haproxy -c"]  # checked again, not reloaded
    assert not (tmp_path / "haproxy.cfg.boot-digest").exists()  # used once
    # Without the boot run's mark (a restart of the service later), the first run reloads.
    again = follower_for(c, tmp_path, lb, ssm, log)
    again.tick()
    assert log[-1] == ("systemctl", "reload-or-restart", "haproxy.service")
    # A haproxy.cfg changed after the boot run is reloaded even with the mark.
    boot2 = follower_for(c, tmp_path, lb, ssm, log)
    boot2.boot = True
    boot2.tick()
    (tmp_path / "haproxy.cfg").write_text("# edited by hand\n")
    n = len(log)
    follower_for(c, tmp_path, lb, ssm, log).tick()
    assert log[n:][-1] == ("systemctl", "reload-or-restart", "haproxy.service")
    platform.down(c)


class Throttled:
    """An SSM client whose first ``n`` GetParameter calls are throttled."""

    def __init__(self, real: Any, n: int) -> None:
        self.real, self.n, self.calls = real, n, 0

    def get_parameter(self, **kw: Any) -> Any:
        self.calls += 1
        if self.calls <= self.n:
            raise ClientError(
                {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}},
                "GetParameter",
            )
        return self.real.get_parameter(**kw)


def test_a_throttled_fetch_backs_off_then_recovers(
    platform: AwsPlatform, ami: str, cluster_name: str, tmp_path: Path, aws_env: str, lb: Any
) -> None:
    c = cluster_name
    platform.up(aws_plan(c, ami, size=1))
    ssm = Throttled(lb_session(aws_env, c).client("ssm", endpoint_url=aws_env), 4)
    f = follower_for(c, tmp_path, lb, ssm, [])
    calm = max(f.delay() for _ in range(50))
    assert calm <= 30
    lines = [f.tick() for _ in range(4)]
    assert all(x.startswith("throttled: ThrottlingException") for x in lines)
    assert f.failures == 4 and f.counters["throttled"] == 4
    assert max(f.delay() for _ in range(50)) > 30  # backed off beyond the calm interval
    assert all(f.delay() <= 300 for _ in range(50))
    assert f.tick().startswith("version 1 applied") and f.failures == 0
    assert max(f.delay() for _ in range(50)) <= 30
    platform.down(c)
