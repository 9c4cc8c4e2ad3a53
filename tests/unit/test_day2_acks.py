"""The pure halves of day 2 on AWS: an LB's acknowledgement (tag value, parse, verdict), when an
LB may restart and when each of its waits is over, and the PEM check both sides make."""

from __future__ import annotations

import pytest

from hapair.day2.pem import PemError, check_pem, digest, normalized, self_signed
from hapair.platforms.aws.acks import MAX_VALUE, Ack, judge, parse
from hapair.platforms.aws.lbrestart import refusal, rejoined, released


def test_an_acknowledgement_round_trips_through_its_tag_value() -> None:
    for ack in (Ack(12), Ack(12, draining=3), Ack(13, refused="haproxy -c: bad keyword")):
        assert parse(ack.value()) == ack
    assert Ack(12).value() == "12 applied"
    assert Ack(12, draining=3).value() == "12 applied; draining 3"
    assert Ack(13, refused="a\nb").value() == "13 refused: a b"
    long = Ack(14, refused="x" * 400).value()
    assert len(long) == MAX_VALUE and long.endswith("...")
    assert parse(long) == Ack(14, refused="x" * (MAX_VALUE - 15) + "...")
    for other in (None, "", "applied", "12 done", "x applied"):
        assert parse(other) is None


def test_the_verdict_waits_for_every_lb_and_names_refusals_and_silent_ones() -> None:
    lbs = ["lb1", "lb2"]
    v = judge({"lb1": Ack(5), "lb2": Ack(4)}, 5, lbs)
    assert not v.done and v.waiting == ("lb2",) and not v.silent
    assert judge({"lb1": Ack(5), "lb2": Ack(6)}, 5, lbs).done  # moved past it
    v = judge({"lb1": Ack(5), "lb2": Ack(5, refused="no")}, 5, lbs)
    assert v.done and v.refused == {"lb2": "no"}
    assert judge({"lb1": Ack(5), "lb2": Ack(6, refused="no")}, 5, lbs).refused == {}
    v = judge({"lb1": Ack(5)}, 5, lbs)
    assert v.waiting == ("lb2",) and v.silent == ("lb2",)
    draining = {"lb1": Ack(5, draining=2), "lb2": Ack(5)}
    assert judge(draining, 5, lbs).done
    assert judge(draining, 5, lbs, drained=True).waiting == ("lb1",)


def status(
    *, peer: str = "up", healthy: bool = True, standby: bool = False, held: list[str] | None = None
) -> dict[str, object]:
    return {
        "health": {"healthy": True},
        "held": ["vip1"] if held is None else held,
        "peer": {
            "name": "lb2",
            "state": peer,
            "view": {"healthy": healthy, "standby": standby, "held": ["vip2"]},
        },
    }


def test_an_lb_restarts_only_when_its_peer_can_take_over() -> None:
    assert refusal("lb1", status()) is None
    assert refusal("lb1", {}) == "restart lb1: its agent does not answer; nothing was done"
    for st, why in (
        (status(peer="dead"), "peer state dead"),
        (status(healthy=False), "not healthy"),
        (status(standby=True), "in standby"),
    ):
        assert refusal("lb1", st) == (
            f"restart lb1: its peer lb2 is not healthy and online ({why}), so it cannot serve "
            "both EIPs; nothing was done"
        )


def test_each_wait_of_a_restart_ends_on_what_the_agent_says() -> None:
    moved = status(held=[])
    moved["peer"]["view"]["held"] = ["vip1", "vip2"]  # type: ignore[index]
    assert released(moved, ["vip1"]) and not released(status(), ["vip1"])
    assert not released(status(held=[]), ["vip1"])  # the peer does not say it holds it yet
    assert rejoined(status()) and not rejoined({}) and not rejoined(status(peer="init"))


def test_a_pem_is_checked_before_it_goes_anywhere() -> None:
    a, b = self_signed("a.example"), self_signed("b.example")
    assert check_pem(a) == a == normalized(a) and digest(a) == digest(a.replace("\n", "\r\n"))
    key = "-----BEGIN PRIVATE KEY-----"
    mismatched = a.split(key)[0] + key + b.split(key)[1]
    with pytest.raises(PemError, match="the private key does not match the certificate"):
        check_pem(mismatched)
    with pytest.raises(PemError, match="must hold a certificate and its private key"):
        check_pem(a.split(key)[0])
    with pytest.raises(PemError, match="more than an SSM parameter holds"):
        check_pem(a + "\n" + "A" * 9000)
