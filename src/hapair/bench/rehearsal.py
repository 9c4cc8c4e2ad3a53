"""``hapair bench rehearsal``: boot an LB's and a web node's user data through real cloud-init.

The aws platform's user data has been checked by cloud-init's schema validator and against
moto, but nothing boots in those tests. The rehearsal does (root; Linux; debootstrap and
systemd-nspawn; about 5-10 minutes, most of it apt and pip inside the instances):

1. a Debian 12 tree, made once by debootstrap and reused (:mod:`.rehearsal_boot`);
2. a namespace with the VPC router's address, moto serving there, and a proxy that reaches only
   Debian's mirror and PyPI (:mod:`.rehearsal_net`);
3. the aws platform's own ``up`` against that moto: wheel, pinned requirements, bucket, SSM
   secrets, the desired document, EIPs; each instance's user data read back from moto
   (:mod:`.rehearsal_cloud`);
4. one container per node booted from its user data as a NoCloud seed, with the instance role's
   credentials in its environment in place of the metadata service;
5. a bounded wait for cloud-init, then the checks: the units active (HAProxy, the agent, the
   node sync, the follower; the web app), the web app answering, and the LB serving it; and the
   evidence: ``cloud-init status --long``, failed units, journal excerpts, the output log;
6. everything torn down (containers, overlays, namespace, moto), on Ctrl-C too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from hapair.platforms.aws.readiness import cloud_init_state

from . import rehearsal_cloud as cloudmod
from . import rehearsal_net as net
from .rehearsal_boot import CACHE, Instance, ensure_rootfs
from .rehearsal_moto import MotoServers

CLUSTER = "rh"
LB_UNITS = (
    "hapair-secondary-ip.service",
    "haproxy.service",
    "hapair-sync.timer",
    "hapair-agent.service",
    "hapair-desired.service",
)
WEB_UNITS = ("hapair-webapp.service",)
#: Units whose journal the report keeps.
JOURNAL_UNITS = ("cloud-final.service", "hapair-sync.service", *LB_UNITS, *WEB_UNITS)
#: Where an instance finds the certificate of the rehearsal's moto (not a path hapair uses).
CA_IN_INSTANCE = "/etc/hapair-rehearsal/moto.crt"
#: This host's CA bundle, for pip in the instances (this workplace's egress re-signs TLS).
EGRESS_CA = Path("/etc/ssl/certs/ca-certificates.crt")
EGRESS_CA_IN_INSTANCE = "/etc/hapair-rehearsal/egress-ca.crt"
TOOLS = ("debootstrap", "systemd-nspawn", "nsenter", "ip", "mount", "openssl")

Say = Callable[[str], None]


@dataclass
class NodeReport:
    """What one node ended up as."""

    name: str
    cloud_init: str = "not started"
    seconds: float | None = None
    units: dict[str, str] = field(default_factory=dict)
    http: dict[str, str] = field(default_factory=dict)
    failed_units: str = ""
    #: what ``up``'s readiness check reads from this console (as from EC2's console output)
    console_state: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether everything the node should run runs."""
        return not self.problems


@dataclass
class Report:
    """The whole rehearsal."""

    nodes: list[NodeReport] = field(default_factory=list)
    eips: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    out: str = ""

    @property
    def ok(self) -> bool:
        """Whether every node is fine."""
        return bool(self.nodes) and all(n.ok for n in self.nodes)


def _check_host() -> None:
    if os.geteuid() != 0:
        raise PermissionError("the boot rehearsal needs root (debootstrap, nspawn, namespaces)")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise FileNotFoundError(
            f"missing {', '.join(missing)}: apt-get install debootstrap systemd-container"
        )


@contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM and SIGHUP end the rehearsal as Ctrl-C does (so the teardown runs); so does
    SIGINT even when started in the background (where the shell ignores it)."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def cloud_init_status(inst: Instance) -> str:
    """``running``, ``done``, ``error``, ... or why it is not known."""
    code, out = inst.run(["cloud-init", "status"], timeout=20)
    for line in out.splitlines():
        if line.startswith("status:"):
            return line.split(":", 1)[1].strip()
    return f"unknown ({code}: {out[:200]})"


