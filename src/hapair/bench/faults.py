"""Faults a failover trial injects on lb1, and how each is undone (``anchors.md``'s modes).

* ``crash``: SIGSTOP then SIGKILL every process on lb1 (HA daemon and HAProxy); the VIP stays
  configured. Restore: HAProxy, then the HA daemon.
* ``reboot``: the same, and lb1's VIPs are deleted before the restore.
* ``link``: lb1's switch port down. Restore: link up.
* ``haproxy``: SIGKILL HAProxy only, and its supervisor, so that it stays down until the restore
  (the lab restarts a crashed service after 1 s; the trial holds the fault longer). Restore:
  start HAProxy (``revive`` is idempotent: it starts only what does not run).
* ``planned``: ``standby lb1`` through the agent API. Restore: ``online lb1`` (hapair only).
* ``partition``: udp/694 dropped between the LBs (both alive and serving). Restore: undrop.
"""

from __future__ import annotations

from dataclasses import dataclass

from hapair.bench.engines import HaEngine, HapairAgents
from hapair.bench.keepalived import Keepalived
from hapair.errors import UsageError
from hapair.plan import Plan
from hapair.platforms.lab.platform import LabPlatform
from hapair.platforms.lab.system import in_ns, run

SCENARIOS = ("crash", "reboot", "link", "haproxy", "planned", "partition")
#: Scenarios after which VIP1 is expected to move to lb2.
MOVES = {"crash", "reboot", "link", "haproxy", "planned"}
PARTITION_TABLE = "hpbench"


def partition_rules(port: int) -> str:
    """An nft table that drops heartbeat datagrams before the security group sees them."""
    return (
        f"table inet {PARTITION_TABLE} {{\n chain input {{\n"
        f"  type filter hook input priority -10;\n  udp dport {port} drop\n }}\n}}\n"
    )


@dataclass
class Target:
    """The lab a fault is injected into."""

    plan: Plan
    lab: LabPlatform
    engine: HaEngine
    node: str = "lb1"


def check_scenario(scenario: str, engine: str) -> None:
    """:raises UsageError: unknown scenario, or one the engine cannot do."""
    if scenario not in SCENARIOS:
        raise UsageError(f"--scenario must be one of {', '.join(SCENARIOS)} (got {scenario})")
    if scenario == "planned" and engine != "hapair":
        raise UsageError("--scenario planned needs hapair's agent API (--engine hapair)")


def partition(plan: Plan, on: bool) -> None:
    """Drop (or stop dropping) heartbeat datagrams on both LBs; nothing else is touched."""
    for lb in plan.lbs:
        if on:
            rules = partition_rules(plan.spec.ha.port)
            run(in_ns(lb.namespace, ["nft", "-f", "-"]), input=rules)
        else:
            run(
                in_ns(lb.namespace, ["nft", "delete", "table", "inet", PARTITION_TABLE]),
                check=False,
            )


def inject(t: Target, scenario: str) -> str:
    """Fail ``t.node``; returns what was done."""
    name = t.plan.name
    if scenario in ("crash", "reboot"):
        return t.lab.kill(name, t.node, "machine")
    if scenario in ("link", "haproxy"):
        return t.lab.kill(name, t.node, scenario, keep_down=True)
    if scenario == "planned":
        assert isinstance(t.engine, HapairAgents)
        return t.engine.admin(t.node, "standby")
    if scenario == "partition":
        partition(t.plan, True)
        return "udp/694 dropped between the LBs"
    raise UsageError(f"unknown scenario {scenario}")


def restore(t: Target, scenario: str) -> str:
    """Undo :func:`inject`; returns what was done."""
    name = t.plan.name
    if scenario == "planned":
        assert isinstance(t.engine, HapairAgents)
        return t.engine.admin(t.node, "online")
    if scenario == "partition":
        partition(t.plan, False)
        return "udp/694 between the LBs again"
    done = t.lab.revive(name, t.node, reboot=scenario == "reboot")
    if not t.engine.running(t.node):
        t.engine.start(t.node)
        done += ", started the HA daemon"
    elif isinstance(t.engine, Keepalived):
        t.engine.refresh(t.node)
    return done
