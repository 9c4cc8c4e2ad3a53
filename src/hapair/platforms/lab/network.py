"""The lab's network: namespaces, the VPC bridge, veths, addresses, routes and sysctls.

Nothing here touches the host's own namespace: every link is created inside a lab namespace
(the VPC bridge lives in ``<c>-vpc``), so the host's networking is never changed.
"""

from __future__ import annotations

import re
from pathlib import Path

from hapair.plan import Plan, Role
from hapair.platforms.lab.system import in_ns, run

NS_DIR = Path("/etc/netns")
#: The interface of every node on its segment, inside the node's namespace.
IFNAME = "eth0"
#: The igw's interfaces.
IGW_VPC_IF = "vpc0"
IGW_INET_IF = "inet0"


def existing_namespaces() -> set[str]:
    """Names of all network namespaces on the host."""
    out = run(["ip", "netns", "list"]).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def lab_namespaces(name: str) -> list[str]:
    """The namespaces that belong to lab ``name`` (exact pattern: two labs never collide)."""
    pattern = re.compile(rf"^{re.escape(name)}-(vpc|inet|igw|lb[12]|web\d+)$")
    return sorted(ns for ns in existing_namespaces() if pattern.match(ns))


def _batch(ns: str, commands: list[str]) -> None:
    run(["ip", "-n", ns, "-batch", "-"], input="\n".join(commands) + "\n")


def _sysctl(ns: str, settings: dict[str, str]) -> None:
    run(in_ns(ns, ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings.items())]))


def create_namespaces(plan: Plan) -> None:
    """Create every namespace of the plan that does not exist yet, with ``lo`` up."""
    have = existing_namespaces()
    for ns in plan.namespaces:
        if ns not in have:
            run(["ip", "netns", "add", ns])
        _batch(ns, ["link set lo up"])
        _sysctl(
            ns, {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
        )


def build_links(plan: Plan) -> None:
    """Wire the VPC bridge to every VPC node and the igw to the Internet side, with addresses."""
    spec = plan.spec
    net = spec.network
    vpc_ns = plan.vpc_namespace
    plen = plan.prefixlen
    inet_plen = int(net.internet_cidr.split("/")[1])
    vpc_cmds = [
        "link add br0 type bridge",
        "link set br0 type bridge stp_state 0 forward_delay 0",
        "link set br0 up",
    ]
    for node in plan.nodes:
        if node.role is Role.INET:
            continue
        peer_if = IGW_VPC_IF if node.role is Role.IGW else IFNAME
        vpc_cmds += [
            f"link add {node.name} type veth peer name {peer_if} netns {node.namespace}",
            f"link set {node.name} master br0 up",
        ]
    _batch(vpc_ns, vpc_cmds)

    igw = plan.node("igw")
    inet = plan.node("inet")
    _batch(
        inet.namespace,
        [
            f"link add {IFNAME} type veth peer name {IGW_INET_IF} netns {igw.namespace}",
            f"link set {IFNAME} up",
            f"addr add {net.client}/{inet_plen} dev {IFNAME}",
            f"addr add {net.dns}/{inet_plen} dev {IFNAME}",
            f"route add default via {net.igw_outside}",
        ],
    )
    igw_cmds = [
        f"link set {IGW_VPC_IF} up",
        f"link set {IGW_INET_IF} up",
        f"addr add {net.gateway}/{plen} dev {IGW_VPC_IF}",
        f"addr add {net.igw_outside}/{inet_plen} dev {IGW_INET_IF}",
    ]
    # The floating IPs are routed onto the VPC segment; whoever answers ARP for one gets it.
    igw_cmds += [f"route add {v.address}/32 dev {IGW_VPC_IF} scope link" for v in plan.vips]
    _batch(igw.namespace, igw_cmds)
    _sysctl(
        igw.namespace,
        {
            "net.ipv4.ip_forward": "1",
            "net.ipv4.conf.all.rp_filter": "0",
            # Learn and update a floating IP's MAC from gratuitous ARP at once (an AWS-like fabric).
            f"net.ipv4.conf.{IGW_VPC_IF}.arp_accept": "1",
            f"net.ipv4.neigh.{IGW_VPC_IF}.locktime": "0",
        },
    )

    for node in plan.nodes:
        if node.role not in (Role.LB, Role.WEB):
            continue
        cmds = [f"link set {IFNAME} up", f"addr add {node.address}/{plen} dev {IFNAME}"]
        if node.secondary:
            cmds.append(f"addr add {node.secondary}/{plen} dev {IFNAME}")
        cmds.append(f"route add default via {net.gateway} src {node.address}")
        _batch(node.namespace, cmds)
        if node.role is Role.LB:
            _sysctl(
                node.namespace,
                {
                    # Answer ARP only for addresses on the asking interface; announce with the VIP.
                    "net.ipv4.conf.all.arp_ignore": "1",
                    "net.ipv4.conf.all.arp_announce": "2",
                },
            )


def set_link(plan: Plan, node: str, up: bool) -> None:
    """Take a node's switch port down or up (a cable pull as the others see it)."""
    _batch(plan.vpc_namespace, [f"link set {node} {'up' if up else 'down'}"])


def ports_up(plan: Plan) -> dict[str, bool]:
    """Whether each node's switch port on the VPC bridge is up (``set_link``), by node name."""
    import json

    out = run(["ip", "-n", plan.vpc_namespace, "-j", "link", "show"], check=False).stdout
    try:
        links = json.loads(out or "[]")
    except ValueError:
        return {}
    return {x["ifname"]: "UP" in x.get("flags", []) for x in links if "ifname" in x}


def write_resolv_conf(plan: Plan) -> Path:
    """``/etc/netns/<c>-inet/resolv.conf``: the client resolves through the lab's dnsmasq."""
    d = NS_DIR / plan.node("inet").namespace
    d.mkdir(parents=True, exist_ok=True)
    path = d / "resolv.conf"
    path.write_text(f"nameserver {plan.spec.network.dns}\noptions timeout:1 attempts:2\n")
    return path


def remove_namespace(ns: str) -> None:
    """Delete a namespace (its links go with it) and its /etc/netns folder."""
    run(["ip", "netns", "del", ns], check=False)
    d = NS_DIR / ns
    if d.is_dir():
        for f in d.iterdir():
            f.unlink(missing_ok=True)
        d.rmdir()


def addresses(ns: str, ifname: str = IFNAME) -> list[str]:
    """The IPv4 addresses on ``ifname`` in ``ns`` right now, read from the kernel."""
    import json

    out = run(["ip", "-n", ns, "-j", "-4", "addr", "show", "dev", ifname], check=False).stdout
    try:
        data = json.loads(out or "[]")
    except ValueError:
        return []
    return [a["local"] for link in data for a in link.get("addr_info", [])]
