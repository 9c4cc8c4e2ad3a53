"""The spec's rules for more than a pair (issue 13): ``lb.count``, ``network.vips`` and
``ha.coordinator``, and where the lab puts its etcd members.

The pair stays the default: ``ha.coordinator = "peer"`` with 2 LBs and 2 floating IPs, agreed
by heartbeats alone. Above 2 LBs, or with more than 2 floating IPs, ownership is agreed through
etcd (``ha.coordinator = "etcd"``). Each message names the field and the fix.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from hapair.errors import UsageError

if TYPE_CHECKING:
    from hapair.spec import Spec

#: Most floating IPs a cluster may have (the igw routes each one; DNS answers with all).
MAX_VIPS = 64
#: How many etcd members the lab runs (a quorum of 2 survives one member's death).
ETCD_MEMBERS = 3
#: Host numbers of the etcd members in ``network.vpc_cidr`` (198.18.0.241-243 by default).
ETCD_HOST_OFFSETS = (241, 242, 243)


def etcd_addresses(spec: Spec) -> tuple[str, ...]:
    """The lab's etcd members' VPC addresses (``etcd1..3``), derived from ``network.vpc_cidr``."""
    net = ipaddress.IPv4Network(spec.network.vpc_cidr)
    return tuple(str(net.network_address + off) for off in ETCD_HOST_OFFSETS)


def check_scale(spec: Spec) -> None:
    """``lb.count``, the per-LB address lists, ``network.vips`` and ``ha.coordinator`` agree.

    :raises ValueError: naming the field to change and how.
    """
    n = spec.lb.count
    net = spec.network
    m = len(net.vips)
    if spec.ha.coordinator == "peer":
        if n != 2:
            raise ValueError(
                f'ha.coordinator: "peer" runs exactly 2 LBs (lb.count = {n}); set '
                f'ha.coordinator = "etcd" for more, or lb.count = 2'
            )
        if m != 2:
            raise ValueError(
                f'network.vips: ha.coordinator "peer" moves exactly 2 floating IPs (got {m}); '
                f'list 2, or set ha.coordinator = "etcd" for more'
            )
    else:
        _check_etcd_counts(n, m)
    for field in ("lb_primary", "lb_secondary"):
        got = len(getattr(net, field))
        if got != n:
            raise ValueError(
                f"network.{field}: must list one address per LB, lb.count = {n} "
                f"(got {got}); add or remove addresses, or change lb.count"
            )
    if spec.ha.coordinator == "etcd" and spec.cluster.platform == "lab":
        _check_etcd_lab(spec)


def _check_etcd_counts(n: int, m: int) -> None:
    if not n <= m <= MAX_VIPS:
        raise ValueError(
            f'network.vips: with ha.coordinator "etcd", list from lb.count ({n}) to '
            f"{MAX_VIPS} floating IPs, so that every LB holds at least one (got {m})"
        )


def _check_etcd_lab(spec: Spec) -> None:
    net = spec.network
    vpc = ipaddress.IPv4Network(net.vpc_cidr)
    members = etcd_addresses(spec)
    if ipaddress.IPv4Address(members[-1]) >= vpc.broadcast_address:
        raise ValueError(
            f"network.vpc_cidr: too small for the etcd members at host numbers "
            f"{ETCD_HOST_OFFSETS[0]}-{ETCD_HOST_OFFSETS[-1]}; use a /24 or wider (got {vpc})"
        )
    taken = {net.gateway: "network.gateway"}
    for field in ("lb_primary", "lb_secondary"):
        for i, a in enumerate(getattr(net, field)):
            taken[a] = f"network.{field}.{i}"
    first = ipaddress.IPv4Address(net.web_first)
    webs = {str(first + i) for i in range(spec.web.size)}
    for i, a in enumerate(members):
        clash = taken.get(a) or ("a web node (network.web_first, web.size)" if a in webs else None)
        if clash:
            raise ValueError(
                f"{clash}: {a} is etcd{i + 1}'s address in the lab (host numbers "
                f"{ETCD_HOST_OFFSETS[0]}-{ETCD_HOST_OFFSETS[-1]} of network.vpc_cidr); "
                "pick another address"
            )


def require_buildable(spec: Spec) -> None:
    """``up`` builds more than a pair on the lab only, where the agents place VIPs over N
    nodes through the lab's etcd; the AWS platform builds pairs (etcd on the LB instances is
    on paper, docs/scale.md).

    :raises UsageError: saying so.
    """
    if spec.lb.count == 2 and len(spec.network.vips) == 2:
        return
    if spec.cluster.platform != "lab":
        raise UsageError(
            f"lb.count = {spec.lb.count} with {len(spec.network.vips)} floating IPs is a valid "
            f'spec, but cluster.platform = "{spec.cluster.platform}" builds 2 LBs with 2 '
            'floating IPs only; use cluster.platform = "lab", or set lb.count = 2 and list '
            "2 network.vips"
        )
