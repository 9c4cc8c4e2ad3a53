"""The HA agents' timings and settings as the spec (``[ha]``) bounds them, written once.

The spec (:class:`hapair.spec.HaSpec`), the pair agent's ``agent.toml``
(:class:`hapair.agent.config.AgentConfig`) and the N-node agent's
(:class:`hapair.agent.nconfig.NodeConfig`) all use these types and :func:`timing_problem`, so
an ``agent.toml`` (and a SIGHUP reload of it) is refused for exactly what the spec refuses:
strict integers (``true`` and ``"50"`` are not milliseconds), the same bounds, the same order
of interval, warntime and deadtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hapair.spec_checks import Bounded

if TYPE_CHECKING:  # to mypy, plain ints; to pydantic, checked ones
    IntervalMs = int
    WarntimeMs = int
    DeadtimeMs = int
    InitdeadMs = int
    DelayMs = int
    HealthIntervalMs = int
    DrainMs = int
    EtcdLeaseTtlMs = int
    RequestTimeoutMs = int
    HealthCount = int
    ReconcileIntervalMs = int
    ActionTimeoutMs = int
else:
    # Each is ``Bounded(lo, hi)``: a strict int in [lo, hi] (ms unless named otherwise).
    IntervalMs = Bounded(10, 10_000)
    WarntimeMs = Bounded(10, 60_000)
    DeadtimeMs = Bounded(20, 120_000)
    InitdeadMs = Bounded(0, 600_000)
    DelayMs = Bounded(0, 600_000)  # failback_delay_ms and min_move_interval_ms
    HealthIntervalMs = Bounded(20, 10_000)
    DrainMs = Bounded(0, 60_000)
    EtcdLeaseTtlMs = Bounded(2000, 60_000)
    # Settings of agent.toml that the spec does not carry (the platforms set them).
    RequestTimeoutMs = Bounded(10, 10_000)
    HealthCount = Bounded(1, 100)
    ReconcileIntervalMs = Bounded(100, 60_000)
    ActionTimeoutMs = Bounded(100, 120_000)


def timing_problem(
    interval_ms: int, warntime_ms: int, deadtime_ms: int, section: str = ""
) -> str | None:
    """What is wrong with the order of the liveness timings, or ``None``.

    :param section: the prefix of the field names in the message (``"ha"`` in the spec,
        empty in ``agent.toml``).
    """
    if not interval_ms < warntime_ms <= deadtime_ms:
        where = f"{section}: " if section else ""
        return (
            f"{where}need interval_ms < warntime_ms <= deadtime_ms "
            f"(got {interval_ms}, {warntime_ms}, {deadtime_ms})"
        )
    if deadtime_ms < 2 * interval_ms:
        where = f"{section}." if section else ""
        return (
            f"{where}deadtime_ms: must be at least twice interval_ms ({2 * interval_ms}) "
            f"so that one lost heartbeat is not a death (got {deadtime_ms})"
        )
    return None
