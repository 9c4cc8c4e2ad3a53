"""The agent's status API: a small HTTP/1.1 server on TCP (inside the node) and a unix socket.

``GET /status`` (JSON), ``GET /metrics`` (Prometheus), ``GET /health`` (200/503 for HAProxy-style
checks); ``POST /standby`` and ``POST /online`` need ``Authorization: Bearer <admin token>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

logger = logging.getLogger(__name__)

MAX_HEADER = 8192


class Backend(Protocol):
    """What the API needs from the daemon."""

    def status(self) -> dict[str, Any]: ...
    def metrics_text(self) -> bytes: ...
    def is_healthy(self) -> bool: ...
    async def set_standby(self, on: bool) -> str: ...
    def count_api_error(self, reason: str) -> None: ...


REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


def _response(code: int, body: bytes, ctype: str) -> bytes:
    head = (
        f"HTTP/1.1 {code} {REASONS.get(code, 'Error')}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class StatusApi:
    """Serves the API for one daemon."""

    def __init__(self, backend: Backend, token: str) -> None:
        self.backend = backend
        self.token = token
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
        """Stop listening."""
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
                code, body, ctype = await self._route(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, TimeoutError):
            self.backend.count_api_error("malformed")
            code, body, ctype = 400, b'{"error": "malformed request"}', "application/json"
        except Exception:  # the API must never take the agent down
            logger.exception("status API failed")
            self.backend.count_api_error("internal")
            code, body, ctype = 503, b'{"error": "internal"}', "application/json"
        with contextlib.suppress(Exception):
            writer.write(_response(code, body, ctype))
            await writer.drain()
            writer.close()

    async def _route(self, head: bytes) -> tuple[int, bytes, str]:
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
        js = "application/json"
        gets: dict[str, Callable[[], tuple[int, bytes, str]]] = {
            "/status": lambda: (200, json.dumps(self.backend.status()).encode(), js),
            "/metrics": lambda: (200, self.backend.metrics_text(), "text/plain; version=0.0.4"),
            "/health": lambda: (
                (200, b"healthy\n", "text/plain")
                if self.backend.is_healthy()
                else (503, b"unhealthy\n", "text/plain")
            ),
        }
        posts: dict[str, Callable[[], Awaitable[str]]] = {
            "/standby": lambda: self.backend.set_standby(True),
            "/online": lambda: self.backend.set_standby(False),
        }
        if path in gets:
            if method not in ("GET", "HEAD"):
                return 405, b'{"error": "use GET"}', js
            return gets[path]()
        if path in posts:
            if method != "POST":
                return 405, b'{"error": "use POST"}', js
            auth = headers.get("authorization", "")
            given = auth[7:] if auth.startswith("Bearer ") else ""
            if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
                self.backend.count_api_error("unauthorized")
                return 401, b'{"error": "admin token required"}', js
            message = await posts[path]()
            return 200, json.dumps({"message": message}).encode(), js
        return 404, b'{"error": "not found"}', js
