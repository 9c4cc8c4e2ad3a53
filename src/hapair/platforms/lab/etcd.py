"""The lab's etcd (``ha.coordinator = "etcd"``): a 3-member cluster from Debian's
``etcd-server``, one member per namespace ``<c>-etcd1..3`` on the VPC segment.

Each member is plugged into the VPC bridge like any node (a veth, the address from
:func:`hapair.spec_scale.etcd_addresses`, 198.18.0.241-243 by default) and runs under a
supervisor (:mod:`.supervise`), its data under ``<state>/etcd/<member>``. etcd auth is on: user
``root`` with a random password kept 0600 in ``<state>/secrets/etcd-root.password``; clients
authenticate with it (TLS between members and clients is a next step, see docs/scale.md).
:func:`stop` (called by ``down``) kills the members and removes their namespaces; their data
goes with the state directory.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

from hapair import netns
from hapair.coord.etcd_client import EtcdClient, EtcdError
from hapair.errors import EnvironmentProblem, OperationError
from hapair.plan import Plan
from hapair.platforms.base import Progress, no_progress
from hapair.platforms.lab import network, procs, supervise
from hapair.platforms.lab.paths import LabPaths
from hapair.platforms.lab.procs import Proc
from hapair.platforms.lab.state import ensure_secret
from hapair.platforms.lab.system import run
from hapair.spec_scale import etcd_addresses

T = TypeVar("T")

CLIENT_PORT = 2379
PEER_PORT = 2380
#: etcd's raft timings on a one-host lab segment: a leader is re-elected within about 0.5-1 s,
#: well inside the agents' lease TTL (3 s; they renew every 0.5 s), so a leader's death fences
#: nobody (issue 13's lab test).
HEARTBEAT_MS = 50
ELECTION_MS = 500
SERVICE = "etcd"
USER = "root"


@dataclass(frozen=True)
class Member:
    """One etcd member of a lab."""

    name: str
    namespace: str
    address: str

    @property
    def client_url(self) -> str:
        """Where clients reach it."""
        return f"http://{self.address}:{CLIENT_PORT}"

    @property
    def peer_url(self) -> str:
        """Where the other members reach it."""
        return f"http://{self.address}:{PEER_PORT}"


def members(plan: Plan) -> list[Member]:
    """The lab's etcd members, ``etcd1..3``."""
    return [
        Member(f"etcd{i + 1}", f"{plan.name}-etcd{i + 1}", a)
        for i, a in enumerate(etcd_addresses(plan.spec))
    ]


def endpoints(plan: Plan) -> list[str]:
    """The client URLs of every member (what the agents are given)."""
    return [m.client_url for m in members(plan)]


def password_file(paths: LabPaths) -> Path:
    """The etcd ``root`` user's password (0600)."""
    return paths.secrets / "etcd-root.password"


def namespaces(name: str) -> list[str]:
    """The etcd namespaces of lab ``name`` that exist now."""
    pattern = re.compile(rf"^{re.escape(name)}-etcd\d+$")
    return sorted(ns for ns in network.existing_namespaces() if pattern.match(ns))


def run_in(namespace: str, work: Callable[[], Awaitable[T]]) -> T:
    """Run the coroutine ``work()`` on a new event loop in a thread inside ``namespace``, so
    that its sockets live there (the lab's addresses are reachable only from its namespaces).

    :raises OSError: the namespace cannot be entered.
    """

    async def main() -> T:
        return await work()

    got = netns.call_in([namespace], lambda _ns: asyncio.run(main()))[namespace]
    if isinstance(got, OSError):
        raise got
    return got


def argv(plan: Plan, paths: LabPaths, m: Member) -> list[str]:
    """The command line of member ``m``; flags after the first start come from its data."""
    exe = shutil.which("etcd")
    if exe is None:
        raise EnvironmentProblem(
            'ha.coordinator = "etcd" needs etcd: run `make setup` (or apt-get install etcd-server)'
        )
    cluster = ",".join(f"{x.name}={x.peer_url}" for x in members(plan))
    return [
        exe,
        f"--name={m.name}",
        f"--data-dir={paths.root / 'etcd' / m.name}",
        f"--listen-client-urls={m.client_url}",
        f"--advertise-client-urls={m.client_url}",
        f"--listen-peer-urls={m.peer_url}",
        f"--initial-advertise-peer-urls={m.peer_url}",
        f"--initial-cluster={cluster}",
        "--initial-cluster-state=new",
        f"--initial-cluster-token={plan.name}-etcd",
        f"--heartbeat-interval={HEARTBEAT_MS}",
        f"--election-timeout={ELECTION_MS}",
        "--logger=zap",
        "--log-outputs=stderr",
    ]


