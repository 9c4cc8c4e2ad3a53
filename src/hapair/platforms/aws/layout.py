"""Where every node of a plan lives on AWS: subnet and private addresses. Pure.

The lab plan's addresses come from ``spec.network`` (198.18.0.0/15); on AWS the nodes live in
``spec.aws``'s subnets with the same host numbers as the lab: lb1/lb2 on host 11/12 (primary)
and 111/112 (secondary, the seed's ``secondary-ip`` role), web servers from host 21 upwards.
With ``aws.second_az`` lb2 and every other web server (web2, web4, ...) live in the second
subnet, in another availability zone, so losing one zone leaves an LB and half the webs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from hapair.errors import SpecError
from hapair.plan import Plan, Role

#: Host numbers inside a subnet.
LB_PRIMARY_HOST = (11, 12)
LB_SECONDARY_HOST = (111, 112)
WEB_FIRST_HOST = 21
#: AWS keeps the first four addresses of a subnet and the last one.
AWS_RESERVED_LOW = 4


@dataclass(frozen=True)
class NodeLayout:
    """One instance: its subnet key (``subnet1``/``subnet2``) and private addresses."""

    name: str
    role: Role
    subnet: str
    private_ip: str
    instance_type: str
    secondary_ip: str | None = None


@dataclass(frozen=True)
class VipLayout:
    """One EIP and the LB whose primary address it is associated with at first."""

    name: str
    home: str


@dataclass(frozen=True)
class AwsLayout:
    """The aws form of a plan."""

    cluster: str
    vpc_cidr: str
    subnets: dict[str, str]
    nodes: tuple[NodeLayout, ...]
    vips: tuple[VipLayout, ...]

    @property
    def lbs(self) -> tuple[NodeLayout, ...]:
        """lb1, lb2."""
        return tuple(n for n in self.nodes if n.role is Role.LB)

    @property
    def webs(self) -> tuple[NodeLayout, ...]:
        """web1..N."""
        return tuple(n for n in self.nodes if n.role is Role.WEB)

    def node(self, name: str) -> NodeLayout:
        """The node called ``name``.

        :raises KeyError: no such node.
        """
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def peer_of(self, lb: str) -> NodeLayout:
        """The other LB."""
        a, b = self.lbs
        return b if a.name == lb else a

    def gateway(self, subnet: str) -> str:
        """The VPC router's address in ``subnet`` (its first host): the agents' ping node."""
        return str(ipaddress.ip_network(self.subnets[subnet]).network_address + 1)


def _host(cidr: str, number: int, field: str) -> str:
    net = ipaddress.ip_network(cidr)
    if not AWS_RESERVED_LOW <= number < net.num_addresses - 1:
        raise SpecError([f"{field}: {cidr} is too small for host number {number}"])
    return str(net.network_address + number)


def make_layout(plan: Plan) -> AwsLayout:
    """Place the plan's nodes in the spec's AWS subnets.

    :raises SpecError: the subnets do not lie in the VPC, or the web servers do not fit.
    """
    aws = plan.spec.aws
    vpc = ipaddress.ip_network(aws.vpc_cidr)
    subnets = {"subnet1": aws.subnet_cidr}
    if aws.second_az:
        subnets["subnet2"] = aws.subnet2_cidr
    problems = []
    for key, cidr in subnets.items():
        field = "aws.subnet_cidr" if key == "subnet1" else "aws.subnet2_cidr"
        if not ipaddress.ip_network(cidr).subnet_of(vpc):  # type: ignore[arg-type]
            problems.append(f"{field}: must lie in aws.vpc_cidr {vpc} (got {cidr})")
    if aws.second_az and ipaddress.ip_network(aws.subnet_cidr).overlaps(
        ipaddress.ip_network(aws.subnet2_cidr)
    ):
        problems.append("aws.subnet2_cidr: must not overlap aws.subnet_cidr")
    if problems:
        raise SpecError(problems)
    nodes: list[NodeLayout] = []
    for i, lb in enumerate(plan.lbs):
        subnet = "subnet2" if aws.second_az and i == 1 else "subnet1"
        cidr = subnets[subnet]
        nodes.append(
            NodeLayout(
                lb.name,
                Role.LB,
                subnet,
                _host(cidr, LB_PRIMARY_HOST[i], "aws.subnet_cidr"),
                aws.lb_instance_type,
                _host(cidr, LB_SECONDARY_HOST[i], "aws.subnet_cidr"),
            )
        )
    taken = set(LB_PRIMARY_HOST + LB_SECONDARY_HOST)
    hosts = {
        key: (h for h in range(WEB_FIRST_HOST, net.num_addresses - 1) if h not in taken)
        for key, net in ((k, ipaddress.ip_network(c)) for k, c in subnets.items())
    }
    keys = sorted(subnets)
    for i, web in enumerate(plan.webs):
        key = keys[i % len(keys)]
        net = ipaddress.ip_network(subnets[key])
        number = next(hosts[key], None)
        if number is None:
            field = "aws.subnet_cidr" if key == "subnet1" else "aws.subnet2_cidr"
            raise SpecError([f"web.size: {len(plan.webs)} web servers do not fit in {field} {net}"])
        nodes.append(
            NodeLayout(
                web.name,
                Role.WEB,
                key,
                str(net.network_address + number),
                aws.web_instance_type,
            )
        )
    vips = tuple(VipLayout(v.name, v.home) for v in plan.vips)
    return AwsLayout(plan.name, aws.vpc_cidr, subnets, tuple(nodes), vips)
