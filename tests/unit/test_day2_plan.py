"""Day 2, the pure halves: what a spec change needs (the plan), HAProxy runtime API commands,
the web pool's configuration, the lab's static neighbours and stale-connection purge."""

from __future__ import annotations

import socket
import struct

import pytest

from hapair import haproxy_runtime as rt
from hapair.bench.nlabs import nspec
from hapair.day2.changes import ApplyPlan, ScalePlan, apply_plan, field_changes, refusals
from hapair.errors import UsageError
from hapair.haproxy_stats import parse_show_stat
from hapair.plan import make_plan
from hapair.platforms.lab.day2.forget import delete_message, stale_tuples
from hapair.platforms.lab.network import interface_of, mac_of, neighbour_lines, neighbours
from hapair.render.haproxy import render_haproxy, server_options
from hapair.spec import Spec, parse
from hapair.webapp.pool import PoolConfig, PoolNode

BASE = {"cluster": {"name": "t1"}}


def spec(**sections: dict[str, object]) -> Spec:
    return parse({**BASE, **sections})


# ------------------------------------------------------------------ the plan of `apply`


def test_field_changes_lists_every_difference_by_dotted_path() -> None:
    old = spec()
    new = spec(haproxy={"balance": "leastconn"}, admin={"cidrs": ["198.19.0.0/24"]})
    assert [(c.path, c.old, c.new) for c in field_changes(old, new)] == [
        ("haproxy.balance", "roundrobin", "leastconn"),
        ("admin.cidrs", ["0.0.0.0/0"], ["198.19.0.0/24"]),
    ]
    assert field_changes(old, old) == []


def test_the_same_spec_is_an_empty_plan() -> None:
    p = apply_plan(spec(), spec())
    assert p.empty
    assert p.lines() == ["nothing to change: the running cluster has this spec"]


def test_haproxy_settings_need_a_reload_of_both_lbs_and_nothing_else() -> None:
    p = apply_plan(spec(), spec(haproxy={"timeout_client_ms": 30000, "balance": "leastconn"}))
    assert (p.reload, p.agents, p.firewall, p.scale.add, p.scale.remove) == (
        ("lb1", "lb2"),
        (),
        (),
        (),
        (),
    )


def test_agent_timings_need_the_agents_only() -> None:
    p = apply_plan(spec(), spec(ha={"failback_delay_ms": 2000, "deadtime_ms": 200}))
    assert (p.reload, p.agents, p.firewall) == ((), ("lb1", "lb2"), ())


def test_admin_cidrs_change_the_lbs_rules_only() -> None:
    p = apply_plan(spec(), spec(admin={"cidrs": ["198.19.0.0/24"]}))
    assert (p.reload, p.agents, p.firewall) == ((), (), ("lb1", "lb2"))


def test_https_on_another_port_needs_a_reload_and_the_lbs_rules() -> None:
    p = apply_plan(spec(), spec(haproxy={"https": True, "https_port": 8443}))
    assert p.reload == ("lb1", "lb2")
    assert p.firewall == ("lb1", "lb2")  # 8443 opened; 443 is open anyway (the seed's SG)


def test_web_size_alone_is_a_scale_without_reload() -> None:
    p = apply_plan(spec(), spec(web={"size": 5}))
    assert p.scale == ScalePlan(3, 5)
    assert (p.reload, p.agents, p.firewall) == ((), (), ())


def test_aws_fields_are_recorded_but_need_nothing_in_the_lab() -> None:
    p = apply_plan(spec(), spec(aws={"lb_instance_type": "t3.micro"}))
    assert not p.empty
    assert p.unused == ("aws.lb_instance_type",)
    assert "aws.lb_instance_type: not used by the lab (kept in the spec)" in p.lines()[-1]


@pytest.mark.parametrize(
    ("sections", "field"),
    [
        ({"ha": {"port": 695}}, "ha.port"),
        ({"network": {"vips": ["198.19.255.3", "198.19.255.2"]}}, "network.vips"),
        ({"cluster": {"name": "t1", "domain": "other.hapair.test"}}, "cluster.domain"),
        ({"web": {"port": 8080}}, "web.port"),
        ({"admin": {"port": 9123}}, "admin.port"),
        ({"haproxy": {"http_port": 8080}}, "haproxy.http_port"),
    ],
)
def test_fields_that_cannot_change_live_are_refused_with_the_way_out(
    sections: dict[str, dict[str, object]], field: str
) -> None:
    with pytest.raises(UsageError) as err:
        apply_plan(spec(), parse({**BASE, **sections}))
    msg = str(err.value)
    assert msg.startswith(f"{field}: ")
    assert "cannot change on a running cluster" in msg
    assert "`hapair down --name t1` then `hapair up` with the new spec" in msg


