"""The demo web app: HTTP/1.1 behaviour on a real loopback socket, and its command line."""

from __future__ import annotations

import asyncio
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from hapair.errors import UsageError
from hapair.webapp import Page, WebConfig, WebServer
from hapair.webapp.page import clean


class ServerThread:
    """A WebServer on 127.0.0.1, on its own event loop in a thread."""

    def __init__(self, config: WebConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.server: WebServer | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="webapp-test", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with WebServer(self.config) as server:
            self.server = server
            self.ready.set()
            await self._stop.wait()

    def start(self) -> ServerThread:
        self._thread.start()
        assert self.ready.wait(5)
        return self

    def stop(self) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)
        self.loop.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    @property
    def requests(self) -> int:
        assert self.server is not None
        return self.server.app.requests

    def tick(self) -> None:
        """Run one housekeeping tick on the server's loop, and wait for it."""
        assert self.server is not None
        done = threading.Event()
        app = self.server.app

        def run() -> None:
            app.tick()
            done.set()

        self.loop.call_soon_threadsafe(run)
        assert done.wait(2)


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerThread]:
    config = WebConfig(node="web1", address="198.18.1.1", bind="127.0.0.1", port=0, idle_timeout=1)
    server = ServerThread(config).start()
    yield server
    server.stop()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_head: bytes = field(repr=False, default=b"")

    @property
    def text(self) -> str:
        return self.body.decode()


