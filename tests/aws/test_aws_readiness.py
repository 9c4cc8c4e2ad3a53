"""What ``up`` waits for on AWS (both EIPs serve the demo page), judged from what was read.
Pure: no request leaves this machine."""

from __future__ import annotations

from hapair.platforms.aws.readiness import (
    NodeState,
    Probe,
    Readiness,
    VipState,
    assess,
    cloud_init_state,
    wait_until_serving,
)

PAGE = "hapair demo page\nserved by: web1 (10.20.1.21)\nvia load balancer: lb1\n"
NODES = [
    NodeState("lb1", "lb", "running", "done"),
    NodeState("lb2", "lb", "running", "done"),
    NodeState("web1", "web", "running", "done"),
]
VIPS = [VipState("vip1", "198.51.100.1", "lb1"), VipState("vip2", "198.51.100.2", "lb2")]


def test_ready_when_both_eips_serve_the_demo_page() -> None:
    probes = [Probe("vip1", 200, PAGE, "lb1"), Probe("vip2", 200, PAGE, "lb2")]
    r = assess(NODES, VIPS, probes)
    assert r.ready and r.problems == ()
    assert r.served == ("vip1 198.51.100.1 via lb1", "vip2 198.51.100.2 via lb2")


def test_every_reason_is_said() -> None:
    nodes = [
        NodeState("lb1", "lb", "running", "running modules:final"),
        NodeState("lb2", "lb", "pending"),
        NodeState("web1", "web", "running", "error: Failed to run module scripts-user"),
    ]
    vips = [VipState("vip1", "198.51.100.1", "lb1"), VipState("vip2", "198.51.100.2", None)]
    probes = [Probe("vip1", None, error="timed out")]
    r = assess(nodes, vips, probes)
    assert not r.ready
    assert r.problems == (
        "lb2: instance is pending",
        "vip1 198.51.100.1 (on lb1): timed out; lb1 cloud-init: running modules:final",
        "vip2 198.51.100.2: associated with no instance",
        "web1: cloud-init error: Failed to run module scripts-user",
    )


def test_an_answer_that_is_not_the_demo_page_is_not_ready() -> None:
    vips = [VipState("vip1", "198.51.100.1", "web1"), VipState("vip2", "198.51.100.2", "lb2")]
    r = assess(NODES, vips, [Probe("vip2", 503, "", "lb2", "HTTP 503")])
    assert r.problems == (
        "vip1 198.51.100.1: associated with web1, not an LB",
        "vip2 198.51.100.2 (on lb2): HTTP 503; lb2 cloud-init: done",
    )
    r = assess(NODES, VIPS[1:], [Probe("vip2", 200, "Welcome to nginx")])
    assert r.problems == (
        "vip2 198.51.100.2 (on lb2): HTTP 200 without the demo page; lb2 cloud-init: done",
    )
    assert assess(NODES, [], []).problems == ("no elastic ips found",)


def test_cloud_init_state_from_the_console() -> None:
    assert cloud_init_state("") == "unknown"
    running = (
        "Cloud-init v. 22.4.2 running 'init' at ...\nCloud-init v. 22.4.2 running 'modules:final'"
    )
    assert cloud_init_state(running) == "running modules:final"
    done = running + "\nCloud-init v. 22.4.2 finished at Tue, 24 Nov 2026 17:00:00 +0000."
    assert cloud_init_state(done) == "done"
    failed = done + "\n2026-11-24 cc_scripts_user.py[WARNING]: Failed to run module scripts-user"
    assert cloud_init_state(failed) == "error: Failed to run module scripts-user"


def test_the_wait_repeats_until_ready_or_out_of_time() -> None:
    clock = [0.0]
    rounds: list[Readiness] = []
    pages = iter([None, None, None, PAGE, PAGE, PAGE])  # per VIP, round after round

    def probe(v: VipState) -> Probe:
        page = next(pages)
        return (
            Probe(v.name, 200, page, v.owner or "")
            if page
            else Probe(v.name, None, error="refused")
        )

    def sleep(s: float) -> None:
        clock[0] += s

    r = wait_until_serving(
        lambda: (NODES, VIPS),
        probe,
        timeout=100,
        interval=10,
        report=rounds.append,
        clock=lambda: clock[0],
        sleep=sleep,
    )
    assert r.ready and clock[0] == 20.0
    assert [x.ready for x in rounds] == [False, False, True]  # reported only when it changed

    clock[0] = 0.0
    never = wait_until_serving(
        lambda: (NODES, VIPS),
        lambda v: Probe(v.name, None, error="refused"),
        timeout=25,
        interval=10,
        clock=lambda: clock[0],
        sleep=sleep,
    )
    assert not never.ready and clock[0] == 20.0
    assert never.problems[0] == "vip1 198.51.100.1 (on lb1): refused; lb1 cloud-init: done"