def test_refusals_name_every_refused_field() -> None:
    changes = field_changes(spec(), spec(ha={"port": 695}, admin={"port": 9123}))
    assert [r.split(":")[0] for r in refusals(changes)] == ["admin.port", "ha.port"]


def test_the_plan_shows_the_changes_then_the_steps_in_order() -> None:
    new = spec(
        web={"size": 4},
        haproxy={"balance": "first"},
        ha={"failback_delay_ms": 2000},
        admin={"cidrs": ["198.19.0.0/24"]},
    )
    lines = apply_plan(spec(), new).lines(drain_s=10)
    assert lines[:6] == [
        "changes:",
        "  ~ web.size: 3 -> 4",
        "  ~ haproxy.balance: roundrobin -> first",
        "  ~ admin.cidrs: [0.0.0.0/0] -> [198.19.0.0/24]",
        "  ~ ha.failback_delay_ms: 3000 -> 2000",
        "steps:",
    ]
    steps = lines[6:]
    assert steps[0].startswith("  1. web 3 -> 4: add web4: ")
    assert steps[1].startswith("  2. seamless reload of HAProxy on lb1 then lb2")
    assert steps[2] == "  3. security groups on lb1, lb2 (one atomic nft -f each)"
    assert steps[3] == "  4. agent.toml on lb1, lb2, then SIGHUP (checked in /status)"


def test_scale_plan_adds_and_removes_the_highest_numbered_nodes() -> None:
    assert ScalePlan(3, 6).add == ("web4", "web5", "web6")
    assert ScalePlan(3, 6).remove == ()
    assert ScalePlan(8, 2).remove == ("web3", "web4", "web5", "web6", "web7", "web8")
    assert ScalePlan(4, 4).lines(30) == []
    big = ScalePlan(3, 250).lines(30)[0]
    assert big.startswith("web 3 -> 250: add web4, web5, ..., web250 (247 nodes): ")
    assert "at most 12 s" in ScalePlan(5, 4).lines(12)[0]


def test_an_empty_apply_plan_has_no_steps() -> None:
    assert ApplyPlan((), ScalePlan(3, 3)).empty


# ------------------------------------------------------------------ runtime API commands


def test_add_server_carries_the_default_server_options() -> None:
    opts = server_options(spec().haproxy)
    assert opts == (
        "inter 1000ms fastinter 100ms rise 2 fall 2 observe layer4 error-limit 1 on-error fastinter"
    )
    new = rt.NewServer("web", "web4", "198.18.1.4", 80, opts, cookie="web4")
    assert rt.add_server(new) == f"add server web/web4 198.18.1.4:80 cookie web4 check {opts}"
    assert rt.add_server(rt.NewServer("web", "web4", "198.18.1.4", 80)) == (
        "add server web/web4 198.18.1.4:80 check"
    )


def test_the_options_are_the_configurations_default_server_line() -> None:
    h = spec(haproxy={"check_inter_ms": 2000, "check_rise": 3, "check_fall": 4}).haproxy
    cfg = render_haproxy(make_plan(spec(haproxy=h.model_dump())), "lb1", stats_password="x")
    assert f"    default-server {server_options(h)}\n" in cfg
    assert "inter 2000ms fastinter 100ms rise 3 fall 4" in server_options(h)


def test_server_commands() -> None:
    assert rt.enable_health("web", "web4") == "enable health web/web4"
    assert rt.enable_server("web", "web4") == "enable server web/web4"
    assert rt.set_state("web", "web4", "drain") == "set server web/web4 state drain"
    assert rt.set_state("web", "web4", "maint") == "set server web/web4 state maint"
    assert rt.shutdown_sessions("web", "web4") == "shutdown sessions server web/web4"
    assert rt.del_server("web", "web4") == "del server web/web4"
    assert rt.set_dynamic_cookie_key("web", "ab12") == "set dynamic-cookie-key backend web ab12"
    assert rt.enable_dynamic_cookie("web") == "enable dynamic-cookie backend web"


