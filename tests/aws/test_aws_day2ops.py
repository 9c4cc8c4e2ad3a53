"""Day 2 on AWS beyond apply, against moto: `restart` and `cert rotate` reach the LBs through
the desired document (no SSH, no instance replaced), each LB acknowledges what it applied with
the tag hapair:applied on its own instance, and `apply` waits for those acknowledgements instead
of a fixed time. Each LB is a real follower (the LB role's credentials) in front of a fake
HAProxy (tests/aws/fakehaproxy.py), a fake agent (tests/aws/fakeagent.py) and a fake systemctl."""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from tests.aws.conftest import REGION, aws_plan, flt
from tests.aws.fakeagent import FakeAgent
from tests.aws.fakehaproxy import FakeHaproxy
from tests.aws.test_aws_day2 import _cli, running_webs, stored
from tests.aws.test_aws_iam import lb_session

from hapair.day2.desired import CertRef
from hapair.day2.follow import Schedule
from hapair.day2.pem import digest, self_signed
from hapair.errors import OperationError, UsageError
from hapair.plan import Plan, make_plan
from hapair.platforms.aws import AwsPlatform, acks, certs, desired
from hapair.platforms.aws.acks import TagAcknowledger
from hapair.platforms.aws.day2 import plan_apply, run_apply
from hapair.platforms.aws.day2ops import cert_rotate, restart
from hapair.platforms.aws.follower import Follower, FollowerConfig
from hapair.platforms.aws.lbrestart import RestartConfig
from hapair.spec import parse

TOKEN = "t0ken"
HAPROXY_RESTART = ("systemctl", "restart", "haproxy.service")
AGENT_RESTART = ("systemctl", "restart", "hapair-agent.service")


def instance_ids(ec2: Any, cluster: str) -> dict[str, str]:
    """Node -> its running instance id."""
    res = ec2.describe_instances(
        Filters=[*flt(cluster), {"Name": "instance-state-name", "Values": ["running"]}]
    )
    return {
        {t["Key"]: t["Value"] for t in i["Tags"]}["hapair:node"]: i["InstanceId"]
        for r in res["Reservations"]
        for i in r["Instances"]
    }


class World:
    """What the two agents do to the EIPs on AWS, done through moto: a standby hands the LB's
    EIPs to its peer; after a restart, the home EIP comes back (the failback) at the next
    round of the operator's waits."""

    def __init__(self, ec2: Any, platform: AwsPlatform, cluster: str) -> None:
        self.ec2 = ec2
        nodes = {n["name"]: n for n in platform.status(cluster)["nodes"]}
        self.eni = {lb: nodes[lb]["eni"] for lb in ("lb1", "lb2")}
        self.ip = {lb: (nodes[lb]["address"], nodes[lb]["secondary"]) for lb in ("lb1", "lb2")}
        res = ec2.describe_addresses(Filters=flt(cluster))["Addresses"]
        self.alloc = {
            {t["Key"]: t["Value"] for t in a["Tags"]}["hapair:vip"]: a["AllocationId"] for a in res
        }
        self.failbacks: list[str] = []

    def put(self, vip: str, lb: str) -> None:
        home = {"vip1": "lb1", "vip2": "lb2"}[vip] == lb
        self.ec2.associate_address(
            AllocationId=self.alloc[vip],
            NetworkInterfaceId=self.eni[lb],
            PrivateIpAddress=self.ip[lb][0 if home else 1],
            AllowReassociation=True,
        )

    def rounds(self) -> None:
        for lb in self.failbacks:
            self.put("vip1" if lb == "lb1" else "vip2", lb)
        self.failbacks.clear()


