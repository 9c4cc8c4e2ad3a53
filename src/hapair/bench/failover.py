"""The failover benchmark: build a lab for an engine, run N trials, summarize (``anchors.md``).

One trial: wait for steady state; probe VIP1 (plain client) and both VIPs (DNS-aware client)
at ``rate``; inject the fault at 3 s + random 0-1 s; wait for the first 200 on VIP1 served by
lb2, 3 s more; restore; wait for lb1 to serve VIP1 again, then until 8 s pass without a failed
request; stop the probes. Every wait is bounded.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hapair.bench import analysis, faults
from hapair.bench.engines import HaEngine, HapairAgents, make_engine
from hapair.bench.labs import bench_name, build, is_steady, keep_logs, wait_until
from hapair.bench.probe import Sample
from hapair.bench.runner import BackgroundProbe
from hapair.errors import OperationError, UsageError
from hapair.plan import Plan
from hapair.platforms.aws.timing import AWS_PROFILE
from hapair.platforms.lab.platform import Engine, LabPlatform

logger = logging.getLogger(__name__)

ORDINARY_TIMEOUT = 10.0
"""The ``ordinary`` and ``keepalive`` profiles' deadline: no application retry within it, but
the kernel's own SYN retransmissions (curl's and browsers' behaviour)."""
LAB_ENGINE: dict[str, Engine] = {"hapair": "hapair", "keepalived": "none", "heartbeat": "none"}
VARIANTS = {
    "hapair": ("default",),
    "keepalived": ("default", "tuned"),
    "heartbeat": ("default", "tuned"),
}


@dataclass(frozen=True)
class Timeouts:
    """Bounds of every wait in a trial (seconds)."""

    steady: float = 30.0
    move: float = 25.0
    hold: float = 3.0
    partition: float = 10.0
    back: float = 75.0
    quiet: float = 8.0
    quiet_max: float = 60.0

    @property
    def probe(self) -> float:
        """How long a probe may run at most (it is stopped as soon as the trial ends)."""
        return 4 + max(self.move, self.partition) + self.hold + self.back + self.quiet_max + 5


def timeouts_for(engine: str, variant: str) -> Timeouts:
    """Heartbeat with the original timers starts slowly (initdead 60) and fails back slowly."""
    if engine == "heartbeat":
        return Timeouts(steady=180.0 if variant == "default" else 90.0)
    return Timeouts()


@dataclass
class Trial:
    """One trial's result: metrics and the raw samples (for plots)."""

    metrics: dict[str, Any]
    plain: list[Sample] = field(repr=False)
    dns: list[Sample] = field(repr=False)


