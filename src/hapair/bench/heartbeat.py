"""Linux-HA Heartbeat 3 (Debian's package, v1 haresources mode) as the HA layer of a lab.

Heartbeat takes its node name from ``uname -n`` and keeps its UUID in ``/var/lib/heartbeat`` and
its pid file and IPC sockets in ``/run``: two instances on one host collide. So each node runs it
as ``ip netns exec <lb> unshare --uts --mount sh -c ...``, which sets the hostname and bind-mounts
per-node copies over ``/etc/ha.d`` and ``/var/lib/heartbeat`` and a tmpfs over ``/run``
(``anchors.md``). ``default`` is the original stack's ha.cf; ``tuned`` the smallest timers that
ran without false failovers in ``anchors.md``.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from hapair.plan import Plan
from hapair.platforms.lab import procs, services
from hapair.platforms.lab.network import IFNAME
from hapair.platforms.lab.paths import LabPaths

BINARY = "/usr/libexec/heartbeat/heartbeat"

VARIANTS = {
    "default": {"keepalive": "2", "deadtime": "15", "warntime": "5", "initdead": "60"},
    "tuned": {"keepalive": "10ms", "deadtime": "50ms", "warntime": "30ms", "initdead": "10"},
}


def render_ha_cf(plan: Plan, variant: str, logfile: str) -> str:
    """ha.cf, the same on both nodes (pure)."""
    t = VARIANTS[variant]
    lines = [
        f"logfile {logfile}",
        "logfacility none",
        "use_logd no",
        *(f"{k} {v}" for k, v in t.items()),
        f"udpport {plan.spec.ha.port}",
        *(f"ucast {IFNAME} {lb.address}" for lb in plan.lbs),
        "auto_failback on",
        "crm off",
        *(f"node {lb.name}" for lb in plan.lbs),
    ]
    return "\n".join(lines) + "\n"


def render_haresources(plan: Plan) -> str:
    """haresources: each LB owns its home VIP as a /32 on eth0 (pure)."""
    return "".join(f"{v.home} IPaddr2::{v.address}/32/{IFNAME}\n" for v in plan.vips)


def start_script(lb: str, etc: Path, lib: Path) -> str:
    """The shell run in the node's own UTS and mount namespaces before heartbeat starts."""
    return "\n".join(
        [
            "set -e",
            f"hostname {lb}",
            f"mount --bind {etc} /etc/ha.d",
            f"mount --bind {lib} /var/lib/heartbeat",
            "mount -t tmpfs -o mode=0755 tmpfs /run",
            "mkdir -p /run/resource-agents /run/lock /run/crm",
            "mkdir -p /run/heartbeat/ccm /run/heartbeat/crm /run/heartbeat/dopd",
            "chmod 1755 /run/resource-agents",
            "chown -R hacluster:haclient /run/heartbeat /run/crm",
            f"exec {BINARY}",
        ]
    )


class Heartbeat:
    """Heartbeat on both LBs of a lab (engine ``none``)."""

    lab_engine = "none"

    def __init__(self, plan: Plan, variant: str) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"heartbeat variant must be default or tuned (got {variant})")
        self.plan = plan
        self.variant = variant
        self.paths = LabPaths(plan.name)

    def _dir(self, lb: str) -> Path:
        return self.paths.node(lb) / "heartbeat"

    def log(self, lb: str) -> Path:
        """Heartbeat's own log file of ``lb`` (in its per-node /etc/ha.d)."""
        return self._dir(lb) / "ha.d" / "ha.log"

    def prepare(self) -> None:
        """Per-node copies of /etc/ha.d (with ha.cf, authkeys, haresources) and
        /var/lib/heartbeat."""
        key = secrets.token_hex(16)
        for lb in self.plan.lbs:
            d = self._dir(lb.name)
            shutil.rmtree(d, ignore_errors=True)
            shutil.copytree("/etc/ha.d", d / "ha.d", symlinks=True)
            shutil.copytree("/var/lib/heartbeat", d / "lib", symlinks=True)
            for f in ("hb_uuid", "hostcache", "delhostcache"):
                (d / "lib" / f).unlink(missing_ok=True)
            etc = d / "ha.d"
            (etc / "ha.cf").write_text(render_ha_cf(self.plan, self.variant, "/etc/ha.d/ha.log"))
            (etc / "haresources").write_text(render_haresources(self.plan))
            auth = etc / "authkeys"
            auth.write_text(f"auth 1\n1 sha1 {key}\n")
            auth.chmod(0o600)

    def start(self, lb: str) -> None:
        """Start heartbeat on ``lb`` (it daemonizes; its processes stay in the namespace)."""
        d = self._dir(lb)
        script = start_script(lb, d / "ha.d", d / "lib")
        argv = ["unshare", "--uts", "--mount", "sh", "-c", script]
        procs.spawn(self.plan.node(lb).namespace, argv, self.paths.log(lb, "heartbeat-start"))

    def running(self, lb: str) -> bool:
        """Whether a heartbeat process runs in ``lb``'s namespace."""
        ns = self.plan.node(lb).namespace
        return bool(services.node_procs(self.plan, ns, "heartbeat"))
