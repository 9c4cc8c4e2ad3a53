"""The dashboard's backend buttons: ``POST /node/<lb>/server/<server>/<drain|ready|maint>``,
its token, its name checks, passing it on to the peer, and the runtime-API commands it sends."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import pytest
from tests.unit.test_api import Backend, _ask
from tests.unit.test_dashboard import TOKEN, Source

from hapair.agent.api import StatusApi
from hapair.agent.dashboard import Dashboard
from hapair.agent.serverops import UnknownServer, plan, set_server_state
from hapair.errors import OperationError

STAT = """# pxname,svname,status,check_status,scur
www,FRONTEND,OPEN,,0
web,web1,UP,L7OK,1
web,web2,DRAIN,L7OK,0
web,BACKEND,UP,,1
stats,FRONTEND,OPEN,,0
"""


# ---------------------------------------------------------------------- the commands (pure)
def test_plan_names_only_servers_haproxy_reports() -> None:
    assert plan(STAT, "web1", "drain") == [("web", "set server web/web1 state drain")]
    assert plan(STAT, "web2", "ready") == [("web", "set server web/web2 state ready")]
    for bad in ("web9", "BACKEND", "FRONTEND", "web1;shutdown", "web1\nshow info", "web 1", ""):
        with pytest.raises(UnknownServer):
            plan(STAT, bad, "maint")
    with pytest.raises(ValueError, match="one of ready, drain, maint"):
        plan(STAT, "web1", "up")


class FakeHaproxy:
    """A stats socket on a unix path: ``show stat`` answers :data:`STAT`, every other
    command is recorded and answered with ``refuse`` (empty: success)."""

    def __init__(self, refuse: str = "") -> None:
        self.refuse = refuse
        self.commands: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readline()).decode().rstrip("\n")
        self.commands.append(line)
        writer.write((STAT if line.startswith("show stat") else self.refuse).encode())
        await writer.drain()
        writer.close()


def test_set_server_state_on_the_stats_socket() -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            sock = str(Path(tmp) / "stats.sock")
            fake = FakeHaproxy()
            server = await asyncio.start_unix_server(fake.handle, sock)
            said = await set_server_state(sock, "lb1", "web1", "drain")
            assert said == "web1 on lb1: drain (was UP)"
            assert fake.commands[1:] == ["set server web/web1 state drain"]
            fake.commands.clear()
            with pytest.raises(UnknownServer, match="no server web7"):
                await set_server_state(sock, "lb1", "web7", "drain")
            assert [c for c in fake.commands if c.startswith("set")] == []
            fake.refuse = "No such server.\n"
            with pytest.raises(OperationError, match="HAProxy refused `set server web/web2"):
                await set_server_state(sock, "lb1", "web2", "maint")
            server.close()
            await server.wait_closed()

    asyncio.run(main())


# ---------------------------------------------------------------------- the route
class ServerSource(Source):
    """The fake ClusterView, with this node's HAProxy knowing web1 and web2."""

    def __init__(self) -> None:
        super().__init__()
        self.states: list[tuple[str, str]] = []

    async def server_state(self, server: str, state: str) -> str:
        if server not in ("web1", "web2"):
            raise UnknownServer(f"HAProxy has no server {server}")
        self.states.append((server, state))
        return f"{server} on lb1: {state} (was UP)"


async def _api(source: Source) -> tuple[StatusApi, Backend, int]:
    backend = Backend()
    api = StatusApi(backend, TOKEN, Dashboard(source))
    await api.start("127.0.0.1", 0, None)
    return api, backend, api.servers[0].sockets[0].getsockname()[1]


def _post(path: str, token: str | None = TOKEN) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
    return f"POST {path} HTTP/1.1\r\n{auth}\r\n".encode()


def test_a_server_button_needs_the_token() -> None:
    async def main() -> None:
        source = ServerSource()
        api, backend, port = await _api(source)
        for token in (None, "nope", TOKEN + "x"):
            for node in ("lb1", "lb2"):
                code, body = await _ask(port, _post(f"/node/{node}/server/web1/drain", token))
                assert code == 401 and b"admin token required" in body
        assert source.states == [] and source.peer_calls == []
        assert backend.errors == ["unauthorized"] * 6
        code, _ = await _ask(port, b"GET /node/lb1/server/web1/drain HTTP/1.1\r\n\r\n")
        assert code == 405
        code, body = await _ask(port, _post("/node/lb1/server/web1/drain"))
        assert code == 200 and json.loads(body) == {"message": "web1 on lb1: drain (was UP)"}
        for state in ("ready", "maint"):
            code, _ = await _ask(port, _post(f"/node/lb1/server/web2/{state}"))
            assert code == 200
        assert source.states == [("web1", "drain"), ("web2", "ready"), ("web2", "maint")]
        code, _ = await _ask(port, _post("/node/lb1/server/web1/up"))
        assert code == 404  # not a state a button sets
        await api.close()

    asyncio.run(main())


def test_a_server_button_takes_only_servers_haproxy_reports() -> None:
    async def main() -> None:
        source = ServerSource()
        api, backend, port = await _api(source)
        for server in ("web1;shutdown", "web1%3Bshow%20info", "web1%0Ashow", "..", "web9", "-x"):
            for node in ("lb1", "lb2"):  # checked before anything is passed to the peer
                code, body = await _ask(port, _post(f"/node/{node}/server/{server}/drain"))
                if server == "web9" and node == "lb2":
                    continue  # a well-formed name: the peer's agent checks it against its stats
                assert code == 400, (server, node)
                assert b"not a server name" in body or b"no server web9" in body
        assert source.states == []
        assert source.peer_calls == [("POST", "/node/lb2/server/web9/drain", TOKEN)]
        assert backend.errors == ["invalid"] * 11
        # a raw space or newline cannot even make a request line
        code, _ = await _ask(port, _post("/node/lb1/server/web1 x/drain"))
        assert code == 400 and source.states == []
        await api.close()

    asyncio.run(main())


def test_a_server_button_for_the_peer_goes_to_its_agent_with_the_token() -> None:
    async def main() -> None:
        source = ServerSource()
        api, _, port = await _api(source)
        code, body = await _ask(port, _post("/node/lb2/server/web2/maint"))
        assert code == 200 and json.loads(body) == {"message": "lb2 in standby"}  # the fake's
        assert source.peer_calls == [("POST", "/node/lb2/server/web2/maint", TOKEN)]
        assert source.states == []  # this node's HAProxy is untouched
        code, body = await _ask(port, _post("/node/lb9/server/web2/maint"))
        assert code == 404 and b"no node lb9" in body
        await api.close()
        api, _, port = await _api(Source(peer_fails=True))
        code, body = await _ask(port, _post("/node/lb2/server/web1/drain"))
        assert code == 502 and b"lb2 does not answer" in body
        await api.close()

    asyncio.run(main())
