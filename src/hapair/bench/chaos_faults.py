"""The chaos suite's network faults, and what every fault shares (:class:`Ctx`, nft tables of
our own, :func:`sweep`); process and operator faults are in :mod:`hapair.bench.chaos_procs`.

Each function injects one fault into a running lab, holds it, and undoes it in a ``finally``
block (a failing run leaves no drop rule, no stopped process, no foreign agent behind;
:func:`sweep` is run again after every scenario anyway). Traffic the faults make stays inside
the lab's namespaces and 198.18.0.0/15; every wait and every load loop is bounded in count and
time.
"""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hapair.bench.chaos_watch import agent_get, cmdline, signal_all
from hapair.bench.faults import partition
from hapair.errors import OperationError
from hapair.plan import Plan, Role
from hapair.platforms.lab import procs
from hapair.platforms.lab.network import IFNAME
from hapair.platforms.lab.paths import LabPaths
from hapair.platforms.lab.platform import LabPlatform
from hapair.platforms.lab.system import in_ns, run

#: The nftables table (``inet`` and ``netdev`` families) every chaos rule lives in.
TABLE = "hpchaos"
#: Our helper programs that run inside lab namespaces.
HELPERS = re.compile(r"^hapair\.bench\.chaos_(delay|flood)$")
#: Delay line: each frame on lb1's link waits a uniform random time in this range (ms).
DELAY_MS = (10.0, 90.0)
#: The flood: datagrams from lb2's namespace (inside the LB group) and from the client.
FLOOD_VPC, FLOOD_CLIENT, FLOOD_RATE = 18_000, 2_000, 4_000.0


class ScenarioUnavailable(OperationError):
    """The machine lacks what a scenario needs (the message names the package)."""


@dataclass
class Ctx:
    """A scenario's handle on the lab."""

    plan: Plan
    lab: LabPlatform
    hold: float
    say: Callable[[str], None] = lambda _: None
    notes: list[str] = field(default_factory=list)
    #: When the fault was undone (monotonic); the end of the fault function if never set.
    restored_at: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The lab's name."""
        return self.plan.name

    def ns(self, node: str) -> str:
        """The namespace of ``node``."""
        return self.plan.node(node).namespace

    def note(self, text: str) -> None:
        """Record (and say) what was done."""
        self.notes.append(text)
        self.say(f"    {text}")

    def restored(self) -> None:
        """Mark now as the moment the fault was undone."""
        self.restored_at = time.monotonic()


# ------------------------------------------------------------------ building blocks


def nft_apply(ns: str, rules: str) -> None:
    """Load ``rules`` (one of our ``hpchaos`` tables) into namespace ``ns``."""
    run(in_ns(ns, ["nft", "-f", "-"]), input=rules)


def nft_clear(ns: str) -> None:
    """Remove our tables from ``ns``; idempotent."""
    for family in ("inet", "netdev"):
        run(in_ns(ns, ["nft", "delete", "table", family, TABLE]), check=False)


def inet_table(input_rules: list[str], output_rules: list[str] | None = None) -> str:
    """An ``inet hpchaos`` table whose chains run before the security group's."""
    chains = []
    for hook, rules in (("input", input_rules), ("output", output_rules or [])):
        if rules:
            body = "\n".join(f"    {r}" for r in rules)
            chains.append(
                f"  chain {hook} {{\n    type filter hook {hook} priority -20;\n{body}\n  }}"
            )
    return f"table inet {TABLE} {{\n" + "\n".join(chains) + "\n}\n"


def addr_set(addresses: list[str]) -> str:
    """An nft anonymous set."""
    return "{ " + ", ".join(addresses) + " }"


def lb_addresses(plan: Plan, lb: str) -> list[str]:
    """Both addresses of an LB."""
    n = plan.node(lb)
    return [n.address, *([n.secondary] if n.secondary else [])]