def _wait_cloud_init(
    instances: dict[str, Instance], reports: dict[str, NodeReport], timeout: float, say: Say
) -> None:
    start = time.monotonic()
    pending = set(instances)
    last: dict[str, str] = {}
    while pending and time.monotonic() - start < timeout:
        time.sleep(5)
        for name in sorted(pending):
            inst, rep = instances[name], reports[name]
            if not inst.running():
                rep.cloud_init = "container exited"
                rep.problems.append("the container stopped before cloud-init finished")
                pending.discard(name)
                continue
            state = cloud_init_status(inst)
            finished = inst.run(["test", "-e", "/run/cloud-init/result.json"])[0] == 0
            rep.cloud_init = state
            if state != last.get(name):
                say(f"{name}: cloud-init {state} after {time.monotonic() - start:.0f} s")
                last[name] = state
            if finished:  # every stage ran (``status`` says error as soon as one stage fails)
                rep.seconds = round(time.monotonic() - start, 1)
                pending.discard(name)
    for name in pending:
        reports[name].problems.append(
            f"cloud-init still {reports[name].cloud_init} after {timeout:.0f} s"
        )


def _check_node(
    inst: Instance, rep: NodeReport, role: str, cloud: cloudmod.Cloud, settle: float
) -> None:
    units = LB_UNITS if role == "lb" else WEB_UNITS
    deadline = time.monotonic() + settle
    while True:
        for unit in units:
            rep.units[unit] = inst.run(["systemctl", "is-active", unit])[1] or "?"
        if all(s == "active" for s in rep.units.values()) or time.monotonic() > deadline:
            break
        time.sleep(3)
    for unit, state in rep.units.items():
        if state != "active":
            rep.problems.append(f"{unit} is {state}")
    spec = cloud.plan.spec
    port = spec.web.port if role == "web" else spec.haproxy.http_port
    status, line = net.http_get(f"http://{inst.private_ip}:{port}/", spec.cluster.domain)
    rep.http[f"GET http://{inst.private_ip}:{port}/"] = f"{status} {line}"[:200]
    if status != 200:
        rep.problems.append(f"GET http://{inst.private_ip}:{port}/ answered {status}: {line}")
    if rep.cloud_init not in ("done",):
        rep.problems.append(f"cloud-init status: {rep.cloud_init}")
    if role == "lb":
        secondary = str(cloud.plan_layout_secondary(inst.name))
        addrs = inst.run(["ip", "-o", "-4", "addr", "show"])[1]
        if f" {secondary}/" not in addrs:
            rep.problems.append(f"the secondary address {secondary} is not configured")
    rep.failed_units = inst.run(["systemctl", "--failed", "--no-legend", "--plain"])[1]
    if rep.failed_units:
        rep.problems.append(
            f"failed units: {' '.join(ln.split()[0] for ln in rep.failed_units.splitlines())}"
        )


def _after_soak(inst: Instance, rep: NodeReport, role: str) -> None:
    """After the soak: every unit still active, none restarted, the sync timer has run."""
    for unit in LB_UNITS if role == "lb" else WEB_UNITS:
        props = inst.run(["systemctl", "show", unit, "-p", "ActiveState,NRestarts"])[1]
        fields = dict(ln.split("=", 1) for ln in props.splitlines() if "=" in ln)
        if fields.get("ActiveState") != "active":
            rep.problems.append(f"after the soak, {unit} is {fields.get('ActiveState')}")
        if fields.get("NRestarts", "0") not in ("", "0"):
            rep.problems.append(f"{unit} restarted {fields['NRestarts']} time(s)")
    if role == "lb":
        what = "Result,ExecMainStatus,ExecMainStartTimestamp"
        sync = inst.run(["systemctl", "show", "hapair-sync.service", "-p", what])[1]
        rep.units["hapair-sync.service (timer run)"] = sync.replace("\n", " ")
        ran = "ExecMainStartTimestamp=\n" not in sync + "\n"
        if not ran or "Result=success" not in sync or "ExecMainStatus=0" not in sync:
            rep.problems.append(f"hapair-sync.service from its timer: {sync}")


def _collect(inst: Instance, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cloud-init-status.txt").write_text(
        inst.run(["cloud-init", "status", "--long"])[1] + "\n"
    )
    (folder / "failed-units.txt").write_text(
        inst.run(["systemctl", "--failed", "--no-pager"])[1] + "\n"
    )
    journal = []
    for unit in JOURNAL_UNITS:
        _, out = inst.run(
            ["journalctl", "-b", "--no-pager", "-o", "short-monotonic", "-n", "60", "-u", unit]
        )
        if out and "-- No entries --" not in out:
            journal.append(f"===== {unit}\n{out}\n")
    (folder / "journal.txt").write_text("".join(journal))
    (folder / "cloud-init-output.log").write_text(inst.read("var/log/cloud-init-output.log"))
    (folder / "cloud-init.log").write_text(inst.read("var/log/cloud-init.log"))


