"""The lab's network: namespaces, the VPC bridge, veths, addresses, routes and sysctls.

Nothing here touches the host's own namespace: every link is created inside a lab namespace
(the VPC bridge lives in ``<c>-vpc``), so the host's networking is never changed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from hapair.plan import Node, Plan, Role
from hapair.platforms.lab.system import in_ns, run

NS_DIR = Path("/etc/netns")
#: The interface of every node on its segment, inside the node's namespace.
IFNAME = "eth0"
#: The igw's interfaces.
IGW_VPC_IF = "vpc0"
IGW_INET_IF = "inet0"
#: Per namespace, once nf_conntrack is loaded (see :func:`wire_nodes`).
BE_LIBERAL = "net.netfilter.nf_conntrack_tcp_be_liberal"


def existing_namespaces() -> set[str]:
    """Names of all network namespaces on the host."""
    out = run(["ip", "netns", "list"]).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def lab_namespaces(name: str) -> list[str]:
    """The namespaces that belong to lab ``name`` (exact pattern: two labs never collide)."""
    pattern = re.compile(rf"^{re.escape(name)}-(vpc|inet|igw|lb\d+|web\d+)$")
    return sorted(ns for ns in existing_namespaces() if pattern.match(ns))


def _batch(ns: str, commands: list[str]) -> None:
    run(["ip", "-n", ns, "-batch", "-"], input="\n".join(commands) + "\n")


def _sysctl(ns: str, settings: dict[str, str]) -> None:
    run(in_ns(ns, ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings.items())]))


def create_namespaces(plan: Plan, only: Sequence[str] | None = None) -> None:
    """Create every namespace of the plan (or those in ``only``) that does not exist yet, with
    ``lo`` up."""
    have = existing_namespaces()
    for ns in plan.namespaces if only is None else only:
        if ns not in have:
            run(["ip", "netns", "add", ns])
        _batch(ns, ["link set lo up"])
        _sysctl(
            ns, {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
        )


def mac_of(address: str) -> str:
    """The MAC address of a VPC node's interface, derived from its address (locally
    administered, unique on the segment), so that static neighbour entries need no lookup."""
    return "02:48:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(address).packed)


def neighbours(plan: Plan, node: Node) -> list[str]:
    """The addresses ``node`` knows statically (ARP never asked): an LB its peer (every other
    LB), the gateway and every web node; a web node every LB.

    The kernel's ARP cache is shared by every namespace of the host, and it overflows at
    ``gc_thresh3`` (1,024) dynamic entries: 250 web nodes and two LBs learning each other need
    about that many, and on overflow new neighbours are dropped (heartbeats and health checks
    lost). Permanent entries do not count. Floating IPs stay dynamic (gratuitous ARP moves them).
    """
    if node.role is Role.LB:  # its peer, or every other LB (issue 13)
        others = [lb for lb in plan.lbs if lb.name != node.name]
        out = [a for lb in others for a in (lb.address, lb.secondary) if a]
        return [*out, plan.spec.network.gateway, *(w.address for w in plan.webs)]
    if node.role is Role.WEB:
        return [a for lb in plan.lbs for a in (lb.address, lb.secondary) if a]
    return []


def interface_of(plan: Plan) -> dict[str, str]:
    """Each LB's secondary address -> its primary address: both live on the one interface
    whose MAC :func:`mac_of` derives from the primary."""
    return {lb.secondary: lb.address for lb in plan.lbs if lb.secondary}


def neighbour_lines(
    addresses: Sequence[str], delete: bool = False, same_as: Mapping[str, str] | None = None
) -> list[str]:
    """``ip -batch`` lines that add (or ``delete``) permanent entries for ``addresses``;
    ``same_as`` maps an address to the one whose interface (MAC) it lives on."""
    if delete:
        return [f"neigh del {a} dev {IFNAME}" for a in addresses]
    iface = same_as or {}
    return [
        f"neigh replace {a} lladdr {mac_of(iface.get(a, a))} dev {IFNAME} nud permanent"
        for a in addresses
    ]


def set_neighbours(ns: str, addresses: Sequence[str], delete: bool = False) -> None:
    """Add (or ``delete``) permanent neighbour entries in ``ns`` (see :func:`neighbours`)."""
    if addresses:
        run(
            ["ip", "-n", ns, "-force", "-batch", "-"],
            input="\n".join(neighbour_lines(addresses, delete)) + "\n",
            check=not delete,
        )


def build_links(plan: Plan) -> None:
    """Wire the VPC bridge to every VPC node and the igw to the Internet side, with addresses."""
    net = plan.spec.network
    plen = plan.prefixlen
    inet_plen = int(net.internet_cidr.split("/")[1])
    _batch(
        plan.vpc_namespace,
        [
            "link add br0 type bridge",
            "link set br0 type bridge stp_state 0 forward_delay 0",
            "link set br0 up",
        ],
    )
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
    _plug(plan, [igw])
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
    wire_nodes(plan, [n for n in plan.nodes if n.role in (Role.LB, Role.WEB)])


def _plug(plan: Plan, nodes: Sequence[Node]) -> None:
    """One veth per node between the VPC bridge and the node (its end with :func:`mac_of`)."""
    cmds = []
    for node in nodes:
        peer_if = IGW_VPC_IF if node.role is Role.IGW else IFNAME
        cmds += [
            f"link add {node.name} type veth peer name {peer_if} address {mac_of(node.address)}"
            f" netns {node.namespace}",
            f"link set {node.name} master br0 up",
        ]
    _batch(plan.vpc_namespace, cmds)


def wire_nodes(plan: Plan, nodes: Sequence[Node]) -> None:
    """Plug LB and web nodes (their namespaces exist) into the VPC bridge: link, addresses,
    default route, static neighbours and, on an LB, its ARP sysctls."""
    net = plan.spec.network
    plen = plan.prefixlen
    _plug(plan, nodes)
    for node in nodes:
        cmds = [f"link set {IFNAME} up", f"addr add {node.address}/{plen} dev {IFNAME}"]
        if node.secondary:
            cmds.append(f"addr add {node.secondary}/{plen} dev {IFNAME}")
        cmds.append(f"route add default via {net.gateway} src {node.address}")
        cmds += neighbour_lines(neighbours(plan, node), same_as=interface_of(plan))
        _batch(node.namespace, cmds)
        if node.role is Role.LB:
            _sysctl(
                node.namespace,
                {
                    # Answer ARP only for addresses on the asking interface; announce with the VIP.
                    # (A VIP kept on lo during a failback drain is thus never answered for.)
                    "net.ipv4.conf.all.arp_ignore": "1",
                    "net.ipv4.conf.all.arp_announce": "2",
                    # The failback drain (hapair.agent.drain) hands packets back to the peer out
                    # of the interface they came in on: forwarding on eth0 (the nftables forward
                    # chain passes only the drain's mark), and no ICMP redirect for them.
                    f"net.ipv4.conf.{IFNAME}.forwarding": "1",
                    "net.ipv4.conf.all.send_redirects": "0",
                    "net.ipv4.conf.default.send_redirects": "0",
                    f"net.ipv4.conf.{IFNAME}.send_redirects": "0",
                    # No reverse-path filter, whatever the host's default: handed-back packets
                    # come from a client on the Internet side through the peer's MAC address,
                    # and the chaos suite's delay line hands arriving frames to the node
                    # through a TAP device with no route of its own (loose mode, 2, dropped
                    # them all: lb1 heard nothing for the whole fault).
                    "net.ipv4.conf.all.rp_filter": "0",
                    f"net.ipv4.conf.{IFNAME}.rp_filter": "0",
                },
            )
            # After a drain, the taker's conntrack has seen only one direction of the
            # connections it handed back: strict window tracking would call their next packets
            # invalid (dropped: the client hangs) instead of new (reset: the client reconnects
            # at once). Liberal tracking, as kube-proxy sets it. Needs nf_conntrack loaded.
            run(
                in_ns(node.namespace, ["sysctl", "-q", "-w", f"{BE_LIBERAL}=1"]),
                check=False,
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