class Lb:
    """One LB: its follower (the LB role's SSM and EC2 clients) and what it drives."""

    def __init__(
        self, node: str, tmp: Path, cluster: str, aws_env: str, world: World, instance: str
    ) -> None:
        self.node, self.tmp, self.world = node, tmp, world
        peer = "lb2" if node == "lb1" else "lb1"
        tmp.mkdir()
        (tmp / "stats.password").write_text("pw\n")
        (tmp / "admin.token").write_text(TOKEN + "\n")
        self.haproxy = FakeHaproxy(tmp / "admin.sock")
        home = "vip1" if node == "lb1" else "vip2"
        self.agent = FakeAgent(
            tmp / "agent.sock", node, peer, TOKEN, [home], on_standby=self.standby
        )
        self.agent.peer_held = ["vip2" if node == "lb1" else "vip1"]
        self.run_log: list[tuple[str, ...]] = []
        self.checks: list[str] = []
        self.refuse_check = ""
        role = lb_session(aws_env, cluster)
        cfg = FollowerConfig(
            cluster=cluster,
            node=node,
            region=REGION,
            parameter=desired.parameter(cluster),
            haproxy_cfg=str(tmp / "haproxy.cfg"),
            stats_socket=str(self.haproxy.path),
            server_state_file=str(tmp / "server-state"),
            stats_password_file=str(tmp / "stats.password"),
            cert_file=str(tmp / "cert.pem"),
            agent_toml=str(tmp / "agent.toml"),
            schedule=Schedule(10, 30, 300),
            state_file=str(tmp / "follower.json"),
            restart=RestartConfig(
                agent_socket=str(tmp / "agent.sock"),
                token_file=str(tmp / "admin.token"),
                move_timeout_s=5,
                haproxy_timeout_s=5,
                healthy_timeout_s=5,
            ),
        )
        self.follower = Follower(
            cfg,
            role.client("ssm", endpoint_url=aws_env),
            check=self.check,
            run=self.run,
            ack=TagAcknowledger(role.client("ec2", endpoint_url=aws_env), cluster, node, instance),
            sleep=lambda s: None,
        )

    def check(self, text: str) -> None:
        self.checks.append(text)
        if self.refuse_check:
            raise OperationError(f"haproxy -c refused the config: {self.refuse_check}")

    def standby(self) -> None:
        self.world.put(
            "vip1" if self.node == "lb1" else "vip2", "lb2" if self.node == "lb1" else "lb1"
        )

    def run(self, argv: tuple[str, ...]) -> None:
        self.run_log.append(argv)
        if argv == HAPROXY_RESTART or "haproxy.service" in argv:
            text = (self.tmp / "haproxy.cfg").read_text()
            self.haproxy.reload(
                [x.split()[1] for x in text.splitlines() if x.startswith("    server ")]
            )
        elif argv == AGENT_RESTART:
            self.agent.restart()
            self.world.failbacks.append(self.node)

    def close(self) -> None:
        self.haproxy.close()
        self.agent.close()


@pytest.fixture
def pair(
    platform: AwsPlatform, ec2: Any, ami: str, cluster_name: str, tmp_path: Path, aws_env: str
) -> Any:
    """Start a cluster with ``plan`` (default: 2 web nodes) and its two LBs' followers."""
    made: list[Lb] = []

    def make(plan: Plan | None = None) -> tuple[dict[str, Lb], World]:
        platform.up(plan or aws_plan(cluster_name, ami, size=2))
        world = World(ec2, platform, cluster_name)
        ids = instance_ids(ec2, cluster_name)
        lbs = {n: Lb(n, tmp_path / n, cluster_name, aws_env, world, ids[n]) for n in ("lb1", "lb2")}
        made.extend(lbs.values())
        return lbs, world

    yield make
    for lb in made:
        lb.close()
    platform.down(cluster_name)


def tags(ec2: Any, cluster: str) -> dict[str, str]:
    """LB -> its hapair:applied tag."""
    ids = instance_ids(ec2, cluster)
    res = ec2.describe_instances(InstanceIds=[ids["lb1"], ids["lb2"]])
    return {
        t["hapair:node"]: t.get("hapair:applied", "")
        for t in (
            {x["Key"]: x["Value"] for x in i["Tags"]}
            for r in res["Reservations"]
            for i in r["Instances"]
        )
    }


