"""Properties of the spec: every valid spec renders configs the real tools accept, and a control
character in any string field is always refused.

The renders of random valid specs go through the real ``haproxy -c`` and ``nft -c`` (the latter
in a throwaway user and network namespace, so the host's ruleset is never touched and no root
is needed).
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import tomllib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hapair.agent.config import AgentConfig
from hapair.errors import SpecError
from hapair.plan import make_plan
from hapair.render.agent import agent_config, render_agent
from hapair.render.dns import dnsmasq_argv, render_hosts
from hapair.render.haproxy import check_haproxy, render_haproxy
from hapair.render.nftables import render_nftables
from hapair.spec import Spec, parse
from hapair.spec_checks import has_control

# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def pem(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A self-signed certificate and key in one PEM file, made once per session."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl missing: run make setup")
    tmp = tmp_path_factory.mktemp("cert")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=x", "-keyout", str(tmp / "k"), "-out", str(tmp / "c")),
        ],
        check=True,
        capture_output=True,
    )
    path = tmp / "lab.pem"
    path.write_text((tmp / "c").read_text() + (tmp / "k").read_text())
    return str(path)


#: ``nft -c`` in a throwaway user and network namespace of its own: the host's ruleset is never
#: touched, and no root is needed where the kernel lets users create namespaces.
NFT_CHECK = ["unshare", "--user", "--map-root-user", "--net", "nft", "-c", "-f", "-"]


@pytest.fixture(scope="session")
def nft() -> list[str]:
    """The ``nft -c`` command line, once it has been seen to work here."""
    for tool in ("unshare", "nft"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing: run make setup")
    proc = subprocess.run(NFT_CHECK, input="", text=True, capture_output=True, check=False)
    if proc.returncode != 0:
        pytest.fail(
            "nft -c needs a network namespace of its own and this kernel refuses an "
            f"unprivileged one ({proc.stderr.strip()}): run the unit tests as root"
        )
    return NFT_CHECK


def nft_check(nft: list[str], rules: str) -> None:
    proc = subprocess.run(nft, input=rules, text=True, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr + "\n" + rules


# ---------------------------------------------------------------------------- strategies

# What HAProxy takes in one unquoted word: printable ASCII but space, quotes, '\' and '#'.
WORD = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "\"'\\#")
PATH_CHARS = "abcXYZ019-._~!&()*+,;=:@"
COOKIE_FLAGS = ["indirect", "nocache", "postonly", "preserve", "httponly", "secure", "dynamic"]
TIME = st.builds(
    lambda n, u: f"{n}{u}", st.integers(0, 1000), st.sampled_from(["", "ms", "s", "m", "h", "d"])
)
LABEL = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
DOMAIN = st.builds(
    lambda labels, tld: ".".join([*labels, tld]),
    st.lists(LABEL, min_size=1, max_size=3),
    st.from_regex(r"[a-z]{2,6}", fullmatch=True),
)


@st.composite
def check_paths(draw: st.DrawFn) -> str:
    segment = st.one_of(
        st.text(PATH_CHARS, max_size=8),
        st.from_regex(r"%[0-9A-Fa-f]{2}", fullmatch=True),
    )
    path = "/" + "/".join(draw(st.lists(segment, max_size=4)))
    if draw(st.booleans()):
        path += "?" + draw(st.text(PATH_CHARS + "/?", max_size=12))
    return path


@st.composite
def cookies(draw: st.DrawFn) -> str:
    words: list[str] = []
    mode = draw(st.sampled_from([None, "rewrite", "insert", "prefix"]))
    if mode:
        words.append(mode)
    flags = draw(st.lists(st.sampled_from(COOKIE_FLAGS), unique=True, max_size=4))
    if mode == "rewrite" and "indirect" in flags:  # HAProxy refuses the pair
        flags.remove("indirect")
    if "preserve" in flags and mode != "insert" and "indirect" not in flags:  # needs either
        flags.remove("preserve")
    words += flags
    for _ in range(draw(st.integers(0, 2))):
        words.append("domain " + ("." if draw(st.booleans()) else "") + draw(DOMAIN))
    for opt in ("maxidle", "maxlife"):
        if draw(st.booleans()):
            words.append(f"{opt} {draw(TIME)}")
    for _ in range(draw(st.integers(0, 2))):
        words.append("attr " + draw(st.from_regex(r"[A-Za-z0-9_.=-]{1,12}", fullmatch=True)))
    name = draw(st.from_regex(r"[A-Za-z0-9_.-]{1,16}", fullmatch=True))
    return " ".join([name, *draw(st.permutations(words))])


@st.composite
def source_cidrs(draw: st.DrawFn) -> list[str]:
    out: list[ipaddress.IPv4Network] = []
    for _ in range(draw(st.integers(1, 3))):
        addr = draw(st.integers(0, 2**32 - 1))
        prefix = draw(st.integers(0, 32))
        net = ipaddress.IPv4Network((addr, prefix), strict=False)
        if not any(net.overlaps(o) for o in out):
            out.append(net)
    return [str(n) for n in out]


def free_port(taken: set[int]) -> st.SearchStrategy[int]:
    return st.integers(1, 65535).filter(lambda p: p not in taken)


@st.composite
def valid_specs(draw: st.DrawFn, pem: str) -> dict[str, Any]:
    https = draw(st.booleans())
    # http, https, stats and admin: distinct TCP ports, none of them 22 or 443 (443 only for http).
    ports = draw(st.lists(free_port({22, 443}), min_size=4, max_size=4, unique=True))
    http_port = draw(st.sampled_from([ports[0], 80, 443]))
    if http_port in ports[1:]:
        http_port = ports[0]
    interval = draw(st.integers(10, 500))
    warntime = draw(st.integers(interval + 1, interval + 2000))
    deadtime = draw(st.integers(max(warntime, 2 * interval), max(warntime, 2 * interval) + 5000))
    size = draw(st.integers(1, 5))
    web_first = draw(st.integers(1, 200))
    hosts = [a for a in range(2, 255) if a not in (11, 12, 111, 112)]
    ping = draw(
        st.lists(
            st.one_of(
                st.sampled_from(hosts).map(lambda a: f"198.18.0.{a}"),
                st.integers(web_first, web_first + size - 1).map(lambda a: f"198.18.1.{a}"),
            ),
            max_size=3,
        )
    )
    vip1, vip2 = draw(st.lists(st.integers(1, 254), min_size=2, max_size=2, unique=True))
    client, dns = draw(st.lists(st.integers(2, 254), min_size=2, max_size=2, unique=True))
    return {
        "cluster": {
            "name": draw(st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True)),
            "domain": draw(DOMAIN),
        },
        "web": {"size": size, "port": draw(free_port({22}))},
        "network": {
            "web_first": f"198.18.1.{web_first}",
            "client": f"198.19.0.{client}",
            "dns": f"198.19.0.{dns}",
            "vips": [f"198.19.255.{vip1}", f"198.19.255.{vip2}"],
        },
        "haproxy": {
            "http_port": http_port,
            "https": https,
            "https_port": ports[1],
            "cert": draw(st.sampled_from(["", pem])) if https else "",
            "balance": draw(st.sampled_from(["roundrobin", "leastconn", "source", "first"])),
            "cookie": draw(cookies()),
            "check_path": draw(check_paths()),
            "check_inter_ms": draw(st.integers(100, 60000)),
            "check_rise": draw(st.integers(1, 100)),
            "check_fall": draw(st.integers(1, 100)),
            "timeout_connect_ms": draw(st.integers(100, 600000)),
            "timeout_client_ms": draw(st.integers(100, 3600000)),
            "timeout_server_ms": draw(st.integers(100, 3600000)),
            "retries": draw(st.integers(0, 10)),
            "redispatch": draw(st.booleans()),
            "forwardfor": draw(st.booleans()),
            "maxconn": draw(st.integers(100, 1000000)),
            "nbthread": draw(st.integers(1, 64)),
            "stats_port": ports[2],
            "stats_user": draw(st.text(WORD.replace(":", ""), min_size=1, max_size=16)),
            "stats_password": draw(st.text(WORD, max_size=24)),
        },
        "admin": {"port": ports[3], "cidrs": draw(source_cidrs())},
        "ha": {
            "port": draw(st.integers(1, 65535)),
            "interval_ms": interval,
            "warntime_ms": warntime,
            "deadtime_ms": deadtime,
            "initdead_ms": draw(st.integers(0, 600000)),
            "auto_failback": draw(st.booleans()),
            "failback_delay_ms": draw(st.integers(0, 600000)),
            "health_interval_ms": draw(st.integers(20, 10000)),
            "ping_nodes": ping,
            "min_move_interval_ms": draw(st.integers(0, 600000)),
        },
    }


# ---------------------------------------------------------------------------- properties


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_valid_specs_render_what_haproxy_and_nft_accept(
    data: st.DataObject, pem: str, nft: list[str]
) -> None:
    raw = data.draw(valid_specs(pem))
    spec = parse(raw)
    plan = make_plan(spec)
    h = spec.haproxy
    for lb in plan.lbs:
        cfg = render_haproxy(
            plan,
            lb.name,
            stats_socket="/run/hapair-spec-test.sock",
            stats_password=h.stats_password or "random",
            cert_path=pem if h.https else None,
        )
        lines = cfg.splitlines()
        assert f"    option httpchk GET {h.check_path}" in lines
        assert f"    cookie {h.cookie}" in lines
        assert f"    stats auth {h.stats_user}:{h.stats_password or 'random'}" in lines
        check_haproxy(cfg)
        paths = {
            "key_file": "/k",
            "admin_token_file": "/t",
            "stats_socket": "/s",
            "api_socket": "/a",
        }
        text = render_agent(plan, lb.name, **paths)
        assert AgentConfig.model_validate(tomllib.loads(text)) == agent_config(
            plan, lb.name, **paths
        )
    for node in plan.nodes:
        rules = render_nftables(plan, node.name)
        if rules is not None:
            nft_check(nft, rules)
    hosts = render_hosts(plan).splitlines()
    assert hosts[1:] == [f"{v.address} {spec.cluster.domain}" for v in plan.vips]
    assert all(len(line.split()) == 2 for line in hosts[1:])
    argv = dnsmasq_argv(plan, "/hosts", "/log")
    assert not any(has_control(a) or " " in a for a in argv)


STRING_FIELDS = [
    ("cluster", "name"),
    ("cluster", "domain"),
    ("cluster", "platform"),
    ("network", "gateway"),
    ("network", "vpc_cidr"),
    ("haproxy", "cert"),
    ("haproxy", "balance"),
    ("haproxy", "cookie"),
    ("haproxy", "check_path"),
    ("haproxy", "stats_user"),
    ("haproxy", "stats_password"),
    ("aws", "region"),
    ("aws", "vpc_cidr"),
    ("aws", "lb_instance_type"),
    ("aws", "web_instance_type"),
    ("aws", "ami"),
    ("aws", "key_name"),
    ("aws", "pip_spec"),
]
CONTROL = st.one_of(
    st.characters(categories=["Cc", "Cf", "Zl", "Zp"]),
    st.sampled_from(["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\u2028"]),
)


@settings(max_examples=300)
@given(
    field=st.sampled_from(STRING_FIELDS),
    platform=st.sampled_from(["lab", "aws"]),
    default=st.booleans(),
    before=st.text(max_size=8),
    control=CONTROL,
    after=st.text(max_size=8),
)
def test_a_control_character_in_any_string_is_refused(
    field: tuple[str, str],
    platform: str,
    default: bool,
    before: str,
    control: str,
    after: str,
) -> None:
    table, key = field
    if default:  # a valid value with a control character spliced in
        base = str(getattr(getattr(Spec(), table), key)) or "x"
        cut = len(before) % (len(base) + 1)
        before, after = base[:cut], base[cut:]
    value = before + control + after
    data: dict[str, dict[str, Any]] = {table: {key: value}}
    if field != ("cluster", "platform"):
        data.setdefault("cluster", {})["platform"] = platform
    with pytest.raises(SpecError) as err:
        parse(data)
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith(f"{table}.{key}: ")


PIP = "abcXYZ019._+-=<>!~,@/:[]%?#&*"


@settings(max_examples=50, deadline=None)
@given(words=st.lists(st.text(PIP, min_size=1, max_size=12), min_size=1, max_size=3))
def test_pip_spec_reaches_pip_as_one_argument(words: list[str]) -> None:
    """cloud-init's YAML and sh carry any valid aws.pip_spec to pip unchanged."""
    yaml = pytest.importorskip("yaml")
    from hapair.platforms.aws.userdata import web_user_data

    pip_spec = " ".join(words)
    spec = parse({"cluster": {"platform": "aws"}, "aws": {"pip_spec": pip_spec}})
    user_data = web_user_data(
        cluster="c", node="web1", address="10.0.0.1", port=80, pip_spec=spec.aws.pip_spec
    )
    commands = [c[2] for c in yaml.safe_load(user_data)["runcmd"] if "pip install" in str(c)]
    assert len(commands) == 1
    # Run the loop's body with pip replaced by printf: the argument arrives as one word.
    body = commands[0].split("; do ", 1)[1].split(" && break", 1)[0]
    body = body.split(" install --upgrade ", 1)[1]
    proc = subprocess.run(
        ["sh", "-c", f"printf '%s\\n' {body}"], capture_output=True, text=True, check=True
    )
    assert proc.stdout == pip_spec + "\n"
