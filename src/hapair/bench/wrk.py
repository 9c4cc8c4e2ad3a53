"""Running wrk (Debian's package) inside a lab namespace and reading its report (bounded)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hapair.errors import OperationError
from hapair.platforms.lab.system import in_ns, run

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
_PCT = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_ERR = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: requests/s, latency percentiles (ms) and errors."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def parse_wrk(text: str) -> WrkResult:
    """Parse ``wrk --latency`` output (pure).

    :raises OperationError: no ``Requests/sec`` line (wrk failed).
    """
    rps = _RPS.search(text)
    if rps is None:
        raise OperationError(f"wrk gave no result: {text.strip()[-300:]}")
    pct = {int(p): float(v) * _UNITS[u] for p, v, u in _PCT.findall(text)}
    errors = sum(int(x) for x in m.groups()) if (m := _ERR.search(text)) else 0
    errors += int(n.group(1)) if (n := _NON2XX.search(text)) else 0
    return WrkResult(float(rps.group(1)), pct.get(50, 0.0), pct.get(99, 0.0), errors)


def run_wrk(
    ns: str,
    url: str,
    host: str,
    duration: int = 10,
    connections: int = 20,
    threads: int = 1,
    script: str | None = None,
) -> WrkResult:
    """``wrk -t1 -c20 -dNs --latency`` from namespace ``ns``; stops by itself after ``duration``
    (``script``: a Lua script, ``-s``)."""
    if not 1 <= duration <= 120:
        raise OperationError("wrk duration must be 1..120 s (bounded load)")
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script is not None:
        argv += ["-s", script]
    argv += ["-H", f"Host: {host}", url]
    proc = run(in_ns(ns, argv), check=False, timeout=duration + 30)
    return parse_wrk(proc.stdout + proc.stderr)