def _wire(plan: Plan, ms: list[Member]) -> None:
    """One veth per member from the VPC bridge, with the member's address."""
    cmds = []
    for m in ms:
        cmds += [
            f"link add {m.name} type veth peer name {network.IFNAME} "
            f"address {network.mac_of(m.address)} netns {m.namespace}",
            f"link set {m.name} master br0 up",
        ]
    run(["ip", "-n", plan.vpc_namespace, "-batch", "-"], input="\n".join(cmds) + "\n")
    for m in ms:
        run(
            ["ip", "-n", m.namespace, "-batch", "-"],
            input=f"link set {network.IFNAME} up\n"
            f"addr add {m.address}/{plan.prefixlen} dev {network.IFNAME}\n",
        )


def start(
    plan: Plan,
    paths: LabPaths,
    progress: Progress = no_progress,
    delay_s: float = supervise.RESTART_DELAY_S,
    timeout: float = 30.0,
) -> dict[str, Proc]:
    """Create, wire and start the 3 members (the VPC bridge must exist), wait until the cluster
    is healthy, then turn etcd auth on with the cluster's root password.

    :returns: each member's supervisor, by member name.
    :raises OperationError: the cluster is not healthy within ``timeout`` seconds.
    """
    ms = members(plan)
    commands = {m.name: argv(plan, paths, m) for m in ms}
    progress(f"start etcd ({len(ms)} members)")
    fresh = [m for m in ms if m.namespace not in network.existing_namespaces()]
    network.create_namespaces(plan, only=[m.namespace for m in ms])
    if fresh:
        _wire(plan, fresh)
    (paths.root / "etcd").mkdir(parents=True, exist_ok=True, mode=0o700)
    sups = {
        m.name: supervise.start(
            m.namespace,
            SERVICE,
            commands[m.name],
            out=paths.log(m.name, SERVICE),
            log=paths.log(m.name, "supervisor"),
            pidfile=paths.pidfile(m.name, SERVICE),
            delay_s=delay_s,
        )
        for m in ms
    }
    _wait_healthy(ms, timeout)
    password = ensure_secret(password_file(paths))
    run_in(ms[0].namespace, lambda: _enable_auth(endpoints(plan), password))
    return sups


async def _enable_auth(urls: list[str], password: str) -> None:
    async with EtcdClient(urls, user=USER, password=password, timeout=5.0) as cli:
        try:
            await cli.members()
            return  # already on, with this password
        except EtcdError as exc:
            if "authentication is not enabled" not in str(exc):
                raise
    async with EtcdClient(urls, timeout=5.0) as cli:
        await cli.enable_auth(password)


def _wait_healthy(ms: list[Member], timeout: float) -> None:
    async def healthy() -> list[str]:
        async with httpx.AsyncClient(timeout=1.0) as http:
            sick = []
            for m in ms:
                try:
                    body = (await http.get(f"{m.client_url}/health")).json()
                    if body.get("health") != "true":
                        sick.append(m.name)
                except (httpx.HTTPError, ValueError):
                    sick.append(m.name)
            return sick

    deadline = time.monotonic() + timeout
    while True:
        sick = run_in(ms[0].namespace, healthy)
        if not sick:
            return
        if time.monotonic() > deadline:
            raise OperationError(
                f"etcd not healthy after {timeout:.0f} s ({', '.join(sick)}); see "
                "logs/etcd*-etcd.log in the lab's state directory"
            )
        time.sleep(0.2)


def kill_member(plan: Plan, member: str) -> int:
    """A member's machine dies: SIGKILL to every process of its namespace (its supervisor
    too); returns how many processes there were."""
    ns = f"{plan.name}-{member}"
    return procs.kill_namespace(ns, grace=0.5, first=signal.SIGKILL)


def stop(name: str, progress: Progress = no_progress) -> bool:
    """Stop every member of lab ``name`` and remove their namespaces and data; idempotent.
    Returns whether anything was there."""
    found = namespaces(name)
    if found:
        progress(f"stop etcd and remove {len(found)} namespaces")
    for ns in found:
        procs.kill_namespace(ns)
        network.remove_namespace(ns)
    data = LabPaths(name).root / "etcd"
    if data.exists():
        shutil.rmtree(data, ignore_errors=True)
        return True
    return bool(found)
