"""Failover metrics from probe samples: pure functions of the samples and the trial's marks.

Definitions follow ``anchors.md`` so hapair's figures compare with keepalived's and Heartbeat's:

* failover gap: end of the first successful request served by the mover (lb2) - ``t_fail``;
* failed: failed requests started from ``t_fail - 1 s`` up to ``t_restore``;
* failback after: end of the first success served by the home LB (lb1) after ``t_restore``
  - ``t_restore``;
* failback longest gap: longest time without a successful completion after ``t_restore``;
* failback failed: failed requests started after ``t_restore``.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hapair.bench.probe import Sample


@dataclass(frozen=True)
class Marks:
    """When the trial did what, in seconds on the probe's clock."""

    t_fail: float
    t_restore: float


def first_ok_by(samples: Iterable[Sample], lb: str, after: float) -> Sample | None:
    """The success served by ``lb`` that ended first among those started at or after ``after``."""
    hits = [s for s in samples if s.ok and s.lb == lb and s.start >= after]
    return min(hits, key=lambda s: s.end, default=None)


def last_failure_end(samples: Iterable[Sample]) -> float | None:
    """When the last failed request ended, or None if none failed."""
    return max((s.end for s in samples if not s.ok), default=None)


def longest_gap(samples: Sequence[Sample], since: float, until: float | None = None) -> float:
    """Longest time without a successful completion in [since, until] (until = last end)."""
    ends = sorted(s.end for s in samples if s.ok and s.end >= since)
    if until is None:
        until = max((s.end for s in samples), default=since)
    points = [since, *ends]
    if until > points[-1]:
        points.append(until)
    return max((b - a for a, b in itertools.pairwise(points)), default=0.0)


def trial_metrics(
    samples: Sequence[Sample],
    marks: Marks,
    home: str = "lb1",
    mover: str = "lb2",
) -> dict[str, Any]:
    """Per-trial metrics (seconds and counts; None where the event never happened)."""
    t_fail, t_restore = marks.t_fail, marks.t_restore
    moved = first_ok_by(samples, mover, t_fail)
    back = first_ok_by(samples, home, t_restore)
    after = [s for s in samples if s.start >= t_restore]
    fb_failed = [s for s in after if not s.ok]
    last_fail = last_failure_end(fb_failed)
    return {
        "t_fail": round(t_fail, 4),
        "t_restore": round(t_restore, 4),
        "requests": len(samples),
        "pre_failures": sum(1 for s in samples if not s.ok and s.start < t_fail - 1.0),
        "gap_s": None if moved is None or moved.end > t_restore else round(moved.end - t_fail, 4),
        "failed": sum(1 for s in samples if not s.ok and t_fail - 1.0 <= s.start < t_restore),
        "failback_after_s": None if back is None else round(back.end - t_restore, 4),
        "failback_longest_gap_s": round(longest_gap(after, t_restore), 4),
        "failback_failed": len(fb_failed),
        "failback_last_failure_s": None if last_fail is None else round(last_fail - t_restore, 4),
        "errors": _error_kinds(s for s in samples if not s.ok),
    }


def dns_metrics(samples: Sequence[Sample], marks: Marks) -> dict[str, Any]:
    """The DNS-aware client: failures over the whole trial, and how often it needed VIP2."""
    return {
        "requests": len(samples),
        "failed": sum(1 for s in samples if not s.ok),
        "failed_after_fault": sum(1 for s in samples if not s.ok and s.start >= marks.t_fail - 1),
        "used_second_vip": sum(1 for s in samples if s.ok and s.tried > 1),
        "errors": _error_kinds(s for s in samples if not s.ok),
    }


def profile_metrics(samples: Sequence[Sample], marks: Marks, window: float = 2.0) -> dict[str, Any]:
    """A client profile (``ordinary``, ``keepalive``) over the whole trial: failed requests
    from ``t_fail - 1 s`` on (failover and failback alike), and the latency that requests
    started during the fault (``t_fail`` .. ``t_fail + window``) carried beyond the median
    latency of the requests before the fault."""
    before = [s.end - s.start for s in samples if s.ok and s.start < marks.t_fail - 1.0]
    base = statistics.median(before) if before else 0.0
    during = sorted(
        s.end - s.start - base
        for s in samples
        if s.ok and marks.t_fail <= s.start < marks.t_fail + window
    )
    p99 = during[min(len(during) - 1, int(0.99 * len(during)))] if during else None
    return {
        "requests": len(samples),
        "failed": sum(1 for s in samples if not s.ok and s.start >= marks.t_fail - 1.0),
        "failback_failed": sum(1 for s in samples if not s.ok and s.start >= marks.t_restore),
        "added_p99_s": None if p99 is None else round(p99, 4),
        "added_max_s": round(during[-1], 4) if during else None,
        "errors": _error_kinds(s for s in samples if not s.ok),
    }


def _error_kinds(failed: Iterable[Sample]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in failed:
        kind = s.error.split(":")[0] or "error"
        out[kind] = out.get(kind, 0) + 1
    return out


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)


def spread(values: Sequence[float | int | None]) -> dict[str, float | int | None]:
    """min / median / max of the values that exist, and how many runs had none (``missing``)."""
    vals = [v for v in values if v is not None]
    missing = len(values) - len(vals)
    if not vals:
        return {"min": None, "median": None, "max": None, "missing": missing}
    return {
        "min": min(vals),
        "median": statistics.median(vals),
        "max": max(vals),
        "missing": missing,
    }


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The report's summary block over runs (each run as made by :func:`trial_metrics` plus a
    ``dns`` entry from :func:`dns_metrics`)."""
    gaps = [None if r["gap_s"] is None else r["gap_s"] * 1000 for r in runs]
    fb_after = [r["failback_after_s"] for r in runs]
    return {
        "gap_ms": spread(gaps),
        "failed": spread([r["failed"] for r in runs]),
        "failback_after_ms": spread([None if v is None else v * 1000 for v in fb_after]),
        "failback_longest_gap_ms": spread([r["failback_longest_gap_s"] * 1000 for r in runs]),
        "failback_failed": spread([r["failback_failed"] for r in runs]),
        "dns_failed": spread([r["dns"]["failed"] for r in runs if "dns" in r]),
        "ordinary_failed": spread([r["ordinary"]["failed"] for r in runs if "ordinary" in r]),
        "ordinary_added_p99_ms": spread(
            [_ms(r["ordinary"]["added_p99_s"]) for r in runs if "ordinary" in r]
        ),
        "ordinary_added_max_ms": spread(
            [_ms(r["ordinary"]["added_max_s"]) for r in runs if "ordinary" in r]
        ),
        "keepalive_failed": spread([r["keepalive"]["failed"] for r in runs if "keepalive" in r]),
        "pre_failures": sum(r["pre_failures"] for r in runs),
    }
