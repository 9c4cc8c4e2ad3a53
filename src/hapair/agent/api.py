"""The agent's status API: a small HTTP/1.1 server on TCP (inside the node) and a unix socket.

Routes (the ``POST`` ones need ``Authorization: Bearer <admin token>``, compared in constant
time; without it: 401, and nothing is done or passed on):

- ``GET /status`` (JSON), ``GET /metrics`` (Prometheus), ``GET /health`` (200/503 for
  HAProxy-style checks);
- ``POST /standby``, ``POST /online``: this node;
- ``POST /node/<name>/standby``, ``POST /node/<name>/online``: the node named, this one or
  (with a dashboard) a peer, whichever agent receives the call (:meth:`StatusApi._on_node`).

With a :class:`~hapair.agent.dashboard.Dashboard`, also the dashboard:

- ``GET /`` (the page) and its files ``GET /static/dashboard.css``, ``/static/dashboard.js``;
- ``GET /events`` (its live stream), ``GET /dashboard.json`` (one document),
  ``GET /haproxy.json`` (what the peer's dashboard asks of this node);
- ``POST /peer/standby``, ``POST /peer/online``: the same calls on the peer;
- ``POST /node/<name>/server/<server>/<drain|ready|maint>``: one backend server of that
  node's HAProxy, through its runtime API (:mod:`hapair.agent.serverops`); a server name
  HAProxy does not report, or that is not an HAProxy name at all, is refused with 400.

A call on a peer is passed on with the caller's token only once this agent has checked it (no
token, no call on the peer).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from hapair.agent.serverops import UnknownServer
from hapair.errors import OperationError
from hapair.haproxy_runtime import is_name

if TYPE_CHECKING:
    from hapair.agent.dashboard import Dashboard

logger = logging.getLogger(__name__)

MAX_HEADER = 8192


class Backend(Protocol):
    """What the API needs from the daemon."""

    def status(self) -> dict[str, Any]: ...
    def metrics_text(self) -> bytes: ...
    def is_healthy(self) -> bool: ...
    async def set_standby(self, on: bool) -> str: ...
    def count_api_error(self, reason: str) -> None: ...


#: ``POST /node/<name>/<action>`` (see :meth:`StatusApi._on_node`).
NODE_ACTION = re.compile(r"/node/([A-Za-z0-9][A-Za-z0-9_.-]{0,62})/(standby|online)")
#: ``POST /node/<name>/server/<server>/<state>``: the server part is checked after the token.
SERVER_ACTION = re.compile(
    r"/node/([A-Za-z0-9][A-Za-z0-9_.-]{0,62})/server/([^/]{1,128})/(drain|ready|maint)"
)

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
JSON = "application/json"


class Reply(NamedTuple):
    """A whole response: status, body, content type and extra headers."""

    code: int
    body: bytes
    ctype: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


class Stream(NamedTuple):
    """A dashboard event stream to serve once the request is read."""

    queue: asyncio.Queue[bytes | None]


def _head(code: int, ctype: str, headers: tuple[tuple[str, str], ...], length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {code} {REASONS.get(code, 'Error')}", f"Content-Type: {ctype}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += ["Cache-Control: no-store", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _response(
    code: int, body: bytes, ctype: str, headers: tuple[tuple[str, str], ...] = ()
) -> bytes:
    return _head(code, ctype, headers, len(body)) + body


def _json(code: int, doc: object) -> Reply:
    return Reply(code, json.dumps(doc).encode())


class StatusApi:
    """Serves the API for one daemon."""

    def __init__(self, backend: Backend, token: str, dashboard: Dashboard | None = None) -> None:
        self.backend = backend
        self.token = token
        self.dashboard = dashboard
        self.servers: list[asyncio.Server] = []

    async def start(self, host: str, port: int, unix_path: str | None) -> None:
        """Listen on host:port and, when given, on a unix socket (mode 0600)."""
        self.servers.append(
            await asyncio.start_server(self._handle, host, port, reuse_address=True)
        )
        if unix_path:
            import os

            with contextlib.suppress(FileNotFoundError):
                os.unlink(unix_path)
            srv = await asyncio.start_unix_server(self._handle, unix_path)
            os.chmod(unix_path, 0o600)
            self.servers.append(srv)

    async def close(self) -> None:
        """Stop listening (and end the dashboard's streams)."""
        if self.dashboard is not None:
            await self.dashboard.close()
        for s in self.servers:
            s.close()
        for s in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.wait_closed(), 1.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
                if len(head) > MAX_HEADER:
                    raise ValueError("header too large")
                routed = await self._route(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, TimeoutError):
            self.backend.count_api_error("malformed")
            routed = Reply(400, b'{"error": "malformed request"}')
        except Exception:  # the API must never take the agent down: the safety net's sentence
            logger.exception("unexpected error in status API, please report; carrying on")
            self.backend.count_api_error("internal")  # also counted as unexpected
            routed = Reply(503, b'{"error": "internal"}')
        if isinstance(routed, Stream) and self.dashboard is not None:
            from hapair.agent.dashboard import PAGE_HEADERS

            head = _head(
                200, "text/event-stream", (*PAGE_HEADERS, ("X-Accel-Buffering", "no")), None
            )
            await self.dashboard.serve(routed.queue, reader, writer, head)
            return
        assert isinstance(routed, Reply)
        with contextlib.suppress(Exception):
            writer.write(_response(*routed))
            await writer.drain()
            writer.close()

    def _authorized(self, headers: dict[str, str]) -> str | None:
        """The caller's token when it is the admin token (compared in constant time)."""
        auth = headers.get("authorization", "")
        given = auth[7:] if auth.startswith("Bearer ") else ""
        if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
            self.backend.count_api_error("unauthorized")
            return None
        return given

    async def _route(self, head: bytes) -> Reply | Stream:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3:
            raise ValueError("bad request line")
        method, target, _ = parts
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        path = target.split("?", 1)[0]
        gets: dict[str, Callable[[], Awaitable[Reply | Stream] | Reply | Stream]] = {
            "/status": lambda: _json(200, self.backend.status()),
            "/metrics": lambda: Reply(
                200, self.backend.metrics_text(), "text/plain; version=0.0.4"
            ),
            "/health": lambda: (
                Reply(200, b"healthy\n", "text/plain")
                if self.backend.is_healthy()
                else Reply(503, b"unhealthy\n", "text/plain")
            ),
        }
        posts: dict[str, Callable[[str], Awaitable[Reply]]] = {
            "/standby": lambda _: self._local(True),
            "/online": lambda _: self._local(False),
        }
        if self.dashboard is not None:
            gets.update(self._dashboard_gets(path))
            posts["/peer/standby"] = lambda token: self._on_peer("/standby", token)
            posts["/peer/online"] = lambda token: self._on_peer("/online", token)
        if path in gets:
            if method not in ("GET", "HEAD"):
                return Reply(405, b'{"error": "use GET"}')
            found = gets[path]()
            return await found if inspect.isawaitable(found) else found
        named = NODE_ACTION.fullmatch(path)
        served = SERVER_ACTION.fullmatch(path) if self.dashboard is not None else None
        if path in posts or named is not None or served is not None:
            if method != "POST":
                return Reply(405, b'{"error": "use POST"}')
            token = self._authorized(headers)
            if token is None:
                return Reply(401, b'{"error": "admin token required"}')
            if named is not None:
                return await self._on_node(named.group(1), named.group(2), token)
            if served is not None:
                node, server, state = served.groups()
                if not is_name(server):
                    self.backend.count_api_error("invalid")
                    return _json(400, {"error": "not a server name (letters, digits, . _ -)"})
                return await self._on_node(node, state, token, server)
            return await posts[path](token)
        return Reply(404, b'{"error": "not found"}')

    async def _on_node(
        self, node: str, action: str, token: str, server: str | None = None
    ) -> Reply:
        """``POST /node/<name>/<standby|online>`` (and, with ``server``,
        ``/node/<name>/server/<server>/<state>``): the call on the node named, whichever agent
        receives it (a page whose connection moved with a VIP may be talking to the other one
        than it believes: naming the node makes that harmless). A standby or online call on
        the pair's peer goes to its ``/<action>``; any other call on another LB goes to it as
        the same ``/node/...`` path, which that LB's agent then applies to itself."""
        st = self.backend.status()
        whole = f"/node/{node}/server/{server}/{action}" if server else f"/node/{node}/{action}"
        if node == st.get("self"):
            if server is None:
                return await self._local(action == "standby")
            return await self._server(node, server, action)
        if self.dashboard is not None and node == (st.get("peer") or {}).get("name"):
            return await self._on_peer(whole if server else "/" + action, token)
        peers = {p.get("name") for p in st.get("peers") or [] if isinstance(p, dict)}
        if self.dashboard is not None and node in peers:  # an N-node agent: any other LB
            return await self._on_peer(whole, token)
        return _json(404, {"error": f"no node {node} here or as this node's peer"})

    async def _server(self, node: str, server: str, state: str) -> Reply:
        """A backend button on this node (see :mod:`hapair.agent.serverops`)."""
        assert self.dashboard is not None
        try:
            message = await self.dashboard.source.server_state(server, state)
        except UnknownServer as exc:
            self.backend.count_api_error("invalid")
            return _json(400, {"error": str(exc)})
        except OperationError as exc:
            return _json(502, {"error": str(exc)})
        return _json(200, {"message": message})

    async def _local(self, standby: bool) -> Reply:
        return _json(200, {"message": await self.backend.set_standby(standby)})

    def _dashboard_gets(self, path: str) -> dict[str, Callable[[], Any]]:
        from hapair.agent.dashboard import PAGE_HEADERS, page_file

        assert self.dashboard is not None
        source = self.dashboard.source
        gets: dict[str, Callable[[], Any]] = {
            "/events": self._subscribe,
            "/dashboard.json": lambda: self._doc(source.document()),
            "/haproxy.json": lambda: self._doc(source.local()),
        }
        found = page_file(path)
        if found is not None:
            body, ctype = found
            gets[path] = lambda: Reply(200, body, ctype, PAGE_HEADERS)
        return gets

    def _subscribe(self) -> Reply | Stream:
        assert self.dashboard is not None
        q = self.dashboard.subscribe()
        if q is None:
            return Reply(
                503, b'{"error": "too many dashboard streams"}', JSON, (("Retry-After", "5"),)
            )
        return Stream(q)

    @staticmethod
    async def _doc(doc: Awaitable[dict[str, Any]]) -> Reply:
        return _json(200, await doc)

    async def _on_peer(self, path: str, token: str) -> Reply:
        """An operator's call on the peer, passed on with the caller's (checked) token."""
        assert self.dashboard is not None
        try:
            code, body = await self.dashboard.source.peer_request("POST", path, token)
        except OperationError as exc:
            return _json(502, {"error": str(exc)})
        return Reply(code, body)
