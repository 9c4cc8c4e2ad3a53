"""The spec's rules for the lab's AWS fabric (``lab.fabric = "aws"``) and where it lives.

With the aws fabric, the lab's VPC behaves like EC2's edge: a moto EC2 API runs in the lab (its
own namespace ``<c>-aws`` on the VPC segment, at host number :data:`FABRIC_HOST_OFFSET` of
``network.vpc_cidr``, 198.18.0.250 by default), and the igw translates each floating IP (an
EIP) to the private address that API says it is associated with. See
:mod:`hapair.platforms.lab.fabric`. Each message names the field and the fix.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from hapair.spec_scale import etcd_addresses

if TYPE_CHECKING:
    from hapair.spec import Spec

#: Host number of the fabric's EC2 endpoint in ``network.vpc_cidr`` (198.18.0.250 by default).
FABRIC_HOST_OFFSET = 250
#: The port of the fabric's EC2 endpoint (plain HTTP: it never leaves the lab).
FABRIC_PORT = 5000


def fabric_address(spec: Spec) -> str:
    """The VPC address of the fabric's EC2 endpoint (the ``<c>-aws`` namespace)."""
    net = ipaddress.IPv4Network(spec.network.vpc_cidr)
    return str(net.network_address + FABRIC_HOST_OFFSET)


def endpoint_url(spec: Spec) -> str:
    """The fabric's EC2 endpoint as the agents use it."""
    return f"http://{fabric_address(spec)}:{FABRIC_PORT}"


def check_fabric(spec: Spec) -> None:
    """``lab.fabric`` agrees with the rest of the spec.

    :raises ValueError: naming the field to change and how.
    """
    if spec.lab.fabric != "aws":
        return
    if spec.cluster.platform != "lab":
        raise ValueError(
            'lab.fabric: "aws" is the lab\'s imitation of EC2; with cluster.platform = "aws" '
            'the real EC2 is used: remove lab.fabric or set cluster.platform = "lab"'
        )
    if spec.ha.coordinator != "peer":
        raise ValueError(
            'lab.fabric: "aws" runs the pair only (ha.coordinator = "peer"); set '
            'lab.fabric = "l2" for ha.coordinator = "etcd"'
        )
    net = spec.network
    vpc = ipaddress.IPv4Network(net.vpc_cidr)
    address = ipaddress.IPv4Address(fabric_address(spec))
    if address >= vpc.broadcast_address:
        raise ValueError(
            f'network.vpc_cidr: too small for lab.fabric = "aws", whose EC2 endpoint takes host '
            f"number {FABRIC_HOST_OFFSET}; use a /24 or wider (got {vpc})"
        )
    taken = {net.gateway: "network.gateway"}
    for field in ("lb_primary", "lb_secondary"):
        for i, a in enumerate(getattr(net, field)):
            taken[a] = f"network.{field}.{i}"
    for i, a in enumerate(etcd_addresses(spec)):
        taken.setdefault(a, f"etcd{i + 1}")
    first = ipaddress.IPv4Address(net.web_first)
    webs = {str(first + i) for i in range(spec.web.size)}
    clash = taken.get(str(address)) or (
        "a web node (network.web_first, web.size)" if str(address) in webs else None
    )
    if clash:
        raise ValueError(
            f'{clash}: {address} is the address of lab.fabric = "aws"\'s EC2 endpoint (host '
            f"number {FABRIC_HOST_OFFSET} of network.vpc_cidr); pick another address"
        )