def test_a_rolling_restart_goes_through_each_lbs_follower_and_is_acknowledged(
    platform: AwsPlatform, ec2: Any, cluster_name: str, pair: Any
) -> None:
    c = cluster_name
    lbs, world = pair()
    for lb in lbs.values():
        assert lb.follower.tick().startswith("version 1 applied")
    assert tags(ec2, c) == {"lb1": "1 applied", "lb2": "1 applied"}
    aws = platform.aws()
    plan = aws_plan(c, "ami-x", size=2)
    said: list[str] = []
    rounds: list[str] = []

    def poll(seconds: float) -> None:  # the LBs' followers poll while the operator waits
        rounds.append(f"{seconds:g}")
        world.rounds()  # failbacks the last round started
        for lb in lbs.values():
            lb.follower.tick()

    # lb1's agent does not hear lb2: the restart is refused on lb1, named, and nothing moved.
    lbs["lb1"].agent.peer_state = "dead"
    with pytest.raises(OperationError) as err:
        restart(aws, plan, ["lb1"], said.append, sleep=poll)
    assert str(err.value) == (
        "lb1 refused version 2: restart lb1: its peer lb2 is not healthy and online (peer "
        "state dead), so it cannot serve both EIPs; nothing was done"
    )
    assert "POST /standby" not in lbs["lb1"].agent.calls and lbs["lb1"].run_log == [
        ("systemctl", "reload-or-restart", "haproxy.service")
    ]
    assert tags(ec2, c)["lb2"] == "2 applied"  # nothing asked of lb2: applied as is
    assert tags(ec2, c)["lb1"].startswith("2 refused: restart lb1: its peer lb2 is not")

    # Both well: lb1, then lb2, each standby -> restart HAProxy, agent -> online -> EIPs back.
    lbs["lb1"].agent.peer_state = "up"
    said.clear()
    restart(aws, plan, ["lb1", "lb2"], said.append, sleep=poll)
    for name, lb in lbs.items():
        assert lb.run_log[-2:] == [HAPROXY_RESTART, AGENT_RESTART], name
        posts = [x for x in lb.agent.calls if x.startswith("POST")]
        assert posts == ["POST /standby", "POST /online"], name
        assert lb.agent.boots == 2 and not lb.agent.standby
    # lb1's refused generation 1 counts as asked: this restart is its generation 2.
    assert json.loads((lbs["lb1"].tmp / "follower.json").read_text()) == {"restart": 2}
    assert json.loads((lbs["lb2"].tmp / "follower.json").read_text()) == {"restart": 1}
    assert said[0] == "version 3: restart lb1 (generation 2); its follower takes it within 30 s"
    assert "EIPs: vip1 on lb2, vip2 on lb2" in said and "lb1 holds vip1 again" in said
    assert "EIPs: vip1 on lb1, vip2 on lb1" in said and said[-1] == "lb2 holds vip2 again"
    assert said.index("EIPs: vip1 on lb2, vip2 on lb2") < said.index("lb1 holds vip1 again")
    doc, version = desired.current(aws, c)
    assert doc is not None and dict(doc.restarts) == {"lb1": 2, "lb2": 1} and version == 4
    assert tags(ec2, c) == {"lb1": "4 applied", "lb2": "4 applied"}
    # Done once: later polls do not restart again, and the waits were rounds, not one sleep.
    for lb in lbs.values():
        assert lb.follower.tick() == "version 4 unchanged"
        assert lb.run_log.count(AGENT_RESTART) == 1
    assert set(rounds) == {"2"}
    # A fresh follower (a replaced LB: no state) takes the current generation as done.
    fresh = lbs["lb1"]
    (fresh.tmp / "follower.json").unlink()
    fresh.follower.restarted = None
    fresh.follower.version = 0
    assert "restart" not in fresh.follower.tick()
    assert fresh.run_log.count(AGENT_RESTART) == 1