class Client:
    """A raw HTTP/1.x client over one socket, reading exactly what the server sends."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        self.buf = b""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def read(self, head_only: bool = False) -> Response:
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), f"connection closed mid-response: {self.buf!r}"
        raw_head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head_only else int(headers["content-length"])
        while len(self.buf) < length:
            assert self._fill(), "connection closed mid-body"
        body, self.buf = self.buf[:length], self.buf[length:]
        return Response(status, headers, body, raw_head)

    def is_closed(self) -> bool:
        """True when the server closed the connection and sent nothing more."""
        try:
            return self.buf == b"" and self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def get(port: int, path: str = "/", **headers: str) -> Response:
    lines = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    with Client(port) as c:
        c.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode())
        return c.read()


def counter(resp: Response) -> int:
    m = re.search(r"request: (\d+)|<dt>request</dt><dd>(\d+)</dd>", resp.text)
    assert m is not None, resp.text
    return int(m.group(1) or m.group(2))


# -- the page ---------------------------------------------------------------------------------


def test_plain_text_by_default_with_lb_and_forwarded_client(srv: ServerThread) -> None:
    r = get(srv.port, X_Forwarded_For="198.19.0.10, 198.18.0.2", X_Hapair_LB="lb1")
    assert r.status == 200
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["x-backend"] == "web1"
    assert r.headers["cache-control"] == "no-store"
    assert int(r.headers["content-length"]) == len(r.body)
    assert "date" in r.headers
    n = counter(r)
    assert r.text == (
        "hapair demo page\n"
        "served by: web1 (198.18.1.1)\n"
        "via load balancer: lb1\n"
        "client: 198.19.0.10\n"
        f"request: {n}\n"
    )


def test_direct_request_shows_direct_and_the_tcp_peer(srv: ServerThread) -> None:
    r = get(srv.port)
    assert "via load balancer: direct\n" in r.text
    assert "client: 127.0.0.1\n" in r.text


def test_html_when_accept_asks_for_it(srv: ServerThread) -> None:
    r = get(
        srv.port,
        Accept="text/html,application/xhtml+xml;q=0.9,*/*;q=0.8",
        X_Hapair_LB="lb2",
        X_Forwarded_For="198.19.0.11",
    )
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.text.startswith("<!doctype html>")
    assert "<dd>web1 (198.18.1.1)</dd>" in r.text
    assert "<dd>lb2</dd>" in r.text
    assert "<dd>198.19.0.11</dd>" in r.text
    assert int(r.headers["content-length"]) == len(r.body)
    assert "http://" not in r.text and "https://" not in r.text  # self-contained


def test_html_escapes_the_headers(srv: ServerThread) -> None:
    r = get(
        srv.port,
        Accept="text/html",
        X_Hapair_LB="<script>alert(1)</script>",
        X_Forwarded_For='"><img src=x onerror=alert(2)>, 1.2.3.4',
    )
    assert "<script>alert" not in r.text
    assert "<img" not in r.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in r.text


def test_control_bytes_and_long_values_are_cleaned(srv: ServerThread) -> None:
    with Client(srv.port) as c:
        c.send(b"GET / HTTP/1.1\r\nX-Hapair-LB: a\x1b[31mb\x7f\r\nX-Forwarded-For: " + b"9" * 500)
        c.send(b"\r\n\r\n")
        r = c.read()
    assert "via load balancer: a?[31mb?\n" in r.text
    assert "client: " + "9" * 128 + "\n" in r.text


def test_counter_increments_and_health_is_not_counted(srv: ServerThread) -> None:
    first = counter(get(srv.port))
    health = get(srv.port, "/health")
    assert (health.status, health.body) == (200, b"ok\n")
    assert health.headers["x-backend"] == "web1"
    assert get(srv.port, "/health?full=1").body == b"ok\n"
    assert counter(get(srv.port, "/any/path?x=1")) == first + 1


# -- connections ------------------------------------------------------------------------------


def test_keep_alive_serves_two_requests_on_one_connection(srv: ServerThread) -> None:
    with Client(srv.port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        a = c.read()
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        b = c.read()
    assert "connection" not in a.headers
    assert counter(b) == counter(a) + 1


def test_pipelined_requests_are_answered_in_order(srv: ServerThread) -> None:
    with Client(srv.port) as c:
        c.send(
            b"GET /health HTTP/1.1\r\n\r\n"
            b"GET / HTTP/1.1\r\nX-Hapair-LB: lb1\r\n\r\n"
            b"HEAD / HTTP/1.1\r\n\r\n"
            b"GET / HTTP/1.1\r\nX-Hapair-LB: lb2\r\nConnection: close\r\n\r\n"
        )
        rs = [c.read(), c.read(), c.read(head_only=True), c.read()]
        assert c.is_closed()
    assert rs[0].body == b"ok\n"
    assert "lb1" in rs[1].text
    assert rs[2].body == b""
    assert "lb2" in rs[3].text
    assert rs[3].headers["connection"] == "close"
    assert counter(rs[3]) == counter(rs[1]) + 2


def test_partial_reads_byte_by_byte(srv: ServerThread) -> None:
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Hapair-LB: lb1\r\n\r\n"
    with Client(srv.port) as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(request)):
            c.send(request[i : i + 1])
            if i % 8 == 0:
                time.sleep(0.001)
        r = c.read()
    assert "via load balancer: lb1\n" in r.text


def test_head_has_no_body(srv: ServerThread) -> None:
    with Client(srv.port) as c:
        c.send(b"HEAD / HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\n\r\n")
        head = c.read(head_only=True)
        nxt = c.read()
    assert head.status == 200
    assert int(head.headers["content-length"]) > 0
    assert nxt.body == b"ok\n"  # nothing between the HEAD response and the next one


def test_connection_close_closes(srv: ServerThread) -> None:
    with Client(srv.port) as c:
        c.send(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n")
        r = c.read()
        assert r.headers["connection"] == "close"
        assert c.is_closed()


def test_http_1_0_closes_unless_keep_alive(srv: ServerThread) -> None:
    with Client(srv.port) as c:
        c.send(b"GET / HTTP/1.0\r\n\r\n")
        assert c.read().headers["connection"] == "close"
        assert c.is_closed()
    with Client(srv.port) as c:
        c.send(b"GET /health HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
        assert c.read().headers["connection"] == "keep-alive"
        c.send(b"GET /health HTTP/1.0\r\n\r\n")
        assert c.read().body == b"ok\n"
        assert c.is_closed()


def test_other_methods_get_405_and_their_body_is_skipped(srv: ServerThread) -> None:
    with Client(srv.port) as c:
        c.send(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello")
        r = c.read()
        c.send(b" world" + b"GET /health HTTP/1.1\r\n\r\n")
        ok = c.read()
    assert r.status == 405
    assert r.headers["allow"] == "GET, HEAD"
    assert ok.body == b"ok\n"


def test_get_with_a_body_is_served_and_the_body_dropped(srv: ServerThread) -> None:
    with Client(srv.port) as c:
        c.send(b"GET /health HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcdGET /health HTTP/1.1\r\n\r\n")
        assert c.read().body == b"ok\n"
        assert c.read().body == b"ok\n"


def test_expect_100_continue_gets_a_final_answer_and_a_close(srv: ServerThread) -> None:
    with Client(srv.port) as c:
        c.send(b"POST / HTTP/1.1\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        r = c.read()
        assert (r.status, r.headers["connection"]) == (405, "close")
        assert c.is_closed()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n folded: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"NOT HTTP AT ALL\r\n",  # a complete bad first line is refused at once
        b"GET / HTTP/1.1\nHost: x\n\n",  # bare LF
    ],
)
def test_malformed_requests_get_400_and_close(srv: ServerThread, request_bytes: bytes) -> None:
    with Client(srv.port) as c:
        c.send(request_bytes)
        r = c.read()
        assert r.status == 400
        assert r.headers["connection"] == "close"
        assert c.is_closed()


def test_other_framing_and_versions(srv: ServerThread) -> None:
    with Client(srv.port) as c:
        c.send(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        assert c.read().status == 501
        assert c.is_closed()
    with Client(srv.port) as c:
        c.send(b"GET / HTTP/2.0\r\n\r\n")
        assert c.read().status == 505
        assert c.is_closed()


def test_oversized_headers_get_431_and_close(srv: ServerThread) -> None:
    with Client(srv.port) as c:  # complete, but too large
        c.send(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        assert c.read().status == 431
        assert c.is_closed()
    with Client(srv.port) as c:  # never ends
        c.send(b"GET / HTTP/1.1\r\n" + b"X-Filler: aaaaaaaaaaaaaaaaaaaaaa\r\n" * 1000)
        assert c.read().status == 431
        assert c.is_closed()


def test_idle_and_trickling_connections_are_closed(srv: ServerThread) -> None:
    with Client(srv.port) as idle, Client(srv.port) as trickle:
        trickle.send(b"GET / HT")
        idle.send(b"GET /health HTTP/1.1\r\n\r\n")
        assert idle.read().body == b"ok\n"
        srv.tick()  # both did something since the last tick
        trickle.send(b"TP/1.1\r\n")  # bytes, but no complete request
        srv.tick()  # idle_timeout=1: one tick without a request closes them
        assert idle.is_closed()
        assert trickle.is_closed()


def test_garbage_never_takes_the_server_down(srv: ServerThread) -> None:
    rng = random.Random(4)
    pieces = [b"GET ", b"/ ", b"HTTP/1.1", b"\r\n", b":", b"Content-Length: 3", b"\x00", b"\xff"]
    for _ in range(40):
        with Client(srv.port) as c:
            for _ in range(rng.randrange(1, 8)):
                if rng.random() < 0.5:
                    data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
                else:
                    data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 12)))
                try:
                    c.send(data)
                except OSError:  # the server answered 400 and closed: expected
                    break
    assert get(srv.port, "/health").body == b"ok\n"


# -- pure parts and the command line -------------------------------------------------------------


def test_page_is_pure_and_clean_replaces_control_bytes() -> None:
    page = Page("web%d", "198.18.1.9")
    assert page.text(b"lb1", b"c", 7).startswith(b"hapair demo page\nserved by: web%d (198.18.1.9)")
    assert b"<dd>7</dd>" in page.html(b"a&b", b"c", 7)
    assert b"<dd>a&amp;b</dd>" in page.html(b"a&b", b"c", 7)
    assert clean(b"a\r\nb\x00") == b"a??b?"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (WebConfig(node="web 1", address="198.18.1.1"), "--node: 'web 1' is not a node name"),
        (WebConfig(node="web1", address="nope"), "--address: 'nope' is not an IP address"),
        (WebConfig(node="web1", address="198.18.1.1", port=70000), "--port: must be between"),
    ],
)
def test_config_is_validated(config: WebConfig, message: str) -> None:
    with pytest.raises(UsageError, match="^" + re.escape(message)):
        config.validate()


def test_command_line_logs_its_address_and_exits_0_on_sigterm() -> None:
    argv = [sys.executable, "-m", "hapair.webapp", "--node", "web7", "--address", "198.18.1.7"]
    argv += ["--bind", "127.0.0.1", "--port", "0"]
    with subprocess.Popen(argv, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        m = re.search(r"web7 listening on 127\.0\.0\.1:(\d+)$", line.strip())
        assert m is not None, line
        r = get(int(m.group(1)), X_Hapair_LB="lb2")
        assert r.headers["x-backend"] == "web7"
        with Client(int(m.group(1))) as idle:  # an open connection does not delay the exit
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=3) == 0
            assert time.monotonic() - started < 1.0
            assert idle.is_closed()
        assert "stopped after 1 requests" in proc.stderr.read()


def test_command_line_rejects_a_bad_node_name() -> None:
    argv = [sys.executable, "-m", "hapair.webapp", "--node", "a b", "--address", "198.18.1.7"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    assert done.returncode == 2
    assert done.stderr.startswith("error: --node: 'a b' is not a node name")
