"""The dashboard's HTTP side: the page and its two files, and the live stream.

``GET /`` is a plain HTML page (``static/index.html``, ``dashboard.css``, ``dashboard.js``,
shipped in the package: no CDN, no build step). Its script opens ``GET /events``, a stream of
server-sent events: one ``message`` event with the whole dashboard document
(:mod:`hapair.agent.dashdoc`) about twice a second, so nothing on the page reloads.

One publisher task builds the document while at least one stream is open (none: the dashboard
costs the agent nothing) and offers each frame to every stream's queue of one (a slow reader
skips frames, it never queues them). At most :data:`MAX_STREAMS` streams at once; more are
refused with 503. A stream ends when its client goes away (EOF or a failed write; a write that
cannot go out within :data:`WRITE_TIMEOUT_S` counts as gone) or when the agent stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from importlib import resources
from typing import Any, Final, Protocol

logger = logging.getLogger(__name__)

MAX_STREAMS: Final = 8
"""Concurrent event streams, at most."""
PERIOD_S: Final = 0.5
"""A new document this often while a stream is open."""
RETRY_MS: Final = 500
"""How soon a browser reconnects a stream that broke (the ``retry`` field)."""
KEEPALIVE_S: Final = 15.0
"""A comment line goes out after this long without a document."""
WRITE_TIMEOUT_S: Final = 5.0
"""A frame that cannot be written within this long ends the stream."""

#: The page's files: URL path -> (file in ``hapair/agent/static``, content type).
FILES: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
}

#: Headers of every page response: nothing but this origin, no framing, no sniffing, no referrer.
PAGE_HEADERS: Final = (
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)


def sse_frame(
    data: str | None = None,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
    comment: str | None = None,
) -> bytes:
    """One server-sent event, blank-line terminated. ``data`` may span lines (each becomes a
    ``data:`` line); carriage returns and newlines in the other fields are removed."""

    def one_line(s: str) -> str:
        return s.replace("\r", "").replace("\n", "")

    out = []
    if comment is not None:
        out.append(f": {one_line(comment)}")
    if retry is not None:
        out.append(f"retry: {int(retry)}")
    if event is not None:
        out.append(f"event: {one_line(event)}")
    if id is not None:
        out.append(f"id: {one_line(id)}")
    if data is not None:
        lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        out += [f"data: {line}" for line in lines]
    return ("\n".join(out) + "\n\n").encode()


class Source(Protocol):
    """What the dashboard reads (:class:`hapair.agent.dashdoc.ClusterView` in the agent)."""

    async def document(self) -> dict[str, Any]: ...
    async def local(self) -> dict[str, Any]: ...
    async def peer_request(self, method: str, path: str, token: str) -> tuple[int, bytes]: ...
    async def server_state(self, server: str, state: str) -> str: ...
    def close(self) -> None: ...


def page_file(path: str) -> tuple[bytes, str] | None:
    """The page file at URL ``path`` and its content type, or None."""
    found = FILES.get(path)
    if found is None:
        return None
    name, ctype = found
    return resources.files("hapair.agent").joinpath("static", name).read_bytes(), ctype


def _offer(q: asyncio.Queue[bytes | None], frame: bytes | None) -> None:
    """Put ``frame`` in a queue of one, replacing what it held."""
    with contextlib.suppress(asyncio.QueueEmpty):
        q.get_nowait()
    q.put_nowait(frame)


class Dashboard:
    """The live streams of one agent (see the module docstring).

    :param source: builds the documents.
    """

    def __init__(
        self, source: Source, *, max_streams: int = MAX_STREAMS, period_s: float = PERIOD_S
    ) -> None:
        self.source = source
        self.max_streams = max_streams
        self.period_s = period_s
        self._queues: set[asyncio.Queue[bytes | None]] = set()
        self._publisher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._last: tuple[float, bytes] | None = None
        self._seq = 0
        self._closing = False

    @property
    def streams(self) -> int:
        """Streams open now."""
        return len(self._queues)

    def subscribe(self) -> asyncio.Queue[bytes | None] | None:
        """A new stream's queue (the newest frame at once if it is fresh), or None when
        :data:`MAX_STREAMS` are open or the agent stops."""
        if self._closing or len(self._queues) >= self.max_streams:
            return None
        q: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1)
        self._queues.add(q)
        if self._last is not None and time.monotonic() - self._last[0] < self.period_s:
            q.put_nowait(self._last[1])
        else:
            self._wake.set()
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.get_running_loop().create_task(
                self._publish(), name="dashboard-publisher"
            )
        return q

    async def _publish(self) -> None:
        while self._queues and not self._closing:
            self._wake.clear()
            try:
                doc = await self.source.document()
                data = json.dumps(doc, separators=(",", ":"), default=str)
            except Exception:  # the dashboard must never take the agent down
                logger.exception("dashboard document failed, please report")
                data = json.dumps({"error": "the agent could not build the document"})
            self._seq += 1
            frame = sse_frame(data, id=str(self._seq))
            self._last = (time.monotonic(), frame)
            for q in self._queues:
                _offer(q, frame)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.period_s)

    async def serve(
        self,
        q: asyncio.Queue[bytes | None],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: bytes,
    ) -> None:
        """Write ``head`` then the stream's frames until the client goes away or the agent
        stops; always unsubscribes ``q`` and closes the connection."""
        gone = asyncio.get_running_loop().create_task(reader.read(1), name="dashboard-client")
        frame_task: asyncio.Task[bytes | None] | None = None
        try:
            await self._write(writer, head + sse_frame(retry=RETRY_MS))
            while True:
                if frame_task is None:
                    frame_task = asyncio.get_running_loop().create_task(q.get())
                done, _ = await asyncio.wait(
                    {frame_task, gone}, timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED
                )
                if gone in done:
                    break  # EOF, an error, or bytes no event stream client sends
                if frame_task in done:
                    frame, frame_task = frame_task.result(), None
                    if frame is None:
                        break  # the agent stops
                else:
                    frame = sse_frame(comment="keepalive")
                await self._write(writer, frame)
        except (OSError, TimeoutError):
            pass  # the client went away
        finally:
            self._queues.discard(q)
            for task in (gone, frame_task):
                if task is not None:
                    task.cancel()
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
        if writer.transport.is_closing():
            raise ConnectionResetError("client went away")
        writer.write(data)
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await writer.drain()

    async def close(self) -> None:
        """End every stream and the publisher."""
        self._closing = True
        for q in self._queues:
            _offer(q, None)
        self.source.close()
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._publisher
