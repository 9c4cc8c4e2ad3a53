"""The ``keepalive`` client profile: one persistent HTTP/1.1 connection, reused request after
request at a fixed rate, reconnecting once when a request fails on it (what a browser does);
a request fails only if the retry on a fresh connection fails too.

Bounded like the open-loop probe: at most ``rate * duration`` requests, each within
``timeout`` seconds, only to the address it is given.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from hapair.bench.probe import MAX_REQUESTS, Sample
from hapair.httpget import FAILURES, parse_head


class KeepAliveClient:
    """One connection to ``target:port``, reopened when it breaks."""

    def __init__(self, target: str, port: int, host: str, timeout: float) -> None:
        self.target = target
        self.port = port
        self.host = host
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        """Drop the connection (the next request opens a new one)."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def _request(self) -> tuple[int, dict[str, str]]:
        async with asyncio.timeout(self.timeout):
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(self.target, self.port)
            assert self._reader is not None
            self._writer.write(
                f"GET / HTTP/1.1\r\nHost: {self.host}\r\nUser-Agent: hapair-keepalive\r\n"
                "Connection: keep-alive\r\n\r\n".encode()
            )
            await self._writer.drain()
            status, headers = parse_head(await self._reader.readuntil(b"\r\n\r\n"))
            length = int(headers.get("content-length", "0"))
            if length:
                await self._reader.readexactly(length)
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers

    async def get(self) -> tuple[int, dict[str, str], int, str]:
        """One request: (status, headers, attempts, error of the last failed attempt)."""
        err = ""
        for attempt in (1, 2):
            try:
                status, headers = await self._request()
            except FAILURES as exc:
                self.close()
                err = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
                continue
            return status, headers, attempt, err
        return 0, {}, 2, err


async def run_keepalive(
    target: str,
    rate: float,
    duration: float,
    timeout: float,
    port: int,
    host: str,
    t0: float,
    stop: asyncio.Event | None = None,
    on_sample: Callable[[Sample], None] | None = None,
) -> list[Sample]:
    """Requests at ``rate`` per second on one connection (a request waits for the one before
    it: one connection carries one request at a time), for ``duration`` seconds."""
    client = KeepAliveClient(target, port, host, timeout)
    count = min(int(rate * duration), MAX_REQUESTS)
    begin = time.monotonic()
    out: list[Sample] = []
    try:
        for i in range(count):
            if stop is not None and stop.is_set():
                break
            delay = begin + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            start = time.monotonic()
            status, headers, tried, err = await client.get()
            ok = status == 200
            sample = Sample(
                start - t0,
                time.monotonic() - t0,
                ok,
                target,
                status,
                headers.get("x-lb", ""),
                headers.get("x-backend", ""),
                "" if ok else (err or f"http {status}"),
                tried,
            )
            out.append(sample)
            if on_sample is not None:
                on_sample(sample)
    finally:
        client.close()
    return out
