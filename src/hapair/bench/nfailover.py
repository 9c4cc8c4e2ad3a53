"""The failover benchmark with more than a pair (``hapair bench failover --lbs N``, issue 13).

The lab: N LBs, 2 VIPs each, ownership through etcd (:mod:`hapair.bench.nlabs`). One trial:
wait until every VIP is on one LB and balanced; the *victim* is the LB that carries VIP1 now
(read from the lab's interfaces, never assumed); probe VIP1 (plain, ``ordinary`` and
keep-alive clients) and every VIP (DNS-aware client) at ``rate``; crash the victim at 3 s +
random 0-1 s; wait for the first 200 on VIP1 served by another LB (the *mover*: whoever
placement picked), 3 s more; revive the victim; wait until it carries its share again
(balanced over all N: that is the failback here, since placement need not hand VIP1 itself
back), then until 8 s pass without a failed request. Every wait is bounded. The figures are
the pair's (:mod:`hapair.bench.analysis`) with home = the victim, mover = the first other LB
that served VIP1.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from hapair.agent.client import agent_request
from hapair.bench import analysis, faults
from hapair.bench.engines import MOVES_RE, HapairAgents
from hapair.bench.failover import Timeouts, Trial, _poll
from hapair.bench.labs import bench_name, keep_logs
from hapair.bench.nlabs import VIPS_PER_LB, balanced, build_n, owner_of, wait_balanced
from hapair.bench.probe import Sample
from hapair.bench.runner import BackgroundProbe
from hapair.errors import OperationError, UsageError
from hapair.platforms.lab.platform import LabPlatform

logger = logging.getLogger(__name__)

#: Scenarios this benchmark runs with more than 2 LBs (SIGKILL of every process on the victim;
#: ``reboot`` also drops its stale VIPs before the revive).
N_SCENARIOS = ("crash", "reboot")


def check_n(
    lbs: int, engine: str, variant: str, scenario: str, fabric: str, eip_ms: int | None
) -> None:
    """What ``--lbs`` above 2 supports (pure).

    :raises UsageError: naming the option and the fix.
    """
    if lbs == 2:
        return
    n = f"--lbs {lbs}"
    if engine != "hapair":
        raise UsageError(
            f"{n}: only hapair's N-node agent runs more than a pair (got --engine {engine}); "
            "use --engine hapair, or --lbs 2 to compare engines"
        )
    if variant != "default":
        raise UsageError(f"{n}: --variant {variant} is not hapair's; use --variant default")
    if scenario not in N_SCENARIOS:
        raise UsageError(
            f"{n}: --scenario {scenario} is measured on the pair only; use --scenario "
            f"{' or '.join(N_SCENARIOS)}, or --lbs 2 for {scenario}"
        )
    if fabric != "l2" or eip_ms is not None:
        raise UsageError(
            f"{n}: the N-LB lab runs on the l2 fabric only (got --fabric {fabric}"
            f"{'' if eip_ms is None else f', --eip-propagation-ms {eip_ms}'}); "
            "use --fabric l2 without --eip-propagation-ms, or --lbs 2"
        )


def first_ok_not_by(samples: Iterable[Sample], lb: str, after: float) -> Sample | None:
    """The success served by another LB than ``lb`` that ended first among those started at
    or after ``after`` (pure)."""
    hits = [s for s in samples if s.ok and s.lb and s.lb != lb and s.start >= after]
    return min(hits, key=lambda s: s.end, default=None)


def n_metrics(
    plain: list[Sample], marks: analysis.Marks, victim: str, rebalanced_s: float | None
) -> dict[str, Any]:
    """The pair's per-trial metrics with home = ``victim`` and mover = the first other LB that
    served VIP1; ``failback_after_s`` is the time to balance again (``vip1_back_s``: until
    the victim served VIP1 again, None when placement left VIP1 elsewhere). Pure."""
    first = first_ok_not_by(plain, victim, marks.t_fail)
    mover = first.lb if first is not None else ""
    m = analysis.trial_metrics(plain, marks, home=victim, mover=mover)
    m["vip1_back_s"] = m["failback_after_s"]
    m["failback_after_s"] = rebalanced_s
    m["victim"] = victim
    m["mover"] = mover or None
    return m


def _moves_by(engine: HapairAgents) -> dict[str, int] | None:
    """VIP takes and releases each agent counted since it started (None: an agent is down)."""
    out = {}
    try:
        for lb in engine.plan.lbs:
            _, body = agent_request(str(engine.paths.agent_sock(lb.name)), "GET", "/metrics")
            out[lb.name] = int(sum(float(v) for _, v in MOVES_RE.findall(str(body))))
    except OperationError:
        return None
    return out


def moves_between(before: dict[str, int], after: dict[str, int], restarted: str) -> int:
    """VIP takes and releases between two counts; ``restarted``'s agent counts from zero
    after its revive (pure)."""
    return sum(after[lb] - (0 if lb == restarted else before.get(lb, 0)) for lb in after)


def run_trial_n(
    target: faults.Target, scenario: str, rate: float, rng: random.Random, t: Timeouts
) -> Trial:
    """One trial (see the module docstring); the lab must be balanced."""
    plan, lab = target.plan, target.lab
    lbs = [lb.name for lb in plan.lbs]
    vip1 = plan.vips[0]
    victim = owner_of(lab.vip_owners(plan), vip1.name)
    target.node = victim
    everyone = [v.address for v in plan.vips]
    epoch = time.monotonic()
    assert isinstance(target.engine, HapairAgents)
    moves_before = _moves_by(target.engine)
    plain = BackgroundProbe(plan, [vip1.address], rate, t.probe, 1.0, epoch=epoch, stream=True)
    dns = BackgroundProbe(plan, everyone, rate, t.probe, 1.0, True, epoch, stream=True)
    ordinary = BackgroundProbe(plan, [vip1.address], rate, t.probe, 10.0, epoch=epoch)
    keep = BackgroundProbe(plan, [vip1.address], rate, t.probe, 10.0, epoch=epoch, keepalive=True)
    rebalanced: float | None = None
    try:
        time.sleep(max(0.0, 3.0 + rng.random() - plain.now()))
        t_fail = plain.now()
        logger.info("fault at %.3f s on %s: %s", t_fail, victim, faults.inject(target, scenario))
        moved = _poll(plain, lambda s: first_ok_not_by(s, victim, t_fail) is not None, t.move)
        logger.info("VIP1 served by another LB: %s", "yes" if moved else f"not in {t.move} s")
        time.sleep(t.hold)
        t_restore = plain.now()
        logger.info("restore at %.3f s: %s", t_restore, faults.restore(target, scenario))
        deadline = time.monotonic() + t.back
        while time.monotonic() < deadline:
            if balanced(lab.vip_owners(plan), lbs):
                rebalanced = round(plain.now() - t_restore, 4)
                break
            time.sleep(0.1)
        logger.info("balanced again: %s", rebalanced if rebalanced is not None else "no")

        def quiet(samples: list[Sample]) -> bool:
            last = analysis.last_failure_end(samples) or 0.0
            return plain.now() - max(last, t_restore) >= t.quiet

        _poll(plain, quiet, t.quiet_max)
    finally:
        s_plain, s_dns = plain.stop(), dns.stop()
        s_ordinary, s_keep = ordinary.stop(), keep.stop()
    marks = analysis.Marks(t_fail, t_restore)
    metrics = n_metrics(s_plain, marks, victim, rebalanced)
    metrics["dns"] = analysis.dns_metrics(s_dns, marks)
    metrics["ordinary"] = analysis.profile_metrics(s_ordinary, marks)
    metrics["keepalive"] = analysis.profile_metrics(s_keep, marks)
    after = _moves_by(target.engine)
    metrics["vip_moves"] = (
        None
        if after is None or moves_before is None
        else moves_between(moves_before, after, victim)
    )
    return Trial(metrics, s_plain, s_dns)


def bench_failover_n(
    lbs: int,
    scenario: str,
    runs: int,
    rate: float,
    name: str | None = None,
    seed: int | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> tuple[dict[str, Any], list[Trial]]:
    """Build an N-LB etcd lab, run ``runs`` trials, tear it down; returns (report, trials)."""
    check_n(lbs, "hapair", "default", scenario, "l2", None)
    name = name or bench_name()
    t = Timeouts(steady=60.0)
    rng = random.Random(seed)
    say(f"building lab {name} ({lbs} LBs, {lbs * VIPS_PER_LB} VIPs, etcd)")
    started = time.time()
    plan, lab = build_n(name, lbs)
    trials: list[Trial] = []
    aborted = None
    try:
        target = faults.Target(plan, lab, HapairAgents(plan))
        say(f"balanced after {wait_balanced(plan, lab, t.steady):.1f} s")
        for i in range(runs):
            try:
                if i:
                    wait_balanced(plan, lab, t.steady)
                trial = run_trial_n(target, scenario, rate, rng, t)
            except (OperationError, ValueError) as exc:
                aborted = f"run {i + 1}: {exc}"
                say(f"stopping early: {aborted}")
                break
            trials.append(trial)
            m = trial.metrics
            say(
                f"run {i + 1}/{runs}: {m['victim']} killed, VIP1 to {m['mover']}: gap "
                f"{_ms(m['gap_s'])}, failed {m['failed']}, balanced again after "
                f"{_ms(m['failback_after_s'])}, failback failed {m['failback_failed']}, "
                f"dns failed {m['dns']['failed']}"
            )
    finally:
        keep_logs(name, say)
        say(f"tearing down {name}")
        LabPlatform("hapair").down(name)
    report: dict[str, Any] = {
        "engine": "hapair",
        "variant": "default",
        "fabric": "l2",
        "eip_propagation_ms": None,
        "lbs": lbs,
        "vips": len(plan.vips),
        "coordinator": "etcd",
        "scenario": scenario,
        "rate": rate,
        "started": started,
        "runs": [tr.metrics for tr in trials],
        "aborted": aborted,
    }
    report.update(analysis.summarize(report["runs"]))
    return report, trials


def _ms(v: float | None) -> str:
    return "never" if v is None else f"{v * 1000:.0f} ms"
