"""One HTTP/1.1 GET on a new connection, bounded by a timeout: the agent's health checks and the
benchmark probe both ask HAProxy this way."""

from __future__ import annotations

import asyncio
import functools
import ssl

#: What :func:`get_head` raises when the request does not get a well-formed answer in time.
FAILURES = (
    OSError,
    TimeoutError,
    ValueError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
)


async def get_head(
    address: str, port: int, path: str, host: str, timeout: float, agent: str, tls: bool = False
) -> tuple[int, dict[str, str]]:
    """``GET path`` with ``Connection: close``; returns the status and the response headers
    (lowercase names). Raises ``OSError``, ``TimeoutError``, ``asyncio.IncompleteReadError``,
    ``asyncio.LimitOverrunError`` or ``ValueError`` (malformed status line) on failure.

    ``tls``: over TLS, without verifying the certificate (the lab's is self-signed: this
    measures whether a handshake and request succeed, not trust; ``ssl.SSLError`` is an
    ``OSError``)."""
    writer = None
    ctx = _insecure_tls() if tls else None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                address, port, ssl=ctx, server_hostname=host if ctx else None
            )
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {agent}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
    finally:
        if writer is not None:
            writer.close()
    return parse_head(head)


@functools.cache
def _insecure_tls() -> ssl.SSLContext:
    """One context for every request (making one per request costs more than the request)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """The status and the headers (lowercase names) of a response head.

    :raises ValueError: a malformed status line.
    """
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"malformed status line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        k, sep, v = line.partition(":")
        if sep:
            headers[k.strip().lower()] = v.strip()
    return int(parts[1]), headers
