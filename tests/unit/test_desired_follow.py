"""The desired document (encode, decode, validation) and the pure decisions of its follower:
a document diff becomes runtime-API steps or a reload; the poll schedule backs off."""

from __future__ import annotations

import base64
import ipaddress
import json
import random
import zlib
from dataclasses import replace

import pytest

from hapair.day2.desired import (
    MAX_VALUE,
    CertRef,
    DocumentError,
    Server,
    decode,
    encode,
    make_document,
)
from hapair.day2.follow import Op, Schedule, Step, decide, next_delay
from hapair.plan import make_plan
from hapair.render.haproxy import check_haproxy, render_haproxy
from hapair.spec import HaproxySpec, HaSpec, parse


def doc(servers: list[Server], **haproxy: object):
    h = HaproxySpec.model_validate(haproxy)
    return make_document("c1", h, 80, servers, HaSpec())


def webs(n: int, drain: tuple[int, ...] = ()) -> list[Server]:
    return [
        Server(
            f"web{i}",
            str(ipaddress.IPv4Address("10.20.1.20") + i),
            "drain" if i in drain else "ready",
        )
        for i in range(1, n + 1)
    ]


def test_round_trip_and_no_secret() -> None:
    d = doc(webs(3), stats_password="s3cret", balance="leastconn")
    value = encode(d)
    assert "s3cret" not in value and "stats_password" not in json.loads(value)["haproxy"]
    assert decode(value, "c1") == d
    assert d.digest() == decode(value, "c1").digest()


def test_a_certificate_and_restart_generations_make_it_schema_2() -> None:
    plain = doc(webs(2))
    assert plain.to_json()["schema"] == 1 and "cert" not in plain.to_json()
    ops = replace(plain, cert=CertRef(3, "ab" * 32), restarts={"lb1": 2})
    obj = json.loads(encode(ops))
    assert obj["schema"] == 2 and obj["cert"] == {"version": 3, "sha256": "ab" * 32}
    assert obj["restart"] == {"lb1": 2} and "BEGIN" not in encode(ops)
    back = decode(encode(ops), "c1")
    assert back == ops and back.restart_generation("lb1") == 2
    assert back.restart_generation("lb2") == 0
    # Neither is HAProxy's business: nothing for decide() to do, and the same configuration.
    assert decide(plain, ops).empty and ops.same_config(plain) and ops != plain


def test_a_large_document_is_compressed_and_still_fits() -> None:
    d = doc(webs(250))
    value = encode(d)
    assert value.startswith("z1:") and len(value) <= MAX_VALUE
    assert decode(value, "c1") == d


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda o: o.update(cluster="other"), "cluster: 'other' is not this LB's cluster"),
        (lambda o: o.update(schema=3), "schema: 3 is not 1 or 2"),
        (lambda o: o.update(restart={"lb1": 1}), "restart: only in schema 2"),
        (lambda o: o.update(schema=2, cert={"version": 0, "sha256": "0" * 64}), "cert.version"),
        (lambda o: o.update(schema=2, cert={"version": 1, "sha256": "x"}), "cert.sha256"),
        (lambda o: o.update(schema=2, cert={"version": 1}), "cert: must be"),
        (lambda o: o.update(schema=2, restart={"lb1": 0}), "restart.lb1: 0 is not"),
        (lambda o: o.update(schema=2, restart={"lb;1": 1}), "restart: 'lb;1' is not"),
        (lambda o: o.update(extra=1), "extra: unknown field"),
        (lambda o: o.pop("servers"), "servers: required"),
        (lambda o: o["haproxy"].update(balance="random"), "haproxy.balance"),
        (lambda o: o["haproxy"].update(stats_password="x"), "haproxy.stats_password: must not"),
        (lambda o: o.update(web_port=0), "web_port: 0 is not a port"),
        (lambda o: o["servers"].append(["web1", "10.0.0.9", "ready"]), "name web1 listed twice"),
        (lambda o: o["servers"].append(["web9", "10.0.0.x", "ready"]), "servers[3]: address"),
        (lambda o: o["servers"].append(["web9;x", "10.0.0.9", "ready"]), "servers[3]: name"),
        (lambda o: o["servers"].append(["web9", "10.0.0.9", "maint"]), "servers[3]: state"),
        (lambda o: o["agent"].update(interval_ms=-1), "agent.interval_ms: -1"),
        (lambda o: o["agent"].update(deadtime_ms=10), "agent."),
        (lambda o: o["agent"].pop("warntime_ms"), "agent.warntime_ms: required"),
    ],
)
def test_a_malformed_document_is_refused_naming_the_field(mutate, field) -> None:
    obj = doc(webs(3)).to_json()
    mutate(obj)
    with pytest.raises(
        DocumentError, match=r"(?s).*" + field.replace("[", r"\[").replace("]", r"\]")
    ):
        decode(json.dumps(obj), "c1")


