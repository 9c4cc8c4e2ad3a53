"""The agent's status API over a real socket on loopback."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hapair.agent.api import StatusApi


class Backend:
    def __init__(self) -> None:
        self.standby = False
        self.errors: list[str] = []

    def status(self) -> dict[str, Any]:
        return {"self": "lb1", "standby": self.standby, "peer": {"name": "lb2"}}

    def metrics_text(self) -> bytes:
        return b"hapair_x 1\n"

    def is_healthy(self) -> bool:
        return not self.standby

    async def set_standby(self, on: bool) -> str:
        self.standby = on
        return "ok"

    def count_api_error(self, reason: str) -> None:
        self.errors.append(reason)


async def _ask(port: int, raw: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_endpoints_and_token() -> None:
    async def main() -> None:
        b = Backend()
        api = StatusApi(b, "s3cret")
        await api.start("127.0.0.1", 0, None)
        port = api.servers[0].sockets[0].getsockname()[1]
        code, body = await _ask(port, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert code == 200 and json.loads(body) == {
            "self": "lb1",
            "standby": False,
            "peer": {"name": "lb2"},
        }
        code, body = await _ask(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert code == 200 and body == b"hapair_x 1\n"
        code, _ = await _ask(port, b"GET /health HTTP/1.1\r\n\r\n")
        assert code == 200
        code, _ = await _ask(port, b"POST /standby HTTP/1.1\r\n\r\n")
        assert code == 401 and b.standby is False
        code, _ = await _ask(port, b"POST /standby HTTP/1.1\r\nAuthorization: Bearer nope\r\n\r\n")
        assert code == 401 and b.standby is False
        code, _ = await _ask(
            port, b"POST /standby HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n"
        )
        assert code == 200 and b.standby is True
        code, _ = await _ask(port, b"GET /health HTTP/1.1\r\n\r\n")
        assert code == 503
        code, _ = await _ask(port, b"GET /standby HTTP/1.1\r\n\r\n")
        assert code == 405
        code, _ = await _ask(port, b"GET /nope HTTP/1.1\r\n\r\n")
        assert code == 404
        code, _ = await _ask(port, b"garbage\r\n\r\n")
        assert code == 400
        assert b.errors == ["unauthorized", "unauthorized", "malformed"]
        await api.close()

    asyncio.run(main())


def test_json_log_lines() -> None:
    import logging

    from hapair.agent.logs import JsonLines

    rec = logging.LogRecord("hapair.agent", logging.INFO, __file__, 1, "took %s", ("vip1",), None)
    line = json.loads(JsonLines("lb2").format(rec))
    assert line["msg"] == "took vip1" and line["node"] == "lb2" and line["level"] == "info"
