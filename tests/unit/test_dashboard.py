"""The dashboard's server side: SSE framing, its API routes, the token, its documents."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from tests.unit.test_api import Backend, _ask

from hapair.agent.api import StatusApi
from hapair.agent.controller import Move
from hapair.agent.dashboard import MAX_STREAMS, Dashboard, sse_frame
from hapair.agent.dashdoc import haproxy_view
from hapair.agent.history import CpuMeter, History
from hapair.agent.protocol import Heartbeat
from hapair.errors import OperationError

TOKEN = "s3cret"


# ---------------------------------------------------------------------- SSE framing
def test_sse_frame_fields_and_multiline_data() -> None:
    assert sse_frame("x") == b"data: x\n\n"
    assert sse_frame('{"a": 1}', id="7") == b'id: 7\ndata: {"a": 1}\n\n'
    assert sse_frame("one\ntwo\r\nthree") == b"data: one\ndata: two\ndata: three\n\n"
    assert sse_frame(retry=500) == b"retry: 500\n\n"
    assert sse_frame(comment="keepalive") == b": keepalive\n\n"
    assert sse_frame("", event="snap") == b"event: snap\ndata: \n\n"


def test_sse_frame_fields_cannot_inject_lines() -> None:
    frame = sse_frame("d", event="a\nretry: 1", id="1\r\ndata: evil")
    assert frame == b"event: aretry: 1\nid: 1data: evil\ndata: d\n\n"
    assert frame.count(b"\n\n") == 1 and frame.endswith(b"\n\n")


# ---------------------------------------------------------------------- the API
class Source:
    """A fake ClusterView: counts documents and records calls on the peer."""

    def __init__(self, peer_fails: bool = False) -> None:
        self.documents = 0
        self.peer_calls: list[tuple[str, str, str]] = []
        self.peer_fails = peer_fails
        self.closed = False

    async def document(self) -> dict[str, Any]:
        self.documents += 1
        return {"self": "lb1", "n": self.documents}

    async def local(self) -> dict[str, Any]:
        return {"node": "lb1", "process": {"cpu_seconds": 1.0}}

    async def peer_request(self, method: str, path: str, token: str) -> tuple[int, bytes]:
        if self.peer_fails:
            raise OperationError("lb2 does not answer")
        self.peer_calls.append((method, path, token))
        return 200, b'{"message": "lb2 in standby"}'

    def close(self) -> None:
        self.closed = True


async def _api(source: Source, **kw: Any) -> tuple[StatusApi, Backend, int]:
    backend = Backend()
    api = StatusApi(backend, TOKEN, Dashboard(source, **kw))
    await api.start("127.0.0.1", 0, None)
    return api, backend, api.servers[0].sockets[0].getsockname()[1]


async def _head_of(port: int, path: str) -> dict[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\n\r\n".encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    writer.close()
    lines = head.split("\r\n")
    out = {":status": lines[0].split()[1]}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        out[k.strip().lower()] = v.strip()
    return out


def test_page_and_files_with_strict_headers() -> None:
    async def main() -> None:
        api, _, port = await _api(Source())
        code, body = await _ask(port, b"GET / HTTP/1.1\r\n\r\n")
        assert code == 200 and b"<title>hapair dashboard</title>" in body
        assert b"http" not in body.split(b"<body>")[0].replace(b"http-equiv", b"")  # no CDN
        head = await _head_of(port, "/")
        assert head["content-type"] == "text/html; charset=utf-8"
        csp = head["content-security-policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp
        assert head["x-content-type-options"] == "nosniff"
        for path, kind in (
            ("/static/dashboard.js", "javascript"),
            ("/static/dashboard.css", "css"),
        ):
            head = await _head_of(port, path)
            assert head[":status"] == "200" and kind in head["content-type"]
        code, _ = await _ask(port, b"GET /static/../daemon.py HTTP/1.1\r\n\r\n")
        assert code == 404
        code, _ = await _ask(port, b"POST / HTTP/1.1\r\n\r\n")
        assert code == 405
        await api.close()

    asyncio.run(main())


def test_documents() -> None:
    async def main() -> None:
        source = Source()
        api, _, port = await _api(source)
        code, body = await _ask(port, b"GET /dashboard.json HTTP/1.1\r\n\r\n")
        assert code == 200 and json.loads(body) == {"self": "lb1", "n": 1}
        code, body = await _ask(port, b"GET /haproxy.json HTTP/1.1\r\n\r\n")
        assert code == 200 and json.loads(body)["node"] == "lb1"
        await api.close()
        assert source.closed

    asyncio.run(main())


def test_without_a_dashboard_nothing_new_is_served() -> None:
    async def main() -> None:
        api = StatusApi(Backend(), TOKEN)
        await api.start("127.0.0.1", 0, None)
        port = api.servers[0].sockets[0].getsockname()[1]
        for path in ("/", "/events", "/dashboard.json", "/haproxy.json", "/static/dashboard.js"):
            code, _ = await _ask(port, f"GET {path} HTTP/1.1\r\n\r\n".encode())
            assert code == 404, path
        auth = f"Authorization: Bearer {TOKEN}\r\n"
        for path in ("/peer/standby", "/node/lb1/server/web1/drain"):
            code, _ = await _ask(port, f"POST {path} HTTP/1.1\r\n{auth}\r\n".encode())
            assert code == 404, path
        await api.close()

    asyncio.run(main())


async def _open_stream(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /events HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    return reader, writer, head


async def _wait_for(pred: Any, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)


def test_event_stream_frames_and_ends_when_the_client_goes() -> None:
    async def main() -> None:
        source = Source()
        api, _, port = await _api(source, period_s=0.05)
        dash = api.dashboard
        assert dash is not None
        reader, writer, head = await _open_stream(port)
        assert b"200 OK" in head and b"Content-Type: text/event-stream" in head
        assert b"Content-Length" not in head
        assert await reader.readuntil(b"\n\n") == b"retry: 500\n\n"
        docs = []
        for _ in range(3):
            frame = (await reader.readuntil(b"\n\n")).decode()
            lines = frame.strip().split("\n")
            assert lines[0].startswith("id: ") and lines[1].startswith("data: ")
            docs.append(json.loads(lines[1][6:]))
        assert [d["n"] for d in docs] == sorted(d["n"] for d in docs)
        assert dash.streams == 1
        writer.close()
        await _wait_for(lambda: dash.streams == 0)
        # no stream open: the publisher stops building documents
        await asyncio.sleep(0.15)
        built = source.documents
        await asyncio.sleep(0.2)
        assert source.documents == built
        await api.close()

    asyncio.run(main())


def test_event_streams_are_bounded() -> None:
    async def main() -> None:
        api, _, port = await _api(Source(), period_s=0.05)
        dash = api.dashboard
        assert dash is not None
        streams = [await _open_stream(port) for _ in range(MAX_STREAMS)]
        assert all(b"200 OK" in head for _, _, head in streams)
        await _wait_for(lambda: dash.streams == MAX_STREAMS)
        code, body = await _ask(port, b"GET /events HTTP/1.1\r\n\r\n")
        assert code == 503 and b"too many" in body
        _, writer, _ = streams.pop()
        writer.close()
        await _wait_for(lambda: dash.streams == MAX_STREAMS - 1)
        streams.append(await _open_stream(port))
        assert b"200 OK" in streams[-1][2]
        # the agent stops: every stream ends
        await api.close()
        for reader, writer, _ in streams:
            async with asyncio.timeout(2):
                while await reader.read(65536):
                    pass
            writer.close()
        assert dash.streams == 0

    asyncio.run(main())


@pytest.mark.parametrize("action", ["standby", "online"])
def test_calls_on_the_peer_need_the_token(action: str) -> None:
    async def main() -> None:
        source = Source()
        api, backend, port = await _api(source)
        req = f"POST /peer/{action} HTTP/1.1\r\n"
        for auth in ("", "Authorization: Bearer nope\r\n", f"Authorization: Basic {TOKEN}\r\n"):
            code, body = await _ask(port, f"{req}{auth}\r\n".encode())
            assert code == 401 and b"admin token required" in body
        assert source.peer_calls == []  # a refused call never reaches the peer
        assert backend.errors == ["unauthorized"] * 3
        code, _ = await _ask(port, f"GET /peer/{action} HTTP/1.1\r\n\r\n".encode())
        assert code == 405
        code, body = await _ask(port, f"{req}Authorization: Bearer {TOKEN}\r\n\r\n".encode())
        assert code == 200 and json.loads(body) == {"message": "lb2 in standby"}
        assert source.peer_calls == [("POST", f"/{action}", TOKEN)]
        assert backend.standby is False  # this node is untouched
        await api.close()

    asyncio.run(main())


def test_a_call_naming_its_node_reaches_it_whichever_agent_receives_it() -> None:
    """After a VIP move the page may be served by the other agent than it believes: the
    buttons name their node, and either agent applies the call to that node."""

    async def main() -> None:
        source = Source()
        api, backend, port = await _api(source)
        auth = f"Authorization: Bearer {TOKEN}\r\n\r\n"
        code, _ = await _ask(port, b"POST /node/lb1/standby HTTP/1.1\r\n\r\n")
        assert code == 401 and backend.standby is False
        code, body = await _ask(port, f"POST /node/lb1/standby HTTP/1.1\r\n{auth}".encode())
        assert code == 200 and backend.standby is True and source.peer_calls == []
        code, body = await _ask(port, f"POST /node/lb2/online HTTP/1.1\r\n{auth}".encode())
        assert code == 200 and source.peer_calls == [("POST", "/online", TOKEN)]
        code, body = await _ask(port, f"POST /node/lb9/online HTTP/1.1\r\n{auth}".encode())
        assert code == 404 and b"no node lb9" in body
        code, _ = await _ask(port, b"GET /node/lb1/standby HTTP/1.1\r\n\r\n")
        assert code == 405
        await api.close()

    asyncio.run(main())


def test_a_silent_peer_is_a_bad_gateway() -> None:
    async def main() -> None:
        api, _, port = await _api(Source(peer_fails=True))
        code, body = await _ask(
            port, f"POST /peer/standby HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        assert code == 502 and b"lb2 does not answer" in body
        await api.close()

    asyncio.run(main())


def test_token_is_never_taken_from_the_url() -> None:
    async def main() -> None:
        api, backend, port = await _api(Source())
        code, _ = await _ask(port, f"POST /standby?token={TOKEN} HTTP/1.1\r\n\r\n".encode())
        assert code == 401 and backend.standby is False
        await api.close()

    asyncio.run(main())


# ---------------------------------------------------------------------- documents
COLUMNS = "pxname,svname,scur,stot,status,rate,check_status,hrsp_2xx,hrsp_5xx,req_rate,req_tot"
STAT = f"""# {COLUMNS},addr,lastchg
www,FRONTEND,2,40,OPEN,5,,38,2,5,40,,
web,web1,1,20,UP,3,L7OK,19,1,,,198.18.1.1:80,60
web,web2,0,20,DOWN,0,L4CON,19,1,,,198.18.1.2:80,3
web,BACKEND,1,40,UP,3,,38,2,,,,60
stats,FRONTEND,0,0,OPEN,0,,0,0,0,0,,
"""
TABLE = """# table: www, type: ip, size:64, used:2
0x1: key=127.0.0.1 use=0 exp=1 http_req_cnt=14 http_req_rate(1000)=10 http_err_cnt=0 http_err_rate(1000)=0 http_fail_cnt=0 http_fail_rate(1000)=0
0x2: key=198.19.255.1 use=0 exp=1 http_req_cnt=9 http_req_rate(1000)=4 http_err_cnt=1 http_err_rate(1000)=1 http_fail_cnt=2 http_fail_rate(1000)=1
"""  # noqa: E501


def test_haproxy_view_reads_backends_frontend_and_rates_per_vip() -> None:
    view = haproxy_view(STAT, TABLE, {"vip1": "198.19.255.1", "vip2": "198.19.255.2"})
    assert [s["server"] for s in view["servers"]] == ["web1", "web2"]
    web2 = view["servers"][1]
    assert web2["status"] == "DOWN" and web2["check"] == "L4CON" and web2["since_s"] == 3
    assert view["servers"][0]["responses"]["5xx"] == 1 and view["servers"][0]["rate"] == 3
    assert view["frontend"]["req_rate"] == 5 and view["frontend"]["requests"] == 40
    assert view["per_vip"]["vip1"] == {"req_rate": 4, "err_rate": 2, "requests": 9, "errors": 3}
    assert view["per_vip"]["vip2"] == {"req_rate": 0, "err_rate": 0, "requests": 0, "errors": 0}


def _hb(held: set[str], boot: int = 1, seq: int = 1) -> Heartbeat:
    return Heartbeat("c", "lb2", boot, seq, True, True, 0, held=frozenset(held))


def test_history_moves_failovers_and_the_peer_seen() -> None:
    h = History("lb1", "lb2", {"vip1": "lb1", "vip2": "lb2"})
    h.observe_peer(None, _hb({"vip2"}))
    h.observe_peer(_hb({"vip2"}), _hb({"vip2"}, seq=2))  # nothing changed: nothing kept
    h.record_move(Move("vip2", True, "peer lb2 dead for 160 ms", "failover", "took", 160.4))
    h.record_move(Move("vip2", False, "home node lb2 holds it", "other", "released"))
    h.observe_peer(_hb({"vip2"}, seq=3), _hb({"vip1", "vip2"}, seq=4))
    h.observe_peer(_hb({"vip2"}, seq=4), _hb({"vip2"}, boot=2, seq=1))  # restarted
    vip2 = h.timeline("vip2")
    assert [(m["node"], m["take"], m["label"]) for m in vip2] == [
        ("lb2", True, "holds"),
        ("lb1", True, "failover"),
        ("lb1", False, "other"),
        ("lb2", True, "holds"),
    ]
    assert vip2[1]["gap_ms"] == 160.4 and vip2[0]["gap_ms"] is None
    fails = h.failovers()
    assert [(f["vip"], f["node"], f["label"]) for f in fails] == [
        ("vip2", "lb1", "failover"),
        ("vip1", "lb2", "seen"),
    ]


def test_cpu_meter() -> None:
    m = CpuMeter(window_s=1.0)
    assert m.add(10.0, now=100.0) is None
    assert m.add(10.1, now=100.5) is None
    assert m.add(10.5, now=102.0) == 26.67  # 0.4 s of CPU in the last 1.5 s
    assert m.add(10.6, now=103.0) == 10.0
    assert m.add(1.0, now=104.0) is None  # a restart starts over