@pytest.mark.parametrize(
    "build",
    [
        lambda: rt.enable_server("web", "web4; shutdown sessions server web/web1"),
        lambda: rt.del_server("web\n", "web4"),
        lambda: rt.set_state("web", "web4", "up"),
        lambda: rt.add_server(rt.NewServer("web", "web4", "198.18.1.4;", 80)),
        lambda: rt.add_server(rt.NewServer("web", "web4", "198.18.1.4", 0)),
        lambda: rt.add_server(rt.NewServer("web", "web4", "198.18.1.4", 80, "check; x")),
        lambda: rt.set_dynamic_cookie_key("web", "a b"),
        lambda: rt.commit_ssl_cert("relative.pem"),
        lambda: rt.commit_ssl_cert("/a/../b.pem"),
        lambda: rt.commit_ssl_cert("/a b.pem"),
    ],
)
def test_builders_refuse_what_could_smuggle_a_second_command(build: object) -> None:
    assert callable(build)
    with pytest.raises(ValueError):
        build()


PEM = (
    "-----BEGIN CERTIFICATE-----\nMIIBdTCCARugAwIBAgIU\n\nAbC+/=\n-----END CERTIFICATE-----\n"
    "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----\n"
)


def test_set_ssl_cert_sends_the_pem_as_a_payload_without_empty_lines() -> None:
    cmd = rt.set_ssl_cert("/run/hapair/x/secrets/lab.pem", PEM)
    head, _, payload = cmd.partition("\n")
    assert head == "set ssl cert /run/hapair/x/secrets/lab.pem <<"
    assert "\n\n" not in payload and payload.endswith("-----END PRIVATE KEY-----\n")
    assert rt.commit_ssl_cert("/p/lab.pem") == "commit ssl cert /p/lab.pem"
    assert rt.abort_ssl_cert("/p/lab.pem") == "abort ssl cert /p/lab.pem"


@pytest.mark.parametrize(
    "pem",
    [
        PEM.split("-----BEGIN PRIVATE KEY-----")[0],  # no key
        PEM.replace("AbC+/=", "AbC\x1b[2J"),  # not PEM
        PEM.replace("AbC+/=", "show info; shutdown"),
    ],
)
def test_set_ssl_cert_refuses_what_is_not_a_certificate_and_its_key(pem: str) -> None:
    with pytest.raises(ValueError):
        rt.set_ssl_cert("/p/lab.pem", pem)


def test_answers() -> None:
    assert rt.answered("\n", None)
    assert not rt.answered("No such server.\n", None)
    assert rt.answered("New server registered.\n", "New server registered")
    assert not rt.answered("'cookie' option is not accepted", "New server registered")


def test_show_stat_gives_current_sessions() -> None:
    text = (
        "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,"
        "wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,"
        "sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status\n"
        "web,web1,0,0,3,5,,9,0,0,,0,,0,0,0,0,DRAIN,1,1,0,0,0,1,0,,1,3,1,,9,,2,0,,1,L7OK\n"
    )
    (s,) = parse_show_stat(text)
    assert (s.server, s.status, s.sessions, s.check) == ("web1", "DRAIN", 3, "L7OK")


# ------------------------------------------------------------------ the web pool, the lab's network


def test_pool_configuration_round_trips_and_is_validated() -> None:
    config = PoolConfig(4, 80, (PoolNode("web1", "c-web1", "198.18.1.1"),))
    assert PoolConfig.from_json(config.to_json()) == config
    for bad in ('{"generation": 1}', "[]", '{"generation": 1, "port": 80, "nodes": [[1]]}'):
        with pytest.raises(UsageError):
            PoolConfig.from_json(bad)
    with pytest.raises(UsageError):  # a node name that cannot be shown on the page
        PoolConfig.from_json(
            PoolConfig(1, 80, (PoolNode("web 1", "c-web1", "198.18.1.1"),)).to_json()
        )


