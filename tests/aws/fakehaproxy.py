"""A stand-in for HAProxy's stats socket, for the follower's tests."""

from __future__ import annotations

import socket
import threading
from pathlib import Path


class FakeHaproxy:
    """HAProxy's stats socket, as far as the follower uses it: records every command."""

    def __init__(self, path: Path) -> None:
        self.path, self.pid, self.commands = path, 100, []
        self.servers: dict[str, str] = {}
        self.sessions: dict[str, int] = {}  # server -> current sessions (show stat's scur)
        self.certs: dict[str, str] = {}  # loaded certificate path -> PEM (show ssl cert)
        self.pending: dict[str, str] = {}  # open `set ssl cert` transactions
        self.refuse_cert = ""  # when set: `set ssl cert` answers this error
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                cmd = conn.recv(65536).decode().strip()
                conn.sendall(self.answer(cmd).encode())

    def answer(self, cmd: str) -> str:
        if cmd == "show info":
            return f"Name: HAProxy\nPid: {self.pid}\n"
        self.commands.append(cmd)
        if cmd == "show servers state":
            return "1\n# be_id be_name srv_id srv_name\n" + "".join(
                f"3 web {i} {n}\n" for i, n in enumerate(self.servers, 1)
            )
        if cmd == "show stat":
            rows = "".join(f"web,{n},{self.sessions.get(n, 0)},UP,L7OK\n" for n in self.servers)
            return "# pxname,svname,scur,status,check_status\n" + rows
        if cmd == "show ssl cert":
            return "# filename\n" + "".join(f"{p}\n" for p in self.certs)
        words = cmd.split()
        if words[:3] == ["set", "ssl", "cert"]:
            path, pem = words[3], cmd.split("<<\n", 1)[1]
            if self.refuse_cert or path not in self.certs:
                return f"{self.refuse_cert or 'unknown certificate'}\n"
            self.pending[path] = pem
            return f"Transaction created for certificate {path}!\n"
        if words[:3] == ["commit", "ssl", "cert"]:
            if words[3] not in self.pending:
                return "No ongoing transaction!\n"
            self.certs[words[3]] = self.pending.pop(words[3])
            return f"Committing {words[3]}\nSuccess!\n"
        if words[:3] == ["abort", "ssl", "cert"]:
            self.pending.pop(words[3], None)
            return f"Transaction aborted for certificate '{words[3]}'!\n"
        if words[:2] == ["add", "server"]:
            self.servers[words[2].split("/")[1]] = "ready"
            return "New server registered.\n"
        if words[:2] == ["del", "server"]:
            self.servers.pop(words[2].split("/")[1], None)
            return "Server deleted.\n"
        return ""

    def reload(self, servers: list[str]) -> None:
        self.pid += 1
        self.servers = dict.fromkeys(servers, "ready")

    def close(self) -> None:
        self.sock.close()