def ssl_changes(lb: Lb) -> list[str]:
    """The first line of each certificate change sent to ``lb``'s HAProxy."""
    return [
        x.split("\n")[0]
        for x in lb.haproxy.commands
        if x.startswith(("set ssl cert", "commit ssl cert", "abort ssl cert"))
    ]


def https_plan(cluster: str, ami: str, size: int = 2) -> Plan:
    data = aws_plan(cluster, ami, size=size).spec.model_dump(mode="python")
    data["haproxy"]["https"] = True
    return make_plan(parse(data))


def test_cert_rotate_puts_a_new_certificate_live_through_the_runtime_api(
    platform: AwsPlatform, ec2: Any, ami: str, cluster_name: str, pair: Any, tmp_path: Path
) -> None:
    c = cluster_name
    plan = https_plan(c, ami)
    lbs, _world = pair(plan)
    aws = platform.aws()
    raw = boto3.client("ssm", region_name=REGION)
    # `up` with HTTPS put one certificate for both LBs; they have no file yet and fetch it.
    doc, _ = desired.current(aws, c)
    assert doc is not None and doc.cert is not None and doc.cert.version == 1
    for lb in lbs.values():
        assert lb.follower.tick().startswith("version 1 applied")
        pem = (lb.tmp / "cert.pem").read_text()
        assert digest(pem) == doc.cert.sha256
        assert stat.S_IMODE((lb.tmp / "cert.pem").stat().st_mode) == 0o600
        assert not ssl_changes(lb)  # HAProxy does not serve it yet: the file only
        lb.haproxy.certs[str(lb.tmp / "cert.pem")] = pem  # HAProxy started with it
    param = raw.get_parameter(Name=certs.parameter(c), WithDecryption=False)["Parameter"]
    assert param["Type"] == "SecureString"
    assert "BEGIN" not in json.dumps(stored(c))  # the document names it, never holds it

    def poll(_seconds: float) -> None:
        for lb in lbs.values():
            lb.follower.tick()

    said: list[str] = []
    version = cert_rotate(aws, plan, None, said.append, sleep=poll)
    doc, _ = desired.current(aws, c)
    assert doc is not None and doc.cert is not None and doc.cert.version == 2
    for lb in lbs.values():
        path = str(lb.tmp / "cert.pem")
        assert ssl_changes(lb) == [f"set ssl cert {path} <<", f"commit ssl cert {path}"]
        assert digest(lb.haproxy.certs[path]) == doc.cert.sha256
        assert digest((lb.tmp / "cert.pem").read_text()) == doc.cert.sha256
        assert not any("reload" in " ".join(x) for x in lb.run_log[1:])  # no reload
    assert tags(ec2, c) == {"lb1": f"{version} applied", "lb2": f"{version} applied"}
    assert said[0] == f"made a new self-signed certificate for {plan.spec.cluster.domain}"
    assert said[-1].startswith("lb1, lb2 serve certificate ")

    # A mismatched pair given to the CLI: refused before anything is put or published.
    a, b = self_signed("a.example"), self_signed("b.example")
    bad = (
        a.split("-----BEGIN PRIVATE KEY-----")[0]
        + "-----BEGIN PRIVATE KEY-----"
        + b.split("-----BEGIN PRIVATE KEY-----")[1]
    )
    with pytest.raises(UsageError, match="--cert: the private key does not match"):
        cert_rotate(aws, plan, bad, said.append, sleep=poll)
    assert desired.current(aws, c)[1] == version
    # The same pair put in SSM behind the CLI's back: each LB refuses it, nothing changes.
    good = {n: (lb.tmp / "cert.pem").read_text() for n, lb in lbs.items()}
    put = raw.put_parameter(Name=certs.parameter(c), Value=bad, Type="SecureString", Overwrite=True)
    v = desired.publish(aws, c, replace(doc, cert=CertRef(put["Version"], digest(bad))))
    with pytest.raises(OperationError, match=f"refused version {v}: certificate .*: the private"):
        acks.settle(aws, c, v, ["lb1", "lb2"], said.append, timeout=60, silent_s=60, sleep=poll)
    for n, lb in lbs.items():
        assert (lb.tmp / "cert.pem").read_text() == good[n]
        assert len(ssl_changes(lb)) == 2  # nothing sent to HAProxy since
    # HAProxy refusing the certificate aborts its transaction and refuses the version.
    lbs["lb2"].haproxy.refuse_cert = "unable to load the certificate"
    with pytest.raises(OperationError, match=r"lb2 refused version .*HAProxy refused"):
        cert_rotate(aws, plan, None, said.append, sleep=poll)
    assert (lbs["lb2"].tmp / "cert.pem").read_text() == good["lb2"]
    assert ssl_changes(lbs["lb2"])[-1] == f"abort ssl cert {lbs['lb2'].tmp / 'cert.pem'}"


