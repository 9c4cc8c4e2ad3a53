"""The pure half of ``hapair restart``: who may take a restarting LB's VIPs, and when each
wait is over, for a pair and for N LBs (``ha.coordinator = "etcd"``) alike.

Every function reads the agents' ``/status`` documents and each VIP's holders as the kernel
shows them (``vip -> [LBs carrying its address]``) and decides nothing else, so the
effects (:mod:`.restart`) only read, ask and wait.

- A pair: the peer must be healthy and online; it then holds every VIP; the restarted LB is
  back when it holds its home VIPs again.
- N LBs: at least one other LB must be healthy, online and hold a valid etcd lease; every
  other LB that is so (the *takers*) shares the VIPs while the LB is away; the restarted LB is
  back when it carries its share again: every VIP on exactly one of the takers or it, loads
  within one VIP of each other, and it carries at least ``M // K`` of them (placement decides
  which, not the homes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def is_ready(st: Mapping[str, Any], coordinated: bool) -> bool:
    """Whether an agent (its ``/status``, empty when it did not answer) could take VIPs:
    healthy, not in standby, and (N LBs) with a valid etcd lease."""
    if not st.get("health", {}).get("healthy") or st.get("standby"):
        return False
    return not coordinated or bool((st.get("etcd") or {}).get("lease_valid"))


def takers(lb: str, statuses: Mapping[str, Mapping[str, Any]], coordinated: bool) -> list[str]:
    """The other LBs that can carry ``lb``'s VIPs while it restarts, in name order."""
    return sorted(n for n, st in statuses.items() if n != lb and is_ready(st, coordinated))


def refusal(lb: str, lbs: Sequence[str], ready: Sequence[str], coordinated: bool) -> str | None:
    """Why ``lb`` must not be restarted now (None: it may), given the ``ready`` takers."""
    if not coordinated:
        peer = next(n for n in lbs if n != lb)
        if peer in ready:
            return None
        return (
            f"restart {lb}: its peer {peer} is not healthy and online, so it cannot serve both "
            "floating IPs; nothing was done"
        )
    if ready:
        return None
    others = ", ".join(n for n in lbs if n != lb)
    return (
        f"restart {lb}: no other LB ({others}) is healthy, online and holding an etcd lease, "
        "so nobody could take its floating IPs; nothing was done"
    )


def drained(lb: str, holders: Mapping[str, Sequence[str]], ready: Sequence[str]) -> bool:
    """Whether ``lb`` carries no VIP and each VIP is on exactly one of the ``ready`` takers."""
    return all(len(h) == 1 and h[0] in ready and h[0] != lb for h in holders.values())


def rejoined(st: Mapping[str, Any], ready: Sequence[str], coordinated: bool) -> bool:
    """Whether a restarted agent is healthy and hears its peer (a pair) or every taker, with
    a valid etcd lease (N LBs)."""
    if not st.get("health", {}).get("healthy"):
        return False
    if not coordinated:
        return bool(st.get("peer", {}).get("state") == "up")
    heard = {p.get("name") for p in st.get("peers", []) if p.get("state") == "up"}
    return set(ready) <= heard and bool((st.get("etcd") or {}).get("lease_valid"))


def back(
    lb: str,
    holders: Mapping[str, Sequence[str]],
    ready: Sequence[str],
    homes: Sequence[str],
    coordinated: bool,
) -> bool:
    """Whether the restarted ``lb`` carries what it should again (see the module docstring)."""
    if not coordinated:
        return all(list(holders[v]) == [lb] for v in homes)
    live = {lb, *ready}
    if not all(len(h) == 1 and h[0] in live for h in holders.values()):
        return False
    load = {n: sum(1 for h in holders.values() if h[0] == n) for n in live}
    return max(load.values()) - min(load.values()) <= 1 and load[lb] >= len(holders) // len(live)


def carried(lb: str, holders: Mapping[str, Sequence[str]]) -> list[str]:
    """The VIPs ``lb`` carries, in name order."""
    return sorted(v for v, h in holders.items() if lb in h)
