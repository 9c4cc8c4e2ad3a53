"""The chaos suite's process and operator faults: stalled and crashed agents and HAProxies,
operators restarting or standing by both nodes, machines dying and coming back, a stepped wall
clock. Like :mod:`hapair.bench.chaos_faults`, each undoes itself in a ``finally`` block.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hapair.bench.chaos_faults import Ctx, ScenarioUnavailable, wait_for
from hapair.bench.chaos_watch import agent_pid, pids_named, signal_all, supervisor_of
from hapair.bench.engines import HapairAgents
from hapair.errors import OperationError
from hapair.platforms.lab import procs
from hapair.platforms.lab.paths import LabPaths

#: Seconds a stalled agent or HAProxy stays stopped.
STALL_S = 3.0
#: A HAProxy stall shorter than the dead time (150 ms).
BLIP_S = 0.1
#: Kill/revive cycles of lb1, and the seconds between one step and the next.
CYCLES, CYCLE_GAP_S = 5, 1.5
#: Both LBs stay dead this long.
BOTH_DEAD_S = 2.0
FAKETIME_PACKAGE = "faketime"


def _agent(ctx: Ctx, lb: str) -> int:
    pid = agent_pid(ctx.ns(lb))
    if pid is None:
        raise OperationError(f"no agent runs on {lb}")
    return pid


def _wait_new_agent(ctx: Ctx, lb: str, old: int, timeout: float) -> str:
    """Wait for a new agent on ``lb`` (its supervisor's restart); else start it with revive."""
    if wait_for(lambda: agent_pid(ctx.ns(lb)) not in (None, old), timeout, 0.05):
        return f"{lb}'s agent came back (pid {old} -> {agent_pid(ctx.ns(lb))})"
    done = ctx.lab.revive(ctx.name, lb)
    return f"{lb}'s agent did not come back within {timeout:g} s; revive: {done}"


def _revive_together(ctx: Ctx, lbs: list[str]) -> None:
    errors: list[BaseException] = []

    def one(lb: str) -> None:
        try:
            ctx.note(ctx.lab.revive(ctx.name, lb))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(lb,)) for lb in lbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise OperationError(f"revive failed: {errors[0]}")


# ------------------------------------------------------------------ the faults


def stall_agent(ctx: Ctx) -> None:
    """lb1's agent stopped (SIGSTOP) for 3 s, then continued."""
    pid = _agent(ctx, "lb1")
    os.kill(pid, signal.SIGSTOP)
    try:
        ctx.note(f"lb1's agent (pid {pid}) stopped for {STALL_S:g} s")
        time.sleep(STALL_S)
    finally:
        signal_all([pid], signal.SIGCONT)
        ctx.restored()


def stall_both_agents(ctx: Ctx) -> None:
    """Both agents stopped (SIGSTOP) together for 3 s, then continued together (a paused
    host or hypervisor): after it, neither may judge the other by the silence it did not
    see itself."""
    pids = [_agent(ctx, "lb1"), _agent(ctx, "lb2")]
    signal_all(pids, signal.SIGSTOP)
    try:
        ctx.note(f"both agents (pids {pids[0]}, {pids[1]}) stopped for {STALL_S:g} s")
        time.sleep(STALL_S)
    finally:
        signal_all(pids, signal.SIGCONT)
        ctx.restored()


