"""Working inside other network namespaces from this process, without starting a process there.

``setns(2)`` with ``CLONE_NEWNET`` moves only the calling *thread* into a namespace, and a socket
belongs for its whole life to the namespace it was created in, whatever thread uses it later.
So :func:`call_in` runs a function once per namespace from a dedicated thread (never a pool's:
a reused thread would stay in a foreign namespace), and a listening socket opened there can be
served by the event loop of the main thread. Linux only; entering a namespace needs root
(``CAP_SYS_ADMIN``).
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

CLONE_NEWNET = 0x40000000
#: Where ``ip netns add`` mounts named namespaces.
NETNS_DIR = Path("/run/netns")

T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _enter(namespace: str) -> None:
    fd = os.open(NETNS_DIR / namespace, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd)
    finally:
        os.close(fd)


def call_in(namespaces: Sequence[str], fn: Callable[[str], T]) -> dict[str, T | OSError]:
    """Call ``fn(namespace)`` inside each named namespace in turn, from one new thread.

    :param namespaces: names as ``ip netns`` knows them.
    :param fn: what to do there; an ``OSError`` it raises is returned for that namespace.
    :returns: for each namespace, what ``fn`` returned, or the ``OSError`` (also one of entering
        it, e.g. a namespace that does not exist).
    """
    out: dict[str, T | OSError] = {}
    failure: list[BaseException] = []

    def work() -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            for ns in namespaces:
                try:
                    _enter(ns)
                    out[ns] = fn(ns)
                except OSError as exc:
                    out[ns] = exc
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)
        finally:
            try:
                _setns(home)
            finally:
                os.close(home)

    thread = threading.Thread(target=work, name="netns", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return out


def listen_tcp(port: int, backlog: int = 1024, address: str = "0.0.0.0") -> socket.socket:
    """A non-blocking listening TCP socket on ``address:port`` in the caller's namespace (call
    it through :func:`call_in` to listen in another one).

    :raises OSError: the address cannot be bound.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
