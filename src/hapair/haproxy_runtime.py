"""HAProxy's runtime API on the stats socket (``level admin``): pure command builders, one
sender that checks each answer, and the few queries day-2 operations need.

Builders return the exact command line and refuse anything that could smuggle a second command
(the CLI splits on ``;`` and newlines): names are HAProxy identifiers, addresses IPv4, paths
plain absolute paths. Each command goes on its own connection (the socket's non-interactive
mode), so one answer is one command's. HAProxy answers an error with a sentence and success
with either nothing or a known sentence: :func:`call` is told which (``expect``) and raises
:class:`RuntimeApiError` with HAProxy's words otherwise.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from pathlib import Path

from hapair.errors import OperationError
from hapair.fileio import write_atomic
from hapair.haproxy_stats import ServerState, command, parse_show_stat

_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PATH = re.compile(r"/[A-Za-z0-9._/+-]{0,250}")
_KEY = re.compile(r"[A-Za-z0-9]{1,128}")
STATES = ("ready", "drain", "maint")

#: HAProxy 2.6 refuses ``cookie`` on a dynamic server with this sentence (2.6's limit).
COOKIE_REFUSED = "'cookie' option is not accepted for dynamic server"


class RuntimeApiError(OperationError):
    """HAProxy refused a runtime API command; the message has the command and its answer."""


def is_name(value: str) -> bool:
    """Whether ``value`` is an HAProxy name this module puts in a command (letters, digits,
    ``.``, ``_``, ``-``; at most 64): nothing that could end a command or start another."""
    return _IDENT.fullmatch(value) is not None


def _ident(what: str, value: str) -> str:
    if not is_name(value):
        raise ValueError(f"{what} {value!r} is not an HAProxy name (letters, digits, . _ -)")
    return value


def _server(backend: str, server: str) -> str:
    return f"{_ident('backend', backend)}/{_ident('server', server)}"


def _path(value: str) -> str:
    if not _PATH.fullmatch(value) or "/../" in value or value.endswith("/.."):
        raise ValueError(f"certificate path {value!r} is not a plain absolute path")
    return value


@dataclass(frozen=True)
class NewServer:
    """A server to add at runtime: ``backend/name`` at ``address:port``, health-checked with
    ``options`` (the keywords the configuration's ``default-server`` line carries: a dynamic
    server does not inherit them), and the persistence ``cookie`` value (None: none)."""

    backend: str
    name: str
    address: str
    port: int
    options: str = ""
    cookie: str | None = None


def add_server(s: NewServer) -> str:
    """``add server``: the server starts in maintenance, its checks off (see
    :func:`enable_health`, :func:`enable_server`)."""
    ipaddress.IPv4Address(s.address)
    if not 0 < s.port < 65536:
        raise ValueError(f"port {s.port} out of range")
    for word in s.options.split():
        if not re.fullmatch(r"[a-z0-9-]+", word):
            raise ValueError(f"server option {word!r} is not a plain keyword or value")
    cookie = f" cookie {_ident('cookie', s.cookie)}" if s.cookie else ""
    opts = f" {s.options}" if s.options else ""
    return f"add server {_server(s.backend, s.name)} {s.address}:{s.port}{cookie} check{opts}"


def enable_health(backend: str, server: str) -> str:
    """``enable health``: start the server's health checks."""
    return f"enable health {_server(backend, server)}"


def enable_server(backend: str, server: str) -> str:
    """``enable server``: take it out of maintenance (it gets traffic at once)."""
    return f"enable server {_server(backend, server)}"


def set_state(backend: str, server: str, state: str) -> str:
    """``set server ... state``: ``ready``, ``drain`` (no new traffic except persistent
    clients') or ``maint`` (no new traffic at all)."""
    if state not in STATES:
        raise ValueError(f"server state must be one of {', '.join(STATES)} (got {state})")
    return f"set server {_server(backend, server)} state {state}"


def shutdown_sessions(backend: str, server: str) -> str:
    """``shutdown sessions server``: close what still runs on it (after a drain timeout)."""
    return f"shutdown sessions server {_server(backend, server)}"


def del_server(backend: str, server: str) -> str:
    """``del server``: only a server in maintenance with no connection left can go."""
    return f"del server {_server(backend, server)}"


def set_dynamic_cookie_key(backend: str, key: str) -> str:
    """``set dynamic-cookie-key``: also (re)computes the cookie of every server without a
    static one from its address, port and ``key`` (same key, same cookie on both LBs)."""
    if not _KEY.fullmatch(key):
        raise ValueError("the dynamic cookie key must be letters and digits")
    return f"set dynamic-cookie-key backend {_ident('backend', backend)} {key}"


