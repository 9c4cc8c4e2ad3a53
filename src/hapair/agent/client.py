"""Talking to an agent's status API over its unix socket (from the host's namespace)."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

from hapair.errors import OperationError


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def agent_request(
    path: str, method: str, url: str, token: str | None = None, timeout: float = 3.0
) -> tuple[int, Any]:
    """One HTTP request to the agent at unix socket ``path``; returns (status, parsed body).

    :raises OperationError: the agent does not answer.
    """
    conn = _UnixConnection(path, timeout)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        conn.request(method, url, headers=headers)
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
    except OSError as exc:
        raise OperationError(f"agent at {path} does not answer: {exc}") from exc
    finally:
        conn.close()
    try:
        return resp.status, json.loads(body)
    except ValueError:
        return resp.status, body


def agent_status(path: str) -> dict[str, Any]:
    """``GET /status`` of an agent."""
    status, body = agent_request(path, "GET", "/status")
    if status != 200 or not isinstance(body, dict):
        raise OperationError(f"agent at {path} answered {status}")
    return body
