"""A stand-in for an LB's hapair agent on its unix socket, for the follower's restart tests:
``GET /status`` and the admin token's ``POST /standby`` and ``POST /online``."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class FakeAgent:
    """The agent of ``node`` whose peer is ``peer``; every request is recorded in ``calls``.

    :param on_standby: called on ``POST /standby`` (the test moves the EIPs to the peer).
    """

    def __init__(
        self,
        path: Path,
        node: str,
        peer: str,
        token: str,
        held: list[str],
        on_standby: Callable[[], None] = lambda: None,
    ) -> None:
        self.path, self.node, self.peer, self.token = path, node, peer, token
        self.held, self.on_standby = list(held), on_standby
        self.peer_held: list[str] = []
        self.standby, self.healthy, self.peer_state = False, True, "up"
        self.peer_healthy, self.peer_standby = True, False
        self.boots, self.calls = 1, []
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _reply(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                agent.calls.append(f"GET {self.path}")
                self._reply(200, agent.status())

            def do_POST(self) -> None:
                agent.calls.append(f"POST {self.path}")
                if self.headers.get("Authorization") != f"Bearer {agent.token}":
                    self._reply(401, {"error": "admin token required"})
                    return
                if self.path == "/standby":
                    agent.standby = True
                    agent.peer_held = sorted({*agent.peer_held, *agent.held})
                    agent.held = []
                    agent.on_standby()
                    self._reply(200, {"message": "standby: the peer takes vip1"})
                elif self.path == "/online":
                    agent.standby = False
                    self._reply(200, {"message": "already online"})
                else:
                    self._reply(404, {"error": "no such endpoint"})

        self.server = _Server(str(path), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def status(self) -> dict[str, Any]:
        """The ``/status`` fields the follower reads."""
        return {
            "self": self.node,
            "boot_id": self.boots,
            "standby": self.standby,
            "health": {"healthy": self.healthy},
            "held": list(self.held),
            "peer": {
                "name": self.peer,
                "state": self.peer_state,
                "view": {
                    "healthy": self.peer_healthy,
                    "standby": self.peer_standby,
                    "held": list(self.peer_held),
                },
            },
        }

    def restart(self) -> None:
        """What ``systemctl restart hapair-agent.service`` does: a new process, online."""
        self.boots += 1
        self.standby = False

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
