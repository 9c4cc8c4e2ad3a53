"""Reading HAProxy's stats socket (``show stat``): sync for the CLI, async for the agent."""

from __future__ import annotations

import asyncio
import csv
import io
import socket
from dataclasses import dataclass

from hapair.errors import OperationError


@dataclass(frozen=True)
class ServerState:
    """One backend server as an HAProxy sees it."""

    backend: str
    server: str
    status: str  # UP, DOWN, MAINT, "UP 1/2", "no check", ...
    check: str  # last check result, e.g. L7OK

    @property
    def up(self) -> bool:
        """UP, including "UP 1/2" while a fall count runs."""
        return self.status.startswith("UP")


def parse_show_stat(text: str) -> list[ServerState]:
    """Servers (not FRONTEND/BACKEND rows) from ``show stat`` CSV output."""
    lines = text.lstrip("# ").splitlines()
    out: list[ServerState] = []
    for row in csv.DictReader(io.StringIO("\n".join(lines))):
        sv = row.get("svname", "")
        if sv in ("FRONTEND", "BACKEND", "") or row.get("pxname") == "stats":
            continue
        out.append(
            ServerState(
                row.get("pxname", ""), sv, row.get("status", ""), row.get("check_status", "")
            )
        )
    return out


def command(path: str, cmd: str, timeout: float = 2.0) -> str:
    """Send one command to the stats socket and return the answer.

    :raises OperationError: the socket does not answer.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(cmd.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        raise OperationError(f"HAProxy stats socket {path} does not answer: {exc}") from exc
    return b"".join(chunks).decode(errors="replace")


def show_stat(path: str, timeout: float = 2.0) -> list[ServerState]:
    """Backend servers as the HAProxy behind ``path`` sees them."""
    return parse_show_stat(command(path, "show stat", timeout))


async def show_stat_async(path: str, timeout: float = 1.0) -> list[ServerState]:
    """``show_stat`` for the event loop, bounded by ``timeout``.

    :raises OperationError: no answer in time.
    """
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(path)
            try:
                writer.write(b"show stat\n")
                await writer.drain()
                data = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        raise OperationError(f"HAProxy stats socket {path} does not answer: {exc!r}") from exc
    return parse_show_stat(data.decode(errors="replace"))