def test_static_neighbours_know_each_other_by_a_mac_derived_from_the_address() -> None:
    plan = make_plan(spec(web={"size": 2}))
    assert mac_of("198.18.1.2") == "02:48:c6:12:01:02"
    assert neighbours(plan, plan.node("lb1")) == [
        "198.18.0.12",
        "198.18.0.112",
        "198.18.0.1",
        "198.18.1.1",
        "198.18.1.2",
    ]
    assert neighbours(plan, plan.node("web2")) == [
        "198.18.0.11",
        "198.18.0.111",
        "198.18.0.12",
        "198.18.0.112",
    ]
    assert neighbours(plan, plan.node("igw")) == []
    assert neighbour_lines(["198.18.1.2"]) == [
        "neigh replace 198.18.1.2 lladdr 02:48:c6:12:01:02 dev eth0 nud permanent"
    ]
    assert neighbour_lines(["198.18.1.2"], delete=True) == ["neigh del 198.18.1.2 dev eth0"]
    # An LB's secondary address lives on its one interface: the primary's MAC, not its own.
    same_as = interface_of(plan)
    assert same_as == {"198.18.0.111": "198.18.0.11", "198.18.0.112": "198.18.0.12"}
    assert neighbour_lines(["198.18.0.112"], same_as=same_as) == [
        "neigh replace 198.18.0.112 lladdr 02:48:c6:12:00:0c dev eth0 nud permanent"
    ]


CONNTRACK = (
    "ipv4     2 tcp      6 65 TIME_WAIT src=198.19.0.10 dst=198.19.255.1 sport=41936 dport=80 "
    "src=198.19.255.1 dst=198.19.0.10 sport=80 dport=41936 [ASSURED] mark=0 zone=0 use=2\n"
    "ipv4     2 tcp      6 45 TIME_WAIT src=127.0.0.1 dst=127.0.0.1 sport=38442 dport=80 "
    "src=127.0.0.1 dst=127.0.0.1 sport=80 dport=38442 [ASSURED] mark=0 zone=0 use=2\n"
    "ipv4     2 udp      17 29 src=198.18.0.12 dst=198.18.0.11 sport=694 dport=694 "
    "src=198.18.0.11 dst=198.18.0.12 sport=694 dport=694 [ASSURED] mark=0 zone=0 use=2\n"
    "ipv4     2 tcp      6 9 CLOSE src=198.19.0.10 dst=198.19.255.2 sport=5 dport=443 "
    "src=198.19.255.2 dst=198.19.0.10 sport=443 dport=5 mark=0 zone=0 use=2\n"
)


def test_stale_connections_are_the_tcp_entries_to_the_floating_ips() -> None:
    assert stale_tuples(CONNTRACK, ["198.19.255.1"]) == [("198.19.0.10", "198.19.255.1", 41936, 80)]
    assert len(stale_tuples(CONNTRACK, ["198.19.255.1", "198.19.255.2"])) == 2
    assert stale_tuples(CONNTRACK, ["198.18.0.11"]) == []  # udp (heartbeats) never


def test_a_conntrack_delete_request_names_the_original_tuple() -> None:
    msg = delete_message(("198.19.0.10", "198.19.255.1", 41936, 80), seq=7)
    length, kind, flags, seq, _pid = struct.unpack("=IHHII", msg[:16])
    assert (length, kind, flags, seq) == (len(msg), 0x0102, 1, 7)  # no ack asked
    assert msg[16] == socket.AF_INET
    for part in (socket.inet_aton("198.19.0.10"), socket.inet_aton("198.19.255.1")):
        assert part in msg
    assert struct.pack("!H", 41936) in msg and struct.pack("!H", 80) in msg
    assert len(msg) % 4 == 0


N4 = {k: v for k, v in nspec("unused", 4).items() if k in ("lb", "ha", "network")}


def test_apply_plan_of_n_lbs_compares_the_n_node_agents_and_refuses_their_live_change() -> None:
    old = spec(**N4)
    p = apply_plan(old, spec(**N4, web={"size": 4}))
    assert p.agents == () and p.scale.add
    with pytest.raises(UsageError) as refused:
        apply_plan(old, spec(**{**N4, "ha": {"coordinator": "etcd", "deadtime_ms": 300}}))
    assert str(refused.value) == (
        'ha.deadtime_ms: the N-node agent (ha.coordinator = "etcd") does not reload its '
        "settings while it runs; to change them, `hapair down --name t1` then `hapair up` "
        "with the new spec"
    )