def _poll(probe: BackgroundProbe, pred: Callable[[list[Sample]], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred(probe.samples()):
            return True
        time.sleep(0.05)
    return False


def run_trial(
    target: faults.Target, scenario: str, rate: float, rng: random.Random, t: Timeouts
) -> Trial:
    """One trial (see the module docstring); the lab must be steady."""
    plan = target.plan
    vip1, vip2 = (v.address for v in plan.vips)
    epoch = time.monotonic()
    moves_before = _moves(target.engine)
    plain = BackgroundProbe(plan, [vip1], rate, t.probe, 1.0, epoch=epoch, stream=True)
    dns = BackgroundProbe(plan, [vip1, vip2], rate, t.probe, 1.0, True, epoch, stream=True)
    # Client profiles (issue 11): curl's and browsers' behaviour, new connection or kept alive.
    ordinary = BackgroundProbe(plan, [vip1], rate, t.probe, ORDINARY_TIMEOUT, epoch=epoch)
    keep = BackgroundProbe(
        plan, [vip1], rate, t.probe, ORDINARY_TIMEOUT, epoch=epoch, keepalive=True
    )
    try:
        time.sleep(max(0.0, 3.0 + rng.random() - plain.now()))
        t_fail = plain.now()
        logger.info("fault at %.3f s: %s", t_fail, faults.inject(target, scenario))
        if scenario in faults.MOVES:
            moved = _poll(
                plain, lambda s: analysis.first_ok_by(s, "lb2", t_fail) is not None, t.move
            )
            logger.info("VIP1 served by lb2: %s", "yes" if moved else f"not within {t.move} s")
        else:
            time.sleep(t.partition)
        time.sleep(t.hold)
        t_restore = plain.now()
        logger.info("restore at %.3f s: %s", t_restore, faults.restore(target, scenario))
        back = _poll(plain, lambda s: analysis.first_ok_by(s, "lb1", t_restore) is not None, t.back)
        logger.info("VIP1 served by lb1 again: %s", "yes" if back else f"not within {t.back} s")

        def quiet(samples: list[Sample]) -> bool:
            last = analysis.last_failure_end(samples) or 0.0
            return plain.now() - max(last, t_restore) >= t.quiet

        _poll(plain, quiet, t.quiet_max)
    finally:
        s_plain = plain.stop()
        s_dns = dns.stop()
        s_ordinary = ordinary.stop()
        s_keep = keep.stop()
    marks = analysis.Marks(t_fail, t_restore)
    metrics = analysis.trial_metrics(s_plain, marks)
    metrics["dns"] = analysis.dns_metrics(s_dns, marks)
    metrics["ordinary"] = analysis.profile_metrics(s_ordinary, marks)
    metrics["keepalive"] = analysis.profile_metrics(s_keep, marks)
    after = _moves(target.engine)
    metrics["vip_moves"] = None if after is None or moves_before is None else after - moves_before
    return Trial(metrics, s_plain, s_dns)


def _remaps(plan: Plan) -> int | None:
    """AssociateAddress calls the agents made so far (aws fabric; None on l2)."""
    if plan.spec.lab.fabric != "aws":
        return None
    from hapair.platforms.lab.fabric import lab as fabric

    return sum(1 for c in fabric.calls(plan.name) if c.get("agent"))


def _moves(engine: HaEngine) -> int | None:
    if not isinstance(engine, HapairAgents):
        return None
    try:
        return engine.moves()
    except OperationError:
        return None  # an agent was down (restarted agents count from zero anyway)


def wait_steady(target: faults.Target, timeout: float) -> float:
    """Wait until both HA daemons run and each VIP is served by its home LB only."""

    def ok() -> bool:
        daemons = all(target.engine.running(lb.name) for lb in target.plan.lbs)
        return daemons and is_steady(target.plan, target.lab)

    return wait_until("steady state (VIP1 on lb1, VIP2 on lb2)", ok, timeout, step=0.5)


def bench_failover(
    engine: str,
    variant: str,
    scenario: str,
    runs: int,
    rate: float,
    name: str | None = None,
    seed: int | None = None,
    say: Callable[[str], None] = lambda _: None,
    fabric: str = "l2",
    eip_propagation_ms: int | None = None,
    eip_api_latency_ms: int | None = None,
    timing: str = "lab",
) -> tuple[dict[str, Any], list[Trial]]:
    """Build a lab, run ``runs`` trials, tear the lab down; returns (report, trials).

    ``fabric`` (``l2`` or ``aws``, the spec's ``lab.fabric``; aws with the hapair engine only),
    ``eip_propagation_ms`` (aws: the igw's delay, default the spec's) and
    ``eip_api_latency_ms`` (aws: each address call's round trip) choose the lab's VPC;
    ``timing = "aws"`` runs the agents with the AWS timing profile instead of the lab's.
    """
    faults.check_scenario(scenario, engine)
    if fabric != "l2" and engine != "hapair":
        raise UsageError(f"--fabric {fabric}: the hapair engine only (got --engine {engine})")
    name = name or bench_name()
    t = timeouts_for(engine, variant)
    if timing == "aws":  # deadtime 5 s + propagation, failback after 30 s + propagation
        t = Timeouts(steady=120.0, move=60.0, back=150.0)
    rng = random.Random(seed)
    say(f"building lab {name} (engine {engine} {variant}, fabric {fabric})")
    started = time.time()
    plan, lab = build(
        name,
        LAB_ENGINE[engine],
        fabric=fabric,
        eip_propagation_ms=eip_propagation_ms,
        eip_api_latency_ms=eip_api_latency_ms,
        ha=AWS_PROFILE if timing == "aws" else None,
    )
    trials: list[Trial] = []
    aborted = None
    try:
        ha = make_engine(engine, plan, variant)
        ha.prepare()
        for lb in plan.lbs:
            ha.start(lb.name)
        target = faults.Target(plan, lab, ha)
        waited = wait_steady(target, t.steady)
        say(f"steady after {waited:.1f} s")
        for i in range(runs):
            try:
                if i:
                    wait_steady(target, t.steady)
                remaps = _remaps(plan)
                trial = run_trial(target, scenario, rate, rng, t)
                after = _remaps(plan)
                trial.metrics["eip_remaps"] = None if after is None else after - (remaps or 0)
            except OperationError as exc:
                aborted = f"run {i + 1}: {exc}"
                say(f"stopping early: {aborted}")
                break
            trials.append(trial)
            m = trial.metrics
            say(
                f"run {i + 1}/{runs}: gap {_ms(m['gap_s'])}, failed {m['failed']}, "
                f"failback after {_ms(m['failback_after_s'])}, failback failed "
                f"{m['failback_failed']}, dns failed {m['dns']['failed']}"
            )
    finally:
        keep_logs(name, say)
        say(f"tearing down {name}")
        LabPlatform(LAB_ENGINE[engine]).down(name)
    report: dict[str, Any] = {
        "engine": engine,
        "variant": variant,
        "fabric": fabric,
        "eip_propagation_ms": plan.spec.lab.eip_propagation_ms if fabric == "aws" else None,
        "eip_api_latency_ms": plan.spec.lab.eip_api_latency_ms if fabric == "aws" else None,
        "timing": timing,
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