def enable_dynamic_cookie(backend: str) -> str:
    """``enable dynamic-cookie``: servers without a static cookie get one (see above)."""
    return f"enable dynamic-cookie backend {_ident('backend', backend)}"


def set_ssl_cert(path: str, pem: str) -> str:
    """``set ssl cert <path> <<``: a transaction that replaces the certificate ``path`` refers
    to with ``pem`` (certificate chain and key); the payload ends at the first empty line."""
    lines = [x.rstrip("\r") for x in pem.splitlines() if x.strip()]
    if not any("BEGIN CERTIFICATE" in x for x in lines) or not any(
        "PRIVATE KEY" in x for x in lines
    ):
        raise ValueError("the PEM must hold a certificate and its private key")
    for line in lines:
        if not re.fullmatch(r"[A-Za-z0-9+/=: ,.()-]*", line):
            raise ValueError("the PEM holds a line that is not PEM (base64 or a header)")
    return f"set ssl cert {_path(path)} <<\n" + "\n".join(lines) + "\n"


def commit_ssl_cert(path: str) -> str:
    """``commit ssl cert``: the new certificate serves new handshakes from now on."""
    return f"commit ssl cert {_path(path)}"


def abort_ssl_cert(path: str) -> str:
    """``abort ssl cert``: drop an uncommitted transaction."""
    return f"abort ssl cert {_path(path)}"


def answered(answer: str, expect: str | None) -> bool:
    """Whether ``answer`` is success: empty when ``expect`` is None, else contains ``expect``."""
    text = answer.strip()
    return not text if expect is None else expect in text


def call(sock: str, cmd: str, expect: str | None = None, timeout: float = 5.0) -> str:
    """Send one command; returns HAProxy's answer.

    :param expect: the sentence that means success (None: success is an empty answer).
    :raises RuntimeApiError: HAProxy answered something else.
    :raises OperationError: the socket does not answer.
    """
    answer = command(sock, cmd, timeout)
    if not answered(answer, expect):
        head = cmd.split("\n", 1)[0]
        raise RuntimeApiError(f"HAProxy refused `{head}`: {answer.strip() or 'no answer'}")
    return answer


def servers(sock: str, backend: str) -> dict[str, ServerState]:
    """The servers of ``backend`` as this HAProxy sees them now, by name."""
    return {
        s.server: s for s in parse_show_stat(command(sock, "show stat")) if s.backend == backend
    }


def worker_pid(sock: str, timeout: float = 1.0) -> int:
    """The pid of the worker that answers on the stats socket (``show info``).

    :raises OperationError: no answer, or no ``Pid`` in it.
    """
    for line in command(sock, "show info", timeout).splitlines():
        key, _, value = line.partition(":")
        if key == "Pid" and value.strip().isdigit():
            return int(value)
    raise OperationError(f"HAProxy on {sock} did not say its pid")


#: The first line of a ``show servers state`` answer (the state file's format version).
SERVER_STATE_VERSION = "1"


def dump_server_state(sock: str, path: Path, timeout: float = 5.0) -> int:
    """Write ``show servers state`` into ``path`` (the ``server-state-file``), atomically, so
    the worker a reload starts takes over each server's drain/maintenance state, weight and
    health instead of starting them all ready; returns how many servers it holds.

    :raises OperationError: the socket does not answer, or the answer is not a state dump
        (the file is then left as it was).
    """
    answer = command(sock, "show servers state", timeout)
    lines = answer.splitlines()
    if not lines or lines[0].strip() != SERVER_STATE_VERSION:
        head = lines[0][:80] if lines else "nothing"
        raise OperationError(f"HAProxy on {sock} answered `show servers state` with {head!r}")
    write_atomic(path, answer if answer.endswith("\n") else answer + "\n", mode=0o600)
    return sum(1 for x in lines[1:] if x.strip() and not x.startswith("#"))


def add_and_enable(sock: str, new: NewServer) -> bool:
    """``add server``, ``enable health``, ``enable server`` for ``new`` in its backend; when
    HAProxy refuses a ``cookie`` on a dynamic server (2.6), it is added without one. Returns
    whether that happened (the backend then needs a dynamic cookie key)."""
    dynamic = False
    try:
        call(sock, add_server(new), "New server registered")
    except RuntimeApiError as exc:
        if COOKIE_REFUSED not in str(exc):
            raise
        call(sock, add_server(replace(new, cookie=None)), "New server registered")
        dynamic = True
    call(sock, enable_health(new.backend, new.name))
    call(sock, enable_server(new.backend, new.name))
    return dynamic
