"""The agent's own configuration file (``agent.toml``), rendered per LB node by the platform.

Its values are checked as the spec checks them (:mod:`hapair.spec_checks`,
:mod:`hapair.spec_timings`): an ``agent.toml`` edited by hand, and a SIGHUP reload of it, is
refused for exactly what the spec refuses, with the field named.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hapair.errors import SpecError
from hapair.spec import format_errors
from hapair.spec_checks import CheckPath, IPv4, Port, StrictBool, has_control
from hapair.spec_timings import (
    ActionTimeoutMs,
    DeadtimeMs,
    DelayMs,
    DrainMs,
    HealthCount,
    HealthIntervalMs,
    InitdeadMs,
    IntervalMs,
    ReconcileIntervalMs,
    RequestTimeoutMs,
    WarntimeMs,
    timing_problem,
)


class VipConfig(BaseModel):
    """One floating IP and how this node holds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # vip1 / vip2
    name: str
    # The address clients use (the EIP's public address on aws).
    address: str
    # The LB that holds it when both are healthy.
    home: str
    # Resource agent: "l2" (address + gratuitous ARP), "aws_eip" (boto3) or "fake" (tests).
    driver: Literal["l2", "aws_eip", "fake"] = "l2"
    # l2: the interface that carries it.
    ifname: str = "eth0"
    # aws_eip: allocation id, this node's ENI, and the private address on it to associate with.
    allocation_id: str = ""
    eni_id: str = ""
    private_ip: str = ""


class AgentConfig(BaseModel):
    """Everything one agent needs; paths are absolute."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str
    node: str
    peer: str
    # Where heartbeats go: the peer's primary and secondary addresses (the seed's ucast lines).
    peer_addresses: list[str]
    # The peer's primary address; its HAProxy is probed there (the "peer serves" side channel).
    peer_probe_address: str
    # Address heartbeats are bound to (0.0.0.0 = all; the security group limits the sources).
    bind: str = "0.0.0.0"
    port: Port = 694
    key_file: str
    admin_token_file: str
    # Status API: TCP port inside the node and a unix socket (the CLI reaches it from the host).
    api_port: Port = 9023
    api_bind: str = "0.0.0.0"
    api_socket: str = ""
    # The local HAProxy: stats socket, and the port a real HTTP request goes through.
    stats_socket: str
    http_port: Port = 80
    check_path: CheckPath = "/health"
    ping_nodes: list[IPv4] = Field(default_factory=list)
    # The [ha] timings, bounded as in the spec.
    interval_ms: IntervalMs = 50
    warntime_ms: WarntimeMs = 100
    deadtime_ms: DeadtimeMs = 150
    initdead_ms: InitdeadMs = 1500
    auto_failback: StrictBool = True
    failback_delay_ms: DelayMs = 3000
    health_interval_ms: HealthIntervalMs = 100
    # Requests through the local HAProxy slower than this count as failed (500 ms: a link with
    # 90 ms of jitter each way still answers in time; a hung HAProxy is caught by its silent
    # stats socket at once); fall failed in a row make the node unhealthy, rise good ones in a
    # row healthy again.
    request_timeout_ms: RequestTimeoutMs = 500
    health_rise: HealthCount = 2
    health_fall: HealthCount = 3
    min_move_interval_ms: DelayMs = 1000
    # The failback drain (hapair.agent.drain): how long, after a move between live nodes, the
    # taker forwards connections it does not know to the releaser, which keeps serving them.
    drain_ms: DrainMs = 5000
    # How often what each VIP's holder really is gets read back and repaired.
    reconcile_interval_ms: ReconcileIntervalMs = 1000
    # Bound on one resource-agent call.
    action_timeout_ms: ActionTimeoutMs = 5000
    # "text" or "json" (JSON lines) logs on stderr.
    log_format: Literal["text", "json"] = "text"
    # Run with real-time scheduling when allowed, so a busy machine does not delay heartbeats.
    realtime: StrictBool = True
    # AWS region / endpoint for aws_eip (empty = standard AWS configuration).
    aws_region: str = ""
    aws_endpoint_url: str = ""
    # The boot counter (see hapair.agent.boot); empty = next to api_socket, or
    # /var/lib/hapair/<cluster>-<node>.boot without one.
    boot_file: str = ""
    # The dashboard's history of VIP moves (see hapair.agent.historyfile); empty = next to the
    # boot counter as history.jsonl, or /var/lib/hapair/<cluster>-<node>.history.jsonl when
    # neither boot_file nor api_socket is set.
    history_file: str = ""
    vips: list[VipConfig]

    @model_validator(mode="after")
    def _timings(self) -> AgentConfig:
        problem = timing_problem(self.interval_ms, self.warntime_ms, self.deadtime_ms)
        if problem is not None:
            raise ValueError(problem)
        for v in (self.cluster, self.node, self.peer, *self.peer_addresses):
            if has_control(v):
                raise ValueError(f"control characters are not allowed (got {v!r})")
        return self

    def boot_path(self) -> Path:
        """Where the boot counter lives."""
        if self.boot_file:
            return Path(self.boot_file)
        if self.api_socket:
            return Path(self.api_socket).parent / "boot"
        return Path(f"/var/lib/hapair/{self.cluster}-{self.node}.boot")

    def history_path(self) -> Path:
        """Where the dashboard's history is kept (in the same state directory as the boot
        counter)."""
        if self.history_file:
            return Path(self.history_file)
        if self.boot_file or self.api_socket:
            return self.boot_path().parent / "history.jsonl"
        return Path(f"/var/lib/hapair/{self.cluster}-{self.node}.history.jsonl")


def load_agent_config(path: Path) -> AgentConfig:
    """Read and validate ``agent.toml``.

    :raises SpecError: unreadable, not TOML, or invalid (field named).
    """
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SpecError([f"{path}: cannot read the agent config ({exc.strerror})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([f"{path}: not valid TOML ({exc})"]) from None
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_errors(exc)) from None


def dump_toml(cfg: AgentConfig) -> str:
    """Write the config as TOML (flat keys, then one ``[[vips]]`` table per VIP)."""

    def val(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        s = str(v)
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in s):
            raise SpecError([f"agent.toml: a value has control characters ({s!r})"])
        s = s.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{s}"'

    data = cfg.model_dump()
    vips = data.pop("vips")
    lines = [f"# hapair agent for {cfg.node} of cluster {cfg.cluster}; rendered by hapair."]
    lines += [f"{k} = {val(v)}" for k, v in data.items()]
    for vip in vips:
        lines += ["", "[[vips]]"] + [f"{k} = {val(v)}" for k, v in vip.items()]
    return "\n".join(lines) + "\n"
