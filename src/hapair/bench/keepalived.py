"""keepalived (Debian's package) as the HA layer of a lab, set up as ``anchors.md`` measured it.

Two ``vrrp_instance``s (vrid 51/52, priorities 150/100 and 100/150, ``state BACKUP``, preempt on),
unicast peers, HAProxy tracked by a ``vrrp_script`` that reads ``/proc/PID/stat`` and treats a
zombie as dead (``interval 1 fall 1 rise 1``, the smallest interval keepalived accepts).
``default``: VRRPv2, ``advert_int 1``; ``tuned``: VRRPv3, ``advert_int 0.1``.
"""

from __future__ import annotations

from pathlib import Path

from hapair.bench.labs import haproxy_pid
from hapair.plan import Plan
from hapair.platforms.lab import procs
from hapair.platforms.lab.network import IFNAME
from hapair.platforms.lab.paths import LabPaths
from hapair.platforms.lab.procs import Proc
from hapair.platforms.lab.system import in_ns, run

NFT_INSERT = ("nft", "insert", "rule", "inet", "hapair", "input")
VARIANTS = {"default": (2, "1"), "tuned": (3, "0.1")}

CHECK_SCRIPT = """#!/bin/sh
# HAProxy alive: its pid exists and is not a zombie (PID 1 here reaps orphans ~1 s late).
p=$(cat {pidfile} 2>/dev/null) || exit 1
[ -n "$p" ] || exit 1
s=$(awk '{{print $3}}' /proc/$p/stat 2>/dev/null) || exit 1
[ -n "$s" ] && [ "$s" != Z ] && [ "$s" != X ]
"""


def render_keepalived(plan: Plan, lb: str, variant: str, check: str) -> str:
    """keepalived.conf of ``lb`` (pure)."""
    version, advert = VARIANTS[variant]
    me = plan.node(lb)
    peer = next(n for n in plan.lbs if n.name != lb)
    lines = [
        "global_defs {",
        f"    router_id {plan.name}-{lb}",
        "    script_user root",
        f"    vrrp_version {version}",
        "}",
        "vrrp_script chk_haproxy {",
        f'    script "{check}"',
        "    interval 1",
        "    fall 1",
        "    rise 1",
        "}",
    ]
    for i, vip in enumerate(plan.vips):
        priority = 150 if vip.home == lb else 100
        lines += [
            f"vrrp_instance VI_{i + 1} {{",
            "    state BACKUP",
            f"    interface {IFNAME}",
            f"    virtual_router_id {51 + i}",
            f"    priority {priority}",
            f"    advert_int {advert}",
            f"    unicast_src_ip {me.address}",
            f"    unicast_peer {{\n        {peer.address}\n    }}",
            f"    virtual_ipaddress {{\n        {vip.address}/32 dev {IFNAME}\n    }}",
            "    track_script {\n        chk_haproxy\n    }",
            "}",
        ]
    return "\n".join(lines) + "\n"


class Keepalived:
    """keepalived on both LBs of a lab (engine ``none``)."""

    lab_engine = "none"

    def __init__(self, plan: Plan, variant: str) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"keepalived variant must be default or tuned (got {variant})")
        self.plan = plan
        self.variant = variant
        self.paths = LabPaths(plan.name)
        self.procs: dict[str, Proc] = {}

    def _dir(self, lb: str) -> Path:
        return self.paths.node(lb) / "keepalived"

    def prepare(self) -> None:
        """Write configs and checks; let VRRP (IP protocol 112) through the LB security group
        between the two LBs, as the keepalived stack's own SG does."""
        for lb in self.plan.lbs:
            d = self._dir(lb.name)
            d.mkdir(parents=True, exist_ok=True)
            check = d / "check_haproxy.sh"
            check.write_text(CHECK_SCRIPT.format(pidfile=d / "haproxy.pid"))
            check.chmod(0o755)
            (d / "keepalived.conf").write_text(
                render_keepalived(self.plan, lb.name, self.variant, str(check))
            )
            run(
                in_ns(
                    lb.namespace,
                    [*NFT_INSERT, "ip", "protocol", "vrrp", "ip", "saddr", "@lb_group", "accept"],
                )
            )

    def refresh(self, lb: str) -> None:
        """Point the HAProxy check at the HAProxy the lab runs now on ``lb``."""
        (self._dir(lb) / "haproxy.pid").write_text(f"{haproxy_pid(self.plan.name, lb)}\n")

    def start(self, lb: str) -> None:
        """Start keepalived on ``lb`` (after its HAProxy), in the foreground of its own session."""
        d = self._dir(lb)
        self.refresh(lb)
        argv = ["keepalived", "-n", "-l", "-D", "-G", "-P", "-f", str(d / "keepalived.conf")]
        argv += ["-p", str(d / "keepalived.pid"), "-r", str(d / "vrrp.pid")]
        argv += ["-c", str(d / "checkers.pid"), "-b", str(d / "bfd.pid")]
        self.procs[lb] = procs.spawn(
            self.plan.node(lb).namespace, argv, self.paths.log(lb, "keepalived")
        )

    def running(self, lb: str) -> bool:
        """Whether keepalived runs on ``lb``."""
        return procs.alive(self.procs.get(lb))
