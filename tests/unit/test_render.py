"""Rendering: haproxy.cfg passes `haproxy -c`; nftables rules match golden files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hapair.plan import make_plan
from hapair.render.agent import agent_config
from hapair.render.dns import render_hosts
from hapair.render.haproxy import check_haproxy, render_haproxy
from hapair.render.nftables import render_nftables
from hapair.spec import Spec, parse

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("size", [1, 3, 250])
def test_haproxy_cfg_passes_haproxy_check(size: int) -> None:
    plan = make_plan(parse({"web": {"size": size}}))
    cfg = render_haproxy(plan, "lb1", stats_socket="/tmp/x.sock", stats_password="pw")
    assert cfg.count("    server web") == size
    assert f"server web{size} {plan.webs[-1].address}:80 cookie web{size} check" in cfg
    check_haproxy(cfg)


def test_haproxy_cfg_has_the_seeds_settings() -> None:
    cfg = render_haproxy(make_plan(Spec()), "lb2", stats_password="pw")
    for line in (
        "balance roundrobin",
        "cookie SERVERID insert indirect nocache",
        "option forwardfor",
        "option redispatch",
        "retries 3",
        "bind :80",
        "bind :9022",
        "stats auth admin:pw",
        "http-response set-header X-LB lb2",
        "option httpchk GET /health",
        "default-server inter 1000ms fastinter 100ms rise 2 fall 2 observe layer4 error-limit 1 "
        "on-error fastinter",
    ):
        assert line in cfg, line
    assert "ssl crt" not in cfg


def test_haproxy_cfg_with_https(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.fail("openssl missing: run make setup")
    pem = tmp_path / "lab.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=x",
            "-keyout",
            str(tmp_path / "k"),
            "-out",
            str(tmp_path / "c"),
        ],
        check=True,
        capture_output=True,
    )
    pem.write_text((tmp_path / "c").read_text() + (tmp_path / "k").read_text())
    plan = make_plan(parse({"haproxy": {"https": True}}))
    cfg = render_haproxy(plan, "lb1", stats_password="pw", cert_path=str(pem))
    assert f"bind :443 ssl crt {pem}" in cfg
    check_haproxy(cfg)


def test_a_broken_config_is_refused() -> None:
    from hapair.errors import OperationError

    with pytest.raises(OperationError, match="haproxy -c rejected"):
        check_haproxy("frontend x\n    bind :80\n    use_backend nowhere\n")


@pytest.mark.parametrize("node", ["lb1", "web1"])
def test_nftables_golden(node: str) -> None:
    got = render_nftables(make_plan(Spec()), node)
    assert got == (DATA / "nft" / f"{node}.nft").read_text()


def test_nftables_admin_cidrs_and_router_has_none() -> None:
    plan = make_plan(parse({"admin": {"cidrs": ["198.19.0.0/24", "198.18.0.0/23"]}}))
    rules = render_nftables(plan, "lb2")
    assert rules is not None
    assert "elements = { 198.19.0.0/24, 198.18.0.0/23 }" in rules
    assert render_nftables(plan, "igw") is None


def test_nftables_rules_load_in_nft_check_mode() -> None:
    nft = shutil.which("nft")
    if nft is None:
        pytest.fail("nft missing: run make setup")
    for node in ("lb1", "web1"):
        rules = render_nftables(make_plan(Spec()), node)
        proc = subprocess.run([nft, "-c", "-f", "-"], input=rules, text=True, capture_output=True)
        assert proc.returncode == 0, proc.stderr


def test_dns_answers_with_both_vips() -> None:
    hosts = render_hosts(make_plan(Spec()))
    assert "198.19.255.1 www.hapair.test" in hosts
    assert "198.19.255.2 www.hapair.test" in hosts


def test_agent_config_points_heartbeats_at_both_peer_addresses() -> None:
    cfg = agent_config(
        make_plan(Spec()),
        "lb1",
        key_file="k",
        admin_token_file="t",
        stats_socket="s",
        api_socket="a",
    )
    assert cfg.peer == "lb2"
    assert cfg.peer_addresses == ["198.18.0.12", "198.18.0.112"]
    assert cfg.ping_nodes == ["198.18.0.1"]
    assert [(v.name, v.home) for v in cfg.vips] == [("vip1", "lb1"), ("vip2", "lb2")]


def test_the_aws_fabric_silences_the_lb_addresses_too_but_not_for_the_lbs() -> None:
    l2 = render_nftables(make_plan(Spec()), "lb1")
    aws = render_nftables(make_plan(parse({"lab": {"fabric": "aws"}})), "lb1")
    assert l2 is not None and aws is not None
    # On the aws fabric the igw translates each EIP to an LB's private address: a crashed
    # HAProxy must be silent there too. The peer's probe (from the LB group) is still refused.
    assert "elements = { 198.19.255.1, 198.19.255.2 }" in l2
    assert (
        "elements = { 198.19.255.1, 198.19.255.2, 198.18.0.11, 198.18.0.111, 198.18.0.12, "
        "198.18.0.112 }" in aws
    )
    drop = "ip daddr @client_addrs ip saddr != @lb_group tcp dport { 80, 443 } ct state new"
    assert drop in l2 and drop in aws