def sweep(plan: Plan) -> None:
    """Undo anything a chaos fault may have left: our nft tables, the heartbeat partition, a
    delay line or flood sender still running and its qdisc, and stopped processes (SIGCONT to
    every LB and web process)."""
    partition(plan, False)
    for node in plan.nodes:
        if node.role in (Role.LB, Role.WEB, Role.INET):
            pids = procs.ns_pids(node.namespace)
            helpers = [p for p in pids if any(HELPERS.search(a) for a in cmdline(p))]
            signal_all(helpers, signal.SIGTERM)
            if node.role is not Role.INET:
                nft_clear(node.namespace)
                signal_all(pids, signal.SIGCONT)
    for lb in plan.lbs:
        run(in_ns(lb.namespace, ["tc", "qdisc", "del", "dev", IFNAME, "clsact"]), check=False)


def wait_for(pred: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``pred`` until true or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


# ------------------------------------------------------------------ the faults


def loss(pct: int) -> Callable[[Ctx], None]:
    """``pct`` % of lb1's frames lost, each way (netdev ingress and egress hooks on its
    interface, so ARP is lost too)."""

    def fault(ctx: Ctx) -> None:
        ns = ctx.ns("lb1")
        chains = []
        for chain, hook in (("rx", "ingress"), ("tx", "egress")):
            chains.append(
                f'  chain {chain} {{\n    type filter hook {hook} device "{IFNAME}" '
                f"priority -500;\n    numgen random mod 100 < {pct} counter drop\n  }}"
            )
        nft_apply(ns, f"table netdev {TABLE} {{\n" + "\n".join(chains) + "\n}\n")
        try:
            ctx.note(f"lb1 loses {pct} % of its frames each way for {ctx.hold:g} s")
            time.sleep(ctx.hold)
        finally:
            nft_clear(ns)
            ctx.restored()

    return fault


def delay(ctx: Ctx) -> None:
    """Every IPv4 frame on lb1's link delayed 10-90 ms each way (userspace delay line)."""
    lo, hi = DELAY_MS
    argv = [sys.executable, "-m", "hapair.bench.chaos_delay", "--iface", IFNAME]
    argv += ["--min-ms", str(lo), "--max-ms", str(hi), "--seconds", str(ctx.hold + 30)]
    proc = subprocess.Popen(
        in_ns(ctx.ns("lb1"), argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 5.0)
        line = proc.stdout.readline().strip() if ready else ""
        if line != "ready":
            raise OperationError(f"the delay line did not start: {line or 'no answer in 5 s'}")
        ctx.note(f"lb1's link: every IPv4 frame delayed {lo:g}-{hi:g} ms each way, {ctx.hold:g} s")
        time.sleep(ctx.hold)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        run(in_ns(ctx.ns("lb1"), ["tc", "qdisc", "del", "dev", IFNAME, "clsact"]), check=False)
        ctx.restored()
        last = (out or "").strip().splitlines()[-1:] or [(err or "").strip()[-300:]]
        ctx.note(f"delay line: {last[0]}")


def partition_oneway(ctx: Ctx) -> None:
    """lb1 stops hearing lb2's heartbeats (lb2 still hears lb1's)."""
    ns = ctx.ns("lb1")
    peer = addr_set(lb_addresses(ctx.plan, "lb2"))
    nft_apply(ns, inet_table([f"ip saddr {peer} udp dport {ctx.plan.spec.ha.port} drop"]))
    try:
        ctx.note(f"udp/{ctx.plan.spec.ha.port} from lb2 dropped at lb1 for {ctx.hold:g} s")
        time.sleep(ctx.hold)
    finally:
        nft_clear(ns)
        ctx.restored()


def partition_udp(ctx: Ctx) -> None:
    """Heartbeats dropped both ways (bench.faults.partition)."""
    partition(ctx.plan, True)
    try:
        ctx.note(f"udp/{ctx.plan.spec.ha.port} dropped on both LBs for {ctx.hold:g} s")
        time.sleep(ctx.hold)
    finally:
        partition(ctx.plan, False)
        ctx.restored()


def partition_full(ctx: Ctx) -> None:
    """Every packet between lb1's and lb2's addresses dropped, both ways (at lb1)."""
    ns = ctx.ns("lb1")
    peer = addr_set(lb_addresses(ctx.plan, "lb2"))
    nft_apply(ns, inet_table([f"ip saddr {peer} drop"], [f"ip daddr {peer} drop"]))
    try:
        ctx.note(f"all traffic between lb1 and lb2 dropped for {ctx.hold:g} s")
        time.sleep(ctx.hold)
    finally:
        nft_clear(ns)
        ctx.restored()


def backends_lost_lb1(ctx: Ctx) -> None:
    """lb1 alone can no longer reach any web node (dropped on the way out)."""
    ns = ctx.ns("lb1")
    webs = addr_set([w.address for w in ctx.plan.webs])
    nft_apply(ns, inet_table([], [f"ip daddr {webs} drop"]))
    try:
        ctx.note(f"lb1 -> web nodes dropped for {ctx.hold:g} s")
        time.sleep(ctx.hold)
    finally:
        nft_clear(ns)
        ctx.restored()


def backends_lost_all(ctx: Ctx) -> None:
    """Every web node stops answering both LBs (its port dropped); long enough for both
    HAProxies to mark every server DOWN."""
    hold = max(ctx.hold, 6.0)
    port = ctx.plan.spec.web.port
    webs = [w.name for w in ctx.plan.webs]
    try:
        for w in webs:
            nft_apply(ctx.ns(w), inet_table([f"tcp dport {port} drop"]))
        ctx.note(f"tcp/{port} dropped on every web node for {hold:g} s")
        time.sleep(hold)
    finally:
        for w in webs:
            nft_clear(ctx.ns(w))
        ctx.restored()


def _dropped(ctx: Ctx, lb: str) -> dict[str, int]:
    st = agent_get(str(LabPaths(ctx.name).agent_sock(lb)), "/status") or {}
    dropped = (st.get("counters") or {}).get("dropped") or {}
    return {str(k): int(v) for k, v in dropped.items()}


def flood(ctx: Ctx) -> None:
    """20,000 datagrams on udp/694 to lb1: random bytes and replayed real heartbeats from lb2's
    namespace (inside the LB group, so the security group lets them through), and random bytes
    from the client (dropped by the security group), at a bounded rate."""
    port = ctx.plan.spec.ha.port
    lb1 = lb_addresses(ctx.plan, "lb1")
    mod = [sys.executable, "-m", "hapair.bench.chaos_flood"]
    before = _dropped(ctx, "lb1")
    with tempfile.TemporaryDirectory(prefix="hapair-flood-") as tmp:
        caught = Path(tmp) / "heartbeats.hex"
        cap = [*mod, "capture", "--port", str(port), "--out", str(caught), "--count", "40"]
        for a in lb_addresses(ctx.plan, "lb2"):
            cap += ["--source", a]
        got = run(in_ns(ctx.ns("lb1"), cap), timeout=15).stdout.strip()
        ctx.note(f"captured lb2's heartbeats at lb1: {got}")
        dests = [x for a in lb1 for x in ("--dest", a)]
        vpc = [*mod, "send", *dests, "--port", str(port), "--count", str(FLOOD_VPC)]
        vpc += ["--rate", str(FLOOD_RATE * 0.9), "--replay", str(caught), "--seed", "1"]
        cli = [*mod, "send", *dests, "--port", str(port), "--count", str(FLOOD_CLIENT)]
        cli += ["--rate", str(FLOOD_RATE * 0.1), "--seed", "2"]
        senders = [
            subprocess.Popen(in_ns(ctx.ns(n), a), stdout=subprocess.PIPE, text=True)
            for n, a in (("lb2", vpc), ("inet", cli))
        ]
        try:
            for who, p in zip(("from lb2's namespace", "from the client"), senders, strict=True):
                out, _ = p.communicate(timeout=60)
                ctx.note(f"flood {who}: {out.strip()}")
        finally:
            for p in senders:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            ctx.restored()
    after = _dropped(ctx, "lb1")
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    ctx.info["dropped_by_lb1"] = {k: v for k, v in delta.items() if v}
    ctx.note(f"lb1's agent dropped: {json.dumps(ctx.info['dropped_by_lb1'])}")
    if sum(delta.values()) < FLOOD_VPC * 0.9:
        ctx.info.setdefault("violations", []).append(
            f"lb1's agent counted {sum(delta.values())} dropped datagrams of the {FLOOD_VPC} "
            "sent to its two addresses from inside the LB group: the rest never reached it "
            "(a full socket buffer, or an address of lb1 unreachable from lb2)"
        )
