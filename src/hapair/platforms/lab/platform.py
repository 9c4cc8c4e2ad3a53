"""The ``lab`` platform: the whole stack in network namespaces on this host.

``up`` converges: a complete lab with the same spec is left alone (services that do not run are
started again; every service runs under a supervisor, see :mod:`.supervise`); a half-built one
(an interrupted ``up``) is cleaned and built again; a running lab with another spec is refused.
``down`` needs no state: it finds the lab's namespaces by name.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from typing import Any, Literal

from hapair.errors import OperationError, UsageError
from hapair.plan import Plan, Role, make_plan
from hapair.platforms.base import Platform, Progress, no_progress
from hapair.platforms.lab import chaos, configs, etcd, network, procs, services, webpool
from hapair.platforms.lab.fabric import lab as fabric
from hapair.platforms.lab.paths import LabPaths
from hapair.platforms.lab.procs import Proc
from hapair.platforms.lab.state import ensure_secret, load_state, save_state
from hapair.platforms.lab.supervise import RESTART_DELAY_S
from hapair.platforms.lab.system import in_ns, require_root, require_tools, run
from hapair.spec import Spec, parse

#: Who moves the floating IPs: our agent, nobody (each LB holds its home VIP), or an outside
#: engine the benchmarks start themselves (keepalived, heartbeat).
Engine = Literal["hapair", "static", "none"]


class LabPlatform(Platform):
    """Network namespaces, real HAProxy, nftables and dnsmasq on this host."""

    def __init__(self, engine: Engine = "hapair", restart_delay: float = RESTART_DELAY_S) -> None:
        self.engine = engine
        #: Seconds before a supervisor restarts a service that died (systemd's RestartSec).
        self.restart_delay = restart_delay

    # ---------------------------------------------------------------- up
    def up(self, plan: Plan, progress: Progress = no_progress) -> None:
        """Build the lab (see the module docstring for how a second ``up`` behaves)."""
        require_root()
        require_tools()
        if fabric.is_aws(plan) and self.engine != "hapair":
            raise UsageError(
                f'lab.fabric = "aws" moves EIPs with the hapair agents only (engine {self.engine});'
                ' use the hapair engine, or lab.fabric = "l2"'
            )
        name = plan.name
        paths = LabPaths(name)
        state = load_state(name)
        spec_json = plan.spec.model_dump(mode="json")
        if state and state.get("complete") and network.lab_namespaces(name):
            if state.get("spec") != spec_json or state.get("engine") != self.engine:
                raise UsageError(
                    f"a lab named {name} is already running with another spec; "
                    f"`hapair apply --name {name} --spec FILE` changes it live, or run "
                    f"`hapair down --name {name}` first, or choose another --name"
                )
            progress("lab already up: checking its processes")
            self._ensure_processes(plan, paths, state, progress)
            return
        if network.lab_namespaces(name) or paths.root.exists():
            progress("cleaning what an interrupted up left")
            self.down(name)
        state = {
            "name": name,
            "spec": spec_json,
            "engine": self.engine,
            "complete": False,
            "procs": {},
            "restart_delay": self.restart_delay,
            "created": time.time(),
        }
        save_state(name, state)
        paths.secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
        paths.secrets.chmod(0o700)

        progress(f"create {len(plan.namespaces)} namespaces")
        network.create_namespaces(plan)
        progress("wire the VPC bridge, the igw and the Internet side")
        network.build_links(plan)
        network.write_resolv_conf(plan)
        if plan.spec.ha.coordinator == "etcd":  # issue 13: VIP ownership agreed through etcd
            etcd.start(plan, paths, progress, delay_s=self.restart_delay)
        if fabric.is_aws(plan):  # issue 9: an EC2-like edge, the agents' aws_eip against moto
            fabric.start(plan, paths, services.child_env(), progress, self.restart_delay)
        progress("render and check configurations")
        self._render(plan, paths)
        progress("apply security groups (nftables)")
        for node in plan.nodes:
            if node.role in (Role.LB, Role.WEB):
                run(in_ns(node.namespace, ["nft", "-f", str(paths.nft(node.name))]))
        self._ensure_processes(plan, paths, state, progress)
        state["complete"] = True
        save_state(name, state)

    def _render(self, plan: Plan, paths: LabPaths) -> None:
        ensure_secret(paths.key)
        ensure_secret(paths.admin_token)
        configs.ensure_self_signed(plan, paths)
        configs.write(paths, configs.render(plan, paths))

    def _ensure_processes(
        self, plan: Plan, paths: LabPaths, state: dict[str, Any], progress: Progress
    ) -> None:
        """Start (under supervision) every service that does not run; wait until it runs."""
        table: dict[str, Any] = state.setdefault("procs", {})
        delay = float(state.get("restart_delay", self.restart_delay))
        changed: list[str] = []

        def ensure(nodes: list[str], service: str) -> None:
            """Start them all first (in parallel), then wait for each and record it."""
            todo = [n for n in nodes if services.ensure(plan, paths, table, n, service, delay)]
            try:
                for node in nodes:
                    if node in todo:
                        services.settle(table, paths, node, service)
                        changed.append(f"{node}/{service}")
                    else:
                        services.refresh(table, paths, node, service)
            finally:  # new supervisors are recorded even when a service fails to start
                save_state(plan.name, state)

        progress("start dnsmasq and the web apps")
        ensure(["inet"], "dnsmasq")
        state["webs_down"] = []  # `up` serves every web node, as it restarts every service
        try:
            if webpool.ensure(plan, paths, state, delay):
                changed.append(f"{webpool.NODE}/{webpool.SERVICE}")
        finally:
            save_state(plan.name, state)
        lbs = "both LBs" if len(plan.lbs) == 2 else f"all {len(plan.lbs)} LBs"  # issue 13
        progress(f"start HAProxy on {lbs} and wait for every backend UP")
        ensure([lb.name for lb in plan.lbs], "haproxy")
        for lb in plan.lbs:
            proc = Proc.from_json(table[f"{lb.name}/haproxy"])
            services.wait_haproxy_ready(plan, paths, lb.name, proc)
        if self.engine == "hapair":
            progress("start the HA agents")
            ensure([lb.name for lb in plan.lbs], "agent")
        elif self.engine == "static":
            progress("place each VIP on its home LB (static)")
            for lb in plan.lbs:
                services.place_static(plan, lb.name)
        if self.engine != "none":  # with "none", whoever benchmarks places them later
            vips = "both VIPs" if len(plan.vips) == 2 else f"all {len(plan.vips)} VIPs"
            progress(f"wait until {vips} are held")
            self.wait_vips(plan, timeout=30.0)
        if not changed:
            progress("nothing to change")

    def wait_vips(self, plan: Plan, timeout: float = 30.0) -> None:
        """Wait until every VIP is held by exactly one LB (read from the kernel).

        :raises OperationError: not so in time.
        """
        deadline = time.monotonic() + timeout
        owners: dict[str, list[str]] = {}
        while time.monotonic() < deadline:
            owners = self.vip_owners(plan)
            if all(len(o) == 1 for o in owners.values()):
                return
            time.sleep(0.1)
        raise OperationError(f"floating IPs not placed after {timeout:.0f} s: {owners}")

    @staticmethod
    def vip_owners(plan: Plan) -> dict[str, list[str]]:
        """For each VIP, the LBs whose interface carries it right now (on the aws fabric: the
        LB the igw translates its EIP to right now)."""
        if fabric.is_aws(plan):
            return fabric.owners(plan)
        held = {lb.name: set(network.addresses(lb.namespace)) for lb in plan.lbs}
        return {v.name: [lb for lb, addrs in held.items() if v.address in addrs] for v in plan.vips}

    # ---------------------------------------------------------------- down
    def down(self, name: str, progress: Progress = no_progress) -> bool:
        """Remove every namespace, link, process and file of lab ``name``; idempotent."""
        require_root()
        found = False
        from hapair.platforms.lab import forward  # the dashboard issue: `hapair open`

        if forward.running(name) is not None:
            progress("stop the forwarder")
            found = forward.stop(name)
        found = etcd.stop(name, progress) or found
        found = fabric.stop(name, progress) or found
        namespaces = network.lab_namespaces(name)
        # LBs first, so that agents do not react to the rest going away.
        namespaces.sort(key=lambda ns: (0 if "-lb" in ns else 1, ns))
        if namespaces:
            progress(f"stop processes and remove {len(namespaces)} namespaces")
        for ns in namespaces:
            # Tearing down: the agents must not hand their VIPs around, so LBs get SIGKILL.
            lb = ns.rsplit("-", 1)[1].startswith("lb")
            procs.kill_namespace(ns, first=signal.SIGKILL if lb else signal.SIGTERM)
        for ns in namespaces:
            network.remove_namespace(ns)
            found = True
        paths = LabPaths(name)
        if paths.root.exists():
            progress(f"remove {paths.root}")
            shutil.rmtree(paths.root, ignore_errors=True)
            found = True
        resolv_dir = network.NS_DIR / f"{name}-inet"
        if resolv_dir.exists():
            shutil.rmtree(resolv_dir, ignore_errors=True)
            found = True
        return found

    # ---------------------------------------------------------------- queries
    def plan_of(self, name: str) -> tuple[Plan, dict[str, Any]]:
        """The plan and state of a running lab.

        :raises UsageError: no such lab.
        """
        state = load_state(name)
        if not state or not network.lab_namespaces(name):
            raise UsageError(
                f"no lab named {name} is running (start one with `hapair up --name {name}`)"
            )
        spec: Spec = parse(state["spec"])
        return make_plan(spec), state

    def status(self, name: str) -> dict[str, Any]:
        """See :meth:`Platform.status`; implemented in :mod:`hapair.platforms.lab.status`."""
        from hapair.platforms.lab.status import lab_status

        plan, state = self.plan_of(name)
        return lab_status(plan, state)

    def exec_argv(self, name: str, node: str, argv: list[str]) -> list[str]:
        """argv that runs ``argv`` inside ``node`` of lab ``name``."""
        plan, _ = self.plan_of(name)
        try:
            n = plan.node(node)
        except KeyError:
            names = ", ".join(x.name for x in plan.nodes[:8])
            raise UsageError(f"no node {node} in lab {name} (nodes: {names}, ...)") from None
        return in_ns(n.namespace, argv)

    # ---------------------------------------------------------------- chaos
    def kill(self, name: str, node: str, mode: str = "machine", keep_down: bool = False) -> str:
        """Fail a node: ``machine``, ``link``, or on an LB ``haproxy`` or ``agent`` alone (then
        restarted by its supervisor unless ``keep_down``); see :mod:`.chaos`. Returns a sentence
        saying what was done."""
        plan, state = self.plan_of(name)
        return chaos.kill(plan, state, node, mode, keep_down)

    def revive(self, name: str, node: str, reboot: bool = False) -> str:
        """Bring any node back (idempotent): link up, every service of it running; ``reboot``
        (LBs) first removes the VIPs its interface still carries. See :mod:`.chaos`."""
        plan, state = self.plan_of(name)
        return chaos.revive(plan, state, node, reboot)

    def service(self, name: str, node: str, service: str) -> Proc | None:
        """The process of ``service`` (haproxy, agent, webapp, dnsmasq) on ``node`` running now,
        read live (the state file's pid may predate a restart by the supervisor)."""
        _, state = self.plan_of(name)
        svc = services.recorded(state.get("procs", {}), node, service)
        found = svc.running(LabPaths(name))
        return found.proc if found else None

    def _lb(self, name: str, node: str) -> tuple[Plan, dict[str, Any]]:
        plan, state = self.plan_of(name)
        if node not in {lb.name for lb in plan.lbs}:
            raise UsageError(f"{node} is not a load balancer (use {plan.lb_hint})")
        return plan, state


def curl_argv(
    plan: Plan,
    url: str,
    host: str | None = None,
    timeout: float = 5.0,
    extra: list[str] | None = None,
) -> list[str]:
    """curl run from the client host on the Internet side."""
    argv = ["curl", "-sS", "--max-time", str(timeout)]
    if host:
        argv += ["-H", f"Host: {host}"]
    argv += [*(extra or []), url]
    return in_ns(plan.node("inet").namespace, argv)


def client_run(
    plan: Plan, argv: list[str], timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` on the client host."""
    return run(in_ns(plan.node("inet").namespace, argv), check=False, timeout=timeout)
