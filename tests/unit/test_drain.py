"""The failback drain: when it starts (pure), which rules it writes (pure), and the Drainer's
bookkeeping with a fake command runner (no root)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest

from hapair.agent import drainplan
from hapair.agent.actor import VipActor
from hapair.agent.drain import Drainer, DrainVip
from hapair.agent.drainplan import PeerView, on_release, on_take, rule_lines
from hapair.agent.resources.base import FakeFloatingIP

LIVE = PeerView("lb2", live=True, serving=True, holds=frozenset({"vip1"}))
KERNEL_RULES = [
    {"priority": 0, "src": "all", "table": "local"},
    {"priority": 32766, "src": "all", "table": "main"},
    {"priority": 32767, "src": "all", "table": "default"},
]
DRAIN_RULES = [
    {"priority": 100, "src": "all", "fwmark": "0x4850", "table": "4850"},
    {"priority": 200, "src": "all", "table": "local"},
    *KERNEL_RULES[1:],
]


def test_a_take_from_a_live_serving_peer_drains() -> None:
    v = on_take("vip1", 5000, False, LIVE)
    assert v.drain
    assert v.reason == ("forwarding connections this node does not know on vip1 to lb2 for 5000 ms")


@pytest.mark.parametrize(
    ("drain_ms", "held", "peer", "reason"),
    [
        (0, False, LIVE, "the drain is disabled (drain_ms = 0)"),
        (5000, True, LIVE, "vip1 is already held here"),
        (
            5000,
            False,
            PeerView("lb2", False, True, frozenset({"vip1"})),
            "lb2 is not alive: no connection of its can be served",
        ),
        (5000, False, PeerView("lb2", True, True, frozenset()), "lb2 does not hold vip1"),
        (
            5000,
            False,
            PeerView("lb2", True, False, frozenset({"vip1"})),
            "lb2's HAProxy is not healthy",
        ),
    ],
)
def test_no_drain_after_a_crash_or_a_re_announce(
    drain_ms: int, held: bool, peer: PeerView, reason: str
) -> None:
    assert on_take("vip1", drain_ms, held, peer) == drainplan.Verdict(False, reason)


def test_a_release_to_a_live_peer_keeps_the_address_on_lo() -> None:
    assert on_release("vip1", 5000, True, LIVE).drain
    dead = PeerView("lb2", False, False, frozenset())
    assert on_release("vip1", 5000, True, dead).reason == "lb2 is not alive: it hands nothing back"
    assert not on_release("vip1", 5000, False, LIVE).drain
    assert not on_release("vip1", 0, True, LIVE).drain


def test_rules_move_local_behind_the_mark_rule_and_back() -> None:
    on = rule_lines(KERNEL_RULES, True)
    # The moved local rule exists before the kernel's is deleted: local is never missing.
    assert on == [
        "rule add pref 100 fwmark 0x4850 lookup 4850",
        "rule add pref 200 lookup local",
        "rule del pref 0 lookup local",
    ]
    assert rule_lines(DRAIN_RULES, True) == []  # idempotent
    assert rule_lines(DRAIN_RULES, False) == [
        "rule add pref 0 lookup local",
        "rule del pref 200 lookup local",
        "rule del pref 100 lookup 4850",
    ]
    assert rule_lines(KERNEL_RULES, False) == []


def test_nft_scripts_rearm_and_remove_the_set_element() -> None:
    script = drainplan.nft_forward("198.19.255.1", 6000)
    assert script.splitlines() == [
        "add element inet hapair drain_vips { 198.19.255.1 timeout 6000ms }",
        "delete element inet hapair drain_vips { 198.19.255.1 }",
        "add element inet hapair drain_vips { 198.19.255.1 timeout 6000ms }",
    ]
    assert "delete element inet hapair drain_vips { 198.19.255.1 }" in drainplan.nft_unforward(
        ["198.19.255.1"]
    )


class FakeKernel:
    """Records commands; keeps the routing rules so that ``ip -j rule show`` answers."""

    def __init__(self) -> None:
        self.rules = [dict(r) for r in KERNEL_RULES]
        self.calls: list[str] = []

    async def __call__(self, argv: Sequence[str], stdin: str) -> tuple[int, str, str]:
        if list(argv[:3]) == ["ip", "-j", "-4"]:
            return 0, json.dumps(self.rules), ""
        self.calls.append(" ".join(argv) + (": " + stdin.strip() if stdin else ""))
        for line in stdin.splitlines():
            if line.startswith("rule add pref 100"):
                self.rules.insert(0, DRAIN_RULES[0])
            elif line == "rule add pref 200 lookup local":
                self.rules.insert(1, DRAIN_RULES[1])
            elif line == "rule del pref 0 lookup local":
                self.rules = [r for r in self.rules if r.get("priority") != 0]
            elif line == "rule add pref 0 lookup local":
                self.rules.insert(0, KERNEL_RULES[0])
            elif line.startswith("rule del pref"):
                pref = int(line.split()[3])
                self.rules = [r for r in self.rules if r.get("priority") != pref]
        return 0, "", ""


def _drainer(kernel: FakeKernel, events: list[str], peer: PeerView = LIVE) -> Drainer:
    vips = [DrainVip("vip1", "198.19.255.1", "eth0"), DrainVip("vip2", "198.19.255.2", "eth0")]
    return Drainer(
        vips, "198.18.0.12", lambda: 50, lambda: peer, lambda m, _: events.append(m), kernel
    )


def test_the_taker_forwards_for_the_period_then_removes_everything() -> None:
    async def main() -> None:
        kernel, events = FakeKernel(), []
        d = _drainer(kernel, events)
        await d.taking("vip1", False)
        assert d.active() == {"forward": ["vip1"], "linger": []}
        assert any(
            "route replace default via 198.18.0.12 dev eth0 onlink" in c for c in kernel.calls
        )
        assert any("timeout 1050ms" in c for c in kernel.calls)
        assert kernel.rules[0] == DRAIN_RULES[0]
        await asyncio.sleep(0.15)
        assert d.active() == {"forward": [], "linger": []}
        assert kernel.rules == KERNEL_RULES
        assert events == [
            "draining vip1: forwarding connections this node does not know on vip1 to lb2 "
            "for 50 ms",
            "drain of vip1 over (its period is over): its forwarding rule removed",
        ]

    asyncio.run(main())


def test_the_releaser_keeps_the_address_on_lo_and_a_take_back_ends_it() -> None:
    async def main() -> None:
        kernel, events = FakeKernel(), []
        d = _drainer(kernel, events)
        await d.releasing("vip1", True)
        assert kernel.calls == ["ip -batch -: addr replace 198.19.255.1/32 dev lo"]
        assert d.active()["linger"] == ["vip1"]
        await d.taking("vip1", False)  # taken back at once: the lo copy goes first
        assert "ip -force -batch -: addr del 198.19.255.1/32 dev lo" in kernel.calls
        assert "drain of vip1 over (taken back): its address on lo removed" in events
        await d.close()
        assert d.active() == {"forward": [], "linger": []}
        assert kernel.rules == KERNEL_RULES

    asyncio.run(main())


def test_no_drain_with_a_dead_peer_and_unknown_vips_are_ignored() -> None:
    async def main() -> None:
        kernel, events = FakeKernel(), []
        d = _drainer(kernel, events, PeerView("lb2", False, False, frozenset()))
        await d.taking("vip1", False)
        await d.taking("vip9", False)
        assert kernel.calls == [] and events == []

    asyncio.run(main())


def test_a_failing_command_never_holds_a_move_up() -> None:
    async def broken(argv: Sequence[str], stdin: str) -> tuple[int, str, str]:
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    async def main() -> None:
        events: list[str] = []
        vips = [DrainVip("vip1", "198.19.255.1", "eth0")]
        d = Drainer(
            vips, "198.18.0.12", lambda: 50, lambda: LIVE, lambda m, _: events.append(m), broken
        )
        r = FakeFloatingIP("vip1", "198.19.255.1")
        actor = VipActor(r, 1.0, lambda *a: None, d)
        task = asyncio.create_task(actor.run())
        actor.want(True)
        await asyncio.sleep(0.05)
        assert r.held is True and actor.held is True
        assert events and events[0].startswith("drain of vip1 skipped: ")
        task.cancel()

    asyncio.run(main())


def test_the_actor_calls_the_hooks_before_each_action() -> None:
    order: list[str] = []

    class Hooks:
        async def taking(self, vip: str, held_before: bool | None) -> None:
            order.append(f"taking {vip} {held_before}")

        async def releasing(self, vip: str, held_before: bool | None) -> None:
            order.append(f"releasing {vip} {held_before}")

    class Recording(FakeFloatingIP):
        async def start(self) -> None:
            order.append("start")
            await super().start()

        async def stop(self) -> None:
            order.append("stop")
            await super().stop()

    async def main() -> None:
        r = Recording("vip1", "198.19.255.1")
        actor = VipActor(r, 1.0, lambda *a: None, Hooks())
        actor.held = False
        task = asyncio.create_task(actor.run())
        actor.want(True)
        await asyncio.sleep(0.02)
        actor.want(False)
        await asyncio.sleep(0.02)
        task.cancel()

    asyncio.run(main())
    assert order == ["taking vip1 False", "start", "releasing vip1 True", "stop"]


def test_drain_ms_is_in_the_spec_and_reaches_the_agent_config() -> None:
    from hapair.errors import SpecError
    from hapair.plan import make_plan
    from hapair.render.agent import agent_config
    from hapair.spec import Spec, parse

    assert Spec().ha.drain_ms == 5000
    spec = parse({"ha": {"drain_ms": 0}})
    cfg = agent_config(
        make_plan(spec), "lb1", key_file="k", admin_token_file="t", stats_socket="s", api_socket="a"
    )
    assert cfg.drain_ms == 0
    with pytest.raises(SpecError, match=r"ha.drain_ms: must be between 0 and 60000 \(got 60001\)"):
        parse({"ha": {"drain_ms": 60001}})


def test_make_drainer_manages_l2_vips_and_reads_the_peer_at_each_move() -> None:
    from hapair.agent.config import AgentConfig, VipConfig
    from hapair.agent.drain import make_drainer
    from hapair.agent.membership import PeerState
    from hapair.agent.protocol import Heartbeat

    cfg = AgentConfig(
        cluster="c",
        node="lb1",
        peer="lb2",
        peer_addresses=["198.18.0.12"],
        peer_probe_address="198.18.0.12",
        key_file="k",
        admin_token_file="t",
        stats_socket="s",
        drain_ms=1234,
        vips=[
            VipConfig(name="vip1", address="198.19.255.1", home="lb1"),
            VipConfig(name="vip2", address="198.19.255.2", home="lb2", driver="fake"),
        ],
    )
    hb = Heartbeat(
        cluster="c",
        node="lb2",
        boot_id=1,
        seq=1,
        healthy=True,
        pingable=True,
        stable_ms=0,
        held=frozenset({"vip1"}),
    )

    class Members:
        current = PeerState.UP

        def last(self) -> Heartbeat:
            return hb

    d = make_drainer(lambda: cfg, lambda: Members())  # type: ignore[arg-type,return-value]
    assert list(d.vips) == ["vip1"] and d.peer_address == "198.18.0.12"
    assert d.drain_ms() == 1234
    assert d.peer() == PeerView("lb2", True, True, frozenset({"vip1"}))
