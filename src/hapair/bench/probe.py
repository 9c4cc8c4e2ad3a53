"""An open-loop HTTP probe: one request on a new connection every 1/rate seconds, each with a
deadline, whatever the earlier ones are doing; every request timestamped.

Bounded by design: it stops after ``duration`` seconds (and at most ``rate * duration``
requests), and it only ever targets the addresses it is given (the lab's VIPs).

Run it on the lab's client host::

    ip netns exec demo-inet python -m hapair.bench.probe --target 198.19.255.1 --rate 100 \\
        --duration 10 --out probe.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from hapair.httpget import FAILURES, get_head

MAX_REQUESTS = 100_000


@dataclass
class Sample:
    """One request: when it started and ended (s, monotonic), whether it got a 200, who served."""

    start: float
    end: float
    ok: bool
    target: str
    status: int = 0
    lb: str = ""
    backend: str = ""
    error: str = ""
    tried: int = 1


async def fetch(
    target: str, port: int, host: str, timeout: float, tls: bool = False
) -> tuple[int, str, str]:
    """GET / on a new connection (over TLS with ``tls``); returns (status, X-LB, X-Backend)."""
    status, headers = await get_head(target, port, "/", host, timeout, "hapair-probe", tls)
    return status, headers.get("x-lb", ""), headers.get("x-backend", "")


async def one(
    targets: list[str],
    port: int,
    host: str,
    timeout: float,
    t0: float,
    dns_aware: bool,
    tls: bool = False,
) -> Sample:
    """One probe request; a DNS-aware client tries the next address when one fails."""
    start = time.monotonic()
    deadline = start + timeout
    err = ""
    order = targets if dns_aware else targets[:1]
    for i, target in enumerate(order):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        # A DNS-aware client gives the first address a short chance, as browsers do.
        budget = min(left, timeout / 3) if dns_aware and i == 0 and len(order) > 1 else left
        try:
            status, lb, backend = await fetch(target, port, host, budget, tls)
        except FAILURES as exc:
            err = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
            continue
        ok = status == 200
        if ok or not dns_aware:
            return Sample(
                start - t0,
                time.monotonic() - t0,
                ok,
                target,
                status,
                lb,
                backend,
                "" if ok else f"http {status}",
                i + 1,
            )
        err = f"http {status}"
    return Sample(
        start - t0, time.monotonic() - t0, False, order[0], error=err or "timeout", tried=len(order)
    )


def _reporter(cb: Callable[[Sample], None]) -> Callable[[asyncio.Future[Sample]], None]:
    def done(task: asyncio.Future[Sample]) -> None:
        cb(task.result())

    return done


async def run_probe(
    targets: list[str],
    rate: float,
    duration: float,
    timeout: float = 1.0,
    port: int = 80,
    host: str = "hapair",
    dns_aware: bool = False,
    t0: float | None = None,
    stop: asyncio.Event | None = None,
    on_sample: Callable[[Sample], None] | None = None,
    tls: bool = False,
) -> list[Sample]:
    """Fire requests at ``rate`` per second for ``duration`` seconds; return every sample.

    ``stop``, once set, ends the run early (requests in flight still finish within their
    deadline); ``on_sample`` is called with each sample as soon as it completes.
    """
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    count = min(int(rate * duration), MAX_REQUESTS)
    t0 = time.monotonic() if t0 is None else t0
    begin = time.monotonic()
    tasks = []
    for i in range(count):
        if stop is not None and stop.is_set():
            break
        at = begin + i / rate
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(one(targets, port, host, timeout, t0, dns_aware, tls))
        if on_sample is not None:
            task.add_done_callback(_reporter(on_sample))
        tasks.append(task)
    return list(await asyncio.gather(*tasks))


async def _run_main(
    a: argparse.Namespace, on_sample: Callable[[Sample], None] | None
) -> list[Sample]:
    """The CLI's run: SIGTERM or SIGINT stops it early and still writes what was measured."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if a.keepalive:
        from hapair.bench.keepalive_client import run_keepalive

        t0 = time.monotonic() if a.epoch is None else a.epoch
        return await run_keepalive(
            a.target[0], a.rate, a.duration, a.timeout, a.port, a.host, t0, stop, on_sample
        )
    return await run_probe(
        a.target,
        a.rate,
        a.duration,
        a.timeout,
        a.port,
        a.host,
        a.dns_aware,
        a.epoch,
        stop,
        on_sample,
        a.tls,
    )


def main() -> None:
    """CLI: writes one JSON line per request to --out (or stdout)."""
    p = argparse.ArgumentParser(prog="hapair-probe")
    p.add_argument(
        "--target", action="append", required=True, help="address to ask; give two with --dns-aware"
    )
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--host", default="hapair")
    p.add_argument("--dns-aware", action="store_true")
    p.add_argument("--tls", action="store_true", help="HTTPS (certificate not verified)")
    p.add_argument(
        "--keepalive",
        action="store_true",
        help="one persistent connection, reconnecting once on error (a browser)",
    )
    p.add_argument(
        "--epoch",
        type=float,
        default=None,
        help="CLOCK_MONOTONIC value that counts as t=0 (to line up with faults)",
    )
    p.add_argument("--out", type=Path)
    p.add_argument(
        "--stream",
        action="store_true",
        help="write each sample as soon as it completes (in completion order)",
    )
    a = p.parse_args()
    if a.duration > 3600 or a.rate > 5000:
        p.error("bounded: at most 3600 s and 5000 requests/s")
    out = a.out.open("w", buffering=1) if a.out else sys.stdout

    def write(s: Sample) -> None:
        out.write(json.dumps(asdict(s)) + "\n")

    samples = asyncio.run(_run_main(a, write if a.stream else None))
    if not a.stream:
        for s in samples:
            write(s)
    if a.out:
        out.close()


if __name__ == "__main__":
    main()
