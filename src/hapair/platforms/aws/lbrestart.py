"""On an AWS LB: restart this LB's HAProxy and agent with its EIPs on the peer meanwhile.

The follower does this once per new restart generation of this LB in the desired document
(``hapair restart lbN|--rolling`` on the operator's side publishes them, one LB at a time).
Every step waits for the one before, each wait bounded; the decisions are the pure functions
below, read from this LB's own agent's ``/status`` (its view of the peer comes from the peer's
heartbeats), through the agent's unix socket and admin token, as the lab's restart does:

1. the peer must be heard, healthy and not in standby, or nothing is done (refused);
2. ``POST /standby``: the agent marks its EIPs released and the peer takes them
   (make-before-break: one ``AssociateAddress`` each, see docs/aws.md);
3. wait until this agent holds none of them and the peer says it holds them all;
4. restart HAProxy (``systemctl restart haproxy.service``), wait until a new worker answers on
   the stats socket; restart the agent (``systemctl restart hapair-agent.service``);
5. wait until the new agent answers, is healthy and hears the peer;
6. ``POST /online`` (the new agent starts online: a no-op, said for clarity).

The failback (the peer gives this LB's home EIP back after ``failback_delay``) happens after,
by the agents' own rules; the operator's side watches it on the EIPs' associations.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hapair import haproxy_runtime as rt
from hapair.agent.client import agent_request, agent_status
from hapair.errors import OperationError
from hapair.platforms.aws import userdata


@dataclass(frozen=True)
class RestartConfig:
    """What a restart touches on the LB (the defaults are the AWS LB's).

    :ivar move_timeout_s: bound on the EIPs' move to the peer (two EC2 calls and reads).
    :ivar haproxy_timeout_s: bound on a new HAProxy worker answering.
    :ivar healthy_timeout_s: bound on the new agent being healthy and hearing the peer.
    """

    agent_socket: str = userdata.AGENT_SOCKET
    token_file: str = userdata.TOKEN_FILE
    stats_socket: str = userdata.STATS_SOCKET
    haproxy_command: tuple[str, ...] = ("systemctl", "restart", "haproxy.service")
    agent_command: tuple[str, ...] = ("systemctl", "restart", "hapair-agent.service")
    move_timeout_s: float = 90.0
    haproxy_timeout_s: float = 30.0
    healthy_timeout_s: float = 180.0


def _peer(st: Mapping[str, Any]) -> Mapping[str, Any]:
    peer = st.get("peer")
    return peer if isinstance(peer, dict) else {}


def _view(st: Mapping[str, Any]) -> Mapping[str, Any]:
    view = _peer(st).get("view")
    return view if isinstance(view, dict) else {}


def refusal(node: str, st: Mapping[str, Any]) -> str | None:
    """Why ``node`` must not restart now, from its agent's ``/status`` (empty: no answer);
    None: it may. Pure."""
    if not st:
        return f"restart {node}: its agent does not answer; nothing was done"
    name = _peer(st).get("name") or "the peer"
    state = _peer(st).get("state")
    view = _view(st)
    how = ""
    if state != "up":
        how = f"peer state {state}"
    elif not view.get("healthy"):
        how = "not healthy"
    elif view.get("standby"):
        how = "in standby"
    if how:
        return (
            f"restart {node}: its peer {name} is not healthy and online ({how}), so it cannot "
            "serve both EIPs; nothing was done"
        )
    return None


def released(st: Mapping[str, Any], had: list[str]) -> bool:
    """Whether this agent holds nothing and the peer says it holds every VIP in ``had``. Pure."""
    return not st.get("held") and set(had) <= set(_view(st).get("held") or [])


def rejoined(st: Mapping[str, Any]) -> bool:
    """Whether a restarted agent answers, is healthy and hears its peer. Pure."""
    health = st.get("health")
    healthy = isinstance(health, dict) and bool(health.get("healthy"))
    return healthy and _peer(st).get("state") == "up"


class LbRestart:
    """Carries out one restart of this LB (the module docstring's steps).

    :param run: runs a command (``systemctl ...``); raises OperationError when it fails.
    :param status: this LB's agent's ``/status`` ({} when it does not answer).
    """

    def __init__(
        self,
        cfg: RestartConfig,
        node: str,
        run: Callable[[tuple[str, ...]], None],
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg, self.node, self.run, self.sleep, self.clock = cfg, node, run, sleep, clock

    def status(self) -> dict[str, Any]:
        """The local agent's ``/status`` ({} when it does not answer)."""
        try:
            return agent_status(self.cfg.agent_socket)
        except OperationError:
            return {}

    def _admin(self, action: str) -> str:
        token = Path(self.cfg.token_file).read_text().strip()
        code, body = agent_request(self.cfg.agent_socket, "POST", f"/{action}", token=token)
        if code != 200:
            raise OperationError(f"restart {self.node}: the agent refused {action}: {code} {body}")
        return str(body.get("message", body) if isinstance(body, dict) else body)

    def _wait(self, what: str, pred: Callable[[], bool], timeout: float) -> float:
        t0 = self.clock()
        while not pred():
            if self.clock() - t0 > timeout:
                raise OperationError(
                    f"restart {self.node}: timed out after {timeout:g} s waiting for {what}"
                )
            self.sleep(0.2)
        return self.clock() - t0

    def _worker(self) -> int | None:
        try:
            return rt.worker_pid(self.cfg.stats_socket)
        except OperationError:
            return None

    def __call__(self) -> list[str]:
        """Restart; returns one line per step done.

        :raises OperationError: refused (the peer cannot take over), or a step failed or timed
            out (named).
        """
        st = self.status()
        refused = refusal(self.node, st)
        if refused is not None:
            raise OperationError(refused)
        had = list(st.get("held") or [])
        peer = _peer(st).get("name") or "the peer"
        done = [f"standby: {self._admin('standby')}"]
        took = self._wait(
            f"{peer} to hold {', '.join(had) or 'every EIP'}",
            lambda: released(self.status(), had),
            self.cfg.move_timeout_s,
        )
        done.append(f"{peer} holds {', '.join(had) or 'every EIP'} ({took:.1f} s)")
        before = self._worker()
        self.run(self.cfg.haproxy_command)
        took = self._wait(
            "a new HAProxy worker",
            lambda: (pid := self._worker()) is not None and pid != before,
            self.cfg.haproxy_timeout_s,
        )
        done.append(f"HAProxy restarted ({took:.1f} s)")
        self.run(self.cfg.agent_command)
        took = self._wait(
            f"the new agent to be healthy and hear {peer}",
            lambda: rejoined(self.status()),
            self.cfg.healthy_timeout_s,
        )
        done.append(f"agent restarted, healthy, hears {peer} ({took:.1f} s)")
        done.append(f"online: {self._admin('online')}")
        return done
