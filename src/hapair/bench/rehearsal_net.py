"""The boot rehearsal's network: one namespace, a moto server in it, and a narrow way out.

- **The namespace** ``hapair-rh`` holds a bridge whose address is the rehearsal VPC's router
  (``198.18.1.1/24``): the containers' veths join it. It has no route anywhere else, and the
  root namespace gets no address, route or NAT rule from the rehearsal.
- **moto** (:mod:`.rehearsal_moto`) listens on the bridge's address too.
- **The package proxy** (:class:`PackageProxy`): listens on the bridge's address, connects out
  from the root namespace, and only to Debian's mirror and PyPI (``CONNECT`` to port 443, plain
  ``GET`` to port 80); anything else is refused and logged. The instances reach it through
  ``http_proxy``/``https_proxy`` in their environment; nothing else leaves the namespace.

Sockets stay in the namespace they were made in (:mod:`hapair.netns`), so one process serves
in the namespace and connects out from the root one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hapair.netns import call_in

logger = logging.getLogger(__name__)

NAMESPACE = "hapair-rh"
BRIDGE = "br-rh"
#: The rehearsal's VPC: the spec's aws.vpc_cidr and subnet, inside 198.18.0.0/15.
VPC_CIDR = "198.18.0.0/16"
SUBNET_CIDR = "198.18.1.0/24"
SUBNET2_CIDR = "198.18.2.0/24"
#: The VPC router's address: the bridge, moto and the package proxy.
ROUTER = "198.18.1.1"
PREFIXLEN = 24
MOTO_PORT = 5000
PROXY_PORT = 3128
#: The only hosts the proxy connects to: Debian's mirror and PyPI.
ALLOWED_HOSTS = frozenset(
    {"deb.debian.org", "security.debian.org", "pypi.org", "files.pythonhosted.org"}
)


def _ip(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *argv], capture_output=True, text=True, check=check)


def create_namespace() -> None:
    """The namespace and its bridge (a leftover of an interrupted run is removed first)."""
    delete_namespace()
    _ip("netns", "add", NAMESPACE)
    _ip("-n", NAMESPACE, "link", "set", "lo", "up")
    _ip("-n", NAMESPACE, "link", "add", BRIDGE, "type", "bridge")
    _ip("-n", NAMESPACE, "addr", "add", f"{ROUTER}/{PREFIXLEN}", "dev", BRIDGE)
    _ip("-n", NAMESPACE, "link", "set", BRIDGE, "up")


def delete_namespace() -> None:
    """Remove the namespace (its bridge and veths go with it); no error when it is absent."""
    _ip("netns", "del", NAMESPACE, check=False)


def listen_in_namespace(address: str, port: int) -> socket.socket:
    def make(_ns: str) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(128)
        return sock

    got = call_in([NAMESPACE], make)[NAMESPACE]
    if isinstance(got, OSError):
        raise got
    return got


class PackageProxy:
    """An HTTP proxy in the namespace that reaches only :data:`ALLOWED_HOSTS`.

    :param log: every request, allowed or refused, one line each.
    """

    def __init__(self, log: Path, allowed: frozenset[str] = ALLOWED_HOSTS) -> None:
        self.log = log
        self.allowed = allowed
        self.refused: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    def _note(self, line: str) -> None:
        with self.log.open("a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    def start(self) -> str:
        """Start serving; returns the proxy's URL for the instances."""
        sock = listen_in_namespace(ROUTER, PROXY_PORT)
        sock.setblocking(False)
        ready = threading.Event()

        def run() -> None:
            async def main() -> None:
                self._loop = asyncio.get_running_loop()
                self._stop = asyncio.Event()
                server = await asyncio.start_server(self._handle, sock=sock, limit=1 << 16)
                ready.set()
                async with server:
                    await self._stop.wait()

            asyncio.run(main())

        self._thread = threading.Thread(target=run, name="package-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the package proxy did not start")
        return f"http://{ROUTER}:{PROXY_PORT}"

    def stop(self) -> None:
        """Stop serving."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            writer.close()
            return
        first, _, rest = head.partition(b"\r\n")
        parts = first.decode("latin-1").split()
        target = target_of(parts)
        if target is None or target[0] not in self.allowed:
            self.refused.append(first.decode("latin-1"))
            self._note(f"REFUSED {first.decode('latin-1')}")
            writer.write(
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
            writer.close()
            return
        host, port, path = target
        self._note(f"{parts[0]} {host}:{port}{path}")
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), 30)
        except (OSError, TimeoutError) as exc:
            self._note(f"FAILED {host}:{port}: {exc}")
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        if parts[0] == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            up_writer.write(f"{parts[0]} {path} {parts[2]}\r\n".encode() + rest)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


def target_of(parts: list[str]) -> tuple[str, int, str] | None:
    """(host, port, path) a proxy request line asks for, or None: ``CONNECT host:443`` or an
    absolute ``http://host/...`` URI on port 80; any other form or port is refused."""
    if len(parts) != 3:
        return None
    method, uri, _ = parts
    if method == "CONNECT":
        host, _, port = uri.rpartition(":")
        return (host.lower(), 443, "") if port == "443" else None
    if not uri.startswith("http://"):
        return None
    hostport, slash, path = uri[len("http://") :].partition("/")
    host, _, port = hostport.partition(":")
    if port not in ("", "80"):
        return None
    return host.lower(), 80, slash + path


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(1 << 16):
            dst.write(data)
            await dst.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.close()


def http_get(url: str, host_header: str = "", timeout: float = 5.0) -> tuple[int | None, str]:
    """``GET url`` from inside the namespace: (status, first line of the body or the error)."""
    import urllib.error
    import urllib.request

    def get(_ns: str) -> tuple[int | None, str]:
        headers = {"Host": host_header} if host_header else {}
        req = urllib.request.Request(url, headers=headers)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=timeout) as res:
                body = res.read(2048).decode("utf-8", "replace")
                return int(res.status), body.strip().splitlines()[0] if body.strip() else ""
        except urllib.error.HTTPError as exc:
            return exc.code, str(exc)
        except (OSError, ValueError) as exc:
            return None, str(exc) or type(exc).__name__

    got: Any = call_in([NAMESPACE], get)[NAMESPACE]
    if isinstance(got, OSError):
        return None, str(got)
    result: tuple[int | None, str] = got
    return result


def in_namespace(argv: list[str]) -> list[str]:
    """``argv`` run in the rehearsal's network namespace. ``nsenter --net``, not ``ip netns
    exec``: the latter mounts a new /sys without the host's cgroup file systems, which
    systemd-nspawn needs."""
    return ["nsenter", f"--net=/run/netns/{NAMESPACE}", *argv]


Cleanup = Callable[[], None]
