"""The forwarder's relay and ports, `hapair open`'s lines and `status --watch`'s picture, without a
lab (the lab tests run them for real)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from hapair.cli.open_cmd import urls
from hapair.cli.watch import picture
from hapair.errors import UsageError
from hapair.plan import make_plan
from hapair.platforms.lab.forward import LISTEN, Forwarder, Route, bind_ports, routes
from hapair.spec import Spec


class LocalDialer:
    """Dials on loopback instead of inside a namespace; records what it tried."""

    def __init__(self) -> None:
        self.tried: list[tuple[str, int]] = []

    async def connect(
        self, address: str, port: int, timeout: float
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.tried.append((address, port))
        async with asyncio.timeout(timeout):
            return await asyncio.open_connection(address, port)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_routes_of_a_lab() -> None:
    plan = make_plan(Spec())
    table = routes(plan, {"demo": 1, "stats": 2, "dashboard": 3, "prometheus": 4}, False)
    by = {r.name: r for r in table}
    assert set(by) == {"demo", "stats", "dashboard"}
    assert by["demo"].upstreams == (("198.19.255.1", 80), ("198.19.255.2", 80))
    assert by["demo"].rotate and not by["dashboard"].rotate
    assert by["stats"].upstreams[0] == ("198.19.255.1", 9022)
    assert by["dashboard"].upstreams == (("198.19.255.1", 9023), ("198.19.255.2", 9023))
    with_prom = routes(plan, {"demo": 1, "stats": 2, "dashboard": 3, "prometheus": 4}, True)
    assert with_prom[-1] == Route("prometheus", 4, (("127.0.0.1", 9090),))


def test_ports_are_on_loopback_only_and_given_ones_must_be_free() -> None:
    base = _free_port()
    socks = bind_ports(["demo", "stats"], None)
    try:
        for s in socks.values():
            assert s.getsockname()[0] == LISTEN == "127.0.0.1"
        ports = [s.getsockname()[1] for s in socks.values()]
        assert ports[1] > ports[0]
        with pytest.raises(UsageError, match="not free"):
            bind_ports(["demo"], ports[0])
    finally:
        for s in socks.values():
            s.close()
    socks = bind_ports(["demo", "stats", "dashboard"], base)
    assert [s.getsockname()[1] for s in socks.values()] == [base, base + 1, base + 2]
    for s in socks.values():
        s.close()


def test_relay_tries_the_next_address_and_carries_both_ways() -> None:
    async def main() -> None:
        async def upstream(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            data = await r.readuntil(b"\n")
            w.write(b"echo " + data)
            await w.drain()
            w.close()

        server = await asyncio.start_server(upstream, "127.0.0.1", 0)
        good = server.sockets[0].getsockname()[1]
        dead = _free_port()  # nothing listens there: connection refused
        dialer = LocalDialer()
        route = Route("demo", 0, (("127.0.0.1", dead), ("127.0.0.1", good)))
        fwd = Forwarder(dialer, [route])  # type: ignore[arg-type]
        socks = bind_ports(["demo"], None)
        await fwd.start(socks)
        port = socks["demo"].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello\n")
        await writer.drain()
        assert await reader.read() == b"echo hello\n"
        writer.close()
        assert dialer.tried == [("127.0.0.1", dead), ("127.0.0.1", good)]
        await fwd.close()
        server.close()
        await asyncio.sleep(0)
        assert fwd.active == 0

    asyncio.run(main())


def test_open_prints_the_urls() -> None:
    rec = {
        "pid": 42,
        "listen": "127.0.0.1",
        "ports": {"demo": 8080, "stats": 8081, "dashboard": 8082},
    }
    lines = urls("demo", rec, "all")
    assert lines[0] == "forwarder of lab demo (pid 42), listening on 127.0.0.1 only:"
    assert any("http://127.0.0.1:8080/" in x and "demo page" in x for x in lines)
    assert any("http://127.0.0.1:8082/" in x and "admin.token" in x for x in lines)
    only = urls("demo", rec, "dashboard")
    assert len(only) == 3 and "8082" in only[1]
    with pytest.raises(UsageError, match="with-monitoring"):
        urls("demo", rec, "prometheus")


def _render(st: dict[str, Any], docs: dict[str, Any]) -> str:
    console = Console(record=True, width=160, color_system=None)
    console.print(picture(st, docs, 1.0))
    return console.export_text()


def test_watch_picture() -> None:
    lb = {"role": "lb", "link_up": True, "processes": {"haproxy": {"running": True}}}
    st = {
        "name": "demo",
        "domain": "www.hapair.test",
        "nodes": [
            {**lb, "name": "lb1"},
            {**lb, "name": "lb2"},
            {"name": "web1", "role": "web", "link_up": False, "processes": {}},
        ],
        "vips": [
            {"name": "vip1", "address": "198.19.255.1", "home": "lb1", "served_by": ["lb2"],
             "state": "away", "summary": "vip1: served by lb2"},
        ],
        "backends": [{"lb": "lb2", "server": "web1", "status": "DOWN", "check": "L4CON"}],
        "agents": {
            "lb1": {"error": "agent at x does not answer"},
            "lb2": {"health": {"healthy": True}, "standby": False, "held": ["vip1", "vip2"],
                    "peer": {"name": "lb1", "state": "dead", "last_heartbeat_ms": 1500, "loss": 0},
                    "events": [{"time": "10:00:00.000", "message": "took vip1 from lb1"}]},
        },
    }  # fmt: skip
    docs = {
        "lb2": {
            "lbs": [{"self": True, "process": {"cpu_percent": 3.25, "rss_bytes": 50 << 20},
                     "haproxy": {"servers": [{"server": "web1", "sessions": 0, "rate": 0}]}}],
            "vips": [{"name": "vip1", "reason": "peer lb1 dead for 160 ms",
                      "traffic": {"req_rate": 7, "err_rate": 0}}],
            "failovers": [{"t": 1.0, "time": "10:00:00.000", "vip": "vip1", "node": "lb2",
                           "label": "failover", "gap_ms": 160.0, "reason": "peer lb1 dead"}],
        }
    }  # fmt: skip
    text = _render(st, docs)
    for needle in (
        "hapair cluster demo",
        "lb1 dead (1500 ms, loss 0.0%)",
        "3.2%",
        "50 MiB",
        "agent at x does not answer",
        "peer lb1 dead for 160 ms",
        "away",
        "160 ms",
        "took vip1 from lb1",
        "web1 LINK DOWN",
        "DOWN",
    ):
        assert needle in text, needle
    assert "7" in text.split("vip1 ")[1].split("\n")[0]


def test_open_refuses_what_it_cannot_open() -> None:
    hapair = str(Path(sys.executable).parent / "hapair")
    proc = subprocess.run([hapair, "open", "bogus"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr == (
        "error: open: must be one of demo, stats, dashboard, prometheus, all (got bogus)\n"
    )