def stall_haproxy(seconds: float) -> Callable[[Ctx], None]:
    """Every HAProxy process of lb1 stopped for ``seconds``."""

    def fault(ctx: Ctx) -> None:
        pids = pids_named(ctx.ns("lb1"), "haproxy")
        if not pids:
            raise OperationError("no HAProxy runs on lb1")
        signal_all(pids, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            signal_all(pids, signal.SIGCONT)
            ctx.restored()
            ctx.note(f"lb1's HAProxy (pids {pids}) stopped for {seconds * 1000:.0f} ms")

    return fault


def crash_agent(ctx: Ctx) -> None:
    """lb1's agent alone gets SIGKILL; its supervisor restarts it (else revive does)."""
    pid = _agent(ctx, "lb1")
    os.kill(pid, signal.SIGKILL)
    ctx.note(f"lb1's agent (pid {pid}) killed")
    try:
        ctx.note(_wait_new_agent(ctx, "lb1", pid, 6.0))
    finally:
        ctx.restored()


def restart_both_agents(ctx: Ctx) -> None:
    """An operator restarts both agents at once: SIGTERM to both (each hands its VIPs to its
    peer, which is leaving too); supervisors start them again (else revive does)."""
    pids = {lb: _agent(ctx, lb) for lb in ("lb1", "lb2")}
    signal_all(list(pids.values()), signal.SIGTERM)
    ctx.note(f"SIGTERM to both agents (pids {pids['lb1']}, {pids['lb2']})")
    try:
        for lb, pid in pids.items():
            ctx.note(_wait_new_agent(ctx, lb, pid, 15.0))
    finally:
        ctx.restored()


def standby_both(ctx: Ctx) -> None:
    """An operator puts lb1 in standby (VIP1 goes to lb2), then lb2 too (nobody is left to
    take anything: both VIPs must stay held), then puts lb2 online and lb1 online (VIP1 goes
    home). Only VIP1's two planned moves are expected: lb2 is online before lb1 is."""
    agents = HapairAgents(ctx.plan)
    try:
        for lb in ("lb1", "lb2"):
            ctx.note(f"standby {lb}: {agents.admin(lb, 'standby')}")
            time.sleep(0.5)
        time.sleep(ctx.hold)
    finally:
        for lb in ("lb2", "lb1"):
            try:
                ctx.note(f"online {lb}: {agents.admin(lb, 'online')}")
            except OperationError as exc:
                ctx.note(f"online {lb} failed: {exc}")
        ctx.restored()


def both_die(staggered: bool) -> Callable[[Ctx], None]:
    """Both LBs die as machines and come back together (``staggered``: lb1 first, so that
    VIP1 is on lb2 when lb2 dies too)."""

    def fault(ctx: Ctx) -> None:
        try:
            ctx.note(ctx.lab.kill(ctx.name, "lb1", "machine"))
            if staggered:
                time.sleep(1.0)
            ctx.note(ctx.lab.kill(ctx.name, "lb2", "machine"))
            time.sleep(BOTH_DEAD_S)
        finally:
            _revive_together(ctx, ["lb1", "lb2"])
            ctx.restored()

    return fault


def kill_cycles(ctx: Ctx) -> None:
    """lb1 killed and revived 5 times, 1.5 s apart."""
    try:
        for i in range(CYCLES):
            ctx.lab.kill(ctx.name, "lb1", "machine")
            time.sleep(CYCLE_GAP_S)
            ctx.lab.revive(ctx.name, "lb1")
            if i < CYCLES - 1:
                time.sleep(CYCLE_GAP_S)
        ctx.note(f"lb1 killed and revived {CYCLES} times, {CYCLE_GAP_S:g} s apart")
    finally:
        ctx.lab.revive(ctx.name, "lb1")
        ctx.restored()


def faketime_lib() -> str | None:
    """libfaketime (the Debian package ``faketime``), if installed."""
    for pattern in (
        "/usr/lib/*/faketime/libfaketimeMT.so.1",
        "/usr/lib/*/faketime/libfaketime.so.1",
    ):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def _faked_env(lib: str, stamp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKETIME", "AWS_"))}
    env.update(
        LD_PRELOAD=lib,
        FAKETIME_TIMESTAMP_FILE=str(stamp),
        FAKETIME_CACHE_DURATION="1",
        DONT_FAKE_MONOTONIC="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def clock_step(ctx: Ctx) -> None:
    """lb1's agent restarted with its wall clock a day behind (libfaketime, in that process
    only; the monotonic clock untouched), which then steps forward a day mid-run."""
    lib = faketime_lib()
    if lib is None:
        raise ScenarioUnavailable(
            f"clock-step needs libfaketime: install the Debian package {FAKETIME_PACKAGE} "
            f"(apt-get install {FAKETIME_PACKAGE}; `make setup` should install it)"
        )
    paths = LabPaths(ctx.name)
    stamp = paths.node("lb1") / "chaos-faketime"
    stamp.write_text("-1d\n")
    env = _faked_env(lib, stamp)
    check = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time())"],
        env=env, capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    offset = float(check.stdout.strip() or "nan") - time.time()
    ctx.note(f"libfaketime check: wall clock off by {offset / 3600:+.1f} h")
    if not -25 * 3600 < offset < -23 * 3600:
        ctx.info.setdefault("violations", []).append(
            f"libfaketime did not set the clock a day back (offset {offset:.0f} s)"
        )
    ns = ctx.ns("lb1")
    pid = _agent(ctx, "lb1")
    faked = None
    try:
        victims = [p for p in (supervisor_of(pid), pid) if p is not None]
        signal_all(victims, signal.SIGSTOP)
        signal_all(victims, signal.SIGKILL)
        wait_for(lambda: agent_pid(ns) is None, 3.0)
        paths.agent_sock("lb1").unlink(missing_ok=True)
        argv = [sys.executable, "-m", "hapair.agent", "--config", str(paths.agent_toml("lb1"))]
        faked = procs.spawn(ns, argv, paths.log("lb1", "agent"), env)
        ctx.note(f"lb1's agent (pid {pid}) replaced by pid {faked.pid}, wall clock -1 day")
        time.sleep(ctx.hold / 2)
        stamp.write_text("+0\n")
        ctx.note("lb1's agent's wall clock steps forward a day (back to the true time)")
        time.sleep(ctx.hold / 2 + 1.0)
        if not procs.alive(faked):
            ctx.info.setdefault("violations", []).append(
                "lb1's agent started with its clock a day behind exited (see its log)"
            )
    finally:
        if faked is not None:
            procs.signal_proc(faked, signal.SIGKILL)
            wait_for(lambda: not procs.alive(faked), 3.0)
        ctx.note(ctx.lab.revive(ctx.name, "lb1"))
        stamp.unlink(missing_ok=True)
        ctx.restored()
