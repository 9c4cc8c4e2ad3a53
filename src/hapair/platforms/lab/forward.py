"""The lab's forwarder: the demo page, the stats page and the dashboard in the host's browser.

The host's namespace has no route into the lab, so a browser on this machine reaches nothing of
it. The forwarder is one process in the host's namespace that listens on **127.0.0.1 only**, one
port per target, and relays each connection into the lab from the client host ``<c>-inet``: its
outbound sockets are made by a helper thread that entered that namespace with ``setns(2)``
(:func:`hapair.netns.call_in`; a socket stays in the namespace it was made in, and the main
thread never leaves the host's).

Targets, each tried in turn until one connects:

* ``demo``: port 80 of the cluster's DNS name, i.e. of both floating IPs (in turn per
  connection, like a DNS client; the other one when one fails);
* ``stats``: HAProxy's stats page (and its ``/metrics``) on VIP1, else VIP2;
* ``dashboard``: the agent's dashboard on VIP1, else VIP2 (a stream that breaks reconnects,
  through whichever node holds a VIP by then);
* ``prometheus``: when the lab runs it (``up --with-monitoring``), 127.0.0.1:9090 in ``<c>-inet``.

It runs detached (``hapair open`` starts it, once; a second ``open`` finds it), records its pid,
start time and ports in ``forward.json`` in the lab's state directory, logs to
``logs/forward.log``, and stops on SIGTERM (``hapair down``) or by itself once the lab's
namespace is gone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from hapair.errors import OperationError, UsageError
from hapair.fileio import write_atomic
from hapair.netns import NETNS_DIR, call_in, listen_tcp
from hapair.plan import Plan
from hapair.platforms.lab import procs
from hapair.platforms.lab.paths import LabPaths
from hapair.platforms.lab.procs import Proc
from hapair.platforms.lab.state import load_state

logger = logging.getLogger("hapair.forward")

LISTEN: Final = "127.0.0.1"
"""The only address the forwarder listens on."""
TARGETS: Final = ("demo", "stats", "dashboard", "prometheus")
"""What it forwards, in port order."""
FIRST_PORT: Final = 8080
"""Without ``--port``, the first port tried; each target takes the next free one."""
CONNECT_TIMEOUT_S: Final = 2.0
"""An address that does not accept within this long is given up for the next."""
MAX_CONNECTIONS: Final = 256
"""Connections relayed at once, at most (more are closed at once)."""
PROMETHEUS_PORT: Final = 9090


@dataclass(frozen=True)
class Route:
    """One listening port and the lab addresses it relays to."""

    name: str
    port: int
    upstreams: tuple[tuple[str, int], ...]
    rotate: bool = False


def routes(plan: Plan, ports: dict[str, int], monitoring: bool) -> list[Route]:
    """The routes of a lab for the given ports (pure)."""
    vips = [v.address for v in plan.vips]
    spec = plan.spec
    out = [
        Route("demo", ports["demo"], tuple((a, spec.haproxy.http_port) for a in vips), True),
        Route("stats", ports["stats"], tuple((a, spec.haproxy.stats_port) for a in vips)),
        Route("dashboard", ports["dashboard"], tuple((a, spec.admin.port) for a in vips)),
    ]
    if monitoring and "prometheus" in ports:
        out.append(Route("prometheus", ports["prometheus"], (("127.0.0.1", PROMETHEUS_PORT),)))
    return out


class Dialer:
    """Connections opened from inside a namespace, for the event loop of the host's."""

    def __init__(self, ns: str) -> None:
        self.ns = ns

    def _socket(self) -> socket.socket:
        """A new TCP socket in the namespace (made by a helper thread: ``setns`` moves only it).

        :raises OSError: the namespace cannot be entered.
        """
        made = call_in([self.ns], lambda _: socket.socket())[self.ns]
        if isinstance(made, OSError):
            raise made
        return made

    def check(self) -> None:
        """:raises OperationError: the namespace cannot be entered."""
        try:
            self._socket().close()
        except OSError as exc:
            raise OperationError(f"cannot enter namespace {self.ns}: {exc}") from exc

    async def connect(
        self, address: str, port: int, timeout: float
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection to address:port made in the namespace.

        :raises OSError, TimeoutError: it did not connect in time.
        """
        loop = asyncio.get_running_loop()
        sock = self._socket()
        try:
            sock.setblocking(False)
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, (address, port))
            return await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Copy until EOF; returns True on a clean EOF (passed on as a half-close)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        return True
    except (OSError, RuntimeError):
        return False


class Forwarder:
    """Listens on 127.0.0.1 and relays each connection through a :class:`Dialer`."""

    def __init__(self, dialer: Dialer, table: Sequence[Route]) -> None:
        self.dialer = dialer
        self.table = list(table)
        self.servers: list[asyncio.Server] = []
        self.active = 0
        self._turn = 0
        self._failed: dict[tuple[str, int], float] = {}

    async def start(self, sockets: dict[str, socket.socket]) -> None:
        """Serve each route on its already bound listening socket."""
        for route in self.table:

            async def handle(
                r: asyncio.StreamReader, w: asyncio.StreamWriter, route: Route = route
            ) -> None:
                await self._relay(route, r, w)

            self.servers.append(await asyncio.start_server(handle, sock=sockets[route.name]))

    def _order(self, route: Route) -> list[tuple[str, int]]:
        ups = list(route.upstreams)
        if route.rotate and len(ups) > 1:
            self._turn += 1
            k = self._turn % len(ups)
            ups = ups[k:] + ups[:k]
        return ups

    async def _relay(
        self, route: Route, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        if self.active >= MAX_CONNECTIONS:
            client_w.close()
            return
        self.active += 1
        try:
            upstream = await self._dial(route)
            if upstream is None:
                return
            up_r, up_w = upstream
            try:
                to_up = asyncio.ensure_future(_pipe(client_r, up_w))
                to_client = asyncio.ensure_future(_pipe(up_r, client_w))
                done, _ = await asyncio.wait({to_up, to_client}, return_when="FIRST_COMPLETED")
                if to_up in done and to_up.result():
                    await to_client  # the client half-closed: the answer may still come
                for task in (to_up, to_client):
                    task.cancel()
            finally:
                up_w.close()
        finally:
            self.active -= 1
            with contextlib.suppress(Exception):
                client_w.close()

    async def _dial(self, route: Route) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for address, port in self._order(route):
            try:
                conn = await self.dialer.connect(address, port, CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                now = time.monotonic()
                if now - self._failed.get((address, port), 0.0) > 10:
                    logger.info(
                        "%s: %s:%d failed (%r), trying the next", route.name, address, port, exc
                    )
                self._failed[(address, port)] = now
                continue
            return conn
        logger.warning("%s: no address of %s answers", route.name, route.upstreams)
        return None

    async def close(self) -> None:
        """Stop listening."""
        for s in self.servers:
            s.close()


# ---------------------------------------------------------------------- the process
def bind_ports(names: Sequence[str], base: int | None) -> dict[str, socket.socket]:
    """A listening socket on 127.0.0.1 per target: ``base``, ``base + 1``, ... when given (all
    must be free), else the first free ports from :data:`FIRST_PORT` on.

    :raises UsageError: a given port is taken.
    """
    out: dict[str, socket.socket] = {}
    port = base if base is not None else FIRST_PORT
    try:
        for name in names:
            while True:
                try:
                    out[name] = listen_tcp(port, 128, LISTEN)
                    break
                except OSError as exc:
                    if base is not None or port >= 65535:
                        raise UsageError(f"--port: 127.0.0.1:{port} is not free ({exc})") from exc
                    port += 1
            port += 1
    except BaseException:
        for s in out.values():
            s.close()
        raise
    return out


def state_file(name: str) -> Path:
    """Where a lab's forwarder records itself."""
    return LabPaths(name).root / "forward.json"


def running(name: str) -> dict[str, Any] | None:
    """The record of lab ``name``'s forwarder if that process runs, else None."""
    try:
        rec = json.loads(state_file(name).read_text())
    except (OSError, ValueError):
        return None
    proc = Proc.from_json(rec)
    return rec if isinstance(rec, dict) and procs.alive(proc) else None


def stop(name: str) -> bool:
    """Stop lab ``name``'s forwarder (SIGTERM, then SIGKILL); returns whether one ran."""
    rec = running(name)
    state_file(name).unlink(missing_ok=True)
    proc = Proc.from_json(rec) if rec else None
    if proc is None:
        return False
    procs.terminate(proc, grace=3.0)
    return True


def start(name: str, base: int | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """Make lab ``name``'s forwarder run and return its record (``pid``, ``ports``). One that
    runs is kept when ``base`` is None or matches its ports, else replaced.

    :raises OperationError: it did not start (with the end of its log).
    """
    rec = running(name)
    monitoring = bool((load_state(name) or {}).get("monitoring"))
    if (
        rec is not None
        and (base is None or rec["ports"].get("demo") == base)
        and monitoring == ("prometheus" in rec["ports"])
    ):
        return rec
    stop(name)
    paths = LabPaths(name)
    log = paths.log("host", "forward")
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "hapair.platforms.lab.forward", "--name", name, "--daemon"]
    if base is not None:
        argv += ["--port", str(base)]
    with open(log, "ab") as out:  # the launcher binds the ports, forks the forwarder off, exits
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=timeout, check=False
        )
    if proc.returncode != 0:
        raise OperationError(f"the forwarder did not start: {_tail(log)} (see {log})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = running(name)
        if rec is not None:
            return rec
        time.sleep(0.05)
    raise OperationError(
        f"the forwarder did not start in {timeout:.0f} s: {_tail(log)} (see {log})"
    )


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(x.strip() for x in path.read_text().splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Prepared:
    """What the launcher sets up before it forks: errors here are its exit status."""

    name: str
    ns: str
    table: list[Route]
    sockets: dict[str, socket.socket]


def prepare(name: str, base: int | None) -> Prepared:
    """Read the lab and bind the listening ports.

    :raises UsageError: no such lab, or a given port is taken.
    """
    from hapair.platforms.lab.platform import LabPlatform

    plan, state = LabPlatform().plan_of(name)
    monitoring = bool(state.get("monitoring"))
    names = [t for t in TARGETS if t != "prometheus" or monitoring]
    sockets = bind_ports(names, base)
    ports = {n: s.getsockname()[1] for n, s in sockets.items()}
    return Prepared(name, plan.node("inet").namespace, routes(plan, ports, monitoring), sockets)


async def serve(p: Prepared) -> int:
    """The forwarder process's main loop (see the module docstring); returns the exit code."""
    dialer = Dialer(p.ns)
    dialer.check()
    fwd = Forwarder(dialer, p.table)
    await fwd.start(p.sockets)
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_event.set)
    st = procs.stat(os.getpid())
    assert st is not None
    ports = {r.name: r.port for r in p.table}
    record = {"pid": os.getpid(), "start": st[1], "listen": LISTEN, "ports": ports}
    write_atomic(state_file(p.name), json.dumps(record, indent=2))
    logger.info("forwarding %s on %s from namespace %s", ports, LISTEN, p.ns)
    while not stop_event.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), 2.0)
        if not (NETNS_DIR / p.ns).exists():
            logger.info("namespace %s is gone: stopping", p.ns)
            break
    with contextlib.suppress(OSError, ValueError):
        if json.loads(state_file(p.name).read_text()).get("pid") == os.getpid():
            state_file(p.name).unlink()
    await fwd.close()
    logger.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hapair.platforms.lab.forward --name NAME [--port N] [--daemon]``."""
    ap = argparse.ArgumentParser(prog="hapair-forward", description=__doc__)
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, default=None)
    ap.add_argument("--daemon", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s forward %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        prepared = prepare(args.name, args.port)
    except (UsageError, OperationError) as exc:
        logger.error("%s", exc)
        return 1
    if args.daemon and os.fork() > 0:
        os._exit(0)  # the launcher: the forwarder runs on in the child
    if args.daemon:
        os.setsid()
    try:
        return asyncio.run(serve(prepared))
    except OperationError as exc:
        logger.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
