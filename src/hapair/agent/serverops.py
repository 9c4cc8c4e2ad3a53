"""The dashboard's backend buttons: drain, ready or maint one server of this node's HAProxy.

``POST /node/<lb>/server/<server>/<drain|ready|maint>`` (:mod:`hapair.agent.api`) ends here on
the agent of ``<lb>``: the server must be one that HAProxy's ``show stat`` lists now (in any
proxy but the stats page's); each backend that has it gets ``set server <backend>/<server>
state <state>`` on the stats socket (the runtime API, ``level admin``). Names are checked
twice: the API takes only HAProxy names (:func:`hapair.haproxy_runtime.is_name`), and the
command is built only from names HAProxy itself reported.

The state is the running HAProxy's only: a seamless reload by ``hapair apply`` or a follower
keeps it (the server-state file), a restart of HAProxy starts the server ready again, and
the next change of that server in the spec overrides it.
"""

from __future__ import annotations

import logging
from typing import Final

from hapair import haproxy_runtime as rt
from hapair.errors import UsageError
from hapair.haproxy_stats import SERVERS_ONLY, command_async, parse_show_stat

logger = logging.getLogger(__name__)

STATES: Final = rt.STATES
"""What a button may set: ``ready``, ``drain``, ``maint``."""
TIMEOUT_S: Final = 1.0
"""Each command on the stats socket must be answered within this long."""


class UnknownServer(UsageError, ValueError):
    """The server named is not one this HAProxy reports (or not a name at all)."""


def plan(stat_csv: str, server: str, state: str) -> list[tuple[str, str]]:
    """The commands that put ``server`` in ``state``, as (backend, command) pairs, from
    ``show stat`` output (pure).

    :raises UnknownServer: no proxy of that output has a server of that name.
    :raises ValueError: ``state`` is not one of :data:`STATES`.
    """
    if not rt.is_name(server):
        raise UnknownServer(f"{server!r} is not a server name")
    found = [s for s in parse_show_stat(stat_csv) if s.server == server]
    if not found:
        raise UnknownServer(f"HAProxy has no server {server}")
    return [(s.backend, rt.set_state(s.backend, s.server, state)) for s in found]


def was(stat_csv: str, server: str) -> str:
    """The server's status in ``show stat`` output (first backend that has it), or ``?``."""
    return next((s.status for s in parse_show_stat(stat_csv) if s.server == server), "?")


async def set_server_state(sock: str, node: str, server: str, state: str) -> str:
    """Put ``server`` of the HAProxy behind ``sock`` in ``state``; returns a sentence saying
    what was done.

    :raises UnknownServer: HAProxy has no such server.
    :raises OperationError: the socket does not answer, or HAProxy refused the command.
    """
    stat = await command_async(sock, SERVERS_ONLY, TIMEOUT_S)
    before = was(stat, server)
    for backend, cmd in plan(stat, server, state):
        answer = await command_async(sock, cmd, TIMEOUT_S)
        if not rt.answered(answer, None):
            raise rt.RuntimeApiError(f"HAProxy refused `{cmd}`: {answer.strip()}")
        logger.info("operator set %s/%s %s (was %s)", backend, server, state, before)
    return f"{server} on {node}: {state} (was {before})"
