"""The chaos suite: faults that real networks, machines and operators produce, each with a stated
bound on what it may cost (``hapair bench chaos``; ``tests/chaos`` asserts the bounds).

One scenario, on a lab whose VIPs are home and whose agents agree:

1. watch both LBs' addresses (:class:`~hapair.bench.chaos_watch.VipWatch`: every VIP move, from
   the kernel's notifications), and start two open-loop probes from the client, one per VIP
   (a new connection every 10 ms, 1 s deadline, bounded in count and time);
2. after 1 s, inject the fault (:mod:`hapair.bench.chaos_faults`), hold it, undo it;
3. wait (bounded) for convergence: each VIP held by exactly one node, its home, and served by
   it; both agents running, hearing their peer and holding what they should; then 2 s more,
   and check that nothing moved meanwhile;
4. stop the probes and the watch; compare with the scenario's bounds.

Bounds that hold for every scenario: after convergence each VIP is on its home node alone; no
VIP is ever held by nobody for more than :data:`UNHELD_MAX_S`; once a VIP serves again after
the fault was undone (its first successful request that started after the undo), at most
:data:`AFTER_MAX` of its requests fail (recovery and failback cost nothing); no agent restarts
unless the scenario killed it, and no agent logs a traceback or "please report". Per scenario:
VIP moves (failback included), and failed requests where none should fail.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hapair.bench import chaos_faults as f
from hapair.bench import chaos_procs as pr
from hapair.bench.chaos_watch import (
    LogCursor,
    VipWatch,
    agent_get,
    agent_pid,
    excerpt,
    logged_moves,
    problems,
)
from hapair.bench.labs import HOME, bench_name, build, served_by
from hapair.bench.probe import Sample
from hapair.bench.runner import BackgroundProbe
from hapair.errors import OperationError, UsageError
from hapair.plan import Plan
from hapair.platforms.lab.paths import LabPaths
from hapair.platforms.lab.platform import LabPlatform

PRE_S = 1.0
QUIET_S = 2.0
STEADY_S = 25.0
CONVERGE_S = 30.0
UNHELD_MAX_S = 0.1
AFTER_MAX = 5
RATE = 100.0
#: Failed requests tolerated where none should fail (machine noise; one connection reset at
#: the instant of a layer-2 move, docs/benchmarks.md finding 3).
NONE = 5


@dataclass(frozen=True)
class Scenario:
    """A fault and what it may cost.

    :ivar moves: VIP moves allowed over the whole run (both VIPs, failback included).
    :ivar failed: failed requests allowed on (vip1, vip2) over the whole run; None: not bounded
        (the fault itself makes requests fail; they are reported).
    :ivar restarts: LBs whose agent the scenario kills (its pid may change).
    """

    name: str
    title: str
    fault: Callable[[f.Ctx], None]
    moves: int
    failed: tuple[int | None, int | None]
    why: str
    restarts: frozenset[str] = frozenset()
    requires: Callable[[], str | None] = lambda: None


def _faketime() -> str | None:
    if pr.faketime_lib() is None:
        return (
            f"libfaketime is missing: install the Debian package {pr.FAKETIME_PACKAGE} "
            "(it must be in `make setup`)"
        )
    return None


LB1, BOTH = frozenset({"lb1"}), frozenset({"lb1", "lb2"})
#: In run order: faults whose recovery restarts lb1's agent follow those that may leave it a
#: flap penalty, so that a shared lab does not carry one scenario's history into the next.
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("flood", "20,000 garbage/replayed datagrams on udp/694 to lb1", f.flood, 0,
             (NONE, NONE), "nothing died; garbage is dropped and counted"),
    Scenario("partition-oneway", "lb1 stops hearing lb2 (udp/694 one way)", f.partition_oneway,
             0, (NONE, NONE), "both alive and serving"),
    Scenario("partition-udp", "udp/694 dropped both ways", f.partition_udp, 0, (NONE, NONE),
             "both alive and serving (README rule)"),
    Scenario("partition-full", "all traffic between lb1's and lb2's addresses dropped",
             f.partition_full, 2, (NONE, NONE), "lb1 finds lb2 serving at vip2 (the probe's "
             "second path) and moves nothing; lb2, whose every packet to lb1 is dropped, cannot "
             "tell the cut from a death: vip1 over and back, no request lost"),
    Scenario("stall-agent", "lb1's agent SIGSTOPped 3 s", pr.stall_agent, 0, (NONE, NONE),
             "lb1's HAProxy served throughout"),
    Scenario("stall-both-agents", "both agents SIGSTOPped together 3 s", pr.stall_both_agents,
             0, (NONE, NONE), "both HAProxys served throughout; neither judges the other by "
             "a silence it did not see"),
    Scenario("loss-20", "20 % of lb1's frames lost each way", f.loss(20), 2, (None, NONE),
             "no flapping: at most vip1 over to the clean lb2 and back once the link heals"),
    Scenario("loss-40", "40 % of lb1's frames lost each way", f.loss(40), 2, (None, NONE),
             "no flapping: at most vip1 over to the clean lb2 (its clients fare better there) "
             "and back once the link heals"),
    Scenario("delay", "lb1's link delayed 10-90 ms each way (jitter, reordering)", f.delay, 0,
             (10, NONE), "nothing died; requests stay under the 1 s deadline"),
    Scenario("stall-haproxy-short", "lb1's HAProxy SIGSTOPped 100 ms (< deadtime)",
             pr.stall_haproxy(pr.BLIP_S), 0, (NONE, NONE), "a 100 ms pause is not a death"),
    Scenario("crash-agent", "lb1's agent alone SIGKILLed (supervisor restarts it)",
             pr.crash_agent, 0, (NONE, NONE), "lb1's HAProxy keeps serving VIP1", LB1),
    Scenario("stall-haproxy", "lb1's HAProxy SIGSTOPped 3 s", pr.stall_haproxy(pr.STALL_S), 2,
             (None, NONE), "a real 3 s outage: over to lb2 and back"),
    Scenario("backends-lost-lb1", "lb1 cannot reach any web node", f.backends_lost_lb1, 2,
             (250, NONE), "lb1 cannot serve: over to lb2 and back; noticed within about 1.5 s "
             "(3 failed requests of 500 ms, one every 300 ms while calm), 250 = 2.5 s of load"),
    Scenario("clock-step", "lb1's agent restarted a day behind, clock steps +1 day mid-run",
             pr.clock_step, 0, (NONE, NONE), "wall time must not matter", LB1,
             requires=_faketime),
    Scenario("backends-lost-all", "every web node stops answering (>= 6 s)",
             f.backends_lost_all, 0, (None, None),
             "no move can help; each VIP stays held (503s, not silence)"),
    Scenario("standby-both", "operator: standby lb1, lb2; online lb2, lb1",
             pr.standby_both, 2, (NONE, NONE),
             "VIP1 over and back; nobody lets go while both are in standby"),
    Scenario("restart-both-agents", "operator: SIGTERM both agents at once",
             pr.restart_both_agents, 4, (NONE, NONE),
             "hand-overs make-before-break; each VIP at most over and back", BOTH),
    Scenario("kill-cycles", "lb1 killed and revived 5 times, 1.5 s apart", pr.kill_cycles, 2,
             (40, NONE), "one failover, one failback; no flapping", LB1),
    Scenario("both-die", "both LBs killed together, revived together after 2 s",
             pr.both_die(False), 0, (None, None), "each comes back to what it held", BOTH),
    Scenario("both-die-staggered", "lb1 killed, lb2 1 s later, both revived after 2 s",
             pr.both_die(True), 2, (None, None), "VIP1 over and back, make-before-break", BOTH),
)  # fmt: skip
BY_NAME = {s.name: s for s in SCENARIOS}


def pick(name: str) -> list[Scenario]:
    """``all`` or one scenario by name.

    :raises UsageError: unknown name.
    """
    if name == "all":
        return list(SCENARIOS)
    if name not in BY_NAME:
        raise UsageError(f"--scenario must be all or one of {', '.join(BY_NAME)} (got {name})")
    return [BY_NAME[name]]


# ------------------------------------------------------------------ the lab's state


def lab_state(plan: Plan, lab: LabPlatform) -> dict[str, Any]:
    """Who holds each VIP (kernel), each agent's pid, its peer's state and what it holds."""
    paths = LabPaths(plan.name)
    state: dict[str, Any] = {"owners": lab.vip_owners(plan), "agents": {}}
    for lb in plan.lbs:
        pid = agent_pid(lb.namespace)
        entry: dict[str, Any] = {"pid": pid, "peer": None, "held": None}
        if pid is not None:
            st = agent_get(str(paths.agent_sock(lb.name)), "/status")
            if st is not None:
                entry["peer"] = (st.get("peer") or {}).get("state")
                entry["held"] = st.get("held")
        state["agents"][lb.name] = entry
    return state


def converged(plan: Plan, state: dict[str, Any]) -> bool:
    """Each VIP on its home node alone; both agents run, hear their peer, hold their home VIP."""
    if state["owners"] != HOME:
        return False
    for lb in plan.lbs:
        a = state["agents"][lb.name]
        home = sorted(v.name for v in plan.vips if v.home == lb.name)
        if a["pid"] is None or a["peer"] != "up" or a["held"] != home:
            return False
    return all(served_by(plan, v.address) == v.home for v in plan.vips)


def wait_converged(
    plan: Plan, lab: LabPlatform, timeout: float
) -> tuple[float | None, dict[str, Any]]:
    """Poll until :func:`converged`; (seconds it took or None, the last state seen)."""
    t0 = time.monotonic()
    while True:
        state = lab_state(plan, lab)
        if converged(plan, state):
            return time.monotonic() - t0, state
        if time.monotonic() - t0 > timeout:
            return None, state
        time.sleep(0.25)


# ------------------------------------------------------------------ one scenario


def _kind(s: Sample) -> str:
    e = s.error or "failed"
    for key, word in (("Timeout", "timeout"), ("timeout", "timeout"), ("Refused", "refused")):
        if key in e:
            return word
    if "Reset" in e:
        return "reset"
    return e.split(":")[0]


def _requests(samples: list[Sample], restore: float) -> dict[str, Any]:
    """Counts of a probe's samples; "after restore" are failures of requests that started once
    the VIP served again after the fault was undone (the first success that started after the
    undo; every failure after the undo if none)."""
    failed = [s for s in samples if not s.ok]
    back = min((s.start for s in samples if s.ok and s.start >= restore), default=restore)
    return {
        "requests": len(samples),
        "failed": len(failed),
        "failed_spells": _spells(failed),
        "served_again_after_s": round(back - restore, 3),
        "failed_after_restore": sum(1 for s in failed if s.start >= back),
        "errors": dict(Counter(_kind(s) for s in failed)),
        "served_by": dict(Counter(s.lb for s in samples if s.ok)),
    }


def _spells(failed: list[Sample], gap: float = 0.2, limit: int = 20) -> list[list[float]]:
    """Failed requests grouped into spells: [first start s, last start s, count] (a gap of more
    than ``gap`` seconds between two failures starts a new spell)."""
    out: list[list[float]] = []
    for s in sorted(failed, key=lambda x: x.start):
        if out and s.start - out[-1][1] <= gap:
            out[-1][1] = round(s.start, 3)
            out[-1][2] += 1
        else:
            out.append([round(s.start, 3), round(s.start, 3), 1])
    return out[:limit]


def run_scenario(
    sc: Scenario,
    plan: Plan,
    lab: LabPlatform,
    hold: float,
    rate: float = RATE,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run one scenario on a converged lab (see the module docstring); its result."""
    result: dict[str, Any] = {
        "scenario": sc.name,
        "title": sc.title,
        "hold_s": hold,
        "bounds": {
            "moves": sc.moves,
            "failed": {"vip1": sc.failed[0], "vip2": sc.failed[1]},
            "failed_after_restore": AFTER_MAX,
            "unheld_max_ms": UNHELD_MAX_S * 1000,
            "why": sc.why,
        },
        "error": None,
    }
    missing = sc.requires()
    if missing:
        result["error"] = missing
        result["violations"] = [f"not run: {missing}"]
        return result
    paths = LabPaths(plan.name)
    logs = [paths.log(lb.name, w) for lb in plan.lbs for w in ("agent", "supervisor")]
    cursor = LogCursor(logs)
    pids = {lb.name: agent_pid(lb.namespace) for lb in plan.lbs}
    watch = VipWatch(plan)
    probes: list[BackgroundProbe] = []
    ctx = f.Ctx(plan, lab, hold, say)
    result["loadavg_before"] = round(os.getloadavg()[0], 2)
    t_restore = 0.0
    try:
        for v in plan.vips:
            probes.append(
                BackgroundProbe(plan, [v.address], rate, 300.0, 1.0, epoch=watch.t0, stream=True)
            )
        time.sleep(PRE_S)
        result["t_fault_s"] = round(watch.now(), 3)
        try:
            sc.fault(ctx)
        except Exception as exc:  # recorded as a violation: the run goes on and cleans up
            result["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            f.sweep(plan)
        t_restore = (ctx.restored_at or time.monotonic()) - watch.t0
        result["t_restore_s"] = round(t_restore, 3)
        took, state = wait_converged(plan, lab, CONVERGE_S)
        result["converged_after_s"] = None if took is None else round(took, 2)
        if took is not None:
            time.sleep(QUIET_S)
            later = lab_state(plan, lab)
            result["stable_after"] = later["owners"] == HOME
            state = later
        result["final"] = state
    finally:
        tracks = watch.stop()
        samples = []
        for p in probes:
            try:
                samples.append(p.stop())
            except OperationError as exc:
                result["error"] = result["error"] or f"probe: {exc}"
                samples.append([])
    result["loadavg_after"] = round(os.getloadavg()[0], 2)
    result["notes"] = ctx.notes
    result["info"] = ctx.info
    result["vips"] = {}
    for v, got in zip(plan.vips, samples, strict=True):
        tr = tracks[v.name]
        result["vips"][v.name] = {
            **_requests(got, t_restore),
            "moves": tr.moves,
            "timeline": [[round(t, 3), who] for t, who in tr.timeline],
            "unheld_max_ms": round(tr.unheld_max * 1000, 1),
            "unheld_total_ms": round(tr.unheld_total * 1000, 1),
            "held_twice_ms": round(tr.twice_total * 1000, 1),
        }
    result["moves"] = sum(tr.moves for tr in tracks.values())
    result["watch_overflows"] = watch.overflows
    result["agents"] = {}
    for lb in plan.lbs:
        text = cursor.new_text(paths.log(lb.name, "agent"))
        sup = cursor.new_text(paths.log(lb.name, "supervisor"))
        result["agents"][lb.name] = {
            "pid_before": pids[lb.name],
            "pid_after": result["final"]["agents"][lb.name]["pid"],
            "problems": problems(text),
            "logged_moves": logged_moves(text),
            "log": excerpt(text),
            "supervisor_restarts": sum(
                1 for line in sup.splitlines() if "supervisor: agent " in line and "restart" in line
            ),
        }
    result["violations"] = violations(sc, result)
    return result


def violations(sc: Scenario, r: dict[str, Any]) -> list[str]:
    """How a result breaks its scenario's bounds (empty: within every bound)."""
    out = []
    if r.get("error"):
        out.append(f"the run failed: {r['error']}")
    out.extend(r.get("info", {}).get("violations", []))
    final = r.get("final", {})
    if r.get("converged_after_s") is None:
        out.append(f"no convergence within {CONVERGE_S:g} s: {_state_line(final)}")
    elif not r.get("stable_after", True):
        out.append(f"moved again after convergence: {final.get('owners')}")
    if r["moves"] > sc.moves:
        tl = "; ".join(f"{v}: {_timeline(x['timeline'])}" for v, x in r["vips"].items())
        out.append(f"{r['moves']} VIP moves > {sc.moves} ({tl})")
    for i, (name, v) in enumerate(r["vips"].items()):
        bound = sc.failed[i]
        if bound is not None and v["failed"] > bound:
            out.append(f"{name}: {v['failed']} failed requests > {bound} ({v['errors']})")
        if v["failed_after_restore"] > AFTER_MAX:
            out.append(
                f"{name}: {v['failed_after_restore']} failed requests once it served again "
                f"after the restore > {AFTER_MAX}"
            )
        if v["unheld_max_ms"] > UNHELD_MAX_S * 1000:
            out.append(f"{name}: held by nobody for {v['unheld_max_ms']:.0f} ms")
    for lb, a in r["agents"].items():
        if lb not in sc.restarts and a["pid_before"] != a["pid_after"]:
            out.append(
                f"{lb}'s agent exited unexpectedly (pid {a['pid_before']} -> "
                f"{a['pid_after']}, {a['supervisor_restarts']} supervisor restarts)"
            )
        if a["problems"]:
            out.append(f"{lb}'s agent log: {a['problems'][0]}")
    return out


def _timeline(tl: list[list[Any]]) -> str:
    return " ".join(f"{who}@{t:.2f}" for t, who in tl)


def _state_line(state: dict[str, Any]) -> str:
    agents = state.get("agents", {})
    parts = [f"owners {state.get('owners')}"]
    for lb, a in agents.items():
        parts.append(f"{lb} pid {a['pid']} peer {a['peer']} holds {a['held']}")
    return "; ".join(parts)


# ------------------------------------------------------------------ a lab for many scenarios


class ChaosLab:
    """One lab shared by scenarios: converged before each, rebuilt when it does not converge."""

    def __init__(self, name: str | None = None, say: Callable[[str], None] = lambda _: None):
        self.name = name or bench_name()
        self.say = say
        self.rebuilds = 0
        say(f"building lab {self.name}")
        self.plan, self.lab = build(self.name, "hapair")

    def rebuild(self) -> None:
        """Down and up again (a fresh lab under the same name)."""
        self.rebuilds += 1
        self.say(f"rebuilding lab {self.name}")
        self.lab.down(self.name)
        self.plan, self.lab = build(self.name, "hapair")

    def run(self, sc: Scenario, hold: float, rate: float = RATE) -> dict[str, Any]:
        """:func:`run_scenario` on a converged lab (rebuilt first if it does not converge).

        :raises OperationError: not even a fresh lab converges.
        """
        f.sweep(self.plan)
        rebuilt = False
        took, state = wait_converged(self.plan, self.lab, STEADY_S)
        if took is None:
            self.say(f"  not converged before {sc.name} ({_state_line(state)})")
            self.rebuild()
            rebuilt = True
            took, state = wait_converged(self.plan, self.lab, STEADY_S)
            if took is None:
                raise OperationError(f"a fresh lab does not converge: {_state_line(state)}")
        self.say(f"{sc.name}: {sc.title}")
        started = time.monotonic()
        result = run_scenario(sc, self.plan, self.lab, hold, rate, self.say)
        result["lab_rebuilt_before"] = rebuilt
        result["wall_s"] = round(time.monotonic() - started, 1)
        return result

    def close(self) -> None:
        """Remove the lab."""
        self.say(f"tearing down {self.name}")
        LabPlatform("hapair").down(self.name)
