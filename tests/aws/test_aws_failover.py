"""Two real agents (``python -m hapair.agent``, the daemon as it runs on an LB) with the
aws_eip resource agent against moto, 150 ms of API latency, through a heartbeat partition, a
blip, a full partition and failbacks. Every AssociateAddress is counted where the server
handles it (``motofix.EIP_LOG``); after each one, no EIP of the pair is left unassociated.

The bounds, per phase:

- heartbeats cut, the peers still serve (a udp/694 partition): 0 AssociateAddress;
- heartbeats and probes cut for less than deadtime (a blip): 0;
- heartbeats and probes cut for longer (a full partition, both think the other dead): 2, one
  take per VIP, and no more however long it lasts (the loser yields: HeldByPeer);
- the partition heals: 2, one failback per VIP;
- an LB dies (agent and HAProxy) and comes back: 1 take by the peer, then exactly 1 failback.

A take from a silent peer is a compare-and-swap (``hapair.agent.resources.aws_cas``): one
DisassociateAddress of the association the taker saw before its AssociateAddress. A failback
is one atomic AssociateAddress.

Timings are the AWS profile's divided by ten (heartbeat 100 ms, deadtime 500 ms), with a
failback delay longer than the resource agent's quiet gap (aws_eip.QUIET_S).
"""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.aws import motofix
from tests.aws.test_aws_eip import Pair

from hapair.agent.client import agent_status
from hapair.agent.config import AgentConfig, VipConfig, dump_toml
from hapair.errors import OperationError

ADDR = {"lb1": "127.0.0.11", "lb2": "127.0.0.12"}
RELAY = {"lb1": "127.0.0.21", "lb2": "127.0.0.22"}  # where the peer sends lb1's heartbeats
STAT_CSV = "# pxname,svname,status,check_status\nweb,FRONTEND,OPEN,\nweb,web1,UP,L7OK\n"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class World:
    """The network and the HAProxys around the two agents, with switches."""

    heartbeats: bool = True  # the relay forwards udp/694
    serving: dict[str, bool] = field(default_factory=lambda: {"lb1": True, "lb2": True})
    stop: threading.Event = field(default_factory=threading.Event)