def rehearse(
    nodes: list[str],
    *,
    timeout: float = 900.0,
    settle: float = 90.0,
    soak: float = 75.0,
    out: Path = CACHE / "report",
    keep: bool = False,
    say: Say = print,
) -> Report:
    """Boot ``nodes`` (``lb1``, ``web1``, ...) from their user data and check them.

    :param timeout: how long cloud-init may take on each node.
    :param settle: after cloud-init, how long the units may take to become active.
    :param soak: then how long to watch them (the sync timer fires after 60 s).
    :param out: where the evidence goes (one folder per node, report.json).
    :param keep: leave the containers' overlays (not the containers) for a look afterwards.
    :raises PermissionError: not root.
    :raises FileNotFoundError: a tool is missing.
    """
    _check_host()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    report = Report(out=str(out))
    say(f"debian 12 tree: {CACHE / 'bookworm'} (debootstrap when missing: minutes)")
    ensure_rootfs(out / "debootstrap.log")
    moto = MotoServers(out)
    os.environ["AWS_CA_BUNDLE"] = str(moto.cert)  # the rehearsal's own calls
    proxy = net.PackageProxy(out / "proxy.log")
    instances: dict[str, Instance] = {}
    with _interruptible():
        try:
            net.create_namespace()
            local, inside = moto.start()
            proxy_url = proxy.start()
            say(f"moto on {inside} (and {local} for the rehearsal); package proxy on {proxy_url}")
            webs = max([int(n[3:]) for n in nodes if n.startswith("web")] or [1])
            cloud = cloudmod.setup(CLUSTER, local, webs, lambda m: say(f"up: {m}"))
            unknown = [n for n in nodes if n not in cloud.nodes]
            if unknown:
                raise ValueError(
                    f"no such node: {', '.join(unknown)} (have {', '.join(cloud.nodes)})"
                )
            reports = {n: NodeReport(n) for n in nodes}
            report.nodes = list(reports.values())
            for name in nodes:
                node = cloud.nodes[name]
                (out / name).mkdir(parents=True, exist_ok=True)
                (out / name / "user-data.yaml").write_text(cloudmod.user_data_text(node))
                inst = Instance(name, node.private_ip, node.instance_id, out / name / "console.log")
                instances[name] = inst
                env = cloudmod.instance_environment(cloud, node, inside, proxy_url)
                env["AWS_CA_BUNDLE"] = CA_IN_INSTANCE
                files = {CA_IN_INSTANCE: moto.cert.read_text()}
                if EGRESS_CA.exists():
                    env["PIP_CERT"] = EGRESS_CA_IN_INSTANCE
                    files[EGRESS_CA_IN_INSTANCE] = EGRESS_CA.read_text()
                inst.prepare(node.user_data, env, files)
                inst.boot()
                say(f"{name}: booting {node.instance_id} at {node.private_ip}")
            _wait_cloud_init(instances, reports, timeout, say)
            for name, inst in instances.items():
                if inst.running():
                    _check_node(inst, reports[name], cloud.nodes[name].role, cloud, settle)
            if soak > 0:
                say(f"soak {soak:.0f} s (the sync timer runs, nothing may restart)")
                time.sleep(soak)
            for name, inst in instances.items():
                if inst.running():
                    _after_soak(inst, reports[name], cloud.nodes[name].role)
                    _collect(inst, out / name)
                reports[name].console_state = cloud_init_state(
                    inst.console.read_text(errors="replace")
                )
            report.eips = cloudmod.eip_report(local)
        except KeyboardInterrupt:
            say("interrupted: tearing down")
            raise
        finally:
            report.refused = list(proxy.refused)
            (out / "report.json").write_text(json.dumps(_as_json(report), indent=2) + "\n")
            for inst in instances.values():
                inst.stop()
                if not keep:
                    inst.remove()
            proxy.stop()
            moto.stop()
            net.delete_namespace()
    return report


def _as_json(report: Report) -> dict[str, Any]:
    return {**asdict(report), "ok": report.ok}


def summary(report: Report) -> str:
    """The report as text."""
    lines = []
    for n in report.nodes:
        took = f" in {n.seconds:.0f} s" if n.seconds is not None else ""
        lines.append(f"{n.name}: {'OK' if n.ok else 'FAILED'} (cloud-init {n.cloud_init}{took})")
        lines.append(f"  console, as up's readiness reads it: {n.console_state}")
        for unit, state in n.units.items():
            lines.append(f"  {unit}: {state}")
        for req, res in n.http.items():
            lines.append(f"  {req} -> {res}")
        for p in n.problems:
            lines.append(f"  problem: {p}")
    lines += [f"eip {e}" for e in report.eips]
    lines += [f"proxy refused: {r}" for r in report.refused]
    lines.append(f"evidence: {report.out}")
    return "\n".join(lines)
