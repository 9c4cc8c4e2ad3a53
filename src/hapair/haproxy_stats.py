"""Reading HAProxy's stats socket (``show stat``): sync for the CLI, async for the agent."""

from __future__ import annotations

import asyncio
import csv
import io
import socket
from dataclasses import dataclass
from typing import Final

from hapair.errors import OperationError


@dataclass(frozen=True)
class ServerState:
    """One backend server as an HAProxy sees it."""

    backend: str
    server: str
    status: str  # UP, DOWN, MAINT, "UP 1/2", "no check", ...
    check: str  # last check result, e.g. L7OK
    sessions: int = 0  # current sessions on it (scur)

    @property
    def up(self) -> bool:
        """UP, including "UP 1/2" while a fall count runs."""
        return self.status.startswith("UP")


def parse_stat_rows(text: str) -> list[dict[str, str]]:
    """Every row of ``show stat`` CSV output (frontends, servers, backends), by column name."""
    lines = text.lstrip("# ").splitlines()
    return list(csv.DictReader(io.StringIO("\n".join(lines))))


def parse_show_stat(text: str) -> list[ServerState]:
    """Servers (not FRONTEND/BACKEND rows) from ``show stat`` CSV output."""
    rows = csv.reader(io.StringIO(text.lstrip("# ")))
    header = next(rows, None)
    if header is None:
        return []
    col = {name: i for i, name in enumerate(header)}
    if any(name not in col for name in ("pxname", "svname", "status")):
        return []
    px, sv, st = col["pxname"], col["svname"], col["status"]
    ck, sc = col.get("check_status"), col.get("scur")  # optional: older or trimmed output
    out: list[ServerState] = []
    for row in rows:
        if len(row) <= max(px, sv, st) or row[sv] in ("FRONTEND", "BACKEND", ""):
            continue
        if row[px] == "stats":
            continue
        check = row[ck] if ck is not None and ck < len(row) else ""
        scur = row[sc] if sc is not None and sc < len(row) else ""
        out.append(
            ServerState(row[px], row[sv], row[st], check, int(scur) if scur.isdigit() else 0)
        )
    return out


SERVERS_ONLY: Final = "show stat -1 4 -1"
"""``show stat`` for every proxy (-1), servers only (type mask 4), every server (-1)."""


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
    return parse_show_stat(command(path, SERVERS_ONLY, timeout))


async def command_async(path: str, cmd: str, timeout: float = 1.0) -> str:
    """:func:`command` for the event loop, bounded by ``timeout``.

    :raises OperationError: no answer in time.
    """
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(path)
            try:
                writer.write(cmd.encode() + b"\n")
                await writer.drain()
                data = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        raise OperationError(f"HAProxy stats socket {path} does not answer: {exc!r}") from exc
    return data.decode(errors="replace")


async def show_stat_async(path: str, timeout: float = 1.0) -> list[ServerState]:
    """``show_stat`` for the event loop, bounded by ``timeout``.

    :raises OperationError: no answer in time.
    """
    return parse_show_stat(await command_async(path, SERVERS_ONLY, timeout))


def parse_show_table(text: str) -> dict[str, dict[str, int]]:
    """Entries of ``show table NAME`` by key, each with its stored counters; a rate's period
    is dropped from its name (``http_req_rate(1000)=3`` is ``http_req_rate: 3``)."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        if line.startswith("#") or " key=" not in line:
            continue
        fields = dict(f.partition("=")[::2] for f in line.split()[1:] if "=" in f)
        key = fields.pop("key", "")
        out[key] = {
            name.split("(", 1)[0]: int(value)
            for name, value in fields.items()
            if name.startswith(("http_", "conn_", "sess_")) and value.lstrip("-").isdigit()
        }
    return out