class _Web(http.server.BaseHTTPRequestHandler):
    world: World
    node: str | None

    def do_GET(self) -> None:
        ok = self.node is None or self.world.serving[self.node]
        self.send_response(200 if ok else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def web_server(world: World, address: str, port: int, node: str | None) -> Any:
    handler = type("Web", (_Web,), {"world": world, "node": node})
    server = socketserver.ThreadingTCPServer((address, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stats_socket(path: Path, world: World) -> None:
    """A stand-in for HAProxy's stats socket: one backend UP."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(16)
    srv.settimeout(0.2)

    def serve() -> None:
        while not world.stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.recv(256)
                conn.sendall(STAT_CSV.encode())
        srv.close()

    threading.Thread(target=serve, daemon=True).start()


def relay(world: World, port: int) -> None:
    """Heartbeats to RELAY[x] go on to ADDR[x], unless the world cuts them."""
    socks = {}
    for node, address in RELAY.items():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((address, port))
        s.settimeout(0.1)
        socks[node] = s

    def forward(node: str, s: socket.socket) -> None:
        while not world.stop.is_set():
            try:
                data, _ = s.recvfrom(2048)
            except TimeoutError:
                continue
            if world.heartbeats:
                s.sendto(data, (ADDR[node], port))
        s.close()

    for node, s in socks.items():
        threading.Thread(target=forward, args=(node, s), daemon=True).start()


def agent_config(
    node: str,
    pair: Pair,
    allocs: dict[str, str],
    publics: dict[str, str],
    base: Path,
    ports: dict[str, int],
    url: str,
) -> AgentConfig:
    peer = "lb2" if node == "lb1" else "lb1"
    home = {"vip1": "lb1", "vip2": "lb2"}
    slot = {v: 0 if h == node else 1 for v, h in home.items()}
    folder = base / node
    return AgentConfig(
        cluster=pair.cluster,
        node=node,
        peer=peer,
        peer_addresses=[RELAY[peer]],
        peer_probe_address=ADDR[peer],
        bind=ADDR[node],
        port=ports["hb"],
        key_file=str(base / "cluster.key"),
        admin_token_file=str(base / "admin.token"),
        api_port=ports[f"api-{node}"],
        api_bind=ADDR[node],
        api_socket=str(folder / "agent.sock"),
        stats_socket=str(folder / "stats.sock"),
        http_port=ports["http"],
        check_path="/health",
        ping_nodes=[],
        interval_ms=100,
        warntime_ms=300,
        deadtime_ms=500,
        initdead_ms=3000,
        failback_delay_ms=4000,
        health_interval_ms=100,
        min_move_interval_ms=1000,
        reconcile_interval_ms=250,
        action_timeout_ms=5000,
        realtime=False,
        aws_region="us-east-1",
        aws_endpoint_url=url,
        vips=[
            VipConfig(
                name=v,
                address=publics[v],
                home=home[v],
                driver="aws_eip",
                allocation_id=allocs[v],
                eni_id=pair.eni[node],
                private_ip=pair.ip[node][slot[v]],
            )
            for v in ("vip1", "vip2")
        ],
    )


class Agents:
    """The two agent processes, started and stopped by name."""

    def __init__(self, configs: dict[str, Path], logs: Path) -> None:
        self.configs, self.logs = configs, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, node: str) -> None:
        with open(self.logs / f"{node}.log", "ab") as log:
            self.procs[node] = subprocess.Popen(
                [sys.executable, "-m", "hapair.agent", "--config", str(self.configs[node])],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=os.environ.copy(),
            )

    def kill(self, node: str) -> None:
        proc = self.procs.pop(node)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for node in list(self.procs):
            self.kill(node)


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


@pytest.fixture
def world(
    tmp_path: Path, ec2: Any, aws_env: str
) -> Iterator[tuple[World, Agents, Pair, dict[str, str], Path]]:
    pair = Pair(ec2, cluster="fo")
    eip2 = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(
        AllocationId=eip2["AllocationId"],
        NetworkInterfaceId=pair.eni["lb2"],
        PrivateIpAddress=pair.ip["lb2"][0],
    )
    allocs = {"vip1": pair.alloc, "vip2": eip2["AllocationId"]}
    publics = {"vip1": pair.public, "vip2": eip2["PublicIp"]}
    w = World()
    ports = {
        "hb": free_port(socket.SOCK_DGRAM),
        "http": free_port(),
        "api-lb1": free_port(),
        "api-lb2": free_port(),
    }
    servers = [web_server(w, "127.0.0.1", ports["http"], None)]
    servers += [web_server(w, ADDR[n], ports["http"], n) for n in ADDR]
    relay(w, ports["hb"])
    (tmp_path / "cluster.key").write_text("ab" * 32 + "\n")
    (tmp_path / "admin.token").write_text("token\n")
    for f in ("cluster.key", "admin.token"):
        (tmp_path / f).chmod(0o600)
    configs = {}
    for node in ADDR:
        (tmp_path / node).mkdir()
        stats_socket(tmp_path / node / "stats.sock", w)
        cfg = agent_config(node, pair, allocs, publics, tmp_path, ports, aws_env)
        configs[node] = tmp_path / node / "agent.toml"
        configs[node].write_text(dump_toml(cfg))
    agents = Agents(configs, tmp_path)
    motofix.LATENCY.update(AssociateAddress=0.15, DescribeAddresses=0.15)
    try:
        yield w, agents, pair, allocs, tmp_path
    finally:
        motofix.LATENCY.update(AssociateAddress=0.0, DescribeAddresses=0.0)
        agents.stop_all()
        w.stop.set()
        for s in servers:
            s.shutdown()
            s.server_close()


def owners(ec2: Any, pair: Pair, allocs: dict[str, str]) -> dict[str, str | None]:
    by_eni = {e: n for n, e in pair.eni.items()}
    res = ec2.describe_addresses(AllocationIds=list(allocs.values()))["Addresses"]
    out = {}
    for vip, alloc in allocs.items():
        a = next(x for x in res if x["AllocationId"] == alloc)
        out[vip] = by_eni.get(a.get("NetworkInterfaceId") or "")
    return out


def both_up(base: Path) -> bool:
    socks = [base / n / "agent.sock" for n in ADDR]
    if not all(s.exists() for s in socks):  # the agent listens as soon as its socket exists
        return False
    try:
        return all(agent_status(str(s))["peer"]["state"] == "up" for s in socks)
    except (OperationError, KeyError):
        return False


def test_partition_blip_and_failbacks_make_a_bounded_number_of_moves(world: Any, ec2: Any) -> None:
    w, agents, pair, allocs, base = world
    ours = set(allocs.values())

    def log(since: int) -> list[dict[str, Any]]:
        return [
            e
            for e in motofix.EIP_LOG[since:]
            if e.get("allocation") in ours or e["op"] != "AssociateAddress"
        ]

    def moves(since: int) -> list[dict[str, Any]]:
        return [e for e in log(since) if e["op"] == "AssociateAddress"]

    start = len(motofix.EIP_LOG)
    agents.start("lb1")
    agents.start("lb2")
    wait_for("both agents hear each other", lambda: both_up(base), 30)
    time.sleep(1.0)
    assert moves(start) == [], "each LB holds its home EIP already: no call at start"

    mark = len(motofix.EIP_LOG)
    w.heartbeats = False  # udp/694 cut; both HAProxys keep serving
    time.sleep(2.0)
    w.heartbeats = True
    wait_for("heartbeats again", lambda: both_up(base), 10)
    assert moves(mark) == [], "a heartbeat-only partition moves nothing"

    mark = len(motofix.EIP_LOG)
    w.heartbeats, w.serving = False, {"lb1": False, "lb2": False}
    time.sleep(0.25)  # a blip shorter than deadtime (500 ms)
    w.heartbeats, w.serving = True, {"lb1": True, "lb2": True}
    time.sleep(1.5)
    assert moves(mark) == [], "a blip moves nothing"

    mark = len(motofix.EIP_LOG)
    w.heartbeats, w.serving = False, {"lb1": False, "lb2": False}  # a full partition
    time.sleep(4.0)
    during = moves(mark)
    assert len(during) == 2, during  # each takes the other's VIP once, then yields
    assert {(e["allocation"], e["eni"]) for e in during} == {
        (allocs["vip1"], pair.eni["lb2"]),
        (allocs["vip2"], pair.eni["lb1"]),
    }
    assert owners(ec2, pair, allocs) == {"vip1": "lb2", "vip2": "lb1"}

    mark = len(motofix.EIP_LOG)
    w.heartbeats, w.serving = True, {"lb1": True, "lb2": True}
    wait_for(
        "both EIPs back home",
        lambda: owners(ec2, pair, allocs) == {"vip1": "lb1", "vip2": "lb2"},
        40,
    )
    # Let the resource agents' quiet gap (aws_eip.QUIET_S, 3 s) pass: on AWS a deadtime (5 s)
    # is longer than that anyway; here, with deadtime 0.5 s, a death right after a failback
    # would be a double fault the peer yields to for at most aws_eip.YIELD_S.
    time.sleep(4.0)
    after = moves(mark)
    assert len(after) == 2, after  # one failback per VIP
    assert {(e["allocation"], e["eni"]) for e in after} == {
        (allocs["vip1"], pair.eni["lb1"]),
        (allocs["vip2"], pair.eni["lb2"]),
    }

    mark = len(motofix.EIP_LOG)
    agents.kill("lb1")  # the machine dies: its agent and its HAProxy
    w.serving["lb1"] = False
    wait_for("lb2 takes vip1", lambda: owners(ec2, pair, allocs)["vip1"] == "lb2", 15)
    assert len(moves(mark)) == 1
    mark = len(motofix.EIP_LOG)
    w.serving["lb1"] = True
    agents.start("lb1")
    wait_for("lb1 takes vip1 back", lambda: owners(ec2, pair, allocs)["vip1"] == "lb1", 40)
    time.sleep(2.0)
    assert len(moves(mark)) == 1, "a failback is exactly one AssociateAddress"

    # The takes from a silent peer (the partition, the crash) were compare-and-swaps: each
    # DisassociateAddress of the association the taker saw, then its conditional associate.
    # An EIP is unassociated only between those two calls of one taker, never after.
    everything = log(start)
    swaps = [e for e in everything if e["op"] == "DisassociateAddress"]
    assert len(swaps) == 3, swaps  # two in the partition, one at the crash
    pending: set[str] = set()
    before: set[str] = set()
    for e in everything:
        now = ours & set(e["unassociated"])
        if e["op"] == "DisassociateAddress":
            pending |= now - before
        else:
            pending.discard(e["allocation"])
            assert now <= pending, f"an EIP of the pair was left unassociated: {e}"
        before = now
    assert pending == set() and before == set()
