"""The demo web app's HTTP/1.1 server: stdlib asyncio, one :class:`asyncio.Protocol` per connection.

The hot path (a keep-alive ``GET`` of the page) does one ``find`` for the end of the head, one
regex ``fullmatch`` that validates the request line and every header line, one ``lower()`` copy
of the head to look headers up, one ``%`` format for the body and one for the response head,
and one ``write`` per batch of pipelined requests.

Behaviour, for the record:

- Only ``GET`` and ``HEAD``; any other method gets 405 (with ``Allow``), and its
  ``Content-Length`` body is read and dropped, so the connection stays usable.
- HTTP/1.1 keeps the connection open unless ``Connection: close``; HTTP/1.0 closes it unless
  ``Connection: keep-alive``. Pipelined requests are answered in order, in one write.
- A head larger than ``max_header_bytes`` gets 431; a malformed request line or header line
  gets 400; an HTTP major version other than 1 gets 505; ``Transfer-Encoding`` gets 501;
  a bad or repeated ``Content-Length`` gets 400. Each of these closes the connection.
- ``/health`` answers 200 ``ok`` and is *not* counted, so HAProxy's checks do not inflate
  the request counter; every ``GET`` or ``HEAD`` of any other path is counted.
- A connection that completes no request for ``idle_timeout`` seconds is closed (this covers
  idle keep-alive connections and clients that trickle a head byte by byte); one that still
  has unread responses ``idle_timeout`` later is aborted.
- When the client stops reading its responses, the server stops reading its requests
  (``pause_writing``), so a pipelining client cannot make the process buffer without bound.
- ``Host`` is not required. ``Expect: 100-continue`` is not answered: a request with a body
  and ``Expect`` gets its final response and a close.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import signal
import socket
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from hapair.errors import UsageError
from hapair.webapp.page import Page, clean

logger = logging.getLogger(__name__)

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# Request line, then header lines, each ending in CRLF; the final empty line is not included.
_HEAD = re.compile(
    rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])\r\n"
    rb"(?:" + _TOKEN + rb":[^\r\n\x00]*\r\n)*"
)
_REQUEST_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+ [\x21-\x7e]+ HTTP/[0-9]\.[0-9]\r\n")
_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")

_H_ACCEPT = b"\r\naccept:"
_H_CONNECTION = b"\r\nconnection:"
_H_CONTENT_LENGTH = b"\r\ncontent-length:"
_H_TRANSFER_ENCODING = b"\r\ntransfer-encoding:"
_H_EXPECT = b"\r\nexpect:"
_H_FORWARDED_FOR = b"\r\nx-forwarded-for:"
_H_LB = b"\r\nx-hapair-lb:"

_OWS = b" \t"
_DIRECT = b"direct"
_HEALTH_BODY = b"ok\n"
_MAX_CONTENT_LENGTH_DIGITS = 18

# Connection modes: what the response says about the connection.
_KEEP = 0  # HTTP/1.1 persistent: nothing to say
_KEEP_10 = 1  # HTTP/1.0 persistent: "Connection: keep-alive"
_CLOSE = 2  # "Connection: close"
_CONNECTION_LINE = (b"", b"Connection: keep-alive\r\n", b"Connection: close\r\n")

_TICK = 1.0  # seconds between App.tick() calls

_TEXT_TYPE = b"text/plain; charset=utf-8"
_HTML_TYPE = b"text/html; charset=utf-8"


@dataclass(frozen=True, slots=True)
class WebConfig:
    """What one web app process serves, and how.

    :raises UsageError: from :meth:`validate` when a field is unusable.
    """

    node: str  # the web node's name, shown on the page and sent as X-Backend
    address: str  # the web node's address, shown on the page
    bind: str = "0.0.0.0"  # listen address; "0.0.0.0" is every IPv4 address
    port: int = 80  # listen port; 0 picks a free one (tests)
    idle_timeout: float = 30.0  # close a connection that completes no request for this long
    max_header_bytes: int = 16384  # a larger request head gets 431
    backlog: int = 1024  # listen(2) backlog, for bursts of new connections

    def validate(self) -> None:
        """Check every field; raise :class:`UsageError` naming the first bad one."""
        if not _NODE_NAME.fullmatch(self.node):
            raise UsageError(
                f"--node: {self.node!r} is not a node name (letters, digits, '.', '_', '-')"
            )
        try:
            ipaddress.ip_address(self.address)
        except ValueError as exc:
            raise UsageError(f"--address: {self.address!r} is not an IP address") from exc
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port: must be between 0 and 65535 (got {self.port})")
        if self.idle_timeout <= 0:
            raise UsageError(f"idle_timeout: must be positive (got {self.idle_timeout})")
        if self.max_header_bytes < 256:
            raise UsageError(
                f"max_header_bytes: must be at least 256 (got {self.max_header_bytes})"
            )


class App:
    """State shared by the connections of one process: the page, pre-built bytes, the counter.

    :param config: the validated configuration.
    """

    def __init__(self, config: WebConfig) -> None:
        self.config = config
        self.page = Page(config.node, config.address)
        #: Pages served (every counted GET/HEAD; ``/health`` is not counted).
        self.requests = 0
        self.connections: set[HttpProtocol] = set()
        self.max_head = config.max_header_bytes
        self.idle_ticks = max(1, round(config.idle_timeout / _TICK))
        self.date = b""
        # Response head formats by [is_html][connection mode], "%s" = Date, "%d" = Content-Length.
        self.heads = tuple(
            tuple(self._head(b"200 OK", ctype, mode) for mode in (_KEEP, _KEEP_10, _CLOSE))
            for ctype in (_TEXT_TYPE, _HTML_TYPE)
        )
        self.health_heads = tuple(
            self._head(b"200 OK", _TEXT_TYPE, mode) % (b"%s", len(_HEALTH_BODY))
            for mode in (_KEEP, _KEEP_10, _CLOSE)
        )
        self.tick()

    def _head(self, status: bytes, ctype: bytes, mode: int, extra: bytes = b"") -> bytes:
        backend = self.config.node.encode("ascii").replace(b"%", b"%%")
        return (
            b"HTTP/1.1 " + status + b"\r\n"
            b"X-Backend: " + backend + b"\r\n"
            b"Cache-Control: no-store\r\n"
            b"Content-Type: " + ctype + b"\r\n" + extra + _CONNECTION_LINE[mode] + b"Date: %s\r\n"
            b"Content-Length: %d\r\n\r\n"
        )

    def error(self, status: bytes, mode: int, extra: bytes = b"") -> bytes:
        """A complete error response: the status line's text is the body.

        :param status: e.g. ``b"400 Bad Request"``.
        :param mode: the connection mode (``_KEEP``, ``_KEEP_10`` or ``_CLOSE``).
        :param extra: more header lines, each ending in CRLF.
        """
        body = status + b"\n"
        return self._head(status, _TEXT_TYPE, mode, extra) % (self.date, len(body)) + body

    def tick(self) -> None:
        """Once a second: refresh the Date header and close idle connections."""
        self.date = formatdate(usegmt=True).encode("ascii")
        for conn in list(self.connections):
            conn.tick(self.idle_ticks)


class HttpProtocol(asyncio.Protocol):
    """One HTTP/1.x connection.

    :param app: the shared state of the process.
    """

    __slots__ = ("_app", "_closing", "_done", "_idle", "_peer", "_pending", "_skip", "_transport")

    def __init__(self, app: App) -> None:
        self._app = app
        self._transport: asyncio.Transport | None = None
        self._pending = b""  # an incomplete head, waiting for more bytes
        self._skip = 0  # body bytes still to read and drop
        self._peer = b"unknown"
        self._closing = False
        self._done = True  # completed a request (or read body bytes) since the last tick
        self._idle = 0  # ticks without a completed request

    # -- asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Remember the transport and the TCP peer's address."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer: Any = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self._peer = clean(str(peer[0]).encode("ascii", "replace"))
        self._app.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection."""
        self._app.connections.discard(self)
        self._transport = None

    def pause_writing(self) -> None:
        """The client does not read its responses: stop reading its requests."""
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        """The client caught up: read again."""
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        """Answer every complete request in ``data`` (plus what was pending) in one write."""
        if self._closing:
            return
        try:
            self._received(data)
        except Exception:  # never let garbage take the process down; drop the connection
            logger.exception("%s: dropping a connection after an internal error", self._peer)
            self._closing = True
            if self._transport is not None:
                self._transport.abort()

    # -- housekeeping -----------------------------------------------------------------------

    def tick(self, limit: int) -> None:
        """Called once a second; closes the connection after ``limit`` ticks without a request."""
        if self._done:
            self._done = False
            self._idle = 0
            return
        self._idle += 1
        if self._idle >= limit and self._transport is not None:
            if self._closing:  # closed, yet its last responses are still unread: give up on them
                self._transport.abort()
            else:
                self._closing = True
                self._transport.close()

    def close(self) -> None:
        """Close the connection (at shutdown); pending responses are still sent."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    # -- the hot path -----------------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                self._done = True
                return
            data = data[self._skip :]
            self._skip = 0
        if self._pending:
            data = self._pending + data
            self._pending = b""

        app = self._app
        out: list[bytes] = []
        pos = 0
        size = len(data)
        close = False
        while pos < size:
            if data[pos] == 13 and data.startswith(b"\r\n", pos):  # RFC 9112 2.2: skip empty lines
                pos += 2
                continue
            end = data.find(b"\r\n\r\n", pos)
            if end < 0:
                break
            if end - pos > app.max_head:
                out.append(app.error(b"431 Request Header Fields Too Large", _CLOSE))
                close = True
                break
            m = _HEAD.fullmatch(data, pos, end + 2)
            if m is None:
                out.append(app.error(b"400 Bad Request", _CLOSE))
                close = True
                break
            method, target, major, minor = m.groups()
            head = data[pos : end + 2]
            low = head.lower()
            pos = end + 4

            if major != b"1":
                out.append(app.error(b"505 HTTP Version Not Supported", _CLOSE))
                close = True
                break

            # Connection persistence.
            i = low.find(_H_CONNECTION)
            if minor == b"0":
                mode = _CLOSE
                if i >= 0 and b"keep-alive" in low[i : low.find(b"\r\n", i + 2)]:
                    mode = _KEEP_10
            else:
                mode = _KEEP
                if i >= 0 and b"close" in low[i : low.find(b"\r\n", i + 2)]:
                    mode = _CLOSE

            # Message framing: a body we read and drop.
            if _H_TRANSFER_ENCODING in low:
                out.append(app.error(b"501 Not Implemented", _CLOSE))
                close = True
                break
            i = low.find(_H_CONTENT_LENGTH)
            if i >= 0:
                i += len(_H_CONTENT_LENGTH)
                value = low[i : low.find(b"\r\n", i)].strip(_OWS)
                if (
                    not value.isdigit()
                    or len(value) > _MAX_CONTENT_LENGTH_DIGITS
                    or low.find(_H_CONTENT_LENGTH, i) >= 0
                ):
                    out.append(app.error(b"400 Bad Request", _CLOSE))
                    close = True
                    break
                length = int(value)
                if length and _H_EXPECT in low:
                    # The client may wait for "100 Continue" and never send the body: a
                    # final answer and a close keep both sides in step.
                    mode = _CLOSE
                elif length:
                    if size - pos >= length:
                        pos += length
                    else:
                        self._skip = length - (size - pos)
                        pos = size

            if method != b"GET" and method != b"HEAD":
                out.append(app.error(b"405 Method Not Allowed", mode, b"Allow: GET, HEAD\r\n"))
            elif target == b"/health" or target.startswith(b"/health?"):
                out.append(app.health_heads[mode] % app.date)
                if method == b"GET":
                    out.append(_HEALTH_BODY)
            else:
                out.extend(self._page(head, low, method, mode))
            if mode == _CLOSE:
                close = True
                break

        if out:
            self._done = True
        if not close and pos < size and not self._skip:
            rest = data[pos:]
            if len(rest) > app.max_head:
                out.append(app.error(b"431 Request Header Fields Too Large", _CLOSE))
                close = True
            elif b"\n\n" in rest or (b"\r\n" in rest and _REQUEST_LINE.match(rest) is None):
                out.append(app.error(b"400 Bad Request", _CLOSE))
                close = True
            else:
                self._pending = rest

        transport = self._transport
        if transport is None:
            return
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        if close:
            self._closing = True
            transport.close()

    def _page(self, head: bytes, low: bytes, method: bytes, mode: int) -> tuple[bytes, ...]:
        """The demo page for one request: its response head, and its body unless ``HEAD``."""
        app = self._app
        app.requests += 1
        lb = _DIRECT
        i = low.find(_H_LB)
        if i >= 0:
            i += len(_H_LB)
            lb = clean(head[i : head.find(b"\r\n", i)].strip(_OWS)) or _DIRECT
        client = self._peer
        i = low.find(_H_FORWARDED_FOR)
        if i >= 0:
            i += len(_H_FORWARDED_FOR)
            first = head[i : head.find(b"\r\n", i)].split(b",", 1)[0].strip(_OWS)
            if first:
                client = clean(first)
        i = low.find(_H_ACCEPT)
        if i >= 0 and b"text/html" in low[i : low.find(b"\r\n", i + 2)]:
            body = app.page.html(lb, client, app.requests)
            response_head = app.heads[1][mode] % (app.date, len(body))
        else:
            body = app.page.text(lb, client, app.requests)
            response_head = app.heads[0][mode] % (app.date, len(body))
        if method == b"HEAD":
            return (response_head,)
        return (response_head, body)


class WebServer:
    """The listening server, as an async context manager.

    ``async with WebServer(config) as server:`` binds and starts serving; ``server.port`` is
    the bound port. Leaving the block closes the listener and every connection.

    :param config: what to serve; validated on entry.
    :param sock: a listening socket to serve instead of binding ``config.bind:config.port``
        (one opened in another network namespace, see :mod:`hapair.webapp.pool`); the server
        owns it from then on and closes it on exit.
    """

    def __init__(self, config: WebConfig, sock: socket.socket | None = None) -> None:
        config.validate()
        self.config = config
        self.app = App(config)
        self._sock = sock
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.port = config.port

    async def __aenter__(self) -> WebServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen (or take over the given socket) and serve."""
        loop = asyncio.get_running_loop()
        app = self.app
        if self._sock is not None:
            self._server = await loop.create_server(
                lambda: HttpProtocol(app), sock=self._sock, backlog=self.config.backlog
            )
        else:
            self._server = await loop.create_server(
                lambda: HttpProtocol(app),
                self.config.bind,
                self.config.port,
                reuse_address=True,
                backlog=self.config.backlog,
            )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ticker = asyncio.create_task(
            self._tick_forever(), name=f"webapp-tick-{self.config.node}"
        )
        logger.info("%s listening on %s:%d", self.config.node, self.config.bind, self.port)

    async def stop(self) -> None:
        """Close the listener and every connection (pending responses are still sent)."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._server is not None:
            self._server.close()
            for conn in list(self.app.connections):
                conn.close()
            try:
                async with asyncio.timeout(0.5):
                    await self._server.wait_closed()
            except TimeoutError:
                pass
        self._ticker = self._server = None
        logger.info("%s stopped after %d requests", self.config.node, self.app.requests)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(_TICK)
            self.app.tick()


async def serve(config: WebConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set, or until SIGTERM or SIGINT when ``stop`` is not given.

    :param config: what to serve.
    :param stop: set it to stop; ``None`` installs signal handlers instead.
    :raises UsageError: when the configuration is unusable.
    :raises OSError: when the address cannot be bound.
    """
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    async with WebServer(config):
        await stop.wait()