def test_oversized_and_broken_values_are_refused() -> None:
    with pytest.raises(DocumentError, match="more than 4096"):
        decode("{" + " " * MAX_VALUE + "}", "c1")
    bomb = "z1:" + base64.b64encode(zlib.compress(b" " * 2_000_000, 9)).decode()
    assert len(bomb) <= MAX_VALUE
    with pytest.raises(DocumentError, match="inflates to more than"):
        decode(bomb, "c1")
    for value, why in (("z1:@@", "not valid z1"), ("{nope", "not JSON"), ("[]", "JSON object")):
        with pytest.raises(DocumentError, match=why):
            decode(value, "c1")


def test_only_a_changed_server_list_is_runtime_steps() -> None:
    old = doc(webs(3))
    plan = decide(old, doc(webs(5)))
    assert not plan.reload and plan.rewrite
    assert plan.steps == (
        Step(Op.ADD, "web4", "10.20.1.24"),
        Step(Op.ADD, "web5", "10.20.1.25"),
    )
    assert plan.reason() == "runtime api: servers: add web4 (10.20.1.24), add web5 (10.20.1.25)"
    drained = decide(old, doc(webs(3, drain=(3,))))
    assert drained.steps == (Step(Op.DRAIN, "web3"),) and not drained.reload
    gone = decide(doc(webs(3, drain=(3,))), doc(webs(2)))
    assert gone.steps == (Step(Op.REMOVE, "web3"),)
    back = decide(doc(webs(3, drain=(3,))), old)
    assert back.steps == (Step(Op.READY, "web3"),)


def test_settings_need_a_reload_and_agent_timings_their_own_step() -> None:
    old = doc(webs(3))
    plan = decide(old, doc(webs(4), balance="leastconn", timeout_server_ms=9000))
    assert plan.reload and plan.steps == () and not plan.agent
    assert "haproxy settings changed: balance, timeout_server_ms" in plan.reason()
    moved = decide(old, doc([Server("web1", "10.20.1.99"), *webs(3)[1:]]))
    assert moved.reload and "web1 moved 10.20.1.21 -> 10.20.1.99" in moved.reason()
    h = HaproxySpec()
    timed = make_document("c1", h, 80, webs(3), HaSpec(deadtime_ms=400))
    t = decide(old, timed)
    assert t.agent and not t.reload and not t.rewrite
    assert t.reason() == "no haproxy: agent timings changed: deadtime_ms"
    assert decide(old, doc(webs(3))).empty
    assert decide(None, old).reload


def test_poll_schedule_jitters_and_backs_off_to_a_ceiling() -> None:
    s = Schedule(10, 30, 300)
    rng = random.Random(7)
    calm = [next_delay(s, 0, rng) for _ in range(200)]
    assert all(10 <= d <= 30 for d in calm) and len({round(d, 3) for d in calm}) > 100
    backed = [next_delay(s, 3, rng) for _ in range(200)]
    assert all(10 <= d <= 240 for d in backed) and max(backed) > 30
    assert all(next_delay(s, 50, rng) <= 300 for _ in range(200))
    with pytest.raises(ValueError, match="low_s <= high_s"):
        Schedule(30, 10)


def test_haproxy_cfg_keeps_server_state_across_reloads() -> None:
    plan = make_plan(parse({"cluster": {"name": "c1"}}))
    cfg = render_haproxy(plan, "lb1", server_state_file="/var/lib/haproxy/server-state")
    assert "    server-state-file /var/lib/haproxy/server-state\n" in cfg
    assert "    load-server-state-from-file global\n" in cfg
    check_haproxy(cfg)
    assert "server-state" not in render_haproxy(plan, "lb1")