def test_apply_waits_for_the_lbs_acknowledgements_not_a_fixed_time(
    platform: AwsPlatform, ec2: Any, ami: str, cluster_name: str, pair: Any, tmp_path: Path
) -> None:
    c = cluster_name
    lbs, _world = pair(aws_plan(c, ami, size=3))
    # The CLI takes --spec (the platform from it) for restart and cert rotate too.
    spec = tmp_path / "hapair.toml"
    spec.write_text(f'[cluster]\nname = "{c}"\nplatform = "aws"\n[aws]\nami = "{ami}"\n')
    rotate = _cli("cert", "rotate", "--spec", str(spec))
    assert rotate.returncode == 2, rotate.stdout + rotate.stderr
    assert f"cert rotate: cluster {c} does not serve HTTPS (set haproxy.https = true" in (
        rotate.stderr
    )
    wrong = _cli("restart", "lb3", "--spec", str(spec))
    assert wrong.returncode == 2 and "restart: lb3 is not a load balancer (use lb1 or lb2)" in (
        wrong.stderr
    )
    for lb in lbs.values():
        lb.follower.tick()
        lb.haproxy.sessions["web3"] = 2  # two requests still on web3 at each LB
    slept: list[float] = []
    said: list[str] = []
    web3: list[tuple[bool, bool]] = []  # (sessions left on web3, web3 still running)

    def poll(seconds: float) -> None:
        slept.append(seconds)
        for lb in lbs.values():
            lb.follower.tick()
            if len(slept) >= 3:
                lb.haproxy.sessions["web3"] = 0  # they end
        busy = any(lb.haproxy.sessions.get("web3") for lb in lbs.values())
        web3.append((busy, "web3" in running_webs(ec2, c)))

    plan2 = aws_plan(c, ami, size=2)
    ap = plan_apply(platform, plan2, check=lambda text: None)
    version = run_apply(platform, plan2, ap, said.append, 30, sleep=poll)
    assert version == 3 and running_webs(ec2, c) == ["web1", "web2"]
    assert "lb1, lb2 still have sessions on web3; waiting at most 30 s" in said
    assert "no session left on web3" in said and "version 3 applied by lb1, lb2" in said
    assert said.index("no session left on web3") < said.index("terminated web3")
    assert all(running for busy, running in web3 if busy)  # never terminated while busy
    assert sum(slept) < 30  # observed, not one poll interval plus the drain timeout (60 s)
    assert tags(ec2, c) == {"lb1": "3 applied", "lb2": "3 applied"}

    # An LB that refuses the drain version stops apply before anything is terminated.
    lbs["lb2"].refuse_check = "no-such-keyword"
    plan1 = aws_plan(c, ami, size=1)
    ap = plan_apply(platform, plan1, check=lambda text: None)
    with pytest.raises(OperationError) as err:
        run_apply(platform, plan1, ap, said.append, 30, sleep=poll)
    assert str(err.value) == (
        "lb2 refused version 4: haproxy -c refused the config: no-such-keyword"
    )
    assert running_webs(ec2, c) == ["web1", "web2"]
    servers, v = stored(c)
    assert v == 4 and [s[2] for s in servers] == ["ready", "drain"]
