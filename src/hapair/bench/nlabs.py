"""Labs of more than a pair for benchmarks (issue 13): N LBs, 2 VIPs each, ownership through
the lab's etcd; and the pure checks a benchmark needs on them (balance, who holds what)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hapair.bench.labs import served_by, wait_until
from hapair.errors import UsageError
from hapair.plan import Plan, make_plan
from hapair.platforms.lab.platform import LabPlatform
from hapair.spec import parse

MAX_LBS = 16
VIPS_PER_LB = 2


def check_lbs(lbs: int) -> None:
    """:raises UsageError: ``--lbs`` outside 2..16 (the spec's ``lb.count``)."""
    if not 2 <= lbs <= MAX_LBS:
        raise UsageError(f"--lbs must be 2..{MAX_LBS} (the spec's lb.count; got {lbs})")


def parse_counts(text: str) -> list[int]:
    """``"2,3,4"`` -> ``[2, 3, 4]`` (each checked by :func:`check_lbs`, no duplicates).

    :raises UsageError: not numbers separated by commas, a count out of range, or a repeat.
    """
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--lbs must be LB counts separated by commas (got {text})") from None
    if not counts:
        raise UsageError(f"--lbs must name at least one LB count (got {text!r})")
    for n in counts:
        check_lbs(n)
    if len(set(counts)) != len(counts):
        raise UsageError(f"--lbs names a count twice (got {text})")
    return counts


def nspec(name: str, lbs: int, web_size: int = 3, vips_per_lb: int = VIPS_PER_LB) -> dict[str, Any]:
    """The spec of an N-LB lab: ``lbs`` LBs, ``lbs * vips_per_lb`` VIPs, etcd; ``lbs == 2``
    with one VIP each is the pair's default spec (peer-to-peer)."""
    check_lbs(lbs)
    spec: dict[str, Any] = {"cluster": {"name": name}, "web": {"size": web_size}}
    if lbs == 2 and vips_per_lb == 1:
        return spec
    spec["lb"] = {"count": lbs}
    spec["ha"] = {"coordinator": "etcd"}
    spec["network"] = {
        "lb_primary": [f"198.18.0.{11 + i}" for i in range(lbs)],
        "lb_secondary": [f"198.18.0.{111 + i}" for i in range(lbs)],
        "vips": [f"198.19.255.{1 + i}" for i in range(lbs * vips_per_lb)],
    }
    return spec


def build_n(
    name: str, lbs: int, web_size: int = 3, vips_per_lb: int = VIPS_PER_LB
) -> tuple[Plan, LabPlatform]:
    """Build the lab of :func:`nspec` with hapair's agents; on failure nothing is left behind."""
    plan = make_plan(parse(nspec(name, lbs, web_size, vips_per_lb)))
    lab = LabPlatform("hapair")
    try:
        lab.up(plan)
    except BaseException:
        lab.down(name)
        raise
    return plan, lab


def loads(owners: Mapping[str, Sequence[str]], live: Sequence[str]) -> dict[str, int]:
    """How many VIPs each live LB carries."""
    return {lb: sum(lb in o for o in owners.values()) for lb in live}


def balanced(owners: Mapping[str, Sequence[str]], live: Sequence[str]) -> bool:
    """Every VIP carried by exactly one live LB (a dead LB's stale addresses ignored), the
    loads differing by at most one (pure)."""
    if not live:
        return False
    if any(len([lb for lb in o if lb in live]) != 1 for o in owners.values()):
        return False
    counts = loads(owners, live).values()
    return max(counts) - min(counts) <= 1


def owner_of(owners: Mapping[str, Sequence[str]], vip: str) -> str:
    """The one LB that carries ``vip`` (pure).

    :raises ValueError: nobody, or several LBs.
    """
    holders = list(owners.get(vip, ()))
    if len(holders) != 1:
        raise ValueError(f"{vip} is carried by {holders or 'nobody'}, not by exactly one LB")
    return holders[0]


def is_steady_n(plan: Plan, lab: LabPlatform) -> bool:
    """Balanced over every LB, and VIP1 answers through the LB that carries it."""
    lbs = [lb.name for lb in plan.lbs]
    owners = lab.vip_owners(plan)
    if not balanced(owners, lbs):
        return False
    return served_by(plan, plan.vips[0].address) == owner_of(owners, plan.vips[0].name)


def wait_balanced(plan: Plan, lab: LabPlatform, timeout: float) -> float:
    """Wait for :func:`is_steady_n`; returns the seconds it took.

    :raises OperationError: not within ``timeout``.
    """
    return wait_until(
        f"every VIP on one LB, balanced over {len(plan.lbs)} LBs",
        lambda: is_steady_n(plan, lab),
        timeout,
        step=0.5,
    )
