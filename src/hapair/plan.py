"""Spec -> concrete plan: node names, namespaces, addresses and the home of each floating IP.

Pure: no I/O. Every platform builds from a ``Plan``; the renderers read only the plan.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from hapair.spec import Spec


class Role(StrEnum):
    """What a node is for."""

    LB = "lb"
    WEB = "web"
    IGW = "igw"
    INET = "inet"


@dataclass(frozen=True)
class Node:
    """One host of the cluster.

    :ivar name: short name (``lb1``, ``web3``, ``igw``, ``inet``).
    :ivar namespace: the lab's network namespace for it (``<cluster>-<name>``).
    :ivar address: primary address (VPC side; Internet side for ``inet``).
    :ivar secondary: the LB's secondary private address, else ``None``.
    """

    name: str
    role: Role
    namespace: str
    address: str
    secondary: str | None = None


@dataclass(frozen=True)
class Vip:
    """A floating IP and the LB it belongs to when both are healthy."""

    name: str
    address: str
    home: str


@dataclass(frozen=True)
class Plan:
    """Everything concrete about a cluster, derived from its spec."""

    spec: Spec
    nodes: tuple[Node, ...]
    vips: tuple[Vip, ...]
    prefixlen: int
    vpc_namespace: str

    @property
    def name(self) -> str:
        """The cluster's name."""
        return self.spec.cluster.name

    @property
    def lbs(self) -> tuple[Node, ...]:
        """The two LB nodes, lb1 first."""
        return tuple(n for n in self.nodes if n.role is Role.LB)

    @property
    def webs(self) -> tuple[Node, ...]:
        """The web nodes in order."""
        return tuple(n for n in self.nodes if n.role is Role.WEB)

    def node(self, name: str) -> Node:
        """The node called ``name``.

        :raises KeyError: no such node.
        """
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def peer_of(self, lb: str) -> Node:
        """The other LB of a pair (N LBs have no single peer: each operation picks its own,
        e.g. :mod:`hapair.platforms.lab.day2.restartplan`).

        :raises ValueError: the plan has more than two LBs.
        """
        if len(self.lbs) != 2:
            raise ValueError(f"peer_of({lb}): {len(self.lbs)} LBs have no single peer")
        a, b = self.lbs
        return b if a.name == lb else a

    @property
    def lb_hint(self) -> str:
        """How an error names the LBs: ``lb1 or lb2`` (a pair), ``lb1..lb4`` (N LBs)."""
        names = [n.name for n in self.lbs]
        return " or ".join(names) if len(names) <= 2 else f"{names[0]}..{names[-1]}"

    @property
    def ping_nodes(self) -> tuple[str, ...]:
        """Addresses whose reachability says a node is still on the network."""
        return self.spec.ha.ping_nodes or (self.spec.network.gateway,)

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace the lab makes, in creation order."""
        return (self.vpc_namespace, *(n.namespace for n in self.nodes))


def make_plan(spec: Spec) -> Plan:
    """Turn a validated spec into a plan."""
    c = spec.cluster.name
    net = spec.network
    vpc = ipaddress.ip_network(net.vpc_cidr)
    nodes: list[Node] = [
        Node("inet", Role.INET, f"{c}-inet", net.client),
        Node("igw", Role.IGW, f"{c}-igw", net.gateway),
    ]
    for i in range(spec.lb.count):
        nodes.append(
            Node(f"lb{i + 1}", Role.LB, f"{c}-lb{i + 1}", net.lb_primary[i], net.lb_secondary[i])
        )
    first = ipaddress.ip_address(net.web_first)
    for i in range(spec.web.size):
        nodes.append(Node(f"web{i + 1}", Role.WEB, f"{c}-web{i + 1}", str(first + i)))
    # Homes in turn (vip1 on lb1, vip2 on lb2, ...): the pair's fixed homes; with etcd, homes
    # are only a starting point and hapair.coord.placement spreads VIPs over healthy LBs.
    n = spec.lb.count
    vips = tuple(Vip(f"vip{i + 1}", addr, f"lb{i % n + 1}") for i, addr in enumerate(net.vips))
    return Plan(
        spec=spec, nodes=tuple(nodes), vips=vips, prefixlen=vpc.prefixlen, vpc_namespace=f"{c}-vpc"
    )
